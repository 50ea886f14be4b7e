//! The planner: new tasks become their first step request; replay commands become a request
//! for exactly that step with the next attempt number; approvals, rejections and
//! cancellations end the task (publishing its change when approved).
//!
//! A new task the planner refuses without recording it (its prompt is too long, or its state
//! store failed on every try) is dead-lettered and ended with an `error` event, so that
//! whoever waits for its end ([`crate::Pipeline::wait`], `agent-host send`) gets one.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::Utc;
use tracing::Instrument;

use super::publishing::{Publication, publish, round_artifacts};
use super::{Deps, Handler};
use crate::budget::TaskBudget;
use crate::bus::Delivery;
use crate::ids::{Attempt, Stage, StepId, TaskId};
use crate::machine::{
    Command, Context, LastAttempts, REASON_NOT_RECORDED, REASON_PROMPT_TOO_LONG, first_request,
    on_control, replay_request,
};
use crate::store::{ArtifactStore, NewTaskOutcome, StateStore, TaskFile, TaskStatus};
use crate::wire::{
    ControlAction, NewTask, ReplayStep, ReportEvent, ReportStatus, StepRequest, TaskCommand,
    TaskControl, Variant,
};
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
            Ok(TaskCommand::Control(control)) => {
                let span = tracing::info_span!("control", task_id = %control.task_id, action = control.action.as_str());
                self.control(delivery, control).instrument(span).await
            }
            Err(malformed) => self.deps.dead_letter(delivery, &malformed.reason).await,
        }
    }

    /// Dead-letters the message and, when it is a new task that could not be recorded,
    /// ends the task with an `error` event with the reason `not_recorded`.
    async fn give_up(&self, deps: &Deps, delivery: &Delivery, reason: &str) -> Result<()> {
        let lettered = deps.dead_letter(delivery, reason).await;
        let Ok(TaskCommand::New(task)) = TaskCommand::decode(&delivery.payload) else {
            return lettered;
        };
        let why = format!("the task could not be recorded: {reason}");
        let ended = end_unrecorded(deps, task.task_id, REASON_NOT_RECORDED, &why).await;
        lettered.and(ended)
    }
}

impl Planner {
    async fn new_task(&self, delivery: &Delivery, task: NewTask) -> Result<()> {
        let deps = &self.deps;
        if let Err(refusal) = check_prompt(&task.prompt, deps.max_prompt_chars) {
            let reason = refusal.to_string();
            deps.dead_letter(delivery, &reason).await?;
            return end_unrecorded(deps, task.task_id, REASON_PROMPT_TOO_LONG, &reason).await;
        }
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
        let budget = task.budget.unwrap_or_default().over(&deps.budget);
        let require_approval = task.require_approval.unwrap_or(deps.require_approval);
        deps.artifacts
            .write_task(&TaskFile {
                task_id: task.task_id,
                prompt: task.prompt.clone(),
                created_at: now,
                budget: (!budget.is_unlimited()).then_some(budget),
                require_approval,
                repository: task.repository.clone(),
            })
            .await?;
        // `received` goes out before the first request: with the services in separate
        // processes, the orchestrator's first report could otherwise come before it.
        let request = StepRequest {
            budget: (!budget.is_unlimited()).then_some(TaskBudget {
                limits: budget,
                started_at: now,
                spent: Default::default(),
            }),
            require_approval,
            ..first_request(task.task_id, now)
        };
        deps.state.reserve_attempt(&request).await?;
        let mut event = ReportEvent::new(
            task.task_id,
            ReportStatus::Received,
            format!("Task received: {}", one_line(&task.prompt, 120)),
            now,
        );
        if !budget.is_unlimited() {
            event = event.with_detail(
                "budget",
                serde_json::to_value(budget).unwrap_or(serde_json::Value::Null),
            );
        }
        if require_approval {
            event = event.with_detail("require_approval", true);
        }
        deps.report(&event).await?;
        tracing::info!(task_id = %task.task_id, "task received");
        deps.publish(&deps.topics.step_requests, task.task_id, &request)
            .await
    }

