//! What the pages and the API do, once: enqueue, replay, decide (approve, reject, cancel),
//! re-drive, and find a task.

use agent_pipeline::wire::{NewTask, ReplayStep, TaskControl};
use agent_pipeline::{Redriven, StepId, TaskId};
use chrono::{DateTime, Utc};

use super::{WebError, WebState};
use crate::views::{self, TaskDetails};

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

/// Publishes a new task (with its own budget and approval requirement, when it has them);
/// returns its id.
pub(crate) async fn enqueue(state: &WebState, task: NewTask) -> Result<TaskId, WebError> {
    state.check_accepts_work()?;
    let prompt = task.prompt.as_str();
    if prompt.trim().is_empty() {
        return Err(WebError::BadRequest(
            "the prompt is empty: say what to build".into(),
        ));
    }
    // The library refuses a prompt over the pipeline's limit (`Error::PromptTooLong`, 400).
    let task_id = state
        .pipeline()
        .enqueue(task)
        .await
        .map_err(WebError::from_pipeline)?;
    state.remember_enqueued(task_id);
    tracing::info!(%task_id, "task enqueued from the web");
    Ok(task_id)
}

/// Asks for a replay as `command` says (another model or provider, edited inputs, continued
/// downstream), after the library's checks (the task exists, the step's inputs are there, the
/// provider is known). Blank texts count as not given.
pub(crate) async fn replay(state: &WebState, mut command: ReplayStep) -> Result<StepId, WebError> {
    state.check_accepts_work()?;
    let blank_is_none =
        |text: Option<String>| text.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
    command.reason = blank_is_none(command.reason);
    command.model = blank_is_none(command.model);
    command.provider = blank_is_none(command.provider);
    command.prompt = command.prompt.filter(|p| !p.trim().is_empty());
    let (task_id, step) = (command.task_id, command.step_id);
    state
        .pipeline()
        .replay_variant(command)
        .await
        .map_err(WebError::from_pipeline)?;
    tracing::info!(%task_id, %step, "replay requested from the web");
    Ok(step)
}

/// Approves, rejects or cancels a task, after the library's check that the decision applies.
pub(crate) async fn control(state: &WebState, mut control: TaskControl) -> Result<(), WebError> {
    state.check_accepts_work()?;
    control.comment = control
        .comment
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty());
    control.by = control
        .by
        .map(|b| b.trim().to_owned())
        .filter(|b| !b.is_empty());
    let (task_id, action) = (control.task_id, control.action);
    state
        .pipeline()
        .control(control)
        .await
        .map_err(WebError::from_pipeline)?;
    tracing::info!(%task_id, action = action.as_str(), "decision sent from the web");
    Ok(())
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
        Some(mut details) => {
            // The stores do not know which providers this process can call; the replay form
            // and the API offer those.
            details.providers = pipeline.providers().to_vec();
            Ok(TaskLookup::Found(Box::new(details)))
        }
        None => match state.enqueued_at(task_id) {
            Some(at) => Ok(TaskLookup::Queued(at)),
            None => Err(WebError::NotFound(format!("no task {task_id}"))),
        },
    }
}
