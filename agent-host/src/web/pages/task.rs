//! `/task/{id}`: one task, its steps, attempts and artifacts, what it spent against its
//! budget, and the decisions it awaits; `POST /task/{id}/replay`.
//!
//! Artifacts are rendered for reading, by stage: the design as text, the implementation's
//! files highlighted, the test run's real output, the review's verdict. Fields a stage does
//! not know are still shown, as text.

use std::collections::HashMap;

use agent_pipeline::execution::TaskWorkspace;
use agent_pipeline::output::{Implementation, TestReport};
use agent_pipeline::store::{Artifact, AttemptRecord, TaskFile, TaskRecord, TaskStatus};
use agent_pipeline::wire::{ReportEvent, ReportStatus, StepMode};
use agent_pipeline::{Attempt, Stage, StepId, TaskId};
use axum::Form;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::control;
use super::layout::{self, FlashKind, Nav, Page};
use super::repository;
use super::spend::{self, BudgetUse};
use super::variant::{self, ReplayForm};
use crate::views::{self, AttemptView, StepView, TaskDetails, ViewError};
use crate::web::actions::{self, TaskLookup};
use crate::web::highlight::highlight;
use crate::web::{WebError, WebState, security, text};

/// `?enqueued=1&replayed=<step>&continued=1&decided=<action>`: what the user just did, to say
/// so at the top.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct TaskQuery {
    /// `1` right after the task was enqueued from the home page.
    enqueued: Option<String>,
    /// The step whose replay was just requested.
    replayed: Option<String>,
    /// `1` when that replay continues with the later stages.
    continued: Option<String>,
    /// The decision just sent: `approve`, `reject` or `cancel`.
    decided: Option<String>,
}

/// `GET /task/{task_id}?enqueued=1&replayed=<step>`.
pub(crate) async fn task(
    State(state): State<WebState>,
    Path(task_id): Path<String>,
    query: Result<Query<TaskQuery>, QueryRejection>,
) -> Response {
    let task_id = match actions::parse_task_id(&task_id) {
        Ok(task_id) => task_id,
        Err(error) => return layout::error_page(&state, &error),
    };
    // The query only adds messages; a malformed one loses them, not the page.
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let enqueued = query.enqueued.as_deref() == Some("1");
    // Only a valid step is echoed back.
    let replayed = query
        .replayed
        .as_deref()
        .and_then(|step| step.trim().parse::<StepId>().ok());
    let continued = query.continued.as_deref() == Some("1");
    let decided = control::decided_notice(query.decided.as_deref());
    let notices = html! {
        @if let Some(decided) = decided {
            (layout::flash(FlashKind::Success, decided))
        }
        @if enqueued {
            div #enqueued .flash.success role="status" {
                "Task " code { (task_id) } " was enqueued on topic "
                code { (state.pipeline().topics().tasks) } "."
            }
        }
        @if let Some(step) = replayed {
            @if continued {
                (layout::flash(FlashKind::Success, &format!(
                    "Replay of {step} requested: its new attempt appears below when it \
                     finishes, and the later stages then run again from it."
                )))
            } @else {
                (layout::flash(FlashKind::Success, &format!(
                    "Replay of {step} requested: it runs on its own (the later steps are not \
                     run again), and its new attempt appears below when it finishes."
                )))
            }
        }
    };
    render_task(&state, task_id, notices, None).await
}

/// `POST /task/{task_id}/replay` with `step`, `reason`, the variant's fields (`model`,
/// `provider`, `prompt`, `input_step` and `input_json`, `continue_downstream`) and `csrf`:
/// 303 back to the step, or the task page again with the refusal and its status (400 for an
/// edited output that is not a JSON object, 409 when the step's inputs are missing).
pub(crate) async fn replay(
    State(state): State<WebState>,
    Path(task_id): Path<String>,
    form: Result<Form<ReplayForm>, FormRejection>,
) -> Response {
    let task_id = match actions::parse_task_id(&task_id) {
        Ok(task_id) => task_id,
        Err(error) => return layout::error_page(&state, &error),
    };
    match try_replay(&state, task_id, form).await {
        Ok((step, continued)) => Redirect::to(&format!(
            "/task/{task_id}?replayed={step}{}#step-{}",
            if continued { "&continued=1" } else { "" },
            step.stage()
        ))
        .into_response(),
        Err(error) => {
            let notice = layout::flash(FlashKind::Error, &error.to_string());
            render_task(&state, task_id, notice, Some(&error)).await
        }
    }
}

/// Sends the replay the form asks for; gives the step and whether the later stages follow.
async fn try_replay(
    state: &WebState,
    task_id: TaskId,
    form: Result<Form<ReplayForm>, FormRejection>,
) -> Result<(StepId, bool), WebError> {
    let Form(form) = form.map_err(|e| WebError::rejected(e.status(), e.body_text()))?;
    security::check_csrf(state, &form.csrf)?;
    let command = form.command(task_id)?;
    let continued = command.continue_downstream;
    let step = actions::replay(state, command).await?;
    Ok((step, continued))
}

