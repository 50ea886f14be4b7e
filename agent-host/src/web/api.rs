//! The JSON API: the same data as the pages, under `/api/…`, and the health probes.

use std::collections::BTreeMap;

use agent_pipeline::budget::Budget;
use agent_pipeline::wire::{ControlAction, NewTask, ReplayStep, Repository, TaskControl};
use agent_pipeline::{Attempt, Redriven, StepId, TaskId};
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::actions::{self, TaskLookup};
use super::error::ApiError;
use super::{WebError, WebState};
use crate::views::{
    self, AttemptDiff, DeadLetterPage, Providers, ReportFilter, ReportPage, TaskDetails,
};

/// How many reports `GET /api` returns.
const RECENT_REPORTS: usize = 20;

/// `POST /api/tasks`.
#[derive(Debug, Serialize, Deserialize)]
pub struct EnqueueRequest {
    /// What to build.
    pub prompt: String,
    /// Limits of this task, over the host's defaults (`TASK_MAX_*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// Whether the task waits for approval before its change is published (absent: the
    /// host's `REQUIRE_APPROVAL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_approval: Option<bool>,
    /// The existing repository the task changes (`url`, optional `base_ref` and
    /// `test_command`); absent: the task starts from an empty workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<Repository>,
}

/// The answer to `POST /api/tasks`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Enqueued {
    /// The new task.
    pub task_id: TaskId,
    /// The topic it was published to.
    pub topic: String,
    /// Its page.
    pub url: String,
}

/// `POST /api/task/{id}/replay`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReplayRequest {
    /// The step to run again, e.g. `implement@v1`.
    pub step: String,
    /// Why, recorded in the new attempt.
    #[serde(default)]
    pub reason: Option<String>,
    /// Another model than the configured one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Another provider than the default one (one of `GET /api/providers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// An edited task prompt, for this attempt only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Edited outputs of upstream steps (by step id, e.g. `design@v1`), each a JSON object,
    /// used instead of their artifacts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<StepId, serde_json::Map<String, serde_json::Value>>,
    /// Whether the later stages run again from the new attempt once it succeeds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub continue_downstream: bool,
}

/// `POST /api/task/{id}/approve`, `/reject` and `/cancel`: who decided and why, both
/// optional (the body may be left out).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ControlRequest {
    /// Who decided, for the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Why, for the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// The answer to `POST /api/task/{id}/approve`, `/reject` and `/cancel`: the decision was
/// checked and sent; the task's next report says what came of it.
#[derive(Debug, Serialize, Deserialize)]
pub struct ControlQueued {
    /// The task.
    pub task_id: TaskId,
    /// `approve`, `reject` or `cancel`.
    pub action: ControlAction,
}

/// The answer to `POST /api/task/{id}/replay`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReplayQueued {
    /// The task.
    pub task_id: TaskId,
    /// The step that will run again.
    pub step: StepId,
}

/// `?from=1&to=2` of a diff.
#[derive(Debug, Deserialize)]
pub(crate) struct DiffQuery {
    /// The older attempt.
    from: u32,
    /// The newer attempt.
    to: u32,
}

type ApiResult<T> = Result<T, ApiError>;

fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, WebError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| WebError::BadRequest(e.body_text()))
}

fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, WebError> {
    body.map(|Json(b)| b)
        .map_err(|e| WebError::rejected(e.status(), e.body_text()))
}

/// `GET /healthz`: the process answers.
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: the bus and the state store answer (503 with the reason when not).
pub(crate) async fn readyz(State(state): State<WebState>) -> Response {
    match state.pipeline().ready().await {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "error": error.to_string() })),
        )
            .into_response(),
    }
}

