//! A person's decisions about a task on its page: Approve or Reject a task awaiting approval,
//! Cancel a task that has not ended; `POST /task/{id}/approve`, `/reject` and `/cancel`, the
//! twins of the API's routes.

use agent_pipeline::TaskId;
use agent_pipeline::store::TaskStatus;
use agent_pipeline::wire::{ControlAction, TaskControl};
use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, FlashKind};
use super::task::render_task;
use crate::web::{WebError, WebState, actions, security};

/// The longest comment or name a decision form takes, in characters.
const MAX_TEXT_CHARS: usize = 2000;

/// A decision form: what the person added to the decision.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ControlForm {
    /// Why, for the record.
    #[serde(default)]
    comment: Option<String>,
    /// Who decided, for the record.
    #[serde(default)]
    by: Option<String>,
    /// The token of the page the form came from.
    #[serde(default)]
    csrf: String,
}

/// `POST /task/{task_id}/approve` with `comment`, `by` and `csrf`.
pub(crate) async fn approve(
    state: State<WebState>,
    task_id: Path<String>,
    form: Result<Form<ControlForm>, FormRejection>,
) -> Response {
    control(ControlAction::Approve, state, task_id, form).await
}

/// `POST /task/{task_id}/reject` with `comment`, `by` and `csrf`.
pub(crate) async fn reject(
    state: State<WebState>,
    task_id: Path<String>,
    form: Result<Form<ControlForm>, FormRejection>,
) -> Response {
    control(ControlAction::Reject, state, task_id, form).await
}

/// `POST /task/{task_id}/cancel` with `comment`, `by` and `csrf`.
pub(crate) async fn cancel(
    state: State<WebState>,
    task_id: Path<String>,
    form: Result<Form<ControlForm>, FormRejection>,
) -> Response {
    control(ControlAction::Cancel, state, task_id, form).await
}

/// Sends `action`: 303 back to the task page, or the task page again with the refusal and
/// its status (409 when the decision does not apply to the task as it stands).
async fn control(
    action: ControlAction,
    State(state): State<WebState>,
    Path(task_id): Path<String>,
    form: Result<Form<ControlForm>, FormRejection>,
) -> Response {
    let task_id = match actions::parse_task_id(&task_id) {
        Ok(task_id) => task_id,
        Err(error) => return layout::error_page(&state, &error),
    };
    match try_control(&state, action, task_id, form).await {
        Ok(()) => Redirect::to(&format!(
            "/task/{task_id}?decided={}#task-header",
            action.as_str()
        ))
        .into_response(),
        Err(error) => {
            let notice = layout::flash(FlashKind::Error, &error.to_string());
            render_task(&state, task_id, notice, Some(&error)).await
        }
    }
}

async fn try_control(
    state: &WebState,
    action: ControlAction,
    task_id: TaskId,
    form: Result<Form<ControlForm>, FormRejection>,
) -> Result<(), WebError> {
    let Form(form) = form.map_err(|e| WebError::rejected(e.status(), e.body_text()))?;
    security::check_csrf(state, &form.csrf)?;
    for (name, text) in [("comment", &form.comment), ("name", &form.by)] {
        let length = text.as_deref().map_or(0, |t| t.chars().count());
        if length > MAX_TEXT_CHARS {
            return Err(WebError::BadRequest(format!(
                "the {name} has {length} characters; at most {MAX_TEXT_CHARS} are accepted"
            )));
        }
    }
    let mut control = TaskControl::new(action, task_id);
    control.comment = form.comment;
    control.by = form.by;
    actions::control(state, control).await
}

/// What the page says right after a decision was sent (`?decided=`), when it is one.
pub(super) fn decided_notice(decided: Option<&str>) -> Option<&'static str> {
    match decided? {
        "approve" => Some(
            "Approval sent: the change is published and the task finishes; this page follows it.",
        ),
        "reject" => Some("Rejection sent: the task ends without publishing its change."),
        "cancel" => {
            Some("Cancellation sent: the task stops where it is; what it did so far is kept.")
        }
        _ => None,
    }
}

/// The decisions a task in `status` allows: Approve and Reject while it awaits approval,
/// Cancel while it has not ended; nothing once it has.
pub(super) fn panel(state: &WebState, task_id: TaskId, status: TaskStatus) -> Markup {
    if status.is_final() {
        return html! {};
    }
    let read_only = state
        .settings()
        .read_only
        .as_deref()
        .map(|reason| format!("This server takes no work: {reason}"));
    let disabled = read_only.is_some();
    let to = |action: &str| format!("/task/{task_id}/{action}");
    html! {
        @if status == TaskStatus::AwaitingApproval {
            section #approval .decision aria-labelledby="approval-title" {
                h2 #approval-title { "Waiting for your approval" }
                p {
                    "The change passed its gates. Approve it to publish it and finish the task, "
                    "or reject it: the task then ends without publishing."
                }
                form #approval-form .decision-form method="post" action=(to("approve")) {
                    (layout::csrf_field(state))
                    label for="decision-comment" {
                        "Comment " span.muted { "(optional, kept with the decision)" }
                    }
                    textarea #decision-comment name="comment" rows="2" maxlength="2000"
                        disabled[disabled] {}
                    label for="decision-by" { "Your name " span.muted { "(optional)" } }
                    input #decision-by type="text" name="by" maxlength="200" autocomplete="name"
                        disabled[disabled];
                    div.form-actions {
                        button #approve .approve-button type="submit"
                            disabled[disabled] title=[read_only.as_deref()] { "Approve" }
                        // The same form, sent to the rejection's route: one comment for both.
                        button #reject .reject-button.danger type="submit" formaction=(to("reject"))
                            disabled[disabled] title=[read_only.as_deref()] { "Reject" }
                    }
                }
            }
        }
        form #cancel-form .cancel-form method="post" action=(to("cancel")) {
            (layout::csrf_field(state))
            button #cancel .cancel-button.secondary type="submit"
                disabled[disabled] title=[read_only.as_deref()] { "Cancel task" }
            span.form-note { "Stops the task where it is; what it did so far is kept." }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_three_decisions_are_announced() {
        for action in [
            ControlAction::Approve,
            ControlAction::Reject,
            ControlAction::Cancel,
        ] {
            assert!(
                decided_notice(Some(action.as_str())).is_some(),
                "{action:?}"
            );
        }
        assert!(decided_notice(Some("<script>")).is_none());
        assert!(decided_notice(None).is_none());
    }
}
