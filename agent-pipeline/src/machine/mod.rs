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

use crate::budget::{BudgetHit, BudgetLimit, TaskBudget};
use crate::gates::GateVerdict;
use crate::ids::{Attempt, Stage, StepId, TaskId};
use crate::llm::Spend;
use crate::output::{Design, Implementation, Review, StageOutput, TestReport};
use crate::store::TaskStatus;
use crate::wire::{
    ControlAction, DeadLetter, ReportEvent, ReportStatus, StepMode, StepOutcome, StepRequest,
    StepResult, StopReason, TaskControl,
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
    /// What the task has spent, over every recorded attempt and the result at hand.
    pub spent: Spend,
}

/// Why a task was stopped on purpose, as the `reason` of its `error` event.
pub const REASON_BUDGET_EXCEEDED: &str = "budget_exceeded";
/// The `reason` of the `error` event of a cancelled task.
pub const REASON_CANCELLED: &str = "cancelled";
/// The `reason` of the `error` event of a task whose change was rejected.
pub const REASON_REJECTED: &str = "rejected";
/// The `reason` of the `error` event of a new task the planner could not record (its state
/// store failed on every try, e.g. on a full disk); the message is dead-lettered.
pub const REASON_NOT_RECORDED: &str = "not_recorded";
/// The `reason` of the `error` event of a new task whose prompt is longer than the pipeline
/// accepts; the message is dead-lettered and nothing is recorded.
pub const REASON_PROMPT_TOO_LONG: &str = "prompt_too_long";

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

/// The first request of a new task: `design@v1`, attempt 1, without budget or approval.
pub fn first_request(task_id: TaskId, now: DateTime<Utc>) -> StepRequest {
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
        budget: None,
        require_approval: false,
        variant: None,
    }
}

/// The request that replays `step` as attempt `attempt`.
pub fn replay_request(
    task_id: TaskId,
    step: StepId,
    attempt: Attempt,
    reason: Option<String>,
    now: DateTime<Utc>,
) -> StepRequest {
    StepRequest {
        step_id: step,
        attempt,
        mode: StepMode::Replay,
        reason,
        ..first_request(task_id, now)
    }
}

/// The request of the step after `result` in the same run: the next stage's step, or
/// Implement again for another round. The budget goes on with what the task spent so far.
fn next_request(
    result: &StepResult,
    step: StepId,
    round: u32,
    reason: Option<String>,
    context: Context<'_>,
) -> StepRequest {
    StepRequest {
        step_id: step,
        attempt: context.last_attempts.next(step.stage()),
        round,
        reason,
        budget: result.budget.map(|budget| TaskBudget {
            spent: context.spent,
            ..budget
        }),
        require_approval: result.require_approval,
        ..first_request(result.task_id, context.now)
    }
}

/// The first limit of `result`'s budget the task has reached, if any.
fn budget_hit(result: &StepResult, context: Context<'_>) -> Option<BudgetHit> {
    let budget = result.budget?;
    budget
        .limits
        .exceeded(&context.spent, budget.started_at, context.now)
}

/// The `error` event of a task stopped on purpose, with the reason in one word.
fn stopped_event(
    task_id: TaskId,
    reason: &str,
    summary: String,
    context: Context<'_>,
) -> ReportEvent {
    let mut event = ReportEvent::new(task_id, ReportStatus::Error, summary, context.now);
    event.reason = Some(reason.to_owned());
    event.task_spend = Some(context.spent);
    event
}