/// `GET /api`: the most recent reports, whether this server takes work, the providers a
/// replay may name and the limits of tasks that set none of their own.
pub(crate) async fn index(State(state): State<WebState>) -> ApiResult<Json<serde_json::Value>> {
    let filter = ReportFilter {
        per_page: Some(RECENT_REPORTS),
        ..ReportFilter::default()
    };
    let page = views::report_page(state.pipeline().report_log(), &filter).await?;
    Ok(Json(json!({
        "recent_reports": page.events,
        "accepts_work": state.settings().read_only.is_none(),
        "read_only": state.settings().read_only,
        "providers": state.pipeline().providers(),
        "default_budget": state.pipeline().default_budget(),
    })))
}

/// `GET /api/providers`: the providers a replay may name, the price of each priced model,
/// and the limits of tasks that set none of their own.
pub(crate) async fn providers(State(state): State<WebState>) -> Json<Providers> {
    Json(views::providers(state.pipeline()))
}

/// `GET /api/reports?status=&task_id=&page=&per_page=`.
pub(crate) async fn reports(
    State(state): State<WebState>,
    filter: Result<Query<ReportFilter>, QueryRejection>,
) -> ApiResult<Json<ReportPage>> {
    let filter = query(filter)?;
    Ok(Json(
        views::report_page(state.pipeline().report_log(), &filter).await?,
    ))
}

/// `GET /api/tasks`: `{"tasks": […]}`, newest first.
pub(crate) async fn tasks(State(state): State<WebState>) -> ApiResult<Json<serde_json::Value>> {
    let tasks = views::task_summaries(state.pipeline().state().as_ref()).await?;
    Ok(Json(json!({ "tasks": tasks })))
}

/// `POST /api/tasks` with `{"prompt": "…"}` (and optionally `"budget": {…}`,
/// `"require_approval": true`, `"repository": {"url": "…", "base_ref": "main"}`): 202 and
/// where the task went; 400 for an empty prompt, limits that cannot be used or a repository
/// that cannot be cloned as given.
pub(crate) async fn enqueue(
    State(state): State<WebState>,
    request: Result<Json<EnqueueRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Enqueued>)> {
    let request = body(request)?;
    let task = NewTask {
        budget: request.budget,
        require_approval: request.require_approval,
        repository: request.repository,
        ..NewTask::new(request.prompt)
    };
    let task_id = actions::enqueue(&state, task).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Enqueued {
            task_id,
            topic: state.pipeline().topics().tasks.clone(),
            url: format!("/task/{task_id}"),
        }),
    ))
}

/// `GET /api/task/{id}`.
pub(crate) async fn task(
    State(state): State<WebState>,
    Path(task_id): Path<String>,
) -> ApiResult<Json<TaskDetails>> {
    let task_id = actions::parse_task_id(&task_id)?;
    match actions::find_task(&state, task_id).await? {
        TaskLookup::Found(details) => Ok(Json(*details)),
        TaskLookup::Queued(at) => Err(WebError::NotFound(format!(
            "task {task_id} was enqueued at {at} and is not recorded yet (the planner has not taken it)"
        ))
        .into()),
    }
}

/// `GET /api/task/{id}/diff/{step}?from=&to=`.
pub(crate) async fn diff(
    State(state): State<WebState>,
    Path((task_id, step)): Path<(String, String)>,
    attempts: Result<Query<DiffQuery>, QueryRejection>,
) -> ApiResult<Json<AttemptDiff>> {
    let task_id = actions::parse_task_id(&task_id)?;
    let step = actions::parse_step(&step)?;
    let DiffQuery { from, to } = query(attempts)?;
    Ok(Json(find_diff(&state, task_id, step, from, to).await?))
}

/// The diff of two attempts, or why there is none.
pub(crate) async fn find_diff(
    state: &WebState,
    task_id: TaskId,
    step: StepId,
    from: u32,
    to: u32,
) -> Result<AttemptDiff, WebError> {
    let attempt = |n: u32| {
        Attempt::new(n).map_err(|e| WebError::BadRequest(format!("invalid attempt {n}: {e}")))
    };
    let (from, to) = (attempt(from)?, attempt(to)?);
    views::diff_attempts(
        state.pipeline().artifacts().as_ref(),
        task_id,
        step,
        from,
        to,
    )
    .await?
    .ok_or_else(|| {
        WebError::NotFound(format!(
            "{step} of task {task_id} has no artifact for attempt {from} or {to}"
        ))
    })
}

