//! Control of a run: what it cost, budgets, approval, replays with another model or input,
//! and cancellation — on the real pipeline, with the OpenAI client talking to a local server
//! that speaks the Chat Completions protocol.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use agent_pipeline::budget::Budget;
use agent_pipeline::llm::{PriceTable, Spend, TokenPrices};
use agent_pipeline::store::{AttemptStatus, TaskStatus, canonical_document};
use agent_pipeline::wire::{
    ControlAction, NewTask, ReplayStep, ReportStatus, StepMode, TaskControl,
};
use agent_pipeline::{Attempt, Error, Pipeline, PipelineBuilder, Service, Stage, StepId, TaskId};
use common::openai::ChatServer;
use common::{Harness, PATIENCE, TestResult, eventually, finish, mirrored_reports, story};

const PROMPT: &str = "Write a tiny Python program that prints 'Hello Earthling'";

/// Prices of the two models the tests use, chosen so that every sum is easy to check.
fn prices() -> PriceTable {
    let mut prices = PriceTable::empty();
    prices.set(
        "model-a",
        TokenPrices {
            input_per_mtok: Some(1.0),
            output_per_mtok: Some(4.0),
        },
    );
    prices.set(
        "model-b",
        TokenPrices {
            input_per_mtok: Some(10.0),
            output_per_mtok: Some(40.0),
        },
    );
    prices
}

