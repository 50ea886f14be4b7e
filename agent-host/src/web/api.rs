//! The JSON API: the same data as the pages, under `/api/…`, and the health probes.

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
use crate::views::{self, AttemptDiff, DeadLetterPage, ReportFilter, ReportPage, TaskDetails};

/// How many reports `GET /api` returns.
const RECENT_REPORTS: usize = 20;

/// `POST /api/tasks`.
#[derive(Debug, Serialize, Deserialize)]
pub struct EnqueueRequest {
    /// What to build.
    pub prompt: String,
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
        .map_err(|e| WebError::BadRequest(e.body_text()))
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

/// `GET /api`: the most recent reports, and whether this server takes work.
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
    })))
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

/// `POST /api/tasks` with `{"prompt": "…"}`: 202 and where the task went.
pub(crate) async fn enqueue(
    State(state): State<WebState>,
    request: Result<Json<EnqueueRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Enqueued>)> {
    let request = body(request)?;
    let task_id = actions::enqueue(&state, &request.prompt).await?;
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

/// `POST /api/task/{id}/replay` with `{"step": "implement@v1", "reason": "…"}`: 202, or 409
/// with the reason when the step's inputs are missing.
pub(crate) async fn replay(
    State(state): State<WebState>,
    Path(task_id): Path<String>,
    request: Result<Json<ReplayRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<ReplayQueued>)> {
    let task_id = actions::parse_task_id(&task_id)?;
    let request = body(request)?;
    let step = actions::replay(&state, task_id, &request.step, request.reason.as_deref()).await?;
    Ok((StatusCode::ACCEPTED, Json(ReplayQueued { task_id, step })))
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
