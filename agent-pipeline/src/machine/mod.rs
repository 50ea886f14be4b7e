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

use crate::gates::GateVerdict;
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
    /// Check the gates of the round the result ends, then go on with [`on_gates`].
    EvaluateGates,
    /// Publish the change (the branch `agent/<task_id>`), report `pr` and ask the ci-monitor
    /// to watch it; when publishing fails, go on with [`on_publish_failed`] instead of the
    /// commands after this one.
    PublishChange,
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
    /// The last attempt of each step of the task so far, for the numbers of new attempts.
    pub last_attempts: LastAttempts,
}

/// The last attempt number of each stage's step of one task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LastAttempts([Option<Attempt>; 4]);

impl LastAttempts {
    /// The last attempts among `records`, the (step, attempt) pairs of one task.
    pub fn of(records: impl IntoIterator<Item = (StepId, Attempt)>) -> Self {
        let mut last = Self::default();
        for (step, attempt) in records {
            let slot = &mut last.0[step.stage().index()];
            if slot.is_none_or(|known| known < attempt) {
                *slot = Some(attempt);
            }
        }
        last
    }

    /// The number of the next attempt of `stage`'s step: one after the last, or the first.
    pub fn next(&self, stage: Stage) -> Attempt {
        self.0[stage.index()].map_or(Attempt::FIRST, Attempt::next)
    }
}

/// The first request of a new task: `design@v1`, attempt 1.
pub fn first_request(task_id: crate::TaskId, now: DateTime<Utc>) -> StepRequest {
    StepRequest {
        task_id,
        step_id: StepId::v1(Stage::Design),
        attempt: Attempt::FIRST,
        try_number: 1,
        mode: StepMode::Run,
        round: 1,
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
        round: 1,
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
                Some(next) => commands.push(Command::RequestStep(StepRequest {
                    step_id: next,
                    attempt: context.last_attempts.next(next.stage()),
                    round: result.round,
                    ..first_request(result.task_id, context.now)
                })),
                None => commands.push(Command::EvaluateGates),
            }
            Transition {
                task_status: Some(TaskStatus::Running),
                commands,
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
            attempt: result
                .attempt
                .next()
                .max(context.last_attempts.next(result.step_id.stage())),
            try_number: result.try_number + 1,
            mode: result.mode,
            round: result.round,
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
        Stage::Test if output.get("executed") == Some(&Value::Bool(false)) => {
            Some("Test plan recorded, not run (code execution is off)".to_owned())
        }
        Stage::Test => serde_json::from_value::<TestReport>(output.clone())
            .ok()
            .map(|report| report.summary_line()),
        Stage::Review => typed::<Review>(output),
    };
    summary.unwrap_or_else(|| format!("{} completed", stage.title()))
}

/// What the gates of a round lead to: publishing and `done` when all passed; else another
/// round of Implement with the failures as feedback, or `error` when `max_rounds` are spent.
///
/// `review` is the result of the round's review, which ended the round.
pub fn on_gates(
    max_rounds: u32,
    review: &StepResult,
    verdicts: &[GateVerdict],
    context: Context<'_>,
) -> Transition {
    let round = review.round;
    let failed: Vec<&GateVerdict> = verdicts.iter().filter(|v| !v.passed).collect();
    let names = |list: &[&GateVerdict]| {
        list.iter()
            .map(|v| v.gate.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let all: Vec<&GateVerdict> = verdicts.iter().collect();
    let summary = if verdicts.is_empty() {
        format!("No gates to check (round {round})")
    } else if failed.is_empty() {
        format!("Gates passed (round {round}): {}", names(&all))
    } else {
        format!(
            "Gates failed (round {round} of {max_rounds}): {}",
            names(&failed)
        )
    };
    let gates = ReportEvent::new(review.task_id, ReportStatus::Gates, summary, context.now)
        .with_detail("round", round)
        .with_detail("passed", failed.is_empty())
        .with_detail(
            "gates",
            serde_json::to_value(verdicts).unwrap_or(Value::Null),
        );
    let mut commands = vec![Command::Report(gates)];
    if failed.is_empty() {
        let mut done = ReportEvent::new(
            review.task_id,
            ReportStatus::Done,
            format!("Task completed; artifacts in {}", context.task_dir),
            context.now,
        )
        .with_detail("round", round);
        done.stage = Some(review.step_id);
        commands.push(Command::PublishChange);
        commands.push(Command::Report(done));
        return Transition {
            task_status: Some(TaskStatus::Done),
            commands,
        };
    }
    let feedback = failed
        .iter()
        .map(|v| format!("gate {}: {}", v.gate, v.detail))
        .collect::<Vec<_>>()
        .join("\n");
    if round < max_rounds {
        let implement = StepId::v1(Stage::Implement);
        commands.push(Command::RequestStep(StepRequest {
            step_id: implement,
            attempt: context.last_attempts.next(Stage::Implement),
            round: round + 1,
            reason: Some(format!(
                "round {round} failed its gates; fix what they found.\n{}",
                cut(&feedback, FEEDBACK_LIMIT)
            )),
            ..first_request(review.task_id, context.now)
        }));
        return Transition {
            task_status: Some(TaskStatus::Running),
            commands,
        };
    }
    let rounds = if max_rounds == 1 {
        "1 round".to_owned()
    } else {
        format!("{max_rounds} rounds")
    };
    let mut error = ReportEvent::new(
        review.task_id,
        ReportStatus::Error,
        format!(
            "error: gate(s) {} failed after {rounds}: {}",
            names(&failed),
            cut(&first_line_of_each(&failed), 500)
        ),
        context.now,
    )
    .with_detail("round", round);
    error.stage = Some(review.step_id);
    commands.push(Command::Report(error));
    Transition {
        task_status: Some(TaskStatus::Error),
        commands,
    }
}

/// What a failed publication leads to: `error`, with the reason.
pub fn on_publish_failed(review: &StepResult, error: &str, context: Context<'_>) -> Transition {
    let mut event = ReportEvent::new(
        review.task_id,
        ReportStatus::Error,
        format!("error: the gates passed but the change could not be published: {error}"),
        context.now,
    );
    event.stage = Some(review.step_id);
    Transition {
        task_status: Some(TaskStatus::Error),
        commands: vec![Command::Report(event)],
    }
}

/// The most feedback one request carries; the artifacts hold the rest.
const FEEDBACK_LIMIT: usize = 6000;

fn first_line_of_each(verdicts: &[&GateVerdict]) -> String {
    verdicts
        .iter()
        .map(|v| {
            format!(
                "{}: {}",
                v.gate,
                v.detail.lines().next().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// `text` cut to at most `max` bytes at a character boundary, marked when cut.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests;
