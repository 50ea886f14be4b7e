//! The step state machine, as pure functions: (what happened, policy) → what to do.
//!
//! The services perform the [`Command`]s; nothing here touches a bus, a store or the clock,
//! so retries, backoff, dead-lettering and replay are tested without any of them. The time
//! and the backoff's jitter come in as inputs ([`Context`]); [`random_jitter`] is the one
//! impure helper, for the callers that draw it.

mod backoff;

use chrono::{DateTime, Utc};
use serde_json::Value;

pub use backoff::{RetryPolicy, random_jitter};

use crate::ids::{Attempt, Stage, StepId};
use crate::output::{Design, Implementation, Review, StageOutput, TestReport};
use crate::store::TaskStatus;
use crate::wire::{
    DeadLetter, ReportEvent, ReportStatus, StepMode, StepOutcome, StepRequest, StepResult,
};

/// Something the services must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Store the result's output as the step's artifact.
    SaveArtifact,
    /// Record and send a step request.
    RequestStep(StepRequest),
    /// Publish a report event.
    Report(ReportEvent),
    /// Publish to the dead-letter topic.
    DeadLetter(DeadLetter),
}

/// What a step result leads to.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The task's new status, or `None` to keep it (replays do not move a task).
    pub task_status: Option<TaskStatus>,
    /// What to do, in order.
    pub commands: Vec<Command>,
}

/// Where a finished task's artifacts are, for the `done` report.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The directory of the task's artifacts, as shown to people.
    pub task_dir: &'a str,
    /// The source topic of step results, for dead letters.
    pub results_topic: &'a str,
    /// The time of the transition.
    pub now: DateTime<Utc>,
    /// A number in `[0, 1)` for the backoff's jitter.
    pub jitter: f64,
}

/// The first request of a new task: `design@v1`, attempt 1.
pub fn first_request(task_id: crate::TaskId, now: DateTime<Utc>) -> StepRequest {
    StepRequest {
        task_id,
        step_id: StepId::v1(Stage::Design),
        attempt: Attempt::FIRST,
        try_number: 1,
        mode: StepMode::Run,
        reason: None,
        not_before: None,
        requested_at: now,
    }
}

/// The request that replays `step` as attempt `attempt`.
pub fn replay_request(
    task_id: crate::TaskId,
    step: StepId,
    attempt: Attempt,
    reason: Option<String>,
    now: DateTime<Utc>,
) -> StepRequest {
    StepRequest {
        task_id,
        step_id: step,
        attempt,
        try_number: 1,
        mode: StepMode::Replay,
        reason,
        not_before: None,
        requested_at: now,
    }
}

/// What to do with a step result.
pub fn on_step_result(
    policy: &RetryPolicy,
    result: &StepResult,
    context: Context<'_>,
) -> Transition {
    match &result.outcome {
        StepOutcome::Succeeded {
            output,
            model,
            usage,
        } => {
            let stage = result.step_id.stage();
            let report = |status: ReportStatus, summary: String| {
                let mut event = ReportEvent::new(result.task_id, status, summary, context.now)
                    .for_step(result.step_id, result.attempt);
                event.duration_ms = Some(result.duration_ms);
                event.model = Some(model.clone());
                event.usage = Some(*usage);
                Command::Report(event)
            };
            let mut commands = vec![Command::SaveArtifact];
            if result.mode == StepMode::Replay {
                commands.push(report(
                    ReportStatus::Replayed,
                    format!("{} replayed (attempt {})", stage.title(), result.attempt),
                ));
                return Transition {
                    task_status: None,
                    commands,
                };
            }
            commands.push(report(ReportStatus::StageDone, summarize(stage, output)));
            match result.step_id.next() {
                Some(next) => {
                    commands.push(Command::RequestStep(StepRequest {
                        step_id: next,
                        ..first_request(result.task_id, context.now)
                    }));
                    Transition {
                        task_status: Some(TaskStatus::Running),
                        commands,
                    }
                }
                None => {
                    let mut done = ReportEvent::new(
                        result.task_id,
                        ReportStatus::Done,
                        format!("Task completed; artifacts in {}", context.task_dir),
                        context.now,
                    );
                    done.stage = Some(result.step_id);
                    commands.push(Command::Report(done));
                    Transition {
                        task_status: Some(TaskStatus::Done),
                        commands,
                    }
                }
            }
        }
        StepOutcome::Failed { error, retryable } => {
            on_failure(policy, result, error, *retryable, context)
        }
    }
}

