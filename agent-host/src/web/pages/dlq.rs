//! `/dlq`: the dead-letter queue, and `POST /dlq/{id}/redrive`.

use agent_pipeline::TaskId;
use axum::Form;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, FlashKind, Nav, Page};
use crate::views::{self, DeadLetterEntry};
use crate::web::{WebError, WebState, actions, security, text};

/// `?redriven=<id>`: the dead letter the user just sent back.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct DlqQuery {
    /// Its id.
    redriven: Option<String>,
}

/// The re-drive form: only its CSRF token (missing reads as empty, and is refused as such).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RedriveForm {
    /// The token of the page the form came from.
    #[serde(default)]
    csrf: String,
}

/// `GET /dlq?redriven=`.
pub(crate) async fn dlq(
    State(state): State<WebState>,
    query: Result<Query<DlqQuery>, QueryRejection>,
) -> Response {
    layout::respond(&state, render(&state, query).await)
}

async fn render(
    state: &WebState,
    query: Result<Query<DlqQuery>, QueryRejection>,
) -> Result<Markup, WebError> {
    let Query(query) = query.map_err(|e| WebError::BadRequest(e.body_text()))?;
    // Only a number is echoed back: the id is the line of the entry in the file.
    let redriven = query
        .redriven
        .as_deref()
        .and_then(|id| id.trim().parse::<usize>().ok());
    let page = views::dead_letters(state.pipeline().dead_letter_log()).await?;
    let frame = Page {
        title: "Dead letters",
        nav: Nav::Dlq,
        live: Some(layout::ALL_EVENTS.to_owned()),
    };
    let count = page.entries.len();
    let body = html! {
        h1 { "Dead letters" }
        p.lead {
            "Messages the pipeline gave up on. Re-driving one sends it back to the topic it came "
            "from, or replays the step that ran out of attempts."
        }
        @if let Some(id) = redriven {
            (layout::flash(
                FlashKind::Success,
                &format!("Dead letter {id} was re-driven; if it fails again it comes back here as a new entry."),
            ))
        }
        div #dead-letters data-live {
            p.count {
                (count) @if count == 1 { " dead letter" } @else { " dead letters" }
                " in " code { (page.file.display()) }
            }
            @if page.entries.is_empty() {
                p.empty { "The dead-letter queue is empty: no message has failed for good." }
            }
            @for entry in &page.entries { (dead_letter(state, entry)) }
        }
    };
    Ok(frame.render(state, body))
}

/// One entry: why, where from, the raw message, and the re-drive button.
fn dead_letter(state: &WebState, entry: &DeadLetterEntry) -> Markup {
    let read_only = state.settings().read_only.as_deref();
    let letter = entry.letter.as_ref();
    let dash = html! { span.muted { "—" } };
    html! {
        article.dead-letter id={ "dl-" (entry.id) } {
            header.dead-letter-head {
                span.dl-id { "#" (entry.id) }
                @if let Some(letter) = letter { (layout::time(letter.failed_at)) }
            }
            p.reason { (text::user(&entry.reason)) }
            @if let Some(letter) = letter {
                dl.meta {
                    dt { "Source topic" }
                    dd { code { (text::user(&letter.source_topic)) } }
                    dt { "Key" }
                    dd { @match &letter.key { Some(key) => code { (text::user(key)) }, None => (dash) } }
                    dt { "Task" }
                    dd {
                        @match letter.task_id.as_deref() {
                            Some(text) => @match text.parse::<TaskId>() {
                                Ok(task_id) => (layout::task_link(task_id)),
                                Err(_) => code { (text::user(text)) },
                            },
                            None => (dash),
                        }
                    }
                    dt { "Step" }
                    dd {
                        @match &letter.step_id { Some(step) => code { (text::user(step)) }, None => (dash) }
                        @if let Some(attempt) = letter.attempt { " · attempt " (attempt) }
                    }
                }
            }
            (text::controls_warning(&entry.payload))
            pre.payload { (text::revealed(&entry.payload)) }
            @if letter.is_some() {
                form.redrive-form method="post" action={ "/dlq/" (entry.id) "/redrive" } {
                    (layout::csrf_field(state))
                    button.redrive-button type="submit" disabled[read_only.is_some()]
                        title=[read_only.map(|reason| format!("This server takes no work: {reason}"))] {
                        "Re-drive"
                    }
                }
            } @else {
                p.muted {
                    "This line of the file is incomplete (it does not say where the message came "
                    "from), so it cannot be re-driven."
                }
            }
        }
    }
}

/// `POST /dlq/{id}/redrive`: sends the dead letter back and returns to the queue.
pub(crate) async fn redrive(
    State(state): State<WebState>,
    Path(id): Path<String>,
    form: Result<Form<RedriveForm>, FormRejection>,
) -> Response {
    let redriven = try_redrive(&state, &id, form).await;
    layout::respond(
        &state,
        redriven.map(|id| Redirect::to(&format!("/dlq?redriven={id}"))),
    )
}

async fn try_redrive(
    state: &WebState,
    id: &str,
    form: Result<Form<RedriveForm>, FormRejection>,
) -> Result<usize, WebError> {
    let Form(form) = form.map_err(|e| WebError::rejected(e.status(), e.body_text()))?;
    security::check_csrf(state, &form.csrf)?;
    // Ids are line numbers; anything else names no dead letter.
    let id = id
        .parse::<usize>()
        .map_err(|_| WebError::NotFound(format!("no dead letter {id:?}")))?;
    actions::redrive(state, id).await?;
    Ok(id)
}
