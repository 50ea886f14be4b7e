use std::time::Duration;

use chrono::Utc;
use serde_json::json;

use super::*;
use crate::TaskId;
use crate::budget::Budget;
use crate::llm::{LlmCall, Usage};
use crate::wire::Variant;

fn context(now: DateTime<Utc>) -> Context<'static> {
    Context {
        task_dir: "./data/t",
        results_topic: "step_results",
        now,
        jitter: 0.5,
        last_attempts: LastAttempts::default(),
        spent: Spend::default(),
    }
}

fn result(
    stage: Stage,
    attempt: u32,
    try_number: u32,
    mode: StepMode,
    outcome: StepOutcome,
) -> StepResult {
    StepResult {
        task_id: TaskId::new(),
        step_id: StepId::v1(stage),
        attempt: Attempt::new(attempt).unwrap_or(Attempt::FIRST),
        try_number,
        mode,
        round: 1,
        reason: None,
        outcome,
        started_at: Utc::now(),
        duration_ms: 7,
        calls: Vec::new(),
        budget: None,
        require_approval: false,
        variant: None,
    }
}

fn ok() -> StepOutcome {
    StepOutcome::Succeeded {
        output: json!({}),
        model: "m".into(),
        usage: Usage::default(),
    }
}

fn failed(retryable: bool) -> StepOutcome {
    StepOutcome::Failed {
        error: "boom".into(),
        retryable,
    }
}

fn statuses(transition: &Transition) -> Vec<String> {
    transition
        .commands
        .iter()
        .map(|c| match c {
            Command::SaveArtifact => "save".to_owned(),
            Command::RequestStep(r) => format!("request {} #{}", r.step_id, r.attempt),
            Command::Report(e) => format!("report {}", e.status),
            Command::DeadLetter(_) => "dlq".to_owned(),
            Command::EvaluateGates => "gates".to_owned(),
            Command::PublishChange => "publish".to_owned(),
        })
        .collect()
}

fn call(tokens: u64, cost: f64) -> LlmCall {
    LlmCall {
        model: "m".into(),
        provider: None,
        prompt_tokens: tokens,
        completion_tokens: 0,
        cost_usd: Some(cost),
        duration_ms: 1,
        error: None,
    }
}

/// A budget of `max_cost_usd`, started now with nothing spent.
fn budget(max_cost_usd: f64) -> TaskBudget {
    TaskBudget {
        limits: Budget {
            max_cost_usd: Some(max_cost_usd),
            ..Budget::default()
        },
        started_at: Utc::now(),
        spent: Spend::default(),
    }
}

#[test]
fn each_stage_requests_the_next_and_review_ends_the_round_with_the_gates() {
    let now = Utc::now();
    let policy = RetryPolicy::default();
    let design = on_step_result(
        &policy,
        &result(Stage::Design, 1, 1, StepMode::Run, ok()),
        context(now),
    );
    assert_eq!(
        statuses(&design),
        ["save", "report stage_done", "request implement@v1 #1"]
    );
    assert_eq!(design.task_status, Some(TaskStatus::Running));

    let review = on_step_result(
        &policy,
        &result(Stage::Review, 1, 1, StepMode::Run, ok()),
        context(now),
    );
    assert_eq!(statuses(&review), ["save", "report stage_done", "gates"]);
    assert_eq!(review.task_status, Some(TaskStatus::Running));
}

#[test]
fn new_attempts_follow_the_last_attempt_of_their_step() {
    let policy = RetryPolicy::default();
    let mut later_round = context(Utc::now());
    later_round.last_attempts = LastAttempts::of([
        (StepId::v1(Stage::Test), Attempt::FIRST),
        (StepId::v1(Stage::Test), attempt(3)),
        (StepId::v1(Stage::Test), attempt(2)),
    ]);
    let mut implement = result(Stage::Implement, 4, 1, StepMode::Run, ok());
    implement.round = 2;
    let next = on_step_result(&policy, &implement, later_round);
    assert_eq!(
        statuses(&next),
        ["save", "report stage_done", "request test@v1 #4"]
    );
    let Some(Command::RequestStep(request)) = next.commands.last() else {
        panic!("request")
    };
    assert_eq!(request.round, 2, "the round carries on");
    assert_eq!(
        later_round.last_attempts.next(Stage::Review),
        Attempt::FIRST
    );
}

fn attempt(n: u32) -> Attempt {
    Attempt::new(n).unwrap_or_else(|e| panic!("{e}"))
}

fn verdicts(failing: &[&str]) -> Vec<GateVerdict> {
    ["tests", "review", "secrets"]
        .into_iter()
        .map(|gate| {
            if failing.contains(&gate) {
                GateVerdict::fail(gate, format!("{gate} found a problem\nmore detail"))
            } else {
                GateVerdict::pass(gate, "fine")
            }
        })
        .collect()
}