/// The task page with `notices` at the top, answered with the status of `refusal` when a
/// request was refused (200 otherwise); when the task cannot be shown, the error page of the
/// refusal (its reason matters more to the user) or of the lookup.
pub(super) async fn render_task(
    state: &WebState,
    task_id: TaskId,
    notices: Markup,
    refusal: Option<&WebError>,
) -> Response {
    let lookup = match actions::find_task(state, task_id).await {
        Ok(lookup) => lookup,
        Err(error) => return layout::error_page(state, refusal.unwrap_or(&error)),
    };
    let status = refusal.map_or(StatusCode::OK, WebError::status);
    let shown = match lookup {
        TaskLookup::Found(details) => gather(state, *details)
            .await
            .map(|gathered| Shown::Found(Box::new(gathered))),
        TaskLookup::Queued(at) => Ok(Shown::Queued(at)),
    };
    let shown = match shown {
        Ok(shown) => shown,
        Err(error) => return layout::error_page(state, &error),
    };
    // Highlighting is CPU work that grows with the files: keep it off the async workers.
    let rendering = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || page(&state, task_id, &notices, &shown))
    };
    match rendering.await {
        Ok(markup) => (status, markup).into_response(),
        Err(error) => layout::error_page(
            state,
            &WebError::Internal(format!("the task page could not be rendered: {error}")),
        ),
    }
}

/// What the page shows of a task.
enum Shown {
    /// Recorded by the planner, with everything read from the stores.
    Found(Box<Gathered>),
    /// Enqueued by this server at that time, not recorded yet.
    Queued(DateTime<Utc>),
}

/// A task with the artifact and record of each attempt, what it spent and may spend, the
/// decision made about it, and the sources of its test files.
struct Gathered {
    details: TaskDetails,
    /// Per step (in the order of `details.steps`): each attempt's own artifact, when it has
    /// one.
    attempt_artifacts: Vec<HashMap<Attempt, Artifact>>,
    /// Per step (in the order of `details.steps`): each attempt's record: its LLM calls, and
    /// the request that says how a replay differed.
    attempt_records: Vec<HashMap<Attempt, AttemptRecord>>,
    /// The task's record, with what its calls spent.
    record: Option<TaskRecord>,
    /// `task.json`, with the task's budget and whether it needs approval.
    task_file: Option<TaskFile>,
    /// The approval, rejection or cancellation recorded for it.
    decision: Option<Decision>,
    /// The `error` event that ended it, when it ended in error.
    ending: Option<ReportEvent>,
    /// The test files of each tested commit: path and content.
    test_sources: HashMap<String, Vec<(String, String)>>,
}

/// A person's decision about a task, as the planner records it (`approval.json`,
/// `cancellation.json`).
#[derive(Debug, Clone, Deserialize)]
struct Decision {
    /// `approve`, `reject` or `cancel`.
    action: String,
    /// Who decided, when they said.
    #[serde(default)]
    by: Option<String>,
    /// Why, when they said.
    #[serde(default)]
    comment: Option<String>,
    /// When.
    #[serde(default)]
    decided_at: Option<DateTime<Utc>>,
}

/// Reads what the page shows beyond [`TaskDetails`]: older attempts' artifacts and records,
/// the task's spend, budget and decision, why it ended, and the test files of each test run.
async fn gather(state: &WebState, details: TaskDetails) -> Result<Gathered, WebError> {
    let pipeline = state.pipeline();
    let artifacts = pipeline.artifacts();
    let store_error = |e| WebError::from(ViewError::from(e));
    let task_id = details.task.task_id;
    let mut attempt_artifacts = Vec::with_capacity(details.steps.len());
    for step in &details.steps {
        let mut own = HashMap::new();
        for attempt in &step.attempts {
            let artifact = artifacts
                .read_attempt(task_id, step.step, attempt.attempt)
                .await
                .map_err(store_error)?;
            if let Some(artifact) = artifact {
                own.insert(attempt.attempt, artifact);
            }
        }
        attempt_artifacts.push(own);
    }
    let records = pipeline
        .state()
        .attempts(task_id)
        .await
        .map_err(store_error)?;
    let attempt_records = details
        .steps
        .iter()
        .map(|step| {
            records
                .iter()
                .filter(|record| record.step_id() == step.step)
                .map(|record| (record.attempt(), record.clone()))
                .collect()
        })
        .collect();
    let record = pipeline.state().task(task_id).await.map_err(store_error)?;
    let task_file = artifacts.read_task(task_id).await.map_err(store_error)?;
    let mut decision = None;
    for name in ["cancellation.json", "approval.json"] {
        // A record of another shape is left out rather than failing the page.
        if let Ok(Some(found)) = artifacts.read_record::<Decision>(task_id, name).await {
            decision = Some(found);
        }
    }
    // Why a task ended in error is said by its last `error` event; the report log is read
    // for such tasks only.
    let ending = match record.as_ref().map(|r| r.status) {
        Some(TaskStatus::Error | TaskStatus::Cancelled) => pipeline
            .report_log()
            .read_all()
            .await
            .map_err(store_error)?
            .into_iter()
            .rev()
            .find(|e| e.task_id == task_id && e.status == ReportStatus::Error),
        _ => None,
    };
    let test_sources = read_test_sources(state, task_id, &details, &attempt_artifacts).await;
    Ok(Gathered {
        details,
        attempt_artifacts,
        attempt_records,
        record,
        task_file,
        decision,
        ending,
        test_sources,
    })
}