/// The `error` event of a task that reached a limit of its budget.
fn budget_event(result: &StepResult, hit: &BudgetHit, context: Context<'_>) -> ReportEvent {
    let mut event = stopped_event(
        result.task_id,
        REASON_BUDGET_EXCEEDED,
        format!("error: budget exceeded: {hit}"),
        context,
    )
    .with_detail("budget", serde_json::to_value(hit).unwrap_or(Value::Null));
    event.stage = Some(result.step_id);
    event.attempt = Some(result.attempt);
    event
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
                event.cost_usd = Some(Spend::of(&result.calls).cost_usd);
                event.task_spend = Some(context.spent);
                Command::Report(event)
            };
            let mut commands = vec![Command::SaveArtifact];
            let continues = result
                .variant
                .as_ref()
                .is_some_and(|variant| variant.continue_downstream);
            if result.mode == StepMode::Replay {
                commands.push(report(
                    ReportStatus::Replayed,
                    format!("{} replayed (attempt {})", stage.title(), result.attempt),
                ));
                if !continues {
                    return Transition {
                        task_status: None,
                        commands,
                    };
                }
            } else {
                commands.push(report(ReportStatus::StageDone, summarize(stage, output)));
                if let Some(hit) = budget_hit(result, context) {
                    commands.push(Command::Report(budget_event(result, &hit, context)));
                    return Transition {
                        task_status: Some(TaskStatus::Error),
                        commands,
                    };
                }
            }
            // The run goes on; after a replay that continues downstream, as a run of its own
            // (no budget: the replay was an operator's decision).
            match result.step_id.next() {
                Some(next) => commands.push(Command::RequestStep(next_request(
                    result,
                    next,
                    result.round,
                    None,
                    context,
                ))),
                None => commands.push(Command::EvaluateGates),
            }
            Transition {
                task_status: Some(TaskStatus::Running),
                commands,
            }
        }
        StepOutcome::Failed { error, retryable } => {
            match budget_hit(result, context).filter(|_| result.mode == StepMode::Run) {
                Some(hit) => Transition {
                    task_status: Some(TaskStatus::Error),
                    commands: vec![Command::Report(budget_event(result, &hit, context))],
                },
                None => on_failure(policy, result, error, *retryable, context),
            }
        }
        StepOutcome::Stopped {
            cause: StopReason::BudgetExceeded,
            detail,
        } => {
            let mut event = stopped_event(
                result.task_id,
                REASON_BUDGET_EXCEEDED,
                format!("error: budget exceeded: {detail}"),
                context,
            );
            event.stage = Some(result.step_id);
            event.attempt = Some(result.attempt);
            Transition {
                task_status: (result.mode == StepMode::Run).then_some(TaskStatus::Error),
                commands: vec![Command::Report(event)],
            }
        }
        // The cancellation was reported when it was decided; the attempt is only recorded.
        StepOutcome::Stopped {
            cause: StopReason::Cancelled,
            ..
        } => Transition {
            task_status: None,
            commands: Vec::new(),
        },
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
            budget: result.budget.map(|budget| TaskBudget {
                spent: context.spent,
                ..budget
            }),
            require_approval: result.require_approval,
            variant: result.variant.clone(),
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

