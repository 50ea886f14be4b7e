//! The Kafka bus on a real broker (a tansu process started for the run, or `REDPANDA_BROKERS`):
//! raw publish and consume rates of `KafkaBus`, and tasks through the whole pipeline.
//!
//! ```text
//! cargo bench -p agent-pipeline-benches --bench kafka
//! ```

use std::sync::Arc;
use std::time::Duration;

use agent_pipeline::bus::{Bus, FollowFrom};
use agent_pipeline::llm::OfflineLlm;
use agent_pipeline::store::{SqliteStateStore, StateStore};
use agent_pipeline::wire::{ReportEvent, ReportStatus};
use agent_pipeline::{Pipeline, TaskId};
use agent_pipeline_kafka::KafkaBus;
use agent_pipeline_kafka::testing::{TestBroker, test_topics, topic_prefix};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Messages per iteration of the raw benchmarks.
const MESSAGES: u64 = 2000;
/// Tasks per iteration of the pipeline benchmark.
const TASKS: u64 = 20;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("no tokio runtime: {e}"))
}

fn broker() -> TestBroker {
    TestBroker::start().unwrap_or_else(|| panic!("the Kafka benchmark needs a broker"))
}

async fn state(dir: &std::path::Path) -> Arc<dyn StateStore> {
    Arc::new(
        SqliteStateStore::open(dir.join("state.sqlite"))
            .await
            .unwrap_or_else(|e| panic!("state store: {e}")),
    )
}

/// A payload of about the size of a step request.
fn payload(n: u64) -> Vec<u8> {
    format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(280)).into_bytes()
}

fn publish_and_consume(c: &mut Criterion) {
    let runtime = runtime();
    let broker = broker();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let bus = runtime.block_on(async {
        KafkaBus::connect(broker.settings(), state(dir.path()).await)
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"))
    });
    let mut group = c.benchmark_group("KafkaBus on tansu (SQLite storage), ~300-byte messages");
    group.throughput(Throughput::Elements(MESSAGES));
    group.sample_size(10);
    group.bench_function("publish 2000 messages, 64 publishers at once", |b| {
        let topic = format!("{}publish", topic_prefix());
        b.to_async(&runtime).iter(|| async {
            let bus = &bus;
            let topic = &topic;
            let publishers = (0..64u64).map(|p| async move {
                for n in (p..MESSAGES).step_by(64) {
                    bus.publish(topic, &format!("task-{}", n % 200), payload(n))
                        .await
                        .unwrap_or_else(|e| panic!("publish: {e}"));
                }
            });
            futures_util::future::join_all(publishers).await;
        })
    });
    group.bench_function(
        "consume and acknowledge 2000 messages as a group (positions in SQLite)",
        |b| {
            b.iter_custom(|iterations| {
                runtime.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iterations {
                        let topic = format!("{}consume", topic_prefix());
                        for n in 0..MESSAGES {
                            bus.publish(&topic, &format!("task-{}", n % 200), payload(n))
                                .await
                                .unwrap_or_else(|e| panic!("publish: {e}"));
                        }
                        let started = std::time::Instant::now();
                        let subscription = bus
                            .subscribe(&topic, "bench")
                            .await
                            .unwrap_or_else(|e| panic!("subscribe: {e}"));
                        for _ in 0..MESSAGES {
                            let delivery = subscription
                                .next()
                                .await
                                .unwrap_or_else(|e| panic!("next: {e}"));
                            subscription
                                .ack(delivery.receipt)
                                .await
                                .unwrap_or_else(|e| panic!("ack: {e}"));
                        }
                        total += started.elapsed();
                    }
                    total
                })
            })
        },
    );
    group.finish();
}

fn tasks_on_kafka(c: &mut Criterion) {
    let runtime = runtime();
    let broker = broker();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let topics = test_topics();
    let (pipeline, running, bus) = runtime.block_on(async {
        let state = state(dir.path()).await;
        let bus = Arc::new(
            KafkaBus::connect(broker.settings(), state.clone())
                .await
                .unwrap_or_else(|e| panic!("connect: {e}")),
        );
        bus.create_topics(&topics)
            .await
            .unwrap_or_else(|e| panic!("topics: {e}"));
        let pipeline = Pipeline::builder()
            .data_dir(dir.path())
            .state_store(state)
            .bus(bus.clone())
            .topics(topics.clone())
            .llm(Arc::new(OfflineLlm::new()))
            .build()
            .await
            .unwrap_or_else(|e| panic!("pipeline: {e}"));
        let running = pipeline
            .start()
            .await
            .unwrap_or_else(|e| panic!("start: {e}"));
        (pipeline, running, bus)
    });
    let mut group =
        c.benchmark_group("pipeline on KafkaBus (tansu, fetch wait 50 ms), offline model");
    group.throughput(Throughput::Elements(TASKS));
    group.sample_size(10);
    group.bench_function("20 tasks through all four stages", |b| {
        b.to_async(&runtime).iter(|| async {
            let reports = bus
                .follow(&topics.reports, FollowFrom::Now)
                .await
                .unwrap_or_else(|e| panic!("follow: {e}"));
            let mut open: Vec<TaskId> = Vec::new();
            for n in 0..TASKS {
                let id = pipeline
                    .submit(format!("Write a Python program that prints 'task {n}'"))
                    .await
                    .unwrap_or_else(|e| panic!("submit: {e}"));
                open.push(id);
            }
            while !open.is_empty() {
                let delivery = reports
                    .next()
                    .await
                    .unwrap_or_else(|e| panic!("reports: {e}"));
                let _ = reports.ack(delivery.receipt).await;
                let Ok(event) = serde_json::from_slice::<ReportEvent>(&delivery.payload) else {
                    continue;
                };
                if event.status.is_final() {
                    assert_eq!(event.status, ReportStatus::Done, "{}", event.summary);
                    open.retain(|id| *id != event.task_id);
                }
            }
        })
    });
    group.finish();
    runtime.block_on(running.shutdown());
}

criterion_group!(benches, publish_and_consume, tasks_on_kafka);
criterion_main!(benches);
