//! `/`: the enqueue form and the most recent reports; `POST /` enqueues.

use axum::Form;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, FlashKind, Nav, Page};
use super::reports::{Columns, events_table};
use crate::views::{self, ReportFilter};
use crate::web::{WebError, WebState, actions, security};

/// How many reports the start page shows.
const RECENT_REPORTS: usize = 20;

/// The enqueue form. Missing fields read as empty, so that a form without its CSRF token is
/// refused as such (403) rather than as a malformed body.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct EnqueueForm {
    /// What to build.
    #[serde(default)]
    prompt: String,
    /// The token of the page the form came from.
    #[serde(default)]
    csrf: String,
}

/// `GET /`.
pub(crate) async fn home(State(state): State<WebState>) -> Response {
    render(&state, "", None).await
}

/// `POST /`: enqueues the prompt and goes to the task's page; a refusal shows the start page
/// again with the reason and the prompt as typed.
pub(crate) async fn enqueue(
    State(state): State<WebState>,
    form: Result<Form<EnqueueForm>, FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) => {
            let error = WebError::BadRequest(rejection.body_text());
            return render(&state, "", Some(&error)).await;
        }
    };
    let enqueued = match security::check_csrf(&state, &form.csrf) {
        Ok(()) => actions::enqueue(&state, &form.prompt).await,
        Err(refusal) => Err(refusal),
    };
    match enqueued {
        Ok(task_id) => Redirect::to(&format!("/task/{task_id}?enqueued=1")).into_response(),
        Err(error) => render(&state, &form.prompt, Some(&error)).await,
    }
}

/// The start page, with the status of `error` (200 without one).
async fn render(state: &WebState, prompt: &str, error: Option<&WebError>) -> Response {
    let filter = ReportFilter {
        per_page: Some(RECENT_REPORTS),
        ..ReportFilter::default()
    };
    let recent = match views::report_page(state.pipeline().report_log(), &filter).await {
        Ok(recent) => recent,
        Err(failure) => return layout::error_page(state, &failure.into()),
    };
    let frame = Page {
        title: "Enqueue",
        nav: Nav::Home,
        live: Some(layout::ALL_EVENTS.to_owned()),
    };
    let body = html! {
        section.enqueue {
            h1 { "Enqueue a task" }
            @if let Some(error) = error {
                (layout::flash(FlashKind::Error, &error.to_string()))
            }
            (enqueue_form(state, prompt))
        }
        section.recent {
            div.section-head {
                h2 { "Recent reports" }
                a href="/reports" { "All reports →" }
            }
            div #recent-reports data-live {
                @if recent.events.is_empty() {
                    p.empty { "No reports yet: enqueue a task and follow it here." }
                } @else {
                    div.table-wrap {
                        (events_table("recent-reports-table", &recent.events, Columns::Compact))
                    }
                }
            }
        }
    };
    let status = error.map_or(StatusCode::OK, WebError::status);
    (status, frame.render(state, body)).into_response()
}

/// The form, disabled with the reason when this server takes no work.
fn enqueue_form(state: &WebState, prompt: &str) -> Markup {
    let read_only = state.settings().read_only.as_deref();
    html! {
        form #enqueue-form .stacked method="post" action="/" {
            label for="prompt" { "What should the agents build?" }
            textarea #prompt name="prompt" rows="6" disabled[read_only.is_some()]
                placeholder="Write a tiny Python program that prints 'Hello Earthling'" {
                (prompt)
            }
            (layout::csrf_field(state))
            div.form-actions {
                button #enqueue type="submit" disabled[read_only.is_some()] { "Enqueue" }
                @match read_only {
                    Some(reason) => span.form-note.read-only { "This server takes no work: " (reason) },
                    None => span.form-note {
                        "The task goes to the task topic; its page follows it live."
                    },
                }
            }
        }
    }
}