/// `POST /api/task/{id}/replay` with `{"step": "implement@v1", "reason": "…"}` and
/// optionally `model`, `provider`, `prompt`, `inputs` and `continue_downstream`: 202; 409
/// with the reason when the step's inputs are missing; 400 for an unknown provider or an
/// edited input that is not upstream of the step.
pub(crate) async fn replay(
    State(state): State<WebState>,
    Path(task_id): Path<String>,
    request: Result<Json<ReplayRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<ReplayQueued>)> {
    let task_id = actions::parse_task_id(&task_id)?;
    let request = body(request)?;
    let step = actions::parse_step(&request.step)?;
    let command = ReplayStep {
        model: request.model,
        provider: request.provider,
        prompt: request.prompt,
        inputs: request.inputs,
        continue_downstream: request.continue_downstream,
        ..ReplayStep::new(task_id, step, request.reason)
    };
    let step = actions::replay(&state, command).await?;
    Ok((StatusCode::ACCEPTED, Json(ReplayQueued { task_id, step })))
}

/// `POST /api/task/{id}/approve`: 202; 409 when the task is not awaiting approval.
pub(crate) async fn approve(
    state: State<WebState>,
    task_id: Path<String>,
    request: Result<Option<Json<ControlRequest>>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<ControlQueued>)> {
    decide(ControlAction::Approve, state, task_id, request).await
}

/// `POST /api/task/{id}/reject`: 202; 409 when the task is not awaiting approval.
pub(crate) async fn reject(
    state: State<WebState>,
    task_id: Path<String>,
    request: Result<Option<Json<ControlRequest>>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<ControlQueued>)> {
    decide(ControlAction::Reject, state, task_id, request).await
}

/// `POST /api/task/{id}/cancel`: 202; 409 when the task has ended.
pub(crate) async fn cancel(
    state: State<WebState>,
    task_id: Path<String>,
    request: Result<Option<Json<ControlRequest>>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<ControlQueued>)> {
    decide(ControlAction::Cancel, state, task_id, request).await
}

/// Sends `action` about the task after checking that it applies: 202, 404 for an unknown
/// task, 409 (with where the task stands) when the decision does not apply.
async fn decide(
    action: ControlAction,
    State(state): State<WebState>,
    Path(task_id): Path<String>,
    request: Result<Option<Json<ControlRequest>>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<ControlQueued>)> {
    let task_id = actions::parse_task_id(&task_id)?;
    let request = request
        .map_err(|e| WebError::rejected(e.status(), e.body_text()))?
        .map(|Json(request)| request)
        .unwrap_or_default();
    let control = TaskControl {
        by: request.by,
        comment: request.comment,
        ..TaskControl::new(action, task_id)
    };
    actions::control(&state, control).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ControlQueued { task_id, action }),
    ))
}

/// `GET /api/dlq`: every dead letter, newest first.
pub(crate) async fn dlq(State(state): State<WebState>) -> ApiResult<Json<DeadLetterPage>> {
    Ok(Json(
        views::dead_letters(state.pipeline().dead_letter_log()).await?,
    ))
}

/// `POST /api/dlq/{id}/redrive`: 202 and what was done.
pub(crate) async fn redrive(
    State(state): State<WebState>,
    Path(id): Path<usize>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let outcome = match actions::redrive(&state, id).await? {
        Redriven::Replayed { task_id, step } => {
            json!({ "id": id, "outcome": "replayed", "task_id": task_id, "step": step })
        }
        Redriven::Republished { topic } => {
            json!({ "id": id, "outcome": "republished", "topic": topic })
        }
        other => json!({ "id": id, "outcome": format!("{other:?}") }),
    };
    Ok((StatusCode::ACCEPTED, Json(outcome)))
}