/// What the gates of a round lead to: publishing and `done` when all passed (or
/// `awaiting_approval` when the task waits for a person first); else another round of
/// Implement with the failures as feedback, or `error` (reason `budget_exceeded`) when the
/// rounds are spent: the task's budget's `max_rounds`, else `gate_rounds`.
///
/// `review` is the result of the round's review, which ended the round.
pub fn on_gates(
    gate_rounds: u32,
    review: &StepResult,
    verdicts: &[GateVerdict],
    context: Context<'_>,
) -> Transition {
    let max_rounds = review
        .budget
        .and_then(|budget| budget.limits.max_rounds)
        .unwrap_or(gate_rounds)
        .max(1);
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
    if failed.is_empty() && review.require_approval {
        let mut waiting = ReportEvent::new(
            review.task_id,
            ReportStatus::AwaitingApproval,
            format!("Round {round} passed its gates; waiting for approval before publishing"),
            context.now,
        )
        .with_detail("round", round);
        waiting.stage = Some(review.step_id);
        waiting.task_spend = Some(context.spent);
        commands.push(Command::Report(waiting));
        return Transition {
            task_status: Some(TaskStatus::AwaitingApproval),
            commands,
        };
    }
    if failed.is_empty() {
        commands.extend(finish(review.task_id, Some(review.step_id), round, context));
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
        let reason = format!(
            "round {round} failed its gates; fix what they found.\n{}",
            cut(&feedback, FEEDBACK_LIMIT)
        );
        let implement = StepId::v1(Stage::Implement);
        commands.push(Command::RequestStep(next_request(
            review,
            implement,
            round + 1,
            Some(reason),
            context,
        )));
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
    let hit = BudgetHit {
        limit: BudgetLimit::Rounds,
        allowed: f64::from(max_rounds),
        spent: f64::from(round),
    };
    let mut error = stopped_event(
        review.task_id,
        REASON_BUDGET_EXCEEDED,
        format!(
            "error: gate(s) {} failed after {rounds}: {}",
            names(&failed),
            cut(&first_line_of_each(&failed), 500)
        ),
        context,
    )
    .with_detail("round", round)
    .with_detail("budget", serde_json::to_value(hit).unwrap_or(Value::Null));
    error.stage = Some(review.step_id);
    commands.push(Command::Report(error));
    Transition {
        task_status: Some(TaskStatus::Error),
        commands,
    }
}

/// The end of a task whose gates passed (and whose change was approved, when it had to be):
/// publish its change, then report `done`.
fn finish(task_id: TaskId, step: Option<StepId>, round: u32, context: Context<'_>) -> [Command; 2] {
    let mut done = ReportEvent::new(
        task_id,
        ReportStatus::Done,
        format!("Task completed; artifacts in {}", context.task_dir),
        context.now,
    )
    .with_detail("round", round);
    done.stage = step;
    done.task_spend = Some(context.spent);
    [Command::PublishChange, Command::Report(done)]
}

/// What a failed publication leads to: `error`, with the reason.
pub fn on_publish_failed(
    task_id: TaskId,
    step: Option<StepId>,
    error: &str,
    context: Context<'_>,
) -> Transition {
    let mut event = ReportEvent::new(
        task_id,
        ReportStatus::Error,
        format!("error: the gates passed but the change could not be published: {error}"),
        context.now,
    );
    event.stage = step;
    event.task_spend = Some(context.spent);
    Transition {
        task_status: Some(TaskStatus::Error),
        commands: vec![Command::Report(event)],
    }
}

/// What a person's decision about a task leads to, once it is known to apply (the task
/// awaits approval for `approve` and `reject`, and has not ended for `cancel`): approval
/// publishes the change and ends the task `done`; rejection and cancellation end it with an
/// `error` event whose `reason` is `rejected` or `cancelled`. `step` is the task's current
/// step and `round` its round.
pub fn on_control(
    control: &TaskControl,
    step: Option<StepId>,
    round: u32,
    context: Context<'_>,
) -> Transition {
    let task_id = control.task_id;
    let by = control
        .by
        .as_deref()
        .map(|by| format!(" by {by}"))
        .unwrap_or_default();
    let comment = control
        .comment
        .as_deref()
        .map(|comment| format!(": {comment}"))
        .unwrap_or_default();
    let decision = |event: ReportEvent| {
        let mut event = event.with_detail("action", control.action.as_str());
        if let Some(by) = &control.by {
            event = event.with_detail("by", by.clone());
        }
        if let Some(comment) = &control.comment {
            event = event.with_detail("comment", comment.clone());
        }
        event.stage = step;
        event
    };
    match control.action {
        ControlAction::Approve => {
            let approved = ReportEvent::new(
                task_id,
                ReportStatus::Approved,
                format!("Change approved{by}{comment}"),
                context.now,
            );
            let mut commands = vec![Command::Report(decision(approved))];
            commands.extend(finish(task_id, step, round, context));
            Transition {
                task_status: Some(TaskStatus::Done),
                commands,
            }
        }
        ControlAction::Reject => {
            let event = stopped_event(
                task_id,
                REASON_REJECTED,
                format!("error: change rejected{by}{comment}"),
                context,
            );
            Transition {
                task_status: Some(TaskStatus::Error),
                commands: vec![Command::Report(decision(event))],
            }
        }
        ControlAction::Cancel => {
            let event = stopped_event(
                task_id,
                REASON_CANCELLED,
                format!("error: cancelled{by}{comment}"),
                context,
            );
            Transition {
                task_status: Some(TaskStatus::Cancelled),
                commands: vec![Command::Report(decision(event))],
            }
        }
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