fn on_failure(
    policy: &RetryPolicy,
    result: &StepResult,
    error: &str,
    retryable: bool,
    context: Context<'_>,
) -> Transition {
    let title = result.step_id.stage().title();
    let keeps_status = |status| (result.mode == StepMode::Run).then_some(status);
    if retryable && result.try_number < policy.max_attempts {
        let delay = policy.backoff(result.try_number, context.jitter);
        let not_before = context.now + chrono::Duration::from_std(delay).unwrap_or_default();
        let retry = StepRequest {
            task_id: result.task_id,
            step_id: result.step_id,
            attempt: result.attempt.next(),
            try_number: result.try_number + 1,
            mode: result.mode,
            reason: result.reason.clone(),
            not_before: Some(not_before),
            requested_at: context.now,
        };
        let event = ReportEvent::new(
            result.task_id,
            ReportStatus::Retry,
            format!(
                "{title} failed (attempt {}): {error}; retrying in {:.1}s (try {} of {})",
                result.attempt,
                delay.as_secs_f64(),
                retry.try_number,
                policy.max_attempts
            ),
            context.now,
        )
        .for_step(result.step_id, result.attempt);
        return Transition {
            task_status: keeps_status(TaskStatus::Running),
            commands: vec![Command::RequestStep(retry), Command::Report(event)],
        };
    }

    let why = if retryable {
        let tries = match result.try_number {
            1 => "1 try".to_owned(),
            n => format!("{n} tries"),
        };
        format!("{title} failed after {tries}: {error}")
    } else {
        format!("{title} failed: {error}")
    };
    let dead_letter = DeadLetter {
        reason: why.clone(),
        source_topic: context.results_topic.to_owned(),
        key: Some(result.task_id.to_string()),
        payload: String::from_utf8_lossy(&crate::wire::encode(result)).into_owned(),
        task_id: Some(result.task_id.to_string()),
        step_id: Some(result.step_id.to_string()),
        attempt: Some(result.attempt.get()),
        failed_at: context.now,
    };
    let dlq = ReportEvent::new(
        result.task_id,
        ReportStatus::Dlq,
        format!(
            "{} attempt {} sent to the dead-letter queue",
            result.step_id, result.attempt
        ),
        context.now,
    )
    .for_step(result.step_id, result.attempt);
    let failed = ReportEvent::new(
        result.task_id,
        ReportStatus::Error,
        format!("error: {why}"),
        context.now,
    )
    .for_step(result.step_id, result.attempt);
    Transition {
        task_status: keeps_status(TaskStatus::Error),
        commands: vec![
            Command::DeadLetter(dead_letter),
            Command::Report(dlq),
            Command::Report(failed),
        ],
    }
}

/// The `stage_done` summary of a stage output (a generic one for outputs of custom types).
pub fn summarize(stage: Stage, output: &Value) -> String {
    fn typed<T: StageOutput>(output: &Value) -> Option<String> {
        serde_json::from_value::<T>(output.clone())
            .ok()
            .map(|o| o.summary())
    }
    let summary = match stage {
        Stage::Design => typed::<Design>(output),
        Stage::Implement => typed::<Implementation>(output),
        Stage::Test => typed::<TestReport>(output),
        Stage::Review => typed::<Review>(output),
    };
    summary.unwrap_or_else(|| format!("{} completed", stage.title()))
}

#[cfg(test)]
mod tests;
