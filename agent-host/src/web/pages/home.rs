//! `/`: the enqueue form and the most recent reports; `POST /` enqueues, optionally with a
//! budget of the task's own, waiting for approval before publishing, and on an existing
//! repository.

use agent_pipeline::budget::Budget;
use agent_pipeline::wire::{NewTask, Repository};
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
    /// The task's limit of cost in US dollars (blank: the server's default).
    #[serde(default)]
    max_cost_usd: String,
    /// Its limit of tokens (blank: the server's default).
    #[serde(default)]
    max_tokens: String,
    /// Its limit of wall time in seconds (blank: the server's default).
    #[serde(default)]
    max_wall_time_secs: String,
    /// Its limit of rounds (blank: the server's default).
    #[serde(default)]
    max_rounds: String,
    /// Present when the change must wait for approval before it is published.
    #[serde(default)]
    require_approval: Option<String>,
    /// The existing repository to change (blank: the task starts from nothing).
    #[serde(default)]
    repository_url: String,
    /// The repository's branch, tag or commit to start from (blank: its default branch).
    #[serde(default)]
    base_ref: String,
    /// The repository's own test command (blank: detected from its files).
    #[serde(default)]
    test_command: String,
    /// Present when the published change is also pushed to the repository.
    #[serde(default)]
    push: Option<String>,
    /// The token of the page the form came from.
    #[serde(default)]
    csrf: String,
}

impl EnqueueForm {
    /// Whether any option beyond the prompt was given, so that a refused form shows them.
    fn has_options(&self) -> bool {
        self.require_approval.is_some()
            || [
                &self.max_cost_usd,
                &self.max_tokens,
                &self.max_wall_time_secs,
                &self.max_rounds,
            ]
            .iter()
            .any(|field| !field.trim().is_empty())
    }

    /// The task the form asks for; a limit that is not a number it can be is a 400 that
    /// names the field.
    fn task(&self) -> Result<NewTask, WebError> {
        let budget = Budget {
            max_cost_usd: limit(&self.max_cost_usd, "Max cost", parse_cost)?,
            max_tokens: limit(&self.max_tokens, "Max tokens", |t| {
                whole(t)
                    .filter(|n| *n >= 1)
                    .ok_or("a whole number of tokens of at least 1")
            })?,
            max_wall_time_secs: limit(&self.max_wall_time_secs, "Max wall time", |t| {
                whole(t)
                    .filter(|n| *n >= 1)
                    .ok_or("a whole number of seconds of at least 1")
            })?,
            max_rounds: limit(&self.max_rounds, "Max rounds", |t| {
                whole(t)
                    .filter(|n| *n >= 1)
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or("a whole number of rounds of at least 1")
            })?,
        };
        budget.check().map_err(|problem| {
            WebError::BadRequest(format!("the budget cannot be used: {problem}"))
        })?;
        let mut task = NewTask::new(self.prompt.clone());
        if !budget.is_unlimited() {
            task = task.with_budget(budget);
        }
        // Unchecked leaves the server's default, so that a form cannot turn off an approval
        // the operator requires for every task.
        if self.require_approval.is_some() {
            task = task.with_approval(true);
        }
        if let Some(repository) = self.repository()? {
            task = task.on_repository(repository);
        }
        Ok(task)
    }

    /// Whether any field of the repository was given, so that a refused form shows them.
    fn has_repository(&self) -> bool {
        self.push.is_some()
            || [&self.repository_url, &self.base_ref, &self.test_command]
                .iter()
                .any(|field| !field.trim().is_empty())
    }

    /// The repository the form names, checked as the API checks it; `None` for a blank URL.
    /// A base ref or test command without a URL is refused rather than silently dropped.
    fn repository(&self) -> Result<Option<Repository>, WebError> {
        let url = self.repository_url.trim();
        if url.is_empty() {
            if self.has_repository() {
                return Err(WebError::BadRequest(
                    "the repository's URL is empty: a base ref, a test command or a push \
                     needs the repository it belongs to"
                        .into(),
                ));
            }
            return Ok(None);
        }
        let mut repository = Repository::new(url);
        let base_ref = self.base_ref.trim();
        if !base_ref.is_empty() {
            repository = repository.at(base_ref);
        }
        let test_command = self.test_command.trim();
        if !test_command.is_empty() {
            repository = repository.with_test_command(test_command);
        }
        if self.push.is_some() {
            repository = repository.with_push();
        }
        repository.check().map_err(|problem| {
            WebError::BadRequest(format!("the repository cannot be used: {problem}"))
        })?;
        Ok(Some(repository))
    }
}

