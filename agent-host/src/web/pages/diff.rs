//! `/task/{id}/diff/{step}?from=&to=`: what changed between two attempts of a step.

use agent_pipeline::{Attempt, StepId, TaskId};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Nav, Page};
use super::task::{default_pair, diff_form};
use crate::views::{AttemptDiff, DiffLineKind, ViewError};
use crate::web::api::find_diff;
use crate::web::{WebError, WebState, actions};

/// `?from=&to=`: the attempts to compare; either may be left out (or empty), and then the
/// two newest attempts with an artifact are compared.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct DiffPageQuery {
    /// The older attempt.
    from: Option<String>,
    /// The newer attempt.
    to: Option<String>,
}

/// `GET /task/{task_id}/diff/{step}?from=&to=`.
pub(crate) async fn diff(
    State(state): State<WebState>,
    Path((task_id, step)): Path<(String, String)>,
    query: Result<Query<DiffPageQuery>, QueryRejection>,
) -> Response {
    layout::respond(&state, render(&state, &task_id, &step, query).await)
}

async fn render(
    state: &WebState,
    task_id: &str,
    step: &str,
    query: Result<Query<DiffPageQuery>, QueryRejection>,
) -> Result<Markup, WebError> {
    let task_id = actions::parse_task_id(task_id)?;
    let step = actions::parse_step(step)?;
    let Query(query) = query.map_err(|e| WebError::BadRequest(e.body_text()))?;
    let from = attempt_number(query.from.as_deref())?;
    let to = attempt_number(query.to.as_deref())?;
    let available = attempts_with_artifacts(state, task_id, step).await?;
    let (from, to) = match (from, to) {
        (Some(from), Some(to)) => (from, to),
        (from, to) => {
            let (second, newest) = default_pair(&available);
            let to = to.or(newest.map(Attempt::get));
            // The attempt before `to` when only `to` is given.
            let from = from.or_else(|| {
                let to = to?;
                available.iter().rev().map(|a| a.get()).find(|n| *n < to)
            });
            let from = from.or(second.map(Attempt::get));
            match (from, to) {
                (Some(from), Some(to)) => (from, to),
                _ => {
                    return Err(WebError::NotFound(format!(
                        "{step} of task {task_id} has fewer than two attempts with an artifact: \
                         there is nothing to compare"
                    )));
                }
            }
        }
    };
    let diff = find_diff(state, task_id, step, from, to).await?;
    let frame = Page {
        title: &format!("Diff of {step}"),
        nav: Nav::Tasks,
        live: None,
    };
    let selected = (Some(diff.from), Some(diff.to));
    let body = html! {
        h1 { "Diff of " code { (step) } ": attempt " (diff.from) " → " (diff.to) }
        p.diff-nav {
            a href={ "/task/" (task_id) } { "Task " code { (task_id) } }
            " · "
            a href={ "/task/" (task_id) "#step-" (step.stage()) } { (step.stage().title()) " step" }
            " · "
            a href={ "/api/task/" (task_id) "/diff/" (step) "?from=" (diff.from) "&to=" (diff.to) } { "JSON" }
        }
        @if available.len() >= 2 {
            (diff_form(task_id, step, &available, selected))
        }
        p #diff-summary {
            span.diff-added-count { "+" (diff.added) } " "
            span.diff-removed-count { "−" (diff.removed) }
            " " span.muted { "lines of the artifact as text" }
        }
        @if diff.lines.is_empty() {
            p.muted { "The two attempts' artifacts read the same." }
        }
        (table(&diff))
    };
    Ok(frame.render(state, body))
}

/// An attempt number from the query; empty reads as not given.
fn attempt_number(text: Option<&str>) -> Result<Option<u32>, WebError> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(text) => text
            .parse::<u32>()
            .map(Some)
            .map_err(|_| WebError::BadRequest(format!("invalid attempt {text:?}: not a number"))),
    }
}

/// The attempts of `step` that have an artifact, oldest first.
async fn attempts_with_artifacts(
    state: &WebState,
    task_id: TaskId,
    step: StepId,
) -> Result<Vec<Attempt>, WebError> {
    let pipeline = state.pipeline();
    let records = pipeline
        .state()
        .attempts(task_id)
        .await
        .map_err(|e| WebError::from(ViewError::from(e)))?;
    let mut attempts: Vec<Attempt> = records
        .iter()
        .filter(|record| record.step_id() == step)
        .map(|record| record.attempt())
        .collect();
    attempts.sort();
    attempts.dedup();
    let mut with_artifacts = Vec::with_capacity(attempts.len());
    for attempt in attempts {
        let artifact = pipeline
            .artifacts()
            .read_attempt(task_id, step, attempt)
            .await
            .map_err(|e| WebError::from(ViewError::from(e)))?;
        if artifact.is_some() {
            with_artifacts.push(attempt);
        }
    }
    Ok(with_artifacts)
}

/// The diff as a table: old and new line numbers, a sign, the line.
fn table(diff: &AttemptDiff) -> Markup {
    html! {
        div.table-wrap.diff-scroll {
            table #diff .diff {
                thead {
                    tr {
                        th.ln scope="col" title={ "line in attempt " (diff.from) } { "#" (diff.from) }
                        th.ln scope="col" title={ "line in attempt " (diff.to) } { "#" (diff.to) }
                        th.sign scope="col" { span.visually-hidden { "change" } }
                        th.text scope="col" { "line" }
                    }
                }
                tbody {
                    @for line in &diff.lines {
                        @let (class, sign) = match line.kind {
                            DiffLineKind::Added => ("diff-added", "+"),
                            DiffLineKind::Removed => ("diff-removed", "−"),
                            DiffLineKind::Skipped => ("diff-skipped", "⋯"),
                            DiffLineKind::Same => ("diff-same", ""),
                        };
                        tr class=(class) {
                            td.ln { @if let Some(n) = line.old { (n) } }
                            td.ln { @if let Some(n) = line.new { (n) } }
                            td.sign { (sign) }
                            td.text { (line.text) }
                        }
                    }
                }
            }
        }
    }
}
