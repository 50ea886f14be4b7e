//! `/task/{id}/diff/{step}?from=&to=`: two attempts of a step side by side — the variant
//! each ran as (model, provider, what was edited), what it spent and how long it took — and
//! what changed in their output.

use agent_pipeline::llm::Spend;
use agent_pipeline::store::{Artifact, AttemptRecord};
use agent_pipeline::wire::StepMode;
use agent_pipeline::{Attempt, StepId, TaskId};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Nav, Page};
use super::spend;
use super::task::{default_pair, diff_form};
use super::variant::edited_words;
use crate::views::{AttemptDiff, DiffLineKind, ViewError};
use crate::web::api::find_diff;
use crate::web::{WebError, WebState, actions, text};

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
    let sides = [
        side(state, task_id, step, diff.from).await?,
        side(state, task_id, step, diff.to).await?,
    ];
    let frame = Page {
        title: &format!("Compare {step}"),
        nav: Nav::Tasks,
        live: None,
    };
    let selected = (Some(diff.from), Some(diff.to));
    let body = html! {
        h1 { "Compare " code { (step) } ": attempt " (diff.from) " → " (diff.to) }
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
        (compare_table(&sides))
        h2.diff-title { "What changed in the output" }
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

/// One side of the comparison: an attempt with its artifact and its record.
struct Side {
    attempt: Attempt,
    artifact: Option<Artifact>,
    record: Option<AttemptRecord>,
}

impl Side {
    /// What the attempt's calls spent (what its artifact says, for one recorded without
    /// calls).
    fn spend(&self) -> Option<Spend> {
        let calls = self.record.as_ref().map_or(&[][..], |r| r.calls.as_slice());
        spend::attempt_spend(calls, self.artifact.as_ref())
    }

    /// How the attempt differed from the run, when it was a replay.
    fn variant(&self) -> Option<&agent_pipeline::wire::Variant> {
        self.record
            .as_ref()
            .and_then(|r| r.request.variant.as_ref())
            .or_else(|| self.artifact.as_ref().and_then(|a| a.variant.as_ref()))
    }

    /// The model that answered, and the one the replay asked for when it differs.
    fn model(&self) -> Markup {
        let ran = self
            .artifact
            .as_ref()
            .map(|a| a.model.as_str())
            .or_else(|| self.record.as_ref().and_then(|r| r.model.as_deref()));
        let asked = self.variant().and_then(|v| v.model.as_deref());
        html! {
            @match ran {
                Some(model) => code.model { (text::user(model)) },
                None => span.muted { "—" },
            }
            @if let Some(asked) = asked.filter(|asked| Some(*asked) != ran) {
                " " span.asked-model { "(asked for " code { (text::user(asked)) } ")" }
            }
        }
    }

    /// The provider the replay named, else the one its calls went to, else the default.
    fn provider(&self) -> String {
        if let Some(provider) = self.variant().and_then(|v| v.provider.clone()) {
            return provider;
        }
        let calls = self
            .record
            .as_ref()
            .map(|r| r.calls.as_slice())
            .filter(|calls| !calls.is_empty())
            .or_else(|| self.artifact.as_ref().map(|a| a.llm_calls.as_slice()))
            .unwrap_or_default();
        calls
            .iter()
            .find_map(|call| call.provider.clone())
            .unwrap_or_else(|| "default".to_owned())
    }
}

/// Reads one attempt of `step`: its own artifact and its record.
async fn side(
    state: &WebState,
    task_id: TaskId,
    step: StepId,
    attempt: Attempt,
) -> Result<Side, WebError> {
    let pipeline = state.pipeline();
    let store_error = |e| WebError::from(ViewError::from(e));
    let artifact = pipeline
        .artifacts()
        .read_attempt(task_id, step, attempt)
        .await
        .map_err(store_error)?;
    let record = pipeline
        .state()
        .attempts(task_id)
        .await
        .map_err(store_error)?
        .into_iter()
        .find(|r| r.step_id() == step && r.attempt() == attempt);
    Ok(Side {
        attempt,
        artifact,
        record,
    })
}

/// The two attempts side by side: how each ran, what it spent, how long it took.
fn compare_table(sides: &[Side; 2]) -> Markup {
    let row = |key: &str, name: &str, cell: &dyn Fn(&Side) -> Markup| {
        html! {
            tr data-row=(key) {
                th scope="row" { (name) }
                @for (side, class) in sides.iter().zip(["compare-from", "compare-to"]) {
                    td class=(class) { (cell(side)) }
                }
            }
        }
    };
    let dash = || html! { span.muted { "—" } };
    let any_pinned = sides
        .iter()
        .any(|s| s.variant().is_some_and(|v| !v.pinned.is_empty()));
    html! {
        div.table-wrap {
            table #compare .compare {
                caption { "The two attempts side by side" }
                thead {
                    tr {
                        th scope="col" { span.visually-hidden { "what" } }
                        @for side in sides {
                            th scope="col" data-attempt=(side.attempt) { "Attempt " (side.attempt) }
                        }
                    }
                }
                tbody {
                    (row("mode", "Ran as", &|s| html! {
                        @match s.record.as_ref().map(|r| r.mode()) {
                            Some(StepMode::Replay) => "replay",
                            Some(StepMode::Run) => "pipeline",
                            None => (dash()),
                        }
                        @if let Some(reason) = s.artifact.as_ref().and_then(|a| a.replay_reason.as_deref()) {
                            br; span.muted { "because: " q { (text::user(reason)) } }
                        }
                    }))
                    (row("model", "Model", &|s| s.model()))
                    (row("provider", "Provider", &|s| html! { (text::user(&s.provider())) }))
                    (row("edited", "Edited", &|s| html! { (edited_words(s.variant())) }))
                    @if any_pinned {
                        (row("pinned", "Read", &|s| html! {
                            @match s.variant().filter(|v| !v.pinned.is_empty()) {
                                Some(variant) => {
                                    @for (i, (step, attempt)) in variant.pinned.iter().enumerate() {
                                        @if i > 0 { ", " }
                                        code { (step) } " #" (attempt)
                                    }
                                }
                                None => (dash()),
                            }
                        }))
                    }
                    (row("tokens", "Tokens (prompt / completion)", &|s| html! {
                        @match s.spend() {
                            Some(spent) => {
                                (spend::count(spent.usage.prompt_tokens)) " / "
                                (spend::count(spent.usage.completion_tokens))
                            }
                            None => (dash()),
                        }
                    }))
                    (row("cost", "Cost", &|s| html! {
                        @match s.spend() {
                            Some(spent) => (spend::cost(&spent)),
                            None => (dash()),
                        }
                    }))
                    (row("calls", "LLM calls", &|s| html! {
                        @match s.spend().filter(|spent| spent.calls > 0) {
                            Some(spent) => (spent.calls),
                            None => (dash()),
                        }
                    }))
                    (row("duration", "Duration", &|s| html! {
                        @match s.artifact.as_ref().map(|a| a.duration_ms)
                            .or_else(|| s.record.as_ref().and_then(|r| r.duration_ms)) {
                            Some(ms) => (layout::millis(ms)),
                            None => (dash()),
                        }
                    }))
                    (row("created", "Stored", &|s| html! {
                        @match &s.artifact {
                            Some(artifact) => (layout::time(artifact.created_at)),
                            None => (dash()),
                        }
                    }))
                }
            }
        }
    }
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
                            td.text { (text::revealed(&line.text)) }
                        }
                    }
                }
            }
        }
    }
}