/// A limit of the form: blank is none, else `parse` must accept it.
fn limit<T>(
    text: &str,
    name: &str,
    parse: impl Fn(&str) -> Result<T, &'static str>,
) -> Result<Option<T>, WebError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    parse(text).map(Some).map_err(|expected| {
        WebError::BadRequest(format!("{name} must be {expected}, not {text:?}"))
    })
}

/// A whole number, without sign or fraction.
fn whole(text: &str) -> Option<u64> {
    text.parse::<u64>().ok()
}

/// US dollars of more than 0, with or without a leading `$`.
fn parse_cost(text: &str) -> Result<f64, &'static str> {
    text.strip_prefix('$')
        .unwrap_or(text)
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|usd| usd.is_finite() && *usd > 0.0)
        .ok_or("US dollars of more than 0, such as 0.50")
}

/// `GET /`.
pub(crate) async fn home(State(state): State<WebState>) -> Response {
    render(&state, &EnqueueForm::default(), None).await
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
            let error = WebError::rejected(rejection.status(), rejection.body_text());
            return render(&state, &EnqueueForm::default(), Some(&error)).await;
        }
    };
    let enqueued = match security::check_csrf(&state, &form.csrf) {
        Ok(()) => match form.task() {
            Ok(task) => actions::enqueue(&state, task).await,
            Err(refusal) => Err(refusal),
        },
        Err(refusal) => Err(refusal),
    };
    match enqueued {
        Ok(task_id) => Redirect::to(&format!("/task/{task_id}?enqueued=1")).into_response(),
        Err(error) => render(&state, &form, Some(&error)).await,
    }
}

