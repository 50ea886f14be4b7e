//! Failing steps: retried with backoff, then dead-lettered; redelivered results ignored.

mod common;

use agent_pipeline::store::{AttemptStatus, TaskStatus};
use agent_pipeline::wire::ReportStatus;
use agent_pipeline::{Stage, StepId};
use common::{
    Failing, TestResult, dead_letters, eventually, finish, mirrored_reports, start, start_with,
};

const HELLO: &str = "Write a tiny Python program that prints 'Hello Earthling'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_is_retried_then_dead_lettered() -> TestResult {
    let failing = Failing::new(Stage::Implement, u32::MAX, true);
    let mut harness = start_with(|b| b.agent(failing.clone())).await?;
    let pipeline = harness.pipeline.clone();
    let task_id = pipeline.submit(HELLO).await?;
    let last = finish(&pipeline, task_id).await?;
    assert_eq!(last.status, ReportStatus::Error);
    assert_eq!(
        last.summary,
        "error: Implement failed after 3 tries: induced failure 3"
    );
    assert_eq!(failing.runs(), 3, "the default policy tries three times");

    let events = mirrored_reports(&harness, task_id).await?;
    let story: Vec<String> = events.iter().map(|e| e.status.to_string()).collect();
    assert_eq!(
        story,
        ["received", "stage_done", "retry", "retry", "dlq", "error"]
    );
    assert!(
        events[2].summary.contains("induced failure 1"),
        "{}",
        events[2].summary
    );

    let letters = dead_letters(&pipeline, 1).await?;
    assert_eq!(
        letters[0].reason,
        "Implement failed after 3 tries: induced failure 3"
    );
    assert_eq!(letters[0].step_id.as_deref(), Some("implement@v1"));
    assert_eq!(letters[0].attempt, Some(3));
    assert!(letters[0].payload.contains("induced failure 3"));

    let attempts = pipeline.state().attempts(task_id).await?;
    let implement: Vec<_> = attempts
        .iter()
        .filter(|a| a.step_id() == StepId::v1(Stage::Implement))
        .collect();
    assert_eq!(implement.len(), 3);
    assert!(implement.iter().all(|a| a.status == AttemptStatus::Failed));
    assert!(
        implement
            .windows(2)
            .all(|w| w[0].request.requested_at <= w[1].request.requested_at)
    );
    let task = pipeline.state().task(task_id).await?.ok_or("task")?;
    assert_eq!(task.status, TaskStatus::Error);
    assert!(!harness.task_dir(task_id).join("implement@v1.json").exists());

    // The dead-letter topic is mirrored to a file.
    let file = harness.data_dir().join("dead_letters.jsonl");
    eventually("dead_letters.jsonl", || {
        let file = file.clone();
        async move {
            std::fs::read_to_string(&file)
                .is_ok_and(|t| t.contains("Implement failed after 3 tries"))
        }
    })
    .await?;
    harness.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_is_not_retried() -> TestResult {
    let failing = Failing::new(Stage::Design, u32::MAX, false);
    let mut harness = start_with(|b| b.agent(failing.clone())).await?;
    let task_id = harness.pipeline.submit(HELLO).await?;
    let last = finish(&harness.pipeline, task_id).await?;
    assert_eq!(last.summary, "error: Design failed: induced failure 1");
    assert_eq!(failing.runs(), 1);
    harness.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_step_succeeds_on_retry() -> TestResult {
    let flaky = Failing::new(Stage::Test, 1, true);
    let mut harness = start_with(|b| b.agent(flaky.clone())).await?;
    let task_id = harness.pipeline.submit(HELLO).await?;
    assert_eq!(
        finish(&harness.pipeline, task_id).await?.status,
        ReportStatus::Done
    );
    let artifact = harness
        .pipeline
        .artifacts()
        .read_artifact(task_id, StepId::v1(Stage::Test))
        .await?;
    assert_eq!(artifact.ok_or("test artifact")?.attempt.get(), 2);
    harness.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_step_result_does_not_create_a_second_attempt() -> TestResult {
    let mut harness = start().await?;
    let pipeline = harness.pipeline.clone();
    let task_id = pipeline.submit(HELLO).await?;
    assert_eq!(finish(&pipeline, task_id).await?.status, ReportStatus::Done);
    let files_before = pipeline.artifacts().documents(task_id).await?;
    let design_before = std::fs::read(harness.task_dir(task_id).join("design@v1.json"))?;
    let events_before = mirrored_reports(&harness, task_id).await?.len();

    // Take the design result off the results topic and deliver it again.
    let topic = pipeline.topics().step_results.clone();
    let copy = pipeline.bus().subscribe(&topic, "test-copier").await?;
    let design = tokio::time::timeout(common::PATIENCE, copy.next()).await??;
    assert!(String::from_utf8_lossy(&design.payload).contains("design@v1"));
    pipeline
        .bus()
        .publish(&topic, &design.key, design.payload.clone())
        .await?;
    // A malformed result after it: once it is dead-lettered, the copy was handled before it.
    pipeline
        .bus()
        .publish(&topic, "marker", b"{\"not\": \"a result\"}".to_vec())
        .await?;
    let letters = dead_letters(&pipeline, 1).await?;
    assert_eq!(letters[0].key.as_deref(), Some("marker"));

    let attempts = pipeline.state().attempts(task_id).await?;
    assert_eq!(attempts.len(), 4, "still one attempt per step");
    assert_eq!(pipeline.artifacts().documents(task_id).await?, files_before);
    assert_eq!(
        std::fs::read(harness.task_dir(task_id).join("design@v1.json"))?,
        design_before
    );
    assert_eq!(
        mirrored_reports(&harness, task_id).await?.len(),
        events_before,
        "no new report"
    );
    harness.stop().await;
    Ok(())
}
