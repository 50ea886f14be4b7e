//! Retention on a real pipeline: the history of ended tasks is pruned (superseded attempts,
//! their artifacts, old report events) while a running task keeps everything and the pipeline
//! goes on working; deleting whole tasks removes their directory; a running pipeline with a
//! policy prunes by itself.

mod common;

use std::time::Duration;

use agent_pipeline::retention::{Pruned, RetentionPolicy};
use agent_pipeline::store::{Pruning, TaskStatus};
use agent_pipeline::wire::{ReportEvent, ReportStatus};
use agent_pipeline::{Attempt, Pipeline, Stage, StepId, TaskId};
use common::{
    Harness, PATIENCE, TestResult, eventually, finish, mirrored_reports, reports_until, start,
    start_with,
};

const HELLO: &str = "Write a tiny Python program that prints 'Hello Earthling'";

/// Runs a task to its end (with `ci`, the check of its published change, in reports.jsonl)
/// and replays its design once: two design attempts.
async fn replayed_task(harness: &Harness, ci: bool) -> Result<TaskId, Box<dyn std::error::Error>> {
    let pipeline = &harness.pipeline;
    let task_id = pipeline.submit(HELLO).await?;
    assert_eq!(finish(pipeline, task_id).await?.status, ReportStatus::Done);
    if ci {
        reports_until(harness, task_id, ReportStatus::Ci).await?;
    }
    replay_design(pipeline, task_id).await?;
    Ok(task_id)
}

async fn replay_design(
    pipeline: &Pipeline,
    task_id: TaskId,
) -> Result<ReportEvent, Box<dyn std::error::Error>> {
    let design = StepId::v1(Stage::Design);
    let since = chrono::Utc::now();
    pipeline.replay(task_id, design, None).await?;
    Ok(tokio::time::timeout(PATIENCE, pipeline.wait_replay(task_id, design, since)).await??)
}

/// A task that is still running, with a report event from long ago.
async fn running_task(pipeline: &Pipeline) -> Result<TaskId, Box<dyn std::error::Error>> {
    let id = TaskId::new();
    let long_ago = chrono::Utc::now() - chrono::TimeDelta::days(400);
    pipeline
        .state()
        .insert_task(id, "still running", long_ago)
        .await?;
    pipeline
        .state()
        .set_task_status(id, TaskStatus::Running, None, long_ago)
        .await?;
    pipeline
        .report_log()
        .append(&ReportEvent::new(
            id,
            ReportStatus::Received,
            "received",
            long_ago,
        ))
        .await?;
    Ok(id)
}

fn names(dir: &std::path::Path) -> Result<Vec<String>, std::io::Error> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    Ok(names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_history_keeps_running_tasks_and_the_pipeline_working() -> TestResult {
    let harness = start().await?;
    let pipeline = harness.pipeline.clone();
    let old = replayed_task(&harness, true).await?;
    let running = running_task(&pipeline).await?;
    mirrored_reports(&harness, old).await?;
    let dir = harness.task_dir(old);
    assert!(names(&dir)?.contains(&"design@v1.attempt1.json".to_owned()));

    // Everything that ended before now is old enough.
    let policy = RetentionPolicy::after(Duration::ZERO);
    // The replay's own report may still be on its way to the file: wait until it is there.
    eventually("the replay's report in reports.jsonl", || async {
        pipeline.report_log().read_all().await.is_ok_and(|events| {
            events
                .iter()
                .any(|e| e.task_id == old && e.status == ReportStatus::Replayed)
        })
    })
    .await?;
    let pruned = pipeline.prune(&policy).await?;
    assert_eq!(pruned.tasks, 1, "{pruned:?}");
    assert_eq!(
        pruned.documents, 2,
        "the two design attempt files: {pruned:?}"
    );
    assert!(pruned.report_events >= 7, "{pruned:?}");

    let files = names(&dir)?;
    assert!(
        !files.iter().any(|f| f.contains(".attempt")),
        "attempt files are pruned: {files:?}"
    );
    for kept in ["task.json", "design@v1.json", "review@v1.json", "workspace"] {
        assert!(
            files.contains(&kept.to_owned()),
            "{kept} is kept: {files:?}"
        );
    }
    let attempts = pipeline.state().attempts(old).await?;
    let steps = common::attempt_steps(&attempts);
    assert_eq!(
        steps,
        ["design@v1#2", "implement@v1#1", "test@v1#1", "review@v1#1"],
        "each step's last attempt is kept"
    );
    let events = pipeline.report_log().read_all().await?;
    assert!(
        !events.iter().any(|e| e.task_id == old),
        "the ended task's events are pruned"
    );
    assert!(
        events.iter().any(|e| e.task_id == running),
        "a running task keeps its events however old"
    );
    assert_eq!(
        pipeline.state().task(running).await?.map(|t| t.status),
        Some(TaskStatus::Running)
    );

    // The pruned task can be replayed: its attempt numbers go on.
    let replayed = replay_design(&pipeline, old).await?;
    assert_eq!(replayed.attempt, Some(Attempt::new(3)?));
    assert!(names(&dir)?.contains(&"design@v1.attempt2.json".to_owned()));
    // And new tasks run.
    let next = pipeline.submit(HELLO).await?;
    assert_eq!(finish(&pipeline, next).await?.status, ReportStatus::Done);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_whole_tasks_removes_their_directory() -> TestResult {
    let harness = start().await?;
    let pipeline = harness.pipeline.clone();
    let old = replayed_task(&harness, true).await?;
    let running = running_task(&pipeline).await?;
    let policy = RetentionPolicy::after(Duration::ZERO).deleting_tasks();
    assert_eq!(policy.pruning, Pruning::WholeTask);
    let pruned = pipeline.prune(&policy).await?;
    assert_eq!(pruned.tasks, 1, "{pruned:?}");
    assert!(
        !harness.task_dir(old).exists(),
        "the task's directory is deleted"
    );
    assert_eq!(pipeline.state().task(old).await?, None);
    assert!(pipeline.state().attempts(old).await?.is_empty());
    assert!(pipeline.state().task(running).await?.is_some());
    let replay = pipeline.replay(old, StepId::v1(Stage::Design), None).await;
    assert!(
        matches!(replay, Err(agent_pipeline::Error::TaskNotFound(_))),
        "a deleted task is not found: {replay:?}"
    );
    assert_eq!(
        pipeline.prune(&policy).await?,
        Pruned::default(),
        "nothing is left to prune"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_pipeline_prunes_by_itself() -> TestResult {
    let policy = RetentionPolicy {
        every: Duration::from_millis(50),
        ..RetentionPolicy::after(Duration::ZERO)
    };
    let harness = start_with(|b| b.retention(policy)).await?;
    let pipeline = harness.pipeline.clone();
    // The pipeline prunes the task's events from reports.jsonl as soon as it has ended: the
    // check of its change is not waited for there.
    let old = replayed_task(&harness, false).await?;
    let dir = harness.task_dir(old);
    eventually(
        "the attempt files pruned by the running pipeline",
        || async { names(&dir).is_ok_and(|files| !files.iter().any(|f| f.contains(".attempt"))) },
    )
    .await?;
    eventually("the superseded attempt pruned from the state", || async {
        pipeline
            .state()
            .attempts(old)
            .await
            .is_ok_and(|attempts| attempts.len() == 4)
    })
    .await?;
    Ok(())
}