impl Gathered {
    /// What the task's limits allow and what it used, when it has limits.
    fn budget_use(&self) -> Option<BudgetUse> {
        let budget = self.task_file.as_ref()?.budget?;
        if budget.is_unlimited() {
            return None;
        }
        let task = &self.details.task;
        let end = if task.status.is_final() {
            task.updated_at
        } else {
            Utc::now()
        };
        let rounds = self
            .attempt_records
            .iter()
            .flat_map(HashMap::values)
            .filter(|record| record.mode() == StepMode::Run)
            .map(|record| record.request.round)
            .max()
            .unwrap_or(1);
        Some(BudgetUse {
            budget,
            spend: self.record.as_ref().map(|r| r.spend).unwrap_or_default(),
            wall_secs: (end - task.created_at).num_milliseconds().max(0) as f64 / 1000.0,
            rounds,
        })
    }

    /// Why the task was stopped on purpose, when it was: `budget_exceeded`, `rejected` or
    /// `cancelled`.
    fn stop_reason(&self) -> Option<&str> {
        if let Some(reason) = self.ending.as_ref().and_then(|e| e.reason.as_deref()) {
            return Some(reason);
        }
        match self.details.task.status {
            TaskStatus::Cancelled => Some("cancelled"),
            TaskStatus::Error if self.decision.as_ref().is_some_and(|d| d.action == "reject") => {
                Some("rejected")
            }
            _ => None,
        }
    }
}

/// The content of the test files of every test report, read from the task's workspace at
/// the tested commit (the report itself names the files only). Anything unreadable is left
/// out: the page then lists the paths alone.
async fn read_test_sources(
    state: &WebState,
    task_id: TaskId,
    details: &TaskDetails,
    attempt_artifacts: &[HashMap<Attempt, Artifact>],
) -> HashMap<String, Vec<(String, String)>> {
    let mut sources = HashMap::new();
    let test = details
        .steps
        .iter()
        .position(|step| step.step.stage() == Stage::Test);
    let (Some(own), Some(step)) = (
        test.and_then(|i| attempt_artifacts.get(i)),
        test.and_then(|i| details.steps.get(i)),
    ) else {
        return sources;
    };
    let reports: Vec<TestReport> = own
        .values()
        .chain(step.artifact.as_ref())
        .filter_map(|artifact| artifact.output_as::<TestReport>().ok())
        .filter(|report| report.commit.is_some() && !report.test_files.is_empty())
        .collect();
    if reports.is_empty() {
        return sources;
    }
    // Opening creates a missing workspace: a page must not, so only an existing one is read.
    let data_dir = state.pipeline().data_dir();
    let git_dir = data_dir
        .join(task_id.to_string())
        .join("workspace")
        .join(".git");
    if !tokio::fs::metadata(&git_dir)
        .await
        .is_ok_and(|m| m.is_dir())
    {
        return sources;
    }
    let workspace = match TaskWorkspace::open(data_dir, task_id).await {
        Ok(workspace) => workspace,
        Err(error) => {
            tracing::debug!(%task_id, %error, "test files not shown: no workspace");
            return sources;
        }
    };
    for report in reports {
        let Some(commit) = report.commit else {
            continue;
        };
        if sources.contains_key(commit.as_str()) {
            continue;
        }
        match workspace.files_at(&commit).await {
            Ok(files) => {
                let tests = files
                    .into_iter()
                    .filter(|(path, _)| report.test_files.contains(path))
                    .map(|(path, bytes)| (path, String::from_utf8_lossy(&bytes).into_owned()))
                    .collect();
                sources.insert(commit.as_str().to_owned(), tests);
            }
            Err(error) => {
                tracing::debug!(%task_id, %error, commit = commit.as_str(), "test files not shown");
            }
        }
    }
    sources
}

