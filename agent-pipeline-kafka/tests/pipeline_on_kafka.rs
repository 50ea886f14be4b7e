//! The whole pipeline in one process on a real broker, and the broker going away under it.

mod common;

use std::time::{Duration, Instant};

use agent_pipeline::bus::Bus;
use agent_pipeline::wire::{DeadLetter, ReportStatus};
use agent_pipeline::{Stage, StepId};
use agent_pipeline_kafka::testing::topic_prefix;
use common::{TestResult, maybe_next, next};

const HELLO: &str = "Write a tiny Python program that prints 'Hello Earthling'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_runs_end_to_end_and_a_malformed_message_is_dead_lettered() -> TestResult {
    let Some(broker) = common::broker() else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let (pipeline, state, topics) = common::pipeline_on(&broker, dir.path(), |b| b).await?;
    let running = pipeline.start().await?;

    let task_id = pipeline.submit(HELLO).await?;
    let last = tokio::time::timeout(Duration::from_secs(120), pipeline.wait(task_id)).await??;
    assert_eq!(last.status, ReportStatus::Done, "{}", last.summary);
    for stage in Stage::ALL {
        let step = StepId::v1(stage);
        assert!(
            pipeline
                .artifacts()
                .read_artifact(task_id, step)
                .await?
                .is_some(),
            "no artifact for {step}"
        );
    }

    // Another producer's garbage on the task topic ends in the dead-letter queue, with why.
    pipeline
        .publish_raw_task_message("not-a-task", b"{this is not json".to_vec())
        .await?;
    let started = Instant::now();
    let letter = loop {
        let letters: Vec<DeadLetter> = pipeline.dead_letter_log().read_all_as().await?;
        if let Some(letter) = letters
            .into_iter()
            .find(|l| l.key.as_deref() == Some("not-a-task"))
        {
            break letter;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the malformed message was not dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(letter.source_topic, topics.tasks);
    assert_eq!(letter.payload, "{this is not json");
    assert!(!letter.reason.is_empty());

    running.shutdown().await;
    // The planner's group committed its position: nothing of the task topic is left behind.
    let mut positions = 0;
    for partition in 0..3 {
        positions += state
            .consumer_offset("planner", &topics.tasks, partition)
            .await?
            .unwrap_or(0);
    }
    assert_eq!(
        positions, 2,
        "the planner's positions cover the task and the garbage"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_while_the_broker_is_away() -> TestResult {
    let Some(mut broker) = common::broker() else {
        return Ok(());
    };
    let bus = common::bus(&broker).await?;
    let topic = format!("{}away", topic_prefix());
    for n in 0..5 {
        bus.publish(&topic, &format!("k{n}"), format!("before {n}").into_bytes())
            .await?;
    }
    let subscription = bus.subscribe(&topic, "g").await?;
    for _ in 0..5 {
        let delivery = next(subscription.as_ref()).await?;
        subscription.ack(delivery.receipt).await?;
    }

    if !broker.kill() {
        eprintln!(
            "SKIPPED the outage: an external broker (REDPANDA_BROKERS) cannot be stopped here"
        );
        return Ok(());
    }
    // Publishing while the broker is away waits for it, with backoff.
    let publisher = bus.clone();
    let topic_name = topic.clone();
    let during = tokio::spawn(async move {
        for n in 0..5 {
            publisher
                .publish(
                    &topic_name,
                    &format!("k{n}"),
                    format!("during {n}").into_bytes(),
                )
                .await?;
        }
        Ok::<(), agent_pipeline::bus::BusError>(())
    });
    let broker = tokio::task::spawn_blocking(move || {
        broker.restart_after(Duration::from_secs(2));
        broker
    })
    .await?;
    tokio::time::timeout(Duration::from_secs(60), during).await???;

    let mut got = Vec::new();
    for _ in 0..5 {
        let delivery = next(subscription.as_ref()).await?;
        subscription.ack(delivery.receipt).await?;
        got.push(String::from_utf8(delivery.payload)?);
    }
    got.sort();
    let expected: Vec<String> = (0..5).map(|n| format!("during {n}")).collect();
    assert_eq!(got, expected, "messages published during the outage");
    if let Some(extra) = maybe_next(subscription.as_ref(), Duration::from_millis(600)).await {
        panic!(
            "a message came twice: {:?}",
            String::from_utf8_lossy(&extra.payload)
        );
    }
    drop(broker);
    Ok(())
}
