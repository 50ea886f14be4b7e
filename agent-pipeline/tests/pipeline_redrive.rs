//! The calls the web UI is built on: `Pipeline::redrive` sends a dead letter back (an exhausted
//! step as a replay, any other message to its topic, never a report or a dead letter),
//! `Pipeline::report_feed` hands out report events once they are in `reports.jsonl`, and
//! `Pipeline::ready` says whether the bus and the state store answer.

mod common;

use std::sync::Arc;

use agent_pipeline::bus::{Bus, BusError, FollowFrom, MemoryBus, Subscription};
use agent_pipeline::wire::{DeadLetter, ReportStatus};
use agent_pipeline::{Error, Redriven, Stage, StepId};
use async_trait::async_trait;
use common::{
    Failing, PATIENCE, TestResult, dead_letters, finish, mirrored_reports, start, start_with,
};

const HELLO: &str = "Write a tiny Python program that prints 'Hello Earthling'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_step_is_replayed_as_a_new_attempt() -> TestResult {
    // Fails its three tries, then works: the re-drive is what makes it pass.
    let failing = Failing::new(Stage::Implement, 3, true);
    let mut harness = start_with(|b| b.agent(failing.clone())).await?;
    let pipeline = harness.pipeline.clone();
    let task_id = pipeline.submit(HELLO).await?;
    assert_eq!(
        finish(&pipeline, task_id).await?.status,
        ReportStatus::Error
    );
    let letter = dead_letters(&pipeline, 1).await?.remove(0);
    assert_eq!(letter.attempt, Some(3));

    let step = StepId::v1(Stage::Implement);
    let since = chrono::Utc::now();
    let outcome = pipeline.redrive(&letter).await?;
    assert_eq!(outcome, Redriven::Replayed { task_id, step });
    let replayed =
        tokio::time::timeout(PATIENCE, pipeline.wait_replay(task_id, step, since)).await??;
    assert_eq!(
        replayed.status,
        ReportStatus::Replayed,
        "{}",
        replayed.summary
    );
    assert_eq!(failing.runs(), 4, "the step ran once more");

    let artifact = common::artifact(&harness, task_id, Stage::Implement).await?;
    assert_eq!(
        artifact.attempt.get(),
        4,
        "a new attempt after the three failed ones"
    );
    let attempts = pipeline.state().attempts(task_id).await?;
    assert_eq!(attempts.iter().filter(|a| a.step_id() == step).count(), 4);
    let text = std::fs::read_to_string(harness.task_dir(task_id).join("implement@v1.json"))?;
    assert!(
        text.contains("re-driven from the dead-letter queue (Implement failed after 3 tries: induced failure 3)"),
        "the dead letter's reason is the replay's reason: {text}"
    );
    harness.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_other_message_goes_back_to_its_topic_byte_for_byte() -> TestResult {
    let mut harness = start().await?;
    let pipeline = harness.pipeline.clone();
    pipeline
        .publish_raw_task_message("garbled-key", b"{\"oops\": ".to_vec())
        .await?;
    let letter = dead_letters(&pipeline, 1).await?.remove(0);
    assert_eq!(letter.source_topic, pipeline.topics().tasks);

    let outcome = pipeline.redrive(&letter).await?;
    assert_eq!(
        outcome,
        Redriven::Republished {
            topic: pipeline.topics().tasks.clone()
        }
    );
    // The planner handles it anew, and, still unreadable, dead-letters it again: the same
    // bytes under the same key.
    let letters = dead_letters(&pipeline, 2).await?;
    assert_eq!(letters[1].source_topic, pipeline.topics().tasks);
    assert_eq!(letters[1].key.as_deref(), Some("garbled-key"));
    assert_eq!(letters[1].payload, "{\"oops\": ");
    harness.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_dead_letters_and_unknown_topics_are_not_redriven() -> TestResult {
    let mut harness = start().await?;
    let pipeline = harness.pipeline.clone();
    let topics = pipeline.topics().clone();
    let letter = |topic: &str| DeadLetter {
        reason: "not a JSON object".into(),
        source_topic: topic.to_owned(),
        key: Some("k".into()),
        payload: "garbage".into(),
        task_id: None,
        step_id: None,
        attempt: None,
        failed_at: chrono::Utc::now(),
    };
    for topic in [
        topics.reports.as_str(),
        topics.dlq.as_str(),
        "somebody_elses_topic",
    ] {
        match pipeline.redrive(&letter(topic)).await {
            Err(Error::NotRedrivable { topic: refused, .. }) => assert_eq!(refused, topic),
            other => panic!("{topic}: {other:?}"),
        }
    }
    harness.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_feed_hands_out_each_event_in_order_once_it_is_in_the_file() -> TestResult {
    let mut harness = start().await?;
    let pipeline = harness.pipeline.clone();
    let mut feed = pipeline.report_feed();
    let task_id = pipeline.submit(HELLO).await?;

    let mut received = Vec::new();
    loop {
        let event = tokio::time::timeout(PATIENCE, feed.recv()).await??;
        if event.task_id != task_id {
            continue;
        }
        let in_file = pipeline.report_log().read_all().await?;
        assert!(
            in_file.iter().any(|e| e.status == event.status
                && e.stage == event.stage
                && e.timestamp == event.timestamp),
            "{} {:?} was handed out before it was in reports.jsonl",
            event.status,
            event.stage
        );
        let done = event.status == ReportStatus::Done;
        received.push(event);
        if done {
            break;
        }
    }
    let in_file = mirrored_reports(&harness, task_id).await?;
    assert_eq!(
        common::story(&received),
        common::story(&in_file[..received.len()]),
        "the feed keeps the order of the file"
    );
    assert_eq!(
        common::story(&received)[..2],
        ["received", "stage_done design@v1"]
    );
    harness.stop().await;
    Ok(())
}

/// A bus whose broker does not answer: messages go to a memory bus, and `ping` fails.
#[derive(Debug)]
struct Unreachable(MemoryBus);

#[async_trait]
impl Bus for Unreachable {
    async fn publish(&self, topic: &str, key: &str, payload: Vec<u8>) -> Result<(), BusError> {
        self.0.publish(topic, key, payload).await
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Arc<dyn Subscription>, BusError> {
        self.0.subscribe(topic, group).await
    }

    async fn follow(
        &self,
        topic: &str,
        from: FollowFrom,
    ) -> Result<Arc<dyn Subscription>, BusError> {
        self.0.follow(topic, from).await
    }

    fn is_durable(&self) -> bool {
        false
    }

    async fn ping(&self) -> Result<(), BusError> {
        Err(BusError::Transport("connection refused".into()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_says_whether_the_bus_answers() -> TestResult {
    let mut harness = start().await?;
    harness.pipeline.ready().await?;
    harness.stop().await;

    let temp = tempfile::tempdir()?;
    let down = common::builder(&temp)
        .bus(Arc::new(Unreachable(MemoryBus::new())))
        .build()
        .await?;
    match down.ready().await {
        Err(Error::Bus(BusError::Transport(why))) => assert_eq!(why, "connection refused"),
        other => panic!("a bus that does not answer is not ready: {other:?}"),
    }
    Ok(())
}
