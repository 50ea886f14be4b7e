//! `/tasks`: every task with its latest status.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use maud::html;

use super::layout::{self, Nav, Page};
use crate::commands::{human_duration, one_line};
use crate::views::{self, TaskSummary};
use crate::web::WebState;

/// How much of a prompt the table shows (the whole prompt is in the row's tooltip).
const PROMPT_CHARS: usize = 80;

/// `GET /tasks`.
pub(crate) async fn tasks(State(state): State<WebState>) -> Response {
    let tasks = match views::task_summaries(state.pipeline().state().as_ref()).await {
        Ok(tasks) => tasks,
        Err(failure) => return layout::error_page(&state, &failure.into()),
    };
    let frame = Page {
        title: "Tasks",
        nav: Nav::Tasks,
        live: Some(layout::ALL_EVENTS.to_owned()),
    };
    let body = html! {
        h1 { "Tasks" }
        p.lead { "Every task the planner has recorded, newest first." }
        div #tasks data-live {
            p.count { (tasks.len()) @if tasks.len() == 1 { " task" } @else { " tasks" } }
            div.table-wrap {
                table #tasks-table {
                    thead {
                        tr {
                            th { "Task" }
                            th { "Status" }
                            th { "Step" }
                            th.num { "Attempts" }
                            th { "Age" }
                            th { "Duration" }
                            th { "Created" }
                            th { "Prompt" }
                        }
                    }
                    tbody {
                        @for task in &tasks { (row(task)) }
                    }
                }
            }
            @if tasks.is_empty() {
                p.empty { "No tasks yet. " a href="/" { "Enqueue one" } "." }
            }
        }
    };
    frame.render(&state, body).into_response()
}

/// One task's row.
fn row(task: &TaskSummary) -> maud::Markup {
    let age = human_duration(Utc::now() - task.created_at);
    let duration = layout::millis(u64::try_from(task.duration_ms).unwrap_or_default());
    html! {
        tr.task-row {
            td { (layout::task_link(task.task_id)) }
            td { (layout::badge(task.status.as_str())) }
            td.mono.nowrap {
                @match task.current_step { Some(step) => (step), None => span.muted { "—" } }
            }
            td.num { (task.attempts) }
            td.nowrap { (age) }
            td.nowrap { (duration) }
            td.nowrap { (layout::time(task.created_at)) }
            td.prompt title=(task.prompt) { (one_line(&task.prompt, PROMPT_CHARS)) }
        }
    }
}