/// The whole page.
fn page(state: &WebState, task_id: TaskId, notices: &Markup, shown: &Shown) -> Markup {
    let title = format!("Task {}", short_id(task_id));
    let frame = Page {
        title: &title,
        nav: Nav::Tasks,
        live: Some(format!("/api/events?task_id={task_id}")),
    };
    let steps: Vec<(StepId, Markup)> = match shown {
        Shown::Found(gathered) => gathered
            .details
            .steps
            .iter()
            .zip(&gathered.attempt_artifacts)
            .zip(&gathered.attempt_records)
            .map(|((step, own), records)| {
                (
                    step.step,
                    step_body(task_id, step, own, records, &gathered.test_sources),
                )
            })
            .collect(),
        Shown::Queued(_) => Stage::ALL
            .into_iter()
            .map(|stage| (StepId::v1(stage), html! { p.not-run { "not run yet" } }))
            .collect(),
    };
    let body = html! {
        h1.task-title { "Task " code { (task_id) } }
        (notices)
        div #task-header .task-header data-live {
            @match shown {
                Shown::Found(gathered) => (header(task_id, gathered)),
                Shown::Queued(at) => (queued_header(state, *at)),
            }
        }
        // The decisions the task allows now; live, so that Approve appears when the task
        // starts waiting for it (the script leaves a region alone while it holds the focus).
        div #task-actions .task-actions data-live {
            @match shown {
                Shown::Found(gathered) => (control::panel(state, task_id, gathered.details.task.status)),
                // Nothing to decide until the planner has recorded it; filled in live then.
                Shown::Queued(_) => {},
            }
        }
        section.prompt-section {
            h2 { "Prompt" }
            div #task-prompt data-live {
                @match shown {
                    Shown::Found(gathered) => {
                        (text::controls_warning(&gathered.details.task.prompt))
                        pre.prompt { (text::revealed(&gathered.details.task.prompt)) }
                    },
                    Shown::Queued(_) => p.muted { "The prompt shows here once the planner has recorded the task." },
                }
            }
        }
        @for (step, body) in &steps {
            section.step id={ "step-" (step.stage()) } {
                header.step-header {
                    h2 { (step.stage().title()) " " span.step-id { (step) } }
                }
                div.step-body id={ "step-" (step.stage()) "-body" } data-live { (body) }
                (variant::replay_form(state, task_id, *step))
            }
        }
    };
    frame.render(state, body)
}

/// The first eight characters of a task id, for titles.
fn short_id(task_id: TaskId) -> String {
    task_id.to_string().chars().take(8).collect()
}

/// The status (and why it ended, when it was stopped), step, times, spend, budget and
/// directory of a recorded task.
fn header(task_id: TaskId, gathered: &Gathered) -> Markup {
    let task = &gathered.details.task;
    let elapsed = (task.updated_at - task.created_at)
        .num_milliseconds()
        .max(0);
    let spend = gathered
        .record
        .as_ref()
        .map(|r| r.spend)
        .unwrap_or_default();
    let require_approval = gathered
        .task_file
        .as_ref()
        .is_some_and(|file| file.require_approval);
    let stop_reason = gathered.stop_reason();
    html! {
        p.task-status-line {
            span #task-status class={ "badge status-" (task.status.as_str()) } {
                (layout::words(task.status.as_str()))
            }
            @if let Some(reason) = stop_reason.filter(|r| *r != task.status.as_str()) {
                " " (layout::reason_badge(reason))
            }
            @if let Some(step) = task.current_step {
                " at " a href={ "#step-" (step.stage()) } { code { (step) } }
            }
        }
        @if let Some(ending) = &gathered.ending {
            p #task-ending .ending { (text::user(&ending.summary)) }
        }
        @if let Some(decision) = &gathered.decision {
            (decision_line(decision))
        }
        dl.meta.task-meta {
            dt { "Created" } dd { (layout::time(task.created_at)) }
            dt { "Updated" } dd { (layout::time(task.updated_at)) }
            dt { "Duration" } dd { (layout::millis(elapsed.unsigned_abs())) }
            dt { "Cost" }
            dd #task-cost {
                @if spend.is_empty() {
                    span.muted { "no LLM call yet" }
                } @else {
                    (spend::cost(&spend)) " · " (spend::tokens(&spend.usage)) " · "
                    (spend.calls) " LLM " (spend::calls_word(spend.calls))
                }
            }
            @if require_approval {
                dt { "Approval" } dd { "required before publishing" }
            }
            @if let Some(repo) = gathered.task_file.as_ref().and_then(|f| f.repository.as_ref()) {
                (repository::header_entries(repo))
            }
            dt { "Stored in" } dd { code.path { (text::user(&task.dir)) } }
            dt { "Raw" } dd { a href={ "/api/task/" (task_id) } { "JSON of this task" } }
        }
        @if let Some(used) = gathered.budget_use() {
            details.budget-details open {
                summary { "Budget" }
                (spend::budget_table(&used))
            }
        }
    }
}

/// Who decided what about the task, when, and why.
fn decision_line(decision: &Decision) -> Markup {
    let verb = match decision.action.as_str() {
        "approve" => "Approved",
        "reject" => "Rejected",
        "cancel" => "Cancelled",
        _ => "Decided",
    };
    html! {
        p #task-decision .decision-record {
            strong { (verb) }
            @if let Some(by) = &decision.by { " by " (text::user(by)) }
            @if let Some(at) = decision.decided_at { " at " (layout::time(at)) }
            @if let Some(comment) = &decision.comment { ": " q { (text::user(comment)) } }
        }
    }
}

/// The header of a task this server enqueued that the planner has not recorded yet.
fn queued_header(state: &WebState, at: DateTime<Utc>) -> Markup {
    html! {
        p.task-status-line {
            span #task-status class="badge status-queued" { "queued" }
        }
        p.queued-note {
            "Enqueued on topic " code { (state.pipeline().topics().tasks) } " at "
            (layout::time(at)) "; waiting for the planner to take it. This page fills in by "
            "itself as the steps run."
        }
    }
}

