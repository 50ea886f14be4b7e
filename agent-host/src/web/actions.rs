//! What the pages and the API do, once: enqueue, replay, re-drive, and find a task.

use agent_pipeline::{Redriven, StepId, TaskId};
use chrono::{DateTime, Utc};

use super::{WebError, WebState};
use crate::views::{self, TaskDetails};

/// The longest prompt accepted, in characters.
pub(crate) const MAX_PROMPT_CHARS: usize = 100_000;

/// Parses a task id from a path or a form.
pub(crate) fn parse_task_id(text: &str) -> Result<TaskId, WebError> {
    text.trim()
        .parse()
        .map_err(|e| WebError::BadRequest(format!("invalid task id {text:?}: {e}")))
}

/// Parses a step id from a path or a form.
pub(crate) fn parse_step(text: &str) -> Result<StepId, WebError> {
    text.trim()
        .parse()
        .map_err(|e| WebError::BadRequest(format!("invalid step {text:?}: {e}")))
}

/// Publishes a new task; returns its id.
pub(crate) async fn enqueue(state: &WebState, prompt: &str) -> Result<TaskId, WebError> {
    state.check_accepts_work()?;
    if prompt.trim().is_empty() {
        return Err(WebError::BadRequest(
            "the prompt is empty: say what to build".into(),
        ));
    }
    let length = prompt.chars().count();
    if length > MAX_PROMPT_CHARS {
        return Err(WebError::BadRequest(format!(
            "the prompt has {length} characters; at most {MAX_PROMPT_CHARS} are accepted"
        )));
    }
    let task_id = state
        .pipeline()
        .submit(prompt)
        .await
        .map_err(WebError::from_pipeline)?;
    state.remember_enqueued(task_id);
    tracing::info!(%task_id, "task enqueued from the web");
    Ok(task_id)
}

/// Asks for a replay of `step` of `task_id`, after the library's checks (the task exists, the
/// step's inputs are there).
pub(crate) async fn replay(
    state: &WebState,
    task_id: TaskId,
    step: &str,
    reason: Option<&str>,
) -> Result<StepId, WebError> {
    state.check_accepts_work()?;
    let step = parse_step(step)?;
    let reason = reason
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_owned);
    state
        .pipeline()
        .replay(task_id, step, reason)
        .await
        .map_err(WebError::from_pipeline)?;
    tracing::info!(%task_id, %step, "replay requested from the web");
    Ok(step)
}

/// Sends the dead letter on line `id` of the dead-letter file back into the pipeline.
pub(crate) async fn redrive(state: &WebState, id: usize) -> Result<Redriven, WebError> {
    state.check_accepts_work()?;
    let entry = views::dead_letter(state.pipeline().dead_letter_log(), id)
        .await?
        .ok_or_else(|| WebError::NotFound(format!("no dead letter {id}")))?;
    let letter = entry.letter.ok_or_else(|| {
        WebError::Conflict(format!(
            "dead letter {id} is incomplete (it does not say where it came from), so it cannot be re-driven"
        ))
    })?;
    let outcome = state
        .pipeline()
        .redrive(&letter)
        .await
        .map_err(WebError::from_pipeline)?;
    tracing::info!(id, ?outcome, "dead letter re-driven from the web");
    Ok(outcome)
}

/// A task as the UI finds it.
#[derive(Debug)]
pub(crate) enum TaskLookup {
    /// Recorded by the planner.
    Found(Box<TaskDetails>),
    /// Enqueued by this server at that time, not recorded yet.
    Queued(DateTime<Utc>),
}

/// Finds a task, or says it is unknown.
pub(crate) async fn find_task(state: &WebState, task_id: TaskId) -> Result<TaskLookup, WebError> {
    let pipeline = state.pipeline();
    match views::task_details(
        pipeline.state().as_ref(),
        pipeline.artifacts().as_ref(),
        task_id,
    )
    .await?
    {
        Some(details) => Ok(TaskLookup::Found(Box::new(details))),
        None => match state.enqueued_at(task_id) {
            Some(at) => Ok(TaskLookup::Queued(at)),
            None => Err(WebError::NotFound(format!("no task {task_id}"))),
        },
    }
}
