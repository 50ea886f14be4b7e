//! The core's limit on a prompt's length: the library refuses a longer one at `enqueue`,
//! and one that reaches the task topic anyway (another producer) is dead-lettered and ends in
//! `error`, with nothing recorded; a message that names a task which exists ends nothing.

mod common;

use agent_pipeline::bus::FollowFrom;
use agent_pipeline::machine::REASON_PROMPT_TOO_LONG;
use agent_pipeline::wire::{ControlAction, NewTask, ReportStatus, TaskControl};
use agent_pipeline::{Error, PipelineBuilder, TaskId};
use common::{PATIENCE, TestResult, dead_letters, events_until, finish, start, start_with};

const HELLO: &str = "Write a tiny Python program that prints 'Hello Earthling'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_refuses_a_prompt_over_the_limit_and_publishes_nothing() -> TestResult {
    let temp = tempfile::tempdir()?;
    let pipeline = common::builder(&temp).build().await?;
    assert_eq!(
        pipeline.max_prompt_chars(),
        PipelineBuilder::DEFAULT_MAX_PROMPT_CHARS
    );
    // Four-byte characters: the limit counts characters, as the web form does.
    let over = NewTask::new("🦀".repeat(PipelineBuilder::DEFAULT_MAX_PROMPT_CHARS + 1));
    match pipeline.enqueue(over).await {
        Err(Error::PromptTooLong { chars, max }) => {
            assert_eq!(chars, PipelineBuilder::DEFAULT_MAX_PROMPT_CHARS + 1);
            assert_eq!(max, PipelineBuilder::DEFAULT_MAX_PROMPT_CHARS);
        }
        other => panic!("a prompt over the limit was not refused: {other:?}"),
    }

    // A limit of the builder's: its length is accepted, one more character is not.
    let temp = tempfile::tempdir()?;
    let pipeline = common::builder(&temp).max_prompt_chars(20).build().await?;
    let refused = pipeline.submit("x".repeat(21)).await;
    assert!(
        matches!(refused, Err(Error::PromptTooLong { chars: 21, max: 20 })),
        "{refused:?}"
    );
    let accepted = pipeline.submit("y".repeat(20)).await?;
    // The refused task never reached the topic: the first message on it is the accepted one.
    let tasks = pipeline
        .bus()
        .follow(&pipeline.topics().tasks, FollowFrom::Oldest)
        .await?;
    let first = tokio::time::timeout(PATIENCE, tasks.next()).await??;
    let first: NewTask = serde_json::from_slice(&first.payload)?;
    assert_eq!(first.task_id, accepted);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_task_on_the_bus_is_dead_lettered_and_ends_in_error() -> TestResult {
    let mut harness = start().await?;
    let pipeline = harness.pipeline.clone();
    let task_id = TaskId::new();
    let prompt = "é".repeat(PipelineBuilder::DEFAULT_MAX_PROMPT_CHARS + 1);
    let message = serde_json::json!({ "task_id": task_id, "prompt": prompt });
    pipeline
        .publish_raw_task_message(&task_id.to_string(), serde_json::to_vec(&message)?)
        .await?;

    let last = finish(&pipeline, task_id).await?;
    assert_eq!(last.status, ReportStatus::Error, "{last:?}");
    assert_eq!(last.reason.as_deref(), Some(REASON_PROMPT_TOO_LONG));
    assert!(
        last.summary.contains("100001 characters"),
        "{}",
        last.summary
    );
    let letters = dead_letters(&pipeline, 1).await?;
    let letter = &letters[0];
    assert_eq!(letter.source_topic, pipeline.topics().tasks);
    assert_eq!(letter.task_id, Some(task_id.to_string()));
    assert!(
        letter.reason.contains("at most 100000 are accepted"),
        "{}",
        letter.reason
    );
    assert_eq!(letter.payload.as_bytes(), serde_json::to_vec(&message)?);
    // Nothing else: no record, no task file, no other event before the error.
    assert!(pipeline.state().task(task_id).await?.is_none());
    assert!(pipeline.artifacts().read_task(task_id).await?.is_none());
    let events = events_until(&pipeline, task_id, |e| e.status.is_final()).await?;
    assert_eq!(events.len(), 1, "{events:?}");
    harness.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_naming_a_finished_task_ends_nothing_again() -> TestResult {
    let mut harness = start_with(|b| b.execute_code(false).max_prompt_chars(100)).await?;
    let pipeline = harness.pipeline.clone();
    let task_id = pipeline.submit(HELLO).await?;
    assert_eq!(finish(&pipeline, task_id).await?.status, ReportStatus::Done);

    // The same id with a prompt over the limit, then a cancellation, which is refused (the
    // task has ended) and reported `dlq`: the planner handles one key's messages in order, so
    // any event of the first comes before that report.
    let oversized = serde_json::json!({ "task_id": task_id, "prompt": "z".repeat(101) });
    pipeline
        .publish_raw_task_message(&task_id.to_string(), serde_json::to_vec(&oversized)?)
        .await?;
    let cancel = TaskControl::new(ControlAction::Cancel, task_id);
    pipeline
        .publish_raw_task_message(&task_id.to_string(), serde_json::to_vec(&cancel)?)
        .await?;
    let events = events_until(&pipeline, task_id, |e| {
        e.status == ReportStatus::Dlq && e.summary.contains("cancel refused")
    })
    .await?;
    let finals: Vec<_> = events.iter().filter(|e| e.status.is_final()).collect();
    assert_eq!(finals.len(), 1, "a second final event: {finals:?}");
    assert_eq!(finals[0].status, ReportStatus::Done);
    let letters = dead_letters(&pipeline, 2).await?;
    assert!(
        letters[0].reason.contains("at most 100 are accepted"),
        "{}",
        letters[0].reason
    );
    harness.stop().await;
    Ok(())
}