/// The start page with `form` as typed, with the status of `error` (200 without one).
async fn render(state: &WebState, form: &EnqueueForm, error: Option<&WebError>) -> Response {
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
            (enqueue_form(state, form))
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

/// The form, disabled with the reason when this server takes no work. The budget and the
/// approval are folded away, so that the usual case stays one text box and one button.
fn enqueue_form(state: &WebState, form: &EnqueueForm) -> Markup {
    let read_only = state.settings().read_only.as_deref();
    let disabled = read_only.is_some();
    let number =
        |id: &str, label: &str, unit: &str, value: &str, step: &str, min: &str, hint: &str| {
            html! {
                div.field {
                    label for=(id) {
                    (label)
                    @if !unit.is_empty() { " " span.muted { "(" (unit) ")" } }
                }
                    input id=(id) name=(id) type="number" min=(min) step=(step)
                        value=(value) placeholder="no limit" disabled[disabled]
                        aria-describedby={ (id) "-hint" };
                    span.field-hint id={ (id) "-hint" } { (hint) }
                }
            }
        };
    let text_input = |id: &str, label: &str, value: &str, placeholder: &str, hint: &str| {
        html! {
            div.field.wide[id == "repository_url"] {
                label for=(id) { (label) }
                input id=(id) name=(id) type="text" value=(value) placeholder=(placeholder)
                    spellcheck="false" autocomplete="off" disabled[disabled]
                    aria-describedby={ (id) "-hint" };
                span.field-hint id={ (id) "-hint" } { (hint) }
            }
        }
    };
    html! {
        form #enqueue-form .stacked method="post" action="/" {
            label for="prompt" { "What should the agents build?" }
            textarea #prompt name="prompt" rows="6" disabled[disabled]
                placeholder="Write a tiny Python program that prints 'Hello Earthling'" {
                (form.prompt)
            }
            details #enqueue-options .enqueue-options open[form.has_options()] {
                summary { "Budget and approval " span.muted { "(optional)" } }
                div.option-fields {
                    (number("max_cost_usd", "Max cost", "USD", &form.max_cost_usd, "any", "0",
                        "Over every LLM call of the task."))
                    (number("max_tokens", "Max tokens", "", &form.max_tokens, "1", "1",
                        "Prompt and completion, over every call."))
                    (number("max_wall_time_secs", "Max wall time", "seconds", &form.max_wall_time_secs, "1", "1",
                        "From its arrival to its end."))
                    (number("max_rounds", "Max rounds", "", &form.max_rounds, "1", "1",
                        "Of implement → test → review, to pass the gates."))
                    label.checkbox.wide for="require_approval" {
                        input #require_approval type="checkbox" name="require_approval" value="1"
                            checked[form.require_approval.is_some()] disabled[disabled];
                        " Wait for my approval before publishing the change"
                    }
                    p.field-hint.wide {
                        "Blank limits are the server's defaults. A task that reaches a limit stops "
                        "with the reason " em { "budget exceeded" } "; what it did so far is kept. "
                        "Unchecked, the server's default approval applies."
                    }
                }
            }
            details #enqueue-repository .enqueue-options open[form.has_repository()] {
                summary { "Existing repository " span.muted { "(optional)" } }
                div.option-fields {
                    (text_input("repository_url", "Repository", &form.repository_url,
                        "/srv/git/shop.git or https://example.com/shop.git",
                        "A path on the host that runs the workers, or an https, ssh, git or file URL. Blank: the task starts from nothing."))
                    (text_input("base_ref", "Base ref", &form.base_ref, "main",
                        "The branch, tag or commit to start from. Blank: the repository's default branch."))
                    (text_input("test_command", "Test command", &form.test_command,
                        "python3 -m unittest discover -v",
                        "The repository's own tests, run before and after the change. Blank: detected from its files."))
                    label.checkbox.wide for="push" {
                        input #push type="checkbox" name="push" value="1"
                            checked[form.push.is_some()] disabled[disabled];
                        " Also push the published branch agent/<task id> to this repository"
                    }
                }
            }
            (layout::csrf_field(state))
            div.form-actions {
                button #enqueue type="submit" disabled[disabled] { "Enqueue" }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn form(fields: &[(&str, &str)]) -> EnqueueForm {
        let fields: serde_json::Map<String, serde_json::Value> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
            .collect();
        serde_json::from_value(serde_json::Value::Object(fields)).expect("a form")
    }

    #[test]
    fn blank_limits_are_none_and_given_ones_become_the_tasks_budget() {
        let plain = form(&[("prompt", "hi"), ("max_cost_usd", " "), ("max_rounds", "")])
            .task()
            .expect("a task");
        assert_eq!(plain.budget, None);
        assert_eq!(plain.require_approval, None);
        let limited = form(&[
            ("prompt", "hi"),
            ("max_cost_usd", "$0.50"),
            ("max_tokens", "20000"),
            ("max_wall_time_secs", "600"),
            ("max_rounds", "2"),
            ("require_approval", "1"),
        ])
        .task()
        .expect("a task");
        assert_eq!(
            limited.budget,
            Some(Budget {
                max_cost_usd: Some(0.5),
                max_tokens: Some(20_000),
                max_wall_time_secs: Some(600),
                max_rounds: Some(2),
            })
        );
        assert_eq!(limited.require_approval, Some(true));
    }

    #[test]
    fn a_blank_url_is_no_repository_and_a_given_one_is_checked() {
        let plain = form(&[("prompt", "hi"), ("repository_url", " ")])
            .task()
            .expect("a task");
        assert_eq!(plain.repository, None);
        let on_repository = form(&[
            ("prompt", "hi"),
            ("repository_url", " /srv/git/shop.git "),
            ("base_ref", "main"),
            ("test_command", ""),
        ])
        .task()
        .expect("a task");
        assert_eq!(
            on_repository.repository,
            Some(Repository::new("/srv/git/shop.git").at("main"))
        );
        let pushed = form(&[
            ("prompt", "hi"),
            ("repository_url", "/srv/git/shop.git"),
            ("push", "1"),
        ])
        .task()
        .expect("a task");
        assert_eq!(
            pushed.repository,
            Some(Repository::new("/srv/git/shop.git").with_push())
        );
        for (fields, expected) in [
            (
                [
                    ("repository_url", "ext::sh -c touch% /tmp/x"),
                    ("base_ref", ""),
                ],
                "remote helper",
            ),
            (
                [
                    ("repository_url", "/srv/shop"),
                    ("base_ref", "--upload-pack=x"),
                ],
                "not a branch, tag or commit id",
            ),
            (
                [("repository_url", ""), ("base_ref", "main")],
                "the repository's URL is empty",
            ),
            (
                [("repository_url", ""), ("push", "1")],
                "the repository's URL is empty",
            ),
        ] {
            let mut all = vec![("prompt", "hi")];
            all.extend(fields);
            let error = form(&all).task().expect_err("refused");
            assert!(matches!(error, WebError::BadRequest(_)), "{error:?}");
            assert!(error.to_string().contains(expected), "{error}");
        }
    }

    #[test]
    fn a_bad_limit_is_refused_naming_the_field() {
        for (field, value, expected) in [
            ("max_cost_usd", "abc", "Max cost must be US dollars"),
            ("max_cost_usd", "-1", "Max cost must be US dollars"),
            ("max_cost_usd", "NaN", "Max cost must be US dollars"),
            ("max_tokens", "1.5", "Max tokens must be a whole number"),
            (
                "max_wall_time_secs",
                "-3",
                "Max wall time must be a whole number of seconds",
            ),
            (
                "max_rounds",
                "0",
                "Max rounds must be a whole number of rounds of at least 1",
            ),
        ] {
            let error = form(&[("prompt", "hi"), (field, value)])
                .task()
                .expect_err("refused");
            assert!(matches!(error, WebError::BadRequest(_)), "{error:?}");
            assert!(error.to_string().contains(expected), "{error}");
        }
    }
}