/// The changing part of a step: its attempts and its artifact.
fn step_body(
    task_id: TaskId,
    step: &StepView,
    own: &HashMap<Attempt, Artifact>,
    records: &HashMap<Attempt, AttemptRecord>,
    test_sources: &HashMap<String, Vec<(String, String)>>,
) -> Markup {
    if step.is_untouched() {
        return html! { p.not-run { "not run yet" } };
    }
    let canonical_attempt = step.artifact.as_ref().map(|a| a.attempt);
    let mut with_artifacts: Vec<Attempt> = own.keys().copied().collect();
    with_artifacts.sort();
    html! {
        @if !step.attempts.is_empty() {
            h3 { "Attempts" }
            ol.attempts {
                @for attempt in &step.attempts {
                    @let shown = AttemptShown {
                        artifact: own.get(&attempt.attempt),
                        record: records.get(&attempt.attempt),
                        is_canonical: canonical_attempt == Some(attempt.attempt),
                        // The attempt it is compared with: the one before it with an artifact.
                        previous: with_artifacts
                            .iter()
                            .rev()
                            .find(|a| **a < attempt.attempt)
                            .copied()
                            .filter(|_| own.contains_key(&attempt.attempt)),
                    };
                    (attempt_item(task_id, step, attempt, &shown, test_sources))
                }
            }
        }
        @if with_artifacts.len() >= 2 {
            (diff_form(task_id, step.step, &with_artifacts, default_pair(&with_artifacts)))
        }
        @match &step.artifact {
            Some(artifact) => {
                div.artifact {
                    h3 { "Artifact" " " span.muted { "(attempt " (artifact.attempt) ")" } }
                    (artifact_meta(task_id, artifact, step.file.as_deref()))
                    (render_artifact(artifact, test_sources))
                }
            }
            None => p.muted { "No artifact yet." },
        }
    }
}

/// What the page knows of one attempt beyond its [`AttemptView`].
struct AttemptShown<'a> {
    /// Its own artifact, when it has one.
    artifact: Option<&'a Artifact>,
    /// Its record: LLM calls, and the request with the replay's variant.
    record: Option<&'a AttemptRecord>,
    /// Whether its artifact is the step's current one.
    is_canonical: bool,
    /// The attempt before it that has an artifact, when both have one.
    previous: Option<Attempt>,
}

/// One attempt: what ran, how it ended, what it spent, how a replay differed, and its own
/// artifact when it is not the current one.
fn attempt_item(
    task_id: TaskId,
    step: &StepView,
    attempt: &AttemptView,
    shown: &AttemptShown<'_>,
    test_sources: &HashMap<String, Vec<(String, String)>>,
) -> Markup {
    let is_canonical = shown.is_canonical;
    // A step's only attempt lives in the canonical file alone.
    let file = attempt
        .file
        .as_deref()
        .or(step.file.as_deref().filter(|_| is_canonical));
    let calls = shown.record.map_or(&[][..], |r| r.calls.as_slice());
    let spent = spend::attempt_spend(calls, shown.artifact);
    let variant = shown
        .record
        .and_then(|r| r.request.variant.as_ref())
        .or_else(|| shown.artifact.and_then(|a| a.variant.as_ref()));
    let asked_model = variant
        .and_then(|v| v.model.as_deref())
        .filter(|asked| attempt.model.as_deref() != Some(*asked));
    html! {
        li.attempt data-attempt=(attempt.attempt) {
            div.attempt-line {
                span.attempt-number { "#" (attempt.attempt) }
                span.attempt-mode { (mode_name(attempt.mode)) }
                (layout::badge(attempt.status.as_str()))
                @if let Some(model) = &attempt.model {
                    span.attempt-model title="model" { (text::user(model)) }
                }
                @if let Some(asked) = asked_model {
                    span.attempt-asked title="the model the replay asked for" { "asked for " (text::user(asked)) }
                }
                @if let Some(spent) = &spent {
                    span.attempt-tokens { (spend::tokens(&spent.usage)) }
                    span.attempt-cost title="cost of its LLM calls" { (spend::cost(spent)) }
                }
                @if let Some(ms) = attempt.duration_ms {
                    span.attempt-duration title="duration" { (layout::millis(ms)) }
                }
                @if let Some(at) = attempt.finished_at {
                    span.attempt-finished { "finished " (layout::time(at)) }
                }
                @if is_canonical {
                    span.attempt-current { "current artifact" }
                }
                @if let Some(previous) = shown.previous {
                    a.attempt-compare
                        href={ "/task/" (task_id) "/diff/" (step.step) "?from=" (previous) "&to=" (attempt.attempt) } {
                        "Compare with #" (previous)
                    }
                }
            }
            @if let Some(variant) = variant {
                (variant::variant_summary(variant))
            }
            @if let Some(error) = &attempt.error {
                pre.attempt-error { (text::user(error)) }
            }
            @if let Some(file) = file {
                p.attempt-file { code.path { (text::user(file)) } }
            }
            @if let Some(artifact) = shown.artifact.filter(|_| !is_canonical) {
                details.attempt-artifact {
                    summary { "Artifact of attempt " (attempt.attempt) }
                    (artifact_meta_short(artifact))
                    (render_artifact(artifact, test_sources))
                }
            }
        }
    }
}

