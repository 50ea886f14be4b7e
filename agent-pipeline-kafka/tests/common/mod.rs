//! What the adapter's tests share: a broker, a bus on it, and bounded waits.

#![allow(dead_code)] // Each test file uses its own part of these helpers.

use std::sync::Arc;
use std::time::Duration;

use agent_pipeline::bus::{Delivery, Subscription, Topics};
use agent_pipeline::llm::OfflineLlm;
use agent_pipeline::store::{MemoryStateStore, SqliteStateStore, StateStore};
use agent_pipeline::{Pipeline, PipelineBuilder};
use agent_pipeline_kafka::testing::{TestBroker, test_topics};
use agent_pipeline_kafka::{KafkaBus, KafkaSettings};

/// The error type of the tests.
pub(crate) type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// How long a message that must arrive may take.
pub(crate) const ARRIVES_WITHIN: Duration = Duration::from_secs(20);

/// The broker, or `None` when the test must be skipped (`TestBroker::start` said why).
pub(crate) fn broker() -> Option<TestBroker> {
    TestBroker::start()
}

/// A bus on `broker` whose groups keep their positions in `offsets`.
pub(crate) async fn bus_with(
    settings: KafkaSettings,
    offsets: Arc<dyn StateStore>,
) -> TestResult<KafkaBus> {
    Ok(KafkaBus::connect(settings, offsets).await?)
}

/// A bus on `broker` with positions in a fresh in-memory state store.
pub(crate) async fn bus(broker: &TestBroker) -> TestResult<KafkaBus> {
    bus_with(broker.settings(), Arc::new(MemoryStateStore::new())).await
}

/// A pipeline over a bus on `broker`, with its state in SQLite under `dir`, fresh test topics
/// and the offline model; `configure` sets the rest. Gives the state store and the topics too.
pub(crate) async fn pipeline_on(
    broker: &TestBroker,
    dir: &std::path::Path,
    configure: impl FnOnce(PipelineBuilder) -> PipelineBuilder,
) -> TestResult<(Pipeline, Arc<dyn StateStore>, Topics)> {
    let state: Arc<dyn StateStore> =
        Arc::new(SqliteStateStore::open(dir.join("state.sqlite")).await?);
    let bus = KafkaBus::connect(broker.settings(), state.clone()).await?;
    let topics = test_topics();
    bus.create_topics(&topics).await?;
    let builder = Pipeline::builder()
        .data_dir(dir)
        .state_store(state.clone())
        .bus(Arc::new(bus))
        .topics(topics.clone())
        .llm(Arc::new(OfflineLlm::new()));
    let pipeline = configure(builder).build().await?;
    Ok((pipeline, state, topics))
}

/// The next delivery, or an error after [`ARRIVES_WITHIN`].
pub(crate) async fn next(subscription: &dyn Subscription) -> TestResult<Delivery> {
    Ok(tokio::time::timeout(ARRIVES_WITHIN, subscription.next())
        .await
        .map_err(|_| format!("no message within {ARRIVES_WITHIN:?}"))??)
}

/// Whether a delivery arrives within `wait` (it is returned when one does).
pub(crate) async fn maybe_next(
    subscription: &dyn Subscription,
    wait: Duration,
) -> Option<Delivery> {
    tokio::time::timeout(wait, subscription.next())
        .await
        .ok()
        .and_then(Result::ok)
}
