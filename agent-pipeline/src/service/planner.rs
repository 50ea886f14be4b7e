//! The planner: new tasks become their first step request; replay commands become a request
//! for exactly that step with the next attempt number.

use async_trait::async_trait;
use chrono::Utc;
use tracing::Instrument;

use super::{Deps, Handler};
use crate::bus::Delivery;
use crate::ids::{Attempt, Stage, StepId, TaskId};
use crate::machine::{first_request, replay_request};
use crate::store::{ArtifactStore, NewTaskOutcome, StateStore, TaskFile};
use crate::wire::{NewTask, ReplayStep, ReportEvent, ReportStatus, StepRequest, TaskCommand};
use crate::{Error, Result};

#[derive(Debug, Clone)]
pub(crate) struct Planner {
    pub(crate) deps: Deps,
}

#[async_trait]
impl Handler for Planner {
    async fn handle(&self, delivery: &Delivery) -> Result<()> {
        match TaskCommand::decode(&delivery.payload) {
            Ok(TaskCommand::New(task)) => {
                let span = tracing::info_span!("plan", task_id = %task.task_id);
                self.new_task(delivery, task).instrument(span).await
            }
            Ok(TaskCommand::Replay(replay)) => {
                let span = tracing::info_span!("plan_replay", task_id = %replay.task_id, step = %replay.step_id);
                self.replay(delivery, replay).instrument(span).await
            }
            Err(malformed) => self.deps.dead_letter(delivery, &malformed.reason).await,
        }
    }
}

impl Planner {
    async fn new_task(&self, delivery: &Delivery, task: NewTask) -> Result<()> {
        let deps = &self.deps;
        let now = Utc::now();
        match deps
            .state
            .insert_task(task.task_id, &task.prompt, now)
            .await?
        {
            NewTaskOutcome::Conflict => {
                let reason = format!(
                    "task id {} is already used by a task with another prompt",
                    task.task_id
                );
                return deps.dead_letter(delivery, &reason).await;
            }
            NewTaskOutcome::AlreadyExists => {
                let first = StepId::v1(Stage::Design);
                let started = deps
                    .state
                    .attempt(task.task_id, first, Attempt::FIRST)
                    .await?;
                if started.is_some_and(|a| a.status.is_finished()) {
                    tracing::debug!(task_id = %task.task_id, "task redelivered after it started; ignored");
                    return Ok(());
                }
            }
            NewTaskOutcome::Created => crate::metrics::task_received(),
        }
        deps.artifacts
            .write_task(&TaskFile {
                task_id: task.task_id,
                prompt: task.prompt.clone(),
                created_at: now,
            })
            .await?;
        // `received` goes out before the first request: with the services in separate
        // processes, the orchestrator's first report could otherwise come before it.
        let request = first_request(task.task_id, now);
        deps.state.reserve_attempt(&request).await?;
        let event = ReportEvent::new(
            task.task_id,
            ReportStatus::Received,
            format!("Task received: {}", one_line(&task.prompt, 120)),
            now,
        );
        deps.report(&event).await?;
        tracing::info!(task_id = %task.task_id, "task received");
        deps.publish(&deps.topics.step_requests, task.task_id, &request)
            .await
    }

    async fn replay(&self, delivery: &Delivery, replay: ReplayStep) -> Result<()> {
        let deps = &self.deps;
        let now = Utc::now();
        if let Err(refusal) = check_replay(
            deps.state.as_ref(),
            deps.artifacts.as_ref(),
            replay.task_id,
            replay.step_id,
        )
        .await
        {
            let reason = match refusal {
                Error::Store(error) => return Err(error.into()),
                other => other.to_string(),
            };
            deps.dead_letter(delivery, &format!("replay refused: {reason}"))
                .await?;
            let mut event = ReportEvent::new(
                replay.task_id,
                ReportStatus::Error,
                format!("error: replay refused: {reason}"),
                now,
            );
            event.stage = Some(replay.step_id);
            return deps.report(&event).await;
        }
        let attempt = deps
            .state
            .last_attempt(replay.task_id, replay.step_id)
            .await?
            .map_or(Attempt::FIRST, Attempt::next);
        tracing::info!(task_id = %replay.task_id, step = %replay.step_id, %attempt, "replay requested");
        self.request(&replay_request(
            replay.task_id,
            replay.step_id,
            attempt,
            replay.reason,
            now,
        ))
        .await
    }

    async fn request(&self, request: &StepRequest) -> Result<()> {
        self.deps.state.reserve_attempt(request).await?;
        self.deps
            .publish(&self.deps.topics.step_requests, request.task_id, request)
            .await
    }
}

/// Whether `step` of `task_id` can be replayed: the task exists, the step is one this pipeline
/// runs, and every earlier stage has its artifact.
pub(crate) async fn check_replay(
    state: &dyn StateStore,
    artifacts: &dyn ArtifactStore,
    task_id: TaskId,
    step: StepId,
) -> Result<()> {
    if state.task(task_id).await?.is_none() || artifacts.read_task(task_id).await?.is_none() {
        return Err(Error::TaskNotFound(task_id));
    }
    if step != StepId::v1(step.stage()) {
        return Err(Error::UnknownStep(step));
    }
    for earlier in step.stage().earlier() {
        let input = StepId::v1(*earlier);
        if artifacts.read_artifact(task_id, input).await?.is_none() {
            return Err(Error::ReplayInputsMissing {
                task_id,
                step,
                missing: input,
            });
        }
    }
    Ok(())
}

/// The first line of `text`, cut to `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or_default().trim();
    if line.chars().count() > max {
        format!("{}…", line.chars().take(max).collect::<String>())
    } else {
        line.to_owned()
    }
}