/// The second-newest and the newest of `with_artifacts` (sorted), the attempts a diff
/// compares unless told otherwise.
pub(super) fn default_pair(with_artifacts: &[Attempt]) -> (Option<Attempt>, Option<Attempt>) {
    let newest = with_artifacts.last().copied();
    let second = with_artifacts
        .len()
        .checked_sub(2)
        .and_then(|i| with_artifacts.get(i))
        .copied();
    (second, newest)
}

/// The form that opens the comparison of two of `with_artifacts`, with `from` and `to`
/// selected.
pub(super) fn diff_form(
    task_id: TaskId,
    step: StepId,
    with_artifacts: &[Attempt],
    (from, to): (Option<Attempt>, Option<Attempt>),
) -> Markup {
    let options = |selected: Option<Attempt>| {
        html! {
            @for attempt in with_artifacts {
                option value=(attempt) selected[Some(*attempt) == selected] { "attempt " (attempt) }
            }
        }
    };
    html! {
        form.diff-form method="get" action={ "/task/" (task_id) "/diff/" (step) } {
            label { "Compare " select name="from" { (options(from)) } }
            label { " with " select name="to" { (options(to)) } }
            " "
            button.diff-button type="submit" { "Compare" }
        }
    }
}

/// Who made an artifact, when, and why (replay reason, round, gate feedback), with its file.
fn artifact_meta(task_id: TaskId, artifact: &Artifact, file: Option<&str>) -> Markup {
    html! {
        dl.meta.artifact-meta {
            (meta_entries(artifact))
            @if let Some(file) = file {
                dt { "Stored as" } dd { code.path { (text::user(file)) } }
            }
            dt { "Raw" } dd { a href={ "/api/task/" (task_id) } { "JSON" } }
        }
        (why(artifact))
    }
}

/// [`artifact_meta`] for an older attempt, whose file the attempt already names.
fn artifact_meta_short(artifact: &Artifact) -> Markup {
    html! {
        dl.meta.artifact-meta { (meta_entries(artifact)) }
        (why(artifact))
    }
}

fn meta_entries(artifact: &Artifact) -> Markup {
    html! {
        dt { "Model" } dd { (text::user(&artifact.model)) }
        dt { "Created" } dd { (layout::time(artifact.created_at)) }
        dt { "Took" } dd { (layout::millis(artifact.duration_ms)) }
        dt { "Tokens" } dd { (spend::tokens(&artifact.usage)) }
        dt { "Cost" } dd { (spend::usd(artifact.cost_usd)) }
        @if artifact.round > 1 {
            dt { "Round" } dd { (artifact.round) }
        }
    }
}

/// Why the attempt ran: a replay's reason, the gates' feedback of a later round.
fn why(artifact: &Artifact) -> Markup {
    html! {
        @if let Some(reason) = &artifact.replay_reason {
            p.replay-reason { "Replayed because: " q { (text::user(reason)) } }
        }
        @if let Some(feedback) = &artifact.feedback {
            div.feedback {
                h4 { "Feedback of round " (artifact.round.saturating_sub(1)) }
                pre.feedback-text { (text::revealed(feedback)) }
            }
        }
    }
}

/// The stage output of an artifact, for reading.
fn render_artifact(
    artifact: &Artifact,
    test_sources: &HashMap<String, Vec<(String, String)>>,
) -> Markup {
    let output = &artifact.output;
    let mut used: Vec<&'static str> = Vec::new();
    let body = match artifact.step.stage() {
        Stage::Design => design(output, &mut used),
        Stage::Implement => implementation(output, &mut used),
        Stage::Test => test_report(artifact, test_sources, &mut used),
        Stage::Review => review(output, &mut used),
    };
    let retrieved = repository::retrieved(output, &mut used);
    let rest = other_fields(artifact, &used);
    html! {
        div class={ "stage-output stage-" (artifact.step.stage()) } {
            (body)
            @if let Some(retrieved) = retrieved { (retrieved) }
            @if let Some(rest) = rest {
                @if used.is_empty() {
                    pre.artifact-text { (text::revealed(&rest)) }
                } @else {
                    details.other-fields {
                        summary { "Other fields" }
                        pre.artifact-text { (text::revealed(&rest)) }
                    }
                }
            }
        }
    }
}

/// The fields of the output that the stage's rendering did not show, as text.
fn other_fields(artifact: &Artifact, used: &[&str]) -> Option<String> {
    let rest: Map<String, Value> = artifact
        .output
        .iter()
        .filter(|(name, _)| !used.contains(&name.as_str()))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    if rest.is_empty() {
        return None;
    }
    let mut shown = artifact.clone();
    shown.output = rest;
    Some(views::artifact_text(&shown))
}

/// The text of a string field, when it is one (and marks it shown).
fn text_field<'a>(
    output: &'a Map<String, Value>,
    name: &'static str,
    used: &mut Vec<&'static str>,
) -> Option<&'a str> {
    let text = output.get(name)?.as_str()?;
    used.push(name);
    Some(text)
}