/// A pipeline over the server's `model-a`, without code execution unless `configure` turns
/// it on.
async fn start_on(
    server: &ChatServer,
    configure: impl FnOnce(PipelineBuilder) -> PipelineBuilder,
) -> Result<Harness, Box<dyn std::error::Error>> {
    let llm = server.llm("model-a");
    common::start_with(|builder| configure(builder.llm(llm).prices(prices()).execute_code(false)))
        .await
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_sums_match_the_per_call_records() -> TestResult {
    let server = ChatServer::start().await;
    let mut harness = start_on(&server, |b| b).await?;
    let pipeline = harness.pipeline.clone();
    let task_id = pipeline.submit(PROMPT).await?;
    assert_eq!(finish(&pipeline, task_id).await?.status, ReportStatus::Done);
    let events = mirrored_reports(&harness, task_id).await?;

    let mut task_total = Spend::default();
    for stage in Stage::ALL {
        let artifact = common::artifact(&harness, task_id, stage).await?;
        assert!(!artifact.llm_calls.is_empty(), "{stage} records its calls");
        for call in &artifact.llm_calls {
            assert_eq!(call.model, "model-a");
            let expected = (call.prompt_tokens as f64 * 1.0 + call.completion_tokens as f64 * 4.0)
                / 1_000_000.0;
            assert!(
                call.cost_usd.is_some_and(|cost| close(cost, expected)),
                "{call:?} is priced by the table"
            );
        }
        let step = Spend::of(&artifact.llm_calls);
        assert!(
            close(artifact.cost_usd, step.cost_usd),
            "{stage}: step cost = sum of calls"
        );
        assert_eq!(artifact.usage.total_tokens, step.usage.total_tokens);
        let done = events
            .iter()
            .find(|e| e.status == ReportStatus::StageDone && e.stage == Some(StepId::v1(stage)))
            .ok_or("stage_done event")?;
        assert!(done.cost_usd.is_some_and(|cost| close(cost, step.cost_usd)));
        task_total += step;
    }
    assert!(task_total.cost_usd > 0.0);

    // The task's totals, in the state store, on the `done` event and over the attempts.
    let record = pipeline.state().task(task_id).await?.ok_or("task record")?;
    assert_eq!(record.spend.calls, task_total.calls);
    assert_eq!(record.spend.usage, task_total.usage);
    assert!(close(record.spend.cost_usd, task_total.cost_usd));
    let done = events.last().ok_or("events")?;
    assert_eq!(done.status, ReportStatus::Done);
    let reported = done
        .task_spend
        .ok_or("the done event carries the task's spend")?;
    assert!(close(reported.cost_usd, task_total.cost_usd));
    assert_eq!(reported.calls, task_total.calls);
    let attempts = pipeline.state().attempts(task_id).await?;
    let recorded = Spend::of(attempts.iter().flat_map(|a| &a.calls));
    assert!(close(recorded.cost_usd, task_total.cost_usd));
    assert_eq!(server.requests().len() as u64, task_total.calls);
    harness.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_hit_mid_task_stops_it_with_the_reason_and_keeps_its_artifacts() -> TestResult {
    let server = ChatServer::start().await;
    let mut harness = start_on(&server, |b| b).await?;
    let pipeline = harness.pipeline.clone();

    // A first task shows what Design costs; the next may spend just a bit more than that,
    // so that it stops after Implement.
    let probe = pipeline.submit(PROMPT).await?;
    finish(&pipeline, probe).await?;
    let design = common::artifact(&harness, probe, Stage::Design).await?;
    let budget = Budget {
        max_tokens: Some(design.usage.total_tokens + 1),
        ..Budget::default()
    };
    let task_id = pipeline
        .enqueue(NewTask::new(PROMPT).with_budget(budget))
        .await?;
    let last = finish(&pipeline, task_id).await?;
    assert_eq!(last.status, ReportStatus::Error);
    assert_eq!(last.reason.as_deref(), Some("budget_exceeded"));
    assert_eq!(last.details["budget"]["limit"], "tokens");
    assert_eq!(last.stage, Some(StepId::v1(Stage::Implement)));
    let events = mirrored_reports(&harness, task_id).await?;
    assert_eq!(
        story(&events),
        [
            "received",
            "stage_done design@v1",
            "stage_done implement@v1",
            "error implement@v1"
        ]
    );
    // What it did is kept; nothing after the limit ran.
    common::artifact(&harness, task_id, Stage::Design).await?;
    common::artifact(&harness, task_id, Stage::Implement).await?;
    let attempts = pipeline.state().attempts(task_id).await?;
    assert_eq!(
        common::attempt_steps(&attempts),
        ["design@v1#1", "implement@v1#1"]
    );
    let record = pipeline.state().task(task_id).await?.ok_or("task")?;
    assert_eq!(record.status, TaskStatus::Error);
    let task = pipeline
        .artifacts()
        .read_task(task_id)
        .await?
        .ok_or("task.json")?;
    assert_eq!(task.budget.and_then(|b| b.max_tokens), budget.max_tokens);

    // Wall time: a slow model and a one-second limit stop the task inside its first step.
    server.set_delay(Duration::from_secs(3));
    let slow = pipeline
        .enqueue(NewTask::new(PROMPT).with_budget(Budget {
            max_wall_time_secs: Some(1),
            ..Budget::default()
        }))
        .await?;
    let last = finish(&pipeline, slow).await?;
    assert_eq!(last.reason.as_deref(), Some("budget_exceeded"));
    assert!(last.summary.contains("wall-time"), "{}", last.summary);
    assert_eq!(last.stage, Some(StepId::v1(Stage::Design)));
    server.set_delay(Duration::ZERO);
    harness.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_pause_survives_a_full_restart_and_then_completes() -> TestResult {
    let temp = tempfile::tempdir()?;
    let build = || async {
        common::builder(&temp)
            .require_approval(true)
            .resume_unfinished(true)
            .build()
            .await
    };
    let pipeline = build().await?;
    let running = pipeline.start().await?;
    let approved = pipeline.submit(PROMPT).await?;
    let rejected = pipeline.submit(PROMPT).await?;
    for task_id in [approved, rejected] {
        let event = tokio::time::timeout(
            PATIENCE,
            pipeline.wait_for(task_id, &[ReportStatus::AwaitingApproval]),
        )
        .await??;
        assert_eq!(
            event.status,
            ReportStatus::AwaitingApproval,
            "{}",
            event.summary
        );
    }
    // Approving a task that does not wait is refused at once.
    let early = pipeline
        .control(TaskControl::new(ControlAction::Approve, TaskId::new()))
        .await;
    assert!(matches!(early, Err(Error::TaskNotFound(_))), "{early:?}");
    running.shutdown().await;
    drop(pipeline);

    // Every process stopped; a new one finds the tasks still waiting.
    let pipeline = build().await?;
    let running = pipeline.start().await?;
    for task_id in [approved, rejected] {
        let task = pipeline.state().task(task_id).await?.ok_or("task")?;
        assert_eq!(task.status, TaskStatus::AwaitingApproval);
    }
    let published = pipeline.data_dir().join("published.git");
    let branch = format!("agent/{approved}");
    assert!(
        common::git(&published, &["rev-parse", "--verify", &branch]).is_err(),
        "nothing published before approval"
    );

    let mut approve = TaskControl::new(ControlAction::Approve, approved);
    approve.by = Some("ada".into());
    pipeline.control(approve).await?;
    let mut reject = TaskControl::new(ControlAction::Reject, rejected);
    reject.comment = Some("not like this".into());
    pipeline.control(reject).await?;

    let done = finish(&pipeline, approved).await?;
    assert_eq!(done.status, ReportStatus::Done, "{}", done.summary);
    common::git(&published, &["rev-parse", "--verify", &branch])?;
    let refused = finish(&pipeline, rejected).await?;
    assert_eq!(refused.reason.as_deref(), Some("rejected"));
    assert!(refused.summary.contains("not like this"));
    assert!(
        common::git(
            &published,
            &["rev-parse", "--verify", &format!("agent/{rejected}")]
        )
        .is_err()
    );
    let record = pipeline
        .artifacts()
        .read_document(approved, "approval.json")
        .await?
        .ok_or("approval.json")?;
    assert_eq!(record["by"], "ada");
    // A decision applies once.
    let again = pipeline
        .control(TaskControl::new(ControlAction::Approve, approved))
        .await;
    assert!(
        matches!(again, Err(Error::NotApplicable { .. })),
        "{again:?}"
    );
    running.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_with_another_model_reads_exactly_the_pinned_inputs() -> TestResult {
    let server = ChatServer::start().await;
    let mut harness = start_on(&server, |b| b).await?;
    let pipeline = harness.pipeline.clone();
    let task_id = pipeline.submit(PROMPT).await?;
    finish(&pipeline, task_id).await?;
    let design_step = StepId::v1(Stage::Design);
    let implement = StepId::v1(Stage::Implement);
    let design_file = harness
        .task_dir(task_id)
        .join(canonical_document(design_step));
    let design_before = std::fs::read(&design_file)?;
    let design = common::artifact(&harness, task_id, Stage::Design).await?;
    let calls_before = server.requests().len();

    let mut command = ReplayStep::new(task_id, implement, Some("try model-b".into()));
    command.model = Some("model-b".into());
    let since = chrono::Utc::now();
    pipeline.replay_variant(command).await?;
    let event =
        tokio::time::timeout(PATIENCE, pipeline.wait_replay(task_id, implement, since)).await??;
    assert_eq!(event.status, ReportStatus::Replayed, "{}", event.summary);
    assert_eq!(event.model.as_deref(), Some("model-b"));

    let second = pipeline
        .artifacts()
        .read_attempt(task_id, implement, Attempt::new(2)?)
        .await?
        .ok_or("attempt 2")?;
    assert_eq!(second.model, "model-b", "the artifact names the model");
    let variant = second.variant.clone().ok_or("the variant is recorded")?;
    assert_eq!(variant.model.as_deref(), Some("model-b"));
    assert_eq!(
        variant.pinned,
        BTreeMap::from([(design_step, Attempt::FIRST)])
    );
    for call in &second.llm_calls {
        let expected =
            (call.prompt_tokens as f64 * 10.0 + call.completion_tokens as f64 * 40.0) / 1_000_000.0;
        assert!(
            call.cost_usd.is_some_and(|c| close(c, expected)),
            "priced as model-b"
        );
    }
    // Nothing upstream ran again or changed, and the model saw the pinned design byte for byte.
    let requests = server.requests();
    assert_eq!(requests.len(), calls_before + second.llm_calls.len());
    assert!(
        requests[calls_before..]
            .iter()
            .all(|r| r["model"] == "model-b")
    );
    let design_json =
        serde_json::to_string_pretty(&serde_json::Value::Object(design.output.clone()))?;
    let user = requests[calls_before]["messages"][1]["content"]
        .as_str()
        .unwrap_or_default();
    assert!(
        user.contains(&design_json),
        "the pinned design is the input"
    );
    assert_eq!(
        design_before,
        std::fs::read(&design_file)?,
        "the design is unchanged"
    );
    let attempts = pipeline.state().attempts(task_id).await?;
    assert_eq!(
        common::attempt_steps(&attempts),
        [
            "design@v1#1",
            "implement@v1#1",
            "implement@v1#2",
            "test@v1#1",
            "review@v1#1"
        ]
    );

    // An edited upstream output and prompt, recorded as such, and the later stages continued.
    let mut edited = serde_json::Map::new();
    edited.insert(
        "design_summary".into(),
        "Print the greeting in capitals".into(),
    );
    edited.insert("files_touched".into(), serde_json::json!(["hello.py"]));
    let mut command = ReplayStep::new(task_id, implement, None);
    command.inputs.insert(design_step, edited.clone());
    command.prompt = Some("Write a program that prints 'HELLO EARTHLING'".into());
    command.continue_downstream = true;
    let before = server.requests().len();
    pipeline.replay_variant(command).await?;
    eventually("the continued run to end", || {
        let pipeline = pipeline.clone();
        async move {
            let attempts = pipeline.state().attempts(task_id).await.unwrap_or_default();
            attempts.iter().any(|a| {
                a.step_id() == StepId::v1(Stage::Review)
                    && a.attempt() == Attempt::new(2).unwrap_or(Attempt::FIRST)
                    && a.status == AttemptStatus::Succeeded
            })
        }
    })
    .await?;
    let third = pipeline
        .artifacts()
        .read_attempt(task_id, implement, Attempt::new(3)?)
        .await?
        .ok_or("attempt 3")?;
    let variant = third.variant.ok_or("variant")?;
    assert_eq!(variant.inputs.get(&design_step), Some(&edited));
    assert!(
        variant.pinned.is_empty(),
        "an edited input is not read from the store"
    );
    let user = server.requests()[before]["messages"][1]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(user.contains("Print the greeting in capitals") && user.contains("HELLO EARTHLING"));
    let review = pipeline.state().attempts(task_id).await?;
    let continued = review
        .iter()
        .filter(|a| a.step_id().stage() != Stage::Implement && a.attempt() != Attempt::FIRST)
        .map(|a| (a.step_id().stage(), a.mode()))
        .collect::<Vec<_>>();
    assert_eq!(
        continued,
        [(Stage::Test, StepMode::Run), (Stage::Review, StepMode::Run)]
    );
    let record = pipeline.state().task(task_id).await?.ok_or("task")?;
    assert_eq!(record.status, TaskStatus::Done);

    // An unknown provider is refused before anything is sent.
    let mut unknown = ReplayStep::new(task_id, implement, None);
    unknown.provider = Some("nowhere".into());
    let refused = pipeline.replay_variant(unknown).await;
    assert!(
        matches!(refused, Err(Error::InvalidReplay(_))),
        "{refused:?}"
    );
    harness.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_task_within_a_step_and_between_steps() -> TestResult {
    let server = ChatServer::start().await;
    let mut harness = start_on(&server, |b| b).await?;
    let pipeline = harness.pipeline.clone();

    // Within a step: the model holds Design's call; the cancellation abandons it.
    server.hold();
    let task_id = pipeline.submit(PROMPT).await?;
    eventually("design's call to reach the model", || {
        let server = server.clone();
        async move { !server.requests().is_empty() }
    })
    .await?;
    pipeline
        .control(TaskControl::new(ControlAction::Cancel, task_id))
        .await?;
    let last = finish(&pipeline, task_id).await?;
    assert_eq!(last.reason.as_deref(), Some("cancelled"));
    eventually("design's attempt to be recorded as stopped", || {
        let pipeline = pipeline.clone();
        async move {
            let attempts = pipeline.state().attempts(task_id).await.unwrap_or_default();
            attempts.len() == 1 && attempts[0].status == AttemptStatus::Failed
        }
    })
    .await?;
    eventually("the held call to be abandoned", || {
        let server = server.clone();
        async move { server.abandoned() == 1 }
    })
    .await?;
    server.release();
    let record = pipeline.state().task(task_id).await?.ok_or("task")?;
    assert_eq!(record.status, TaskStatus::Cancelled);
    let attempts = pipeline.state().attempts(task_id).await?;
    assert_eq!(common::attempt_steps(&attempts), ["design@v1#1"]);
    assert_eq!(attempts[0].error.as_deref(), Some("the task was cancelled"));
    assert!(
        pipeline
            .artifacts()
            .read_artifact(task_id, StepId::v1(Stage::Design))
            .await?
            .is_none()
    );
    harness.stop().await;

    // Between steps: the step was requested but no worker took it yet; once one does, it
    // finds the task cancelled and runs nothing.
    let temp = tempfile::tempdir()?;
    let pipeline: Pipeline = common::builder(&temp)
        .llm(server.llm("model-a"))
        .execute_code(false)
        .build()
        .await?;
    let others = pipeline
        .start_services(&[Service::Planner, Service::Orchestrator, Service::Mirror])
        .await?;
    let calls = server.requests().len();
    let task_id = pipeline.submit(PROMPT).await?;
    eventually("the design step to be requested", || {
        let pipeline = pipeline.clone();
        async move {
            !pipeline
                .state()
                .attempts(task_id)
                .await
                .unwrap_or_default()
                .is_empty()
        }
    })
    .await?;
    pipeline
        .control(TaskControl::new(ControlAction::Cancel, task_id))
        .await?;
    eventually("the task to be cancelled", || {
        let pipeline = pipeline.clone();
        async move {
            pipeline
                .state()
                .task(task_id)
                .await
                .ok()
                .flatten()
                .is_some_and(|t| t.status == TaskStatus::Cancelled)
        }
    })
    .await?;
    let worker = pipeline.start_services(&[Service::Worker]).await?;
    eventually("the requested step to be recorded as stopped", || {
        let pipeline = pipeline.clone();
        async move {
            let attempts = pipeline.state().attempts(task_id).await.unwrap_or_default();
            attempts.len() == 1 && attempts[0].status == AttemptStatus::Failed
        }
    })
    .await?;
    assert_eq!(server.requests().len(), calls, "no model was called");
    let cancel_again = pipeline
        .control(TaskControl::new(ControlAction::Cancel, task_id))
        .await;
    assert!(matches!(cancel_again, Err(Error::NotApplicable { .. })));
    worker.shutdown().await;
    others.shutdown().await;
    Ok(())
}
