//! Replay of one step: a new attempt file, the canonical file updated, a `replayed` event,
//! later stages not rerun, and a clear refusal when the step's inputs are missing.

mod common;

use agent_pipeline::store::{AttemptStatus, TaskStatus};
use agent_pipeline::wire::{ReplayStep, ReportStatus, encode};
use agent_pipeline::{Attempt, Error, Stage, StepId, TaskId};
use common::{Failing, TestResult, dead_letters, finish, start, start_with};

const HELLO: &str = "Write a tiny Python program that prints 'Hello Earthling'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_a_step_writes_a_new_attempt_and_reruns_nothing_else() -> TestResult {
    let mut harness = start().await?;
    let pipeline = harness.pipeline.clone();
    let task_id = pipeline.submit(HELLO).await?;
    assert_eq!(finish(&pipeline, task_id).await?.status, ReportStatus::Done);
    let dir = harness.task_dir(task_id);
    let test_before = std::fs::read(dir.join("test@v1.json"))?;
    let review_before = std::fs::read(dir.join("review@v1.json"))?;

    let implement = StepId::v1(Stage::Implement);
    let since = chrono::Utc::now();
    pipeline
        .replay(task_id, implement, Some("try again".into()))
        .await?;
    let event = tokio::time::timeout(
        common::PATIENCE,
        pipeline.wait_replay(task_id, implement, since),
    )
    .await??;
    assert_eq!(event.status, ReportStatus::Replayed);
    assert_eq!(event.summary, "Implement replayed (attempt 2)");
    assert_eq!(event.attempt, Some(Attempt::new(2)?));

    // Attempt files: the first attempt kept, the second written, the canonical updated.
    let first: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("implement@v1.attempt1.json"))?)?;
    let second: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("implement@v1.attempt2.json"))?)?;
    let canonical: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("implement@v1.json"))?)?;
    assert_eq!(first["attempt"], 1);
    assert_eq!(second["attempt"], 2);
    assert_eq!(second["replay_reason"], "try again");
    assert_eq!(canonical, second);

    // Later stages were not rerun.
    assert_eq!(std::fs::read(dir.join("test@v1.json"))?, test_before);
    assert_eq!(std::fs::read(dir.join("review@v1.json"))?, review_before);
    let attempts = pipeline.state().attempts(task_id).await?;
    let steps = common::attempt_steps(&attempts);
    assert_eq!(
        steps,
        [
            "design@v1#1",
            "implement@v1#1",
            "implement@v1#2",
            "test@v1#1",
            "review@v1#1"
        ]
    );
    assert!(
        attempts
            .iter()
            .all(|a| a.status == AttemptStatus::Succeeded)
    );
    let task = pipeline.state().task(task_id).await?.ok_or("task")?;
    assert_eq!(
        task.status,
        TaskStatus::Done,
        "a replay does not move the task"
    );

    // A second replay is attempt 3.
    let since = chrono::Utc::now();
    pipeline.replay(task_id, implement, None).await?;
    let event = tokio::time::timeout(
        common::PATIENCE,
        pipeline.wait_replay(task_id, implement, since),
    )
    .await??;
    assert_eq!(event.summary, "Implement replayed (attempt 3)");
    assert!(dir.join("implement@v1.attempt3.json").exists());

    let log = pipeline.report_log().clone();
    common::eventually("both replays in reports.jsonl", || {
        let log = log.clone();
        async move {
            let events = log.read_all().await.unwrap_or_default();
            events
                .iter()
                .filter(|e| e.task_id == task_id && e.status == ReportStatus::Replayed)
                .count()
                == 2
        }
    })
    .await?;
    harness.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_whose_inputs_are_missing_is_refused() -> TestResult {
    let mut harness =
        start_with(|b| b.agent(Failing::new(Stage::Implement, u32::MAX, false))).await?;
    let pipeline = harness.pipeline.clone();
    let task_id = pipeline.submit(HELLO).await?;
    assert_eq!(
        finish(&pipeline, task_id).await?.status,
        ReportStatus::Error
    );

    // Through the library: a typed error naming the missing input.
    let test = StepId::v1(Stage::Test);
    let refused = pipeline.replay(task_id, test, None).await;
    let Err(Error::ReplayInputsMissing { missing, .. }) = &refused else {
        panic!("expected a refusal, got {refused:?}");
    };
    assert_eq!(missing.to_string(), "implement@v1");
    let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("implement@v1 has no artifact"),
        "{message}"
    );

    // So is a step version this pipeline does not run, and an unknown task.
    let v2: StepId = "implement@v2".parse()?;
    let unknown_step = pipeline.replay(task_id, v2, None).await;
    assert!(
        matches!(unknown_step, Err(Error::UnknownStep(_))),
        "{unknown_step:?}"
    );

    let unknown = pipeline.replay(TaskId::new(), test, None).await;
    assert!(
        matches!(unknown, Err(Error::TaskNotFound(_))),
        "{unknown:?}"
    );

    // Through the bus, as another program would send it: dead-lettered with the reason and
    // reported as an error of that step; no attempt is created.
    let since = chrono::Utc::now();
    let command = encode(&ReplayStep::new(task_id, test, None));
    pipeline
        .publish_raw_task_message(&task_id.to_string(), command)
        .await?;
    let event = tokio::time::timeout(common::PATIENCE, pipeline.wait_replay(task_id, test, since))
        .await??;
    assert_eq!(event.status, ReportStatus::Error);
    assert!(
        event.summary.contains("replay refused"),
        "{}",
        event.summary
    );
    let letters = dead_letters(&pipeline, 2).await?;
    let refusal = letters
        .iter()
        .find(|l| l.reason.contains("replay refused"))
        .ok_or("refusal in the DLQ")?;
    assert!(
        refusal.reason.contains("implement@v1 has no artifact"),
        "{}",
        refusal.reason
    );
    assert!(refusal.payload.contains("replay_step"));
    assert!(
        pipeline
            .state()
            .last_attempt(task_id, test)
            .await?
            .is_none()
    );
    assert!(!harness.task_dir(task_id).join("test@v1.json").exists());
    harness.stop().await;
    Ok(())
}