/// The items of a list-of-strings field, when it is one (and marks it shown).
fn list_field<'a>(
    output: &'a Map<String, Value>,
    name: &'static str,
    used: &mut Vec<&'static str>,
) -> Option<Vec<&'a str>> {
    let items = output.get(name)?.as_array()?;
    let texts: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
    let texts = texts?;
    used.push(name);
    Some(texts)
}

/// The `{path, content}` items of a files field, when it is one (and marks it shown).
fn files_field<'a>(
    output: &'a Map<String, Value>,
    name: &'static str,
    used: &mut Vec<&'static str>,
) -> Option<Vec<(&'a str, &'a str)>> {
    let items = output.get(name)?.as_array()?;
    let files: Option<Vec<(&str, &str)>> = items
        .iter()
        .map(|item| Some((item.get("path")?.as_str()?, item.get("content")?.as_str()?)))
        .collect();
    let files = files?;
    used.push(name);
    Some(files)
}

fn design(output: &Map<String, Value>, used: &mut Vec<&'static str>) -> Markup {
    html! {
        @if let Some(summary) = text_field(output, "design_summary", used) {
            h4 { "Design" }
            p.summary-text { (text::user(summary)) }
        }
        @if let Some(files) = list_field(output, "files_touched", used) {
            h4 { "Files touched" }
            @if files.is_empty() {
                p.muted { "none" }
            } @else {
                ul.files-touched { @for file in files { li { code.path { (text::user(file)) } } } }
            }
        }
    }
}

fn implementation(output: &Map<String, Value>, used: &mut Vec<&'static str>) -> Markup {
    let files = files_field(output, "files", used);
    // Snippets have no file name: colour them as the change's first file.
    let snippet_path = files
        .as_ref()
        .and_then(|files| files.first())
        .map_or("snippet.txt", |(path, _)| *path);
    let recorded = output.get(Implementation::WORKSPACE_FIELD);
    let workspace = recorded
        .and_then(|w| w.get("commit"))
        .and_then(Value::as_str);
    if workspace.is_some() {
        used.push(Implementation::WORKSPACE_FIELD);
    }
    // On a repository the change is a diff from its base.
    let change = recorded.and_then(repository::workspace_diff);
    html! {
        @if let Some(summary) = text_field(output, "diff_summary", used) {
            h4 { "Summary" }
            p.summary-text { (text::user(summary)) }
        }
        @if let Some(commit) = workspace {
            p.commit { "Committed in the task's workspace as " (commit_id(commit)) "." }
        }
        @if let Some(change) = change { (change) }
        @if let Some(files) = &files {
            h4 { "Files (" (files.len()) ")" }
            @for (path, content) in files {
                details.file open {
                    summary { code.path { (text::user(path)) } }
                    (highlight(path, content))
                }
            }
        }
        @if let Some(snippets) = list_field(output, "code_snippets", used) {
            @if !snippets.is_empty() {
                details.code-snippets {
                    summary { "Code snippets (" (snippets.len()) ")" }
                    @for snippet in snippets { (highlight(snippet_path, snippet)) }
                }
            }
        }
    }
}

fn test_report(
    artifact: &Artifact,
    test_sources: &HashMap<String, Vec<(String, String)>>,
    used: &mut Vec<&'static str>,
) -> Markup {
    let Ok(report) = artifact.output_as::<TestReport>() else {
        // Not a test report (a custom agent's output, say): every field is shown as text.
        return html! {};
    };
    used.extend([
        "tests_added",
        "passed",
        "failed",
        "errors",
        "skipped",
        "counted_from",
        "summary",
        "test_files",
        "commit",
        "run",
        "repository_tests",
    ]);
    let run = &report.run;
    let sources = report
        .commit
        .as_ref()
        .and_then(|commit| test_sources.get(commit.as_str()));
    let ended_well = !run.timed_out && run.exit_code == Some(0);
    html! {
        p.test-counts {
            @match &report.counted_from {
                Some(source) => {
                    span.count-total { (report.tests_added) " run" } " · "
                    span class={ "count-passed" @if report.passed > 0 { " good" } } {
                        (report.passed) " passed"
                    } " · "
                    span class={ "count-failed" @if report.failed > 0 { " bad" } } {
                        (report.failed) " failed"
                        @if report.errors > 0 { " (" (report.errors) " with errors)" }
                    }
                    @if report.skipped > 0 { " · " span.count-skipped { (report.skipped) " skipped" } }
                    " " span.muted { "(counted from " (text::user(source)) ")" }
                }
                None => span.bad { "No test summary could be read from the run's output." },
            }
            " "
            @if report.all_passed() {
                span class="badge status-passed" { "passed" }
            } @else {
                span class="badge status-failed" { "not passed" }
            }
        }
        @if !report.summary.trim().is_empty() {
            p.summary-text { (text::user(&report.summary)) }
        }
        dl.meta.test-run {
            dt { "Command" } dd { code { (text::user(&run.command)) } }
            dt { "Exit" } dd class=(if ended_well { "good" } else { "bad" }) { (run.ending()) }
            dt { "Ran for" } dd { (layout::millis(run.duration_ms)) }
            dt { "Sandbox" } dd { (text::user(&run.sandbox)) }
            @if let Some(commit) = &report.commit {
                dt { "Commit" } dd { (commit_id(commit.as_str())) }
            }
        }
        @if let Some(tests) = &report.repository_tests {
            (repository::repository_tests(tests))
        }
        h4 { "Output" }
        @if run.output_omitted_bytes > 0 {
            p.note {
                (run.output_omitted_bytes) " bytes of output were cut out (the head and the tail are kept)."
            }
        }
        (text::controls_warning(&run.output))
        pre.test-output { (text::revealed(&run.output)) }
        @if !report.test_files.is_empty() {
            h4 { "Test files" }
            @for path in &report.test_files {
                @match sources.and_then(|files| files.iter().find(|(p, _)| p == path)) {
                    Some((path, content)) => {
                        details.file open {
                            summary { code.path { (text::user(path)) } }
                            (highlight(path, content))
                        }
                    }
                    None => p { code.path { (text::user(path)) } },
                }
            }
        }
    }
}