#[test]
fn passed_gates_publish_and_finish_the_task() {
    let review = result(Stage::Review, 1, 1, StepMode::Run, ok());
    let passed = on_gates(3, &review, &verdicts(&[]), context(Utc::now()));
    assert_eq!(
        statuses(&passed),
        ["report gates", "publish", "report done"]
    );
    assert_eq!(passed.task_status, Some(TaskStatus::Done));
    let Some(Command::Report(done)) = passed.commands.last() else {
        panic!("done report")
    };
    assert_eq!(done.summary, "Task completed; artifacts in ./data/t");
    let Some(Command::Report(gates)) = passed.commands.first() else {
        panic!("gates report")
    };
    assert_eq!(
        gates.summary,
        "Gates passed (round 1): tests, review, secrets"
    );
    assert_eq!(gates.details["passed"], true);
}

#[test]
fn failed_gates_send_the_change_back_to_implement_until_the_rounds_run_out() {
    let mut now = context(Utc::now());
    now.last_attempts = LastAttempts::of([(StepId::v1(Stage::Implement), attempt(2))]);
    let review = result(Stage::Review, 1, 1, StepMode::Run, ok());
    let again = on_gates(3, &review, &verdicts(&["tests", "secrets"]), now);
    assert_eq!(
        statuses(&again),
        ["report gates", "request implement@v1 #3"]
    );
    assert_eq!(again.task_status, Some(TaskStatus::Running));
    let Some(Command::RequestStep(request)) = again.commands.last() else {
        panic!("request")
    };
    assert_eq!((request.round, request.mode), (2, StepMode::Run));
    let feedback = request.reason.as_deref().unwrap_or_default();
    assert!(
        feedback.contains("gate tests: tests found a problem")
            && feedback.contains("gate secrets:")
            && !feedback.contains("gate review"),
        "{feedback}"
    );

    let mut last_round = review.clone();
    last_round.round = 3;
    let spent = on_gates(3, &last_round, &verdicts(&["tests"]), now);
    assert_eq!(statuses(&spent), ["report gates", "report error"]);
    assert_eq!(spent.task_status, Some(TaskStatus::Error));
    let Some(Command::Report(error)) = spent.commands.last() else {
        panic!("error")
    };
    assert_eq!(
        error.summary,
        "error: gate(s) tests failed after 3 rounds: tests: tests found a problem"
    );
    assert_eq!(error.reason.as_deref(), Some(REASON_BUDGET_EXCEEDED));
    assert_eq!(error.details["budget"]["limit"], "rounds");

    // A task's own budget of rounds replaces the pipeline's.
    let mut two_rounds = review.clone();
    two_rounds.round = 2;
    two_rounds.budget = Some(TaskBudget {
        limits: Budget {
            max_rounds: Some(2),
            ..Budget::default()
        },
        ..budget(1.0)
    });
    let spent = on_gates(3, &two_rounds, &verdicts(&["tests"]), now);
    assert_eq!(spent.task_status, Some(TaskStatus::Error));
    two_rounds.round = 1;
    let again = on_gates(3, &two_rounds, &verdicts(&["tests"]), now);
    let Some(Command::RequestStep(request)) = again.commands.last() else {
        panic!("request")
    };
    assert_eq!(request.budget.and_then(|b| b.limits.max_rounds), Some(2));
}

