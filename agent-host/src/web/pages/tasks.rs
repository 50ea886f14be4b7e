//! `/tasks`: every task with its latest status and what it cost.

use std::collections::HashMap;

use agent_pipeline::TaskId;
use agent_pipeline::llm::Spend;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use maud::html;

use super::layout::{self, Nav, Page};
use super::spend;
use crate::commands::{human_duration, one_line};
use crate::views::{self, TaskSummary};
use crate::web::{WebState, text};

/// How much of a prompt the table shows (the whole prompt is in the row's tooltip).
const PROMPT_CHARS: usize = 80;

/// `GET /tasks`.
pub(crate) async fn tasks(State(state): State<WebState>) -> Response {
    let tasks = match views::task_summaries(state.pipeline().state().as_ref()).await {
        Ok(tasks) => tasks,
        Err(failure) => return layout::error_page(&state, &failure.into()),
    };
    // What each task spent is in its record, which the summaries leave out.
    let spends: HashMap<TaskId, Spend> = match state.pipeline().state().tasks(usize::MAX).await {
        Ok(records) => records.into_iter().map(|r| (r.task_id, r.spend)).collect(),
        Err(failure) => {
            return layout::error_page(&state, &views::ViewError::from(failure).into());
        }
    };
    let total: Spend = tasks
        .iter()
        .filter_map(|task| spends.get(&task.task_id).copied())
        .sum();
    let frame = Page {
        title: "Tasks",
        nav: Nav::Tasks,
        live: Some(layout::ALL_EVENTS.to_owned()),
    };
    let body = html! {
        h1 { "Tasks" }
        p.lead { "Every task the planner has recorded, newest first." }
        div #tasks data-live {
            p.count {
                (tasks.len()) @if tasks.len() == 1 { " task" } @else { " tasks" }
                @if !total.is_empty() {
                    span #tasks-total-cost { " · " (spend::cost(&total)) " in total" }
                }
            }
            div.table-wrap {
                table #tasks-table {
                    thead {
                        tr {
                            th { "Task" }
                            th { "Status" }
                            th { "Step" }
                            th.num { "Attempts" }
                            th.num { "Cost" }
                            th { "Age" }
                            th { "Duration" }
                            th { "Created" }
                            th { "Prompt" }
                        }
                    }
                    tbody {
                        @for task in &tasks { (row(task, spends.get(&task.task_id))) }
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

/// One task's row; its cost is "—" until it made an LLM call.
fn row(task: &TaskSummary, spent: Option<&Spend>) -> maud::Markup {
    let age = human_duration(Utc::now() - task.created_at);
    let duration = layout::millis(u64::try_from(task.duration_ms).unwrap_or_default());
    html! {
        tr.task-row {
            td { (layout::task_link(task.task_id)) }
            td { (layout::task_badge(task.status)) }
            td.mono.nowrap {
                @match task.current_step { Some(step) => (step), None => span.muted { "—" } }
            }
            td.num { (task.attempts) }
            @match spent.filter(|s| !s.is_empty()) {
                Some(spent) => td.num.cost title={
                    (spend::count(spent.usage.total_tokens)) " tokens in "
                    (spent.calls) " LLM " (spend::calls_word(spent.calls))
                } { (spend::cost(spent)) },
                None => td.num.cost { span.muted { "—" } },
            }
            td.nowrap { (age) }
            td.nowrap { (duration) }
            td.nowrap { (layout::time(task.created_at)) }
            td.prompt title=(task.prompt) { (text::user(&one_line(&task.prompt, PROMPT_CHARS))) }
        }
    }
}