    async fn replay(&self, delivery: &Delivery, replay: ReplayStep) -> Result<()> {
        let deps = &self.deps;
        let now = Utc::now();
        let checked = check_replay(
            deps.state.as_ref(),
            deps.artifacts.as_ref(),
            &deps.providers,
            &replay,
        )
        .await;
        let pinned = match checked {
            Ok(pinned) => pinned,
            Err(refusal) => {
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
        };
        let attempt = deps
            .state
            .last_attempt(replay.task_id, replay.step_id)
            .await?
            .map_or(Attempt::FIRST, Attempt::next);
        let require_approval = deps
            .artifacts
            .read_task(replay.task_id)
            .await?
            .is_some_and(|task| task.require_approval);
        tracing::info!(task_id = %replay.task_id, step = %replay.step_id, %attempt, model = ?replay.model, provider = ?replay.provider, "replay requested");
        let variant = Variant {
            model: replay.model,
            provider: replay.provider,
            prompt: replay.prompt,
            inputs: replay.inputs,
            pinned,
            continue_downstream: replay.continue_downstream,
        };
        let request = StepRequest {
            require_approval,
            variant: Some(variant),
            ..replay_request(replay.task_id, replay.step_id, attempt, replay.reason, now)
        };
        self.request(&request).await
    }

    /// Applies an approval, a rejection or a cancellation, once: a task that is not (or no
    /// longer) in a state the decision applies to has it dead-lettered with the reason.
    async fn control(&self, delivery: &Delivery, control: TaskControl) -> Result<()> {
        let deps = &self.deps;
        let now = Utc::now();
        let task = match check_control(deps.state.as_ref(), &control).await {
            Ok(task) => task,
            Err(Error::Store(error)) => return Err(error.into()),
            Err(refusal) => {
                let reason = format!("{} refused: {refusal}", control.action.as_str());
                return deps.dead_letter(delivery, &reason).await;
            }
        };
        let attempts = deps.state.attempts(control.task_id).await?;
        let round = attempts
            .iter()
            .filter(|a| a.mode() == crate::wire::StepMode::Run)
            .map(|a| a.request.round)
            .max()
            .unwrap_or(1);
        let task_dir = deps.artifacts.task_location(control.task_id);
        let context = Context {
            task_dir: &task_dir,
            results_topic: &deps.topics.step_results,
            now,
            jitter: 0.0,
            last_attempts: LastAttempts::default(),
            spent: task.spend,
        };
        let record = serde_json::json!({
            "action": control.action.as_str(),
            "by": control.by,
            "comment": control.comment,
            "decided_at": now,
        });
        let name = match control.action {
            ControlAction::Cancel => "cancellation.json",
            ControlAction::Approve | ControlAction::Reject => "approval.json",
        };
        deps.artifacts
            .write_record(control.task_id, name, &record)
            .await?;
        let transition = on_control(&control, task.current_step, round, context);
        let mut status = transition.task_status;
        let mut reports = Vec::new();
        let mut ci_watch = None;
        let mut commands = std::collections::VecDeque::from(transition.commands);
        while let Some(command) = commands.pop_front() {
            match command {
                Command::Report(event) => reports.push(event),
                Command::PublishChange if !deps.execution.execute_code => {}
                Command::PublishChange => {
                    let round = round_artifacts(deps, control.task_id).await?;
                    let step = task.current_step;
                    match publish(deps, control.task_id, step, &round, context).await? {
                        Publication::Published { pr, watch } => {
                            reports.push(*pr);
                            ci_watch = Some(watch);
                        }
                        Publication::Failed(failed) => {
                            status = failed.task_status;
                            commands = failed.commands.into();
                        }
                    }
                }
                Command::SaveArtifact
                | Command::RequestStep(_)
                | Command::DeadLetter(_)
                | Command::EvaluateGates => {
                    tracing::error!(?command, "a decision cannot lead to this; ignored");
                }
            }
        }
        let Some(status) = status else {
            return Ok(());
        };
        let from = allowed_from(control.action);
        if !deps
            .state
            .transition_task(control.task_id, from, status, now)
            .await?
        {
            // Another decision (or the end of the run) came first.
            let reason = format!(
                "{} refused: the task changed meanwhile",
                control.action.as_str()
            );
            return deps.dead_letter(delivery, &reason).await;
        }
        crate::metrics::task_ended(status);
        let reason = reports.iter().find_map(|event| event.reason.as_deref());
        crate::metrics::task_cost(status, &task.spend, reason);
        tracing::info!(task_id = %control.task_id, action = control.action.as_str(), %status, "decision applied");
        for event in &reports {
            deps.report(event).await?;
        }
        if let Some(watch) = ci_watch {
            deps.publish(&deps.topics.ci_watch, watch.task_id, &watch)
                .await?;
        }
        Ok(())
    }

    async fn request(&self, request: &StepRequest) -> Result<()> {
        self.deps.state.reserve_attempt(request).await?;
        self.deps
            .publish(&self.deps.topics.step_requests, request.task_id, request)
            .await
    }
}

/// Whether the replay can run: the task exists, the step is one this pipeline runs, the
/// provider is one it knows, and every earlier stage has its artifact or an edited output.
/// Gives the attempt of each upstream artifact the replay will read (its pinned inputs).
pub(crate) async fn check_replay(
    state: &dyn StateStore,
    artifacts: &dyn ArtifactStore,
    providers: &[String],
    replay: &ReplayStep,
) -> Result<BTreeMap<StepId, Attempt>> {
    let (task_id, step) = (replay.task_id, replay.step_id);
    if state.task(task_id).await?.is_none() || artifacts.read_task(task_id).await?.is_none() {
        return Err(Error::TaskNotFound(task_id));
    }
    if step != StepId::v1(step.stage()) {
        return Err(Error::UnknownStep(step));
    }
    replay.check().map_err(Error::InvalidReplay)?;
    if let Some(provider) = &replay.provider
        && !providers.contains(provider)
    {
        return Err(Error::InvalidReplay(format!(
            "unknown provider {provider:?}; this pipeline has {}",
            providers.join(", ")
        )));
    }
    let mut pinned = BTreeMap::new();
    for earlier in step.stage().earlier() {
        let input = StepId::v1(*earlier);
        if replay.inputs.contains_key(&input) {
            continue;
        }
        match artifacts.read_artifact(task_id, input).await? {
            Some(artifact) => {
                pinned.insert(input, artifact.attempt);
            }
            None => {
                return Err(Error::ReplayInputsMissing {
                    task_id,
                    step,
                    missing: input,
                });
            }
        }
    }
    Ok(pinned)
}

/// Ends a new task the planner refused without recording it: an `error` event with `code` as
/// its reason and `why` in its summary. A task that is recorded after all (the message was a
/// duplicate of a task that exists, or an earlier try recorded it) is left to its own
/// events, so that no task gets a second final one; so is a task whose record cannot be
/// read (the error is returned).
async fn end_unrecorded(deps: &Deps, task_id: TaskId, code: &str, why: &str) -> Result<()> {
    if deps.state.task(task_id).await?.is_some() {
        tracing::debug!(%task_id, reason = code, "the refused message names a recorded task; no error event");
        return Ok(());
    }
    tracing::warn!(%task_id, reason = code, %why, "new task refused without being recorded");
    let mut event = ReportEvent::new(
        task_id,
        ReportStatus::Error,
        format!("error: {why}"),
        Utc::now(),
    );
    event.reason = Some(code.to_owned());
    deps.report(&event).await
}

/// Whether a new task's prompt is at most `max` characters long.
pub(crate) fn check_prompt(prompt: &str, max: usize) -> Result<()> {
    let chars = prompt.chars().count();
    if chars > max {
        return Err(Error::PromptTooLong { chars, max });
    }
    Ok(())
}

/// The statuses a task may be in for `action` to apply.
fn allowed_from(action: ControlAction) -> &'static [TaskStatus] {
    match action {
        ControlAction::Approve | ControlAction::Reject => &[TaskStatus::AwaitingApproval],
        ControlAction::Cancel => &TaskStatus::ACTIVE,
    }
}

/// Whether `control` applies to its task now; gives the task when it does.
pub(crate) async fn check_control(
    state: &dyn StateStore,
    control: &TaskControl,
) -> Result<crate::store::TaskRecord> {
    let Some(task) = state.task(control.task_id).await? else {
        return Err(Error::TaskNotFound(control.task_id));
    };
    if !allowed_from(control.action).contains(&task.status) {
        return Err(Error::NotApplicable {
            task_id: control.task_id,
            action: control.action.as_str(),
            status: task.status,
        });
    }
    Ok(task)
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