#[test]
fn the_budget_goes_on_with_what_was_spent_and_stops_the_task_when_reached() {
    let policy = RetryPolicy::default();
    let mut design = result(Stage::Design, 1, 1, StepMode::Run, ok());
    design.budget = Some(budget(0.5));
    design.require_approval = true;
    design.calls = vec![call(100, 0.2)];
    let mut now = context(Utc::now());
    now.spent = Spend::of(&design.calls);
    let next = on_step_result(&policy, &design, now);
    assert_eq!(
        statuses(&next),
        ["save", "report stage_done", "request implement@v1 #1"]
    );
    let Some(Command::RequestStep(request)) = next.commands.last() else {
        panic!("request")
    };
    let carried = request
        .budget
        .map(|b| (b.spent.cost_usd, b.spent.usage.total_tokens));
    assert_eq!(
        carried,
        Some((0.2, 100)),
        "the next step knows what was spent"
    );
    assert!(request.require_approval);
    let Some(Command::Report(done)) = next.commands.get(1) else {
        panic!("report")
    };
    assert_eq!(done.cost_usd, Some(0.2));
    assert_eq!(done.task_spend.map(|s| s.calls), Some(1));

    // The next step takes the task over its limit: its artifact is kept, the task stops.
    let mut implement = result(Stage::Implement, 1, 1, StepMode::Run, ok());
    implement.budget = request.budget;
    implement.calls = vec![call(100, 0.3)];
    now.spent += Spend::of(&implement.calls);
    let stopped = on_step_result(&policy, &implement, now);
    assert_eq!(
        statuses(&stopped),
        ["save", "report stage_done", "report error"]
    );
    assert_eq!(stopped.task_status, Some(TaskStatus::Error));
    let Some(Command::Report(error)) = stopped.commands.last() else {
        panic!("error")
    };
    assert_eq!(error.reason.as_deref(), Some(REASON_BUDGET_EXCEEDED));
    assert_eq!(error.details["budget"]["limit"], "cost_usd");
    assert!(
        error.summary.contains("budget exceeded"),
        "{}",
        error.summary
    );

    // A failure past the budget is not retried, and a worker's stop ends the task too.
    let mut failing = result(Stage::Test, 1, 1, StepMode::Run, failed(true));
    failing.budget = request.budget;
    let failed = on_step_result(&policy, &failing, now);
    assert_eq!(statuses(&failed), ["report error"]);
    let stop = StepOutcome::Stopped {
        cause: StopReason::BudgetExceeded,
        detail: "the task's budget is spent".into(),
    };
    let worker_stop = on_step_result(
        &policy,
        &result(Stage::Test, 1, 1, StepMode::Run, stop),
        now,
    );
    assert_eq!(worker_stop.task_status, Some(TaskStatus::Error));
    assert_eq!(statuses(&worker_stop), ["report error"]);
}

#[test]
fn a_cancelled_step_is_only_recorded() {
    let stop = StepOutcome::Stopped {
        cause: StopReason::Cancelled,
        detail: "the task was cancelled".into(),
    };
    let transition = on_step_result(
        &RetryPolicy::default(),
        &result(Stage::Implement, 1, 1, StepMode::Run, stop),
        context(Utc::now()),
    );
    assert_eq!(transition.task_status, None);
    assert!(transition.commands.is_empty());
}

#[test]
fn passed_gates_wait_for_approval_when_the_task_asks_for_it() {
    let mut review = result(Stage::Review, 1, 1, StepMode::Run, ok());
    review.require_approval = true;
    let waiting = on_gates(3, &review, &verdicts(&[]), context(Utc::now()));
    assert_eq!(
        statuses(&waiting),
        ["report gates", "report awaiting_approval"]
    );
    assert_eq!(waiting.task_status, Some(TaskStatus::AwaitingApproval));
}

#[test]
fn decisions_publish_reject_or_cancel() {
    let task_id = TaskId::new();
    let step = Some(StepId::v1(Stage::Review));
    let mut control = TaskControl::new(ControlAction::Approve, task_id);
    control.by = Some("ada".into());
    let approved = on_control(&control, step, 2, context(Utc::now()));
    assert_eq!(
        statuses(&approved),
        ["report approved", "publish", "report done"]
    );
    assert_eq!(approved.task_status, Some(TaskStatus::Done));
    let Some(Command::Report(event)) = approved.commands.first() else {
        panic!("approved")
    };
    assert_eq!(event.summary, "Change approved by ada");
    assert_eq!(event.details["by"], "ada");

    control.action = ControlAction::Reject;
    control.comment = Some("not this way".into());
    let rejected = on_control(&control, step, 2, context(Utc::now()));
    assert_eq!(statuses(&rejected), ["report error"]);
    assert_eq!(rejected.task_status, Some(TaskStatus::Error));
    let Some(Command::Report(event)) = rejected.commands.first() else {
        panic!("rejected")
    };
    assert_eq!(event.reason.as_deref(), Some(REASON_REJECTED));
    assert_eq!(event.summary, "error: change rejected by ada: not this way");

    control.action = ControlAction::Cancel;
    let cancelled = on_control(&control, step, 1, context(Utc::now()));
    assert_eq!(cancelled.task_status, Some(TaskStatus::Cancelled));
    let Some(Command::Report(event)) = cancelled.commands.first() else {
        panic!("cancelled")
    };
    assert_eq!(event.status, ReportStatus::Error);
    assert_eq!(event.reason.as_deref(), Some(REASON_CANCELLED));
}