fn review(output: &Map<String, Value>, used: &mut Vec<&'static str>) -> Markup {
    let approved = output.get("approved").and_then(Value::as_bool);
    if approved.is_some() {
        used.push("approved");
    }
    let comments = list_field(output, "comments", used);
    // Some reviewers answer with one text rather than a list.
    let comment_text = match comments {
        Some(_) => None,
        None => text_field(output, "comments", used),
    };
    html! {
        @match approved {
            Some(true) => p.verdict { span class="badge status-approved" { "approved" } },
            Some(false) => p.verdict { span class="badge status-changes-requested" { "changes requested" } },
            None => {},
        }
        @if let Some(comments) = comments {
            h4 { "Comments" }
            @if comments.is_empty() {
                p.muted { "none" }
            } @else {
                ul.review-comments { @for comment in comments { li { (text::user(comment)) } } }
            }
        }
        @if let Some(text) = comment_text {
            h4 { "Comments" }
            p.summary-text.review-comments { (text::user(text)) }
        }
        @if let Some(commit) = text_field(output, "reviewed_commit", used) {
            p.commit { "Reviewed commit " (commit_id(commit)) "." }
        }
    }
}

/// A commit id, shortened, with the whole id as its title.
fn commit_id(id: &str) -> Markup {
    let short: String = id.chars().take(12).collect();
    html! { code.commit-id title=(id) { (text::user(&short)) } }
}

/// `pipeline` or `replay`.
fn mode_name(mode: StepMode) -> &'static str {
    match mode {
        StepMode::Run => "pipeline",
        StepMode::Replay => "replay",
    }
}

/// A duration for people: `850 ms`, `12.3 s`, `4 min 05 s`.
#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(stage: &str, output: Value) -> Artifact {
        let mut value = serde_json::json!({
            "task_id": "3f0c8a52-6a3e-4c1e-9d1e-5b8f2f6f4a10",
            "step": format!("{stage}@v1"),
            "attempt": 1,
            "model": "offline",
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            "created_at": "2026-11-24T10:00:00Z",
            "duration_ms": 5
        });
        if let (Some(all), Value::Object(fields)) = (value.as_object_mut(), output) {
            all.extend(fields);
        }
        serde_json::from_value(value).expect("an artifact")
    }

    #[test]
    fn a_design_reads_as_text_and_unknown_fields_are_still_shown() {
        let design = artifact(
            "design",
            serde_json::json!({
                "design_summary": "One <file>",
                "files_touched": ["hello.py"],
                "risk": "low"
            }),
        );
        let html = render_artifact(&design, &HashMap::new()).into_string();
        assert!(html.contains("One &lt;file&gt;"), "{html}");
        assert!(
            html.contains("<li><code class=\"path\"><bdi>hello.py</bdi></code></li>"),
            "{html}"
        );
        assert!(html.contains("Other fields"), "{html}");
        assert!(html.contains("risk:\nlow"), "{html}");
    }

    #[test]
    fn review_comments_may_be_a_list_or_a_text() {
        let listed = artifact(
            "review",
            serde_json::json!({"approved": false, "comments": ["Add a test"]}),
        );
        let html = render_artifact(&listed, &HashMap::new()).into_string();
        assert!(html.contains("changes requested"), "{html}");
        assert!(html.contains("<li><bdi>Add a test</bdi></li>"), "{html}");
        assert!(!html.contains("Other fields"), "{html}");
        let text = artifact(
            "review",
            serde_json::json!({"approved": true, "comments": "Fine."}),
        );
        let html = render_artifact(&text, &HashMap::new()).into_string();
        assert!(html.contains("status-approved"), "{html}");
        assert!(html.contains("Fine."), "{html}");
        assert!(!html.contains("Other fields"), "{html}");
    }

    #[test]
    fn an_output_of_another_shape_falls_back_to_text() {
        let odd = artifact("test", serde_json::json!({"verdict": "it ran"}));
        let html = render_artifact(&odd, &HashMap::new()).into_string();
        assert!(
            html.contains("<pre class=\"artifact-text\"><bdi>verdict:\nit ran\n</bdi></pre>"),
            "{html}"
        );
    }
}