#[test]
fn a_replay_that_continues_runs_the_later_stages_without_a_budget() {
    let mut replay = result(Stage::Implement, 3, 1, StepMode::Replay, ok());
    replay.variant = Some(Variant {
        model: Some("bigger".into()),
        continue_downstream: true,
        ..Variant::default()
    });
    replay.require_approval = true;
    let transition = on_step_result(&RetryPolicy::default(), &replay, context(Utc::now()));
    assert_eq!(
        statuses(&transition),
        ["save", "report replayed", "request test@v1 #1"]
    );
    assert_eq!(transition.task_status, Some(TaskStatus::Running));
    let Some(Command::RequestStep(request)) = transition.commands.last() else {
        panic!("request")
    };
    assert_eq!(request.mode, StepMode::Run);
    assert!(request.variant.is_none() && request.budget.is_none());
    assert!(request.require_approval, "the task's approval still holds");
}

#[test]
fn a_failed_publication_ends_the_task_in_error() {
    let review = result(Stage::Review, 1, 1, StepMode::Run, ok());
    let failed = on_publish_failed(
        review.task_id,
        Some(review.step_id),
        "no such repository",
        context(Utc::now()),
    );
    assert_eq!(statuses(&failed), ["report error"]);
    assert_eq!(failed.task_status, Some(TaskStatus::Error));
}

#[test]
fn a_replay_does_not_run_later_stages_or_move_the_task() {
    let policy = RetryPolicy::default();
    let replay = on_step_result(
        &policy,
        &result(Stage::Implement, 2, 1, StepMode::Replay, ok()),
        context(Utc::now()),
    );
    assert_eq!(statuses(&replay), ["save", "report replayed"]);
    assert_eq!(replay.task_status, None);
    let Some(Command::Report(event)) = replay.commands.last() else {
        panic!("report")
    };
    assert_eq!(event.summary, "Implement replayed (attempt 2)");
}

#[test]
fn failures_are_retried_with_backoff_then_dead_lettered() {
    let now = Utc::now();
    let policy = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(60),
    };
    let first = on_step_result(
        &policy,
        &result(Stage::Test, 1, 1, StepMode::Run, failed(true)),
        context(now),
    );
    assert_eq!(statuses(&first), ["request test@v1 #2", "report retry"]);
    let Some(Command::RequestStep(retry)) = first.commands.first() else {
        panic!("retry")
    };
    assert_eq!(retry.try_number, 2);
    assert_eq!(
        retry.not_before,
        Some(now + chrono::Duration::milliseconds(750))
    );

    let second = on_step_result(
        &policy,
        &result(Stage::Test, 2, 2, StepMode::Run, failed(true)),
        context(now),
    );
    let Some(Command::RequestStep(retry)) = second.commands.first() else {
        panic!("retry")
    };
    assert_eq!(
        retry.not_before,
        Some(now + chrono::Duration::milliseconds(1500))
    );

    let last = on_step_result(
        &policy,
        &result(Stage::Test, 3, 3, StepMode::Run, failed(true)),
        context(now),
    );
    assert_eq!(statuses(&last), ["dlq", "report dlq", "report error"]);
    assert_eq!(last.task_status, Some(TaskStatus::Error));
    let Some(Command::DeadLetter(letter)) = last.commands.first() else {
        panic!("dlq")
    };
    assert_eq!(letter.reason, "Test failed after 3 tries: boom");
    assert_eq!(letter.step_id.as_deref(), Some("test@v1"));
}

#[test]
fn a_permanent_failure_is_not_retried() {
    let policy = RetryPolicy::default();
    let failed = on_step_result(
        &policy,
        &result(Stage::Design, 1, 1, StepMode::Run, failed(false)),
        context(Utc::now()),
    );
    assert_eq!(statuses(&failed), ["dlq", "report dlq", "report error"]);
    let Some(Command::Report(event)) = failed.commands.last() else {
        panic!("error")
    };
    assert_eq!(event.summary, "error: Design failed: boom");
}

#[test]
fn backoff_grows_exponentially_with_bounded_jitter_and_a_cap() {
    let policy = RetryPolicy {
        max_attempts: 10,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
    };
    let mut previous = Duration::ZERO;
    for failed_try in 1..=4 {
        let low = policy.backoff(failed_try, 0.0);
        let high = policy.backoff(failed_try, 0.999);
        assert!(
            low >= previous && high >= low && high < low * 2,
            "try {failed_try}: {low:?}..{high:?}"
        );
        previous = low;
    }
    assert_eq!(policy.backoff(20, 0.999_999).as_millis(), 999);
    assert_eq!(policy.backoff(u32::MAX, 0.0), Duration::from_millis(500));
}

#[test]
fn jitter_is_in_range_and_varies() {
    let draws: Vec<f64> = (0..200).map(|_| random_jitter()).collect();
    assert!(draws.iter().all(|j| (0.0..1.0).contains(j)));
    let low = draws.iter().filter(|j| **j < 0.5).count();
    assert!((40..=160).contains(&low), "{low} of 200 below one half");
}
