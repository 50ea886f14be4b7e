//! The Kafka bus of a process: connected for a service (which waits for the brokers as long
//! as it takes) or for a command (which gives up after [`COMMAND_GIVES_UP_AFTER`] and says
//! so), and the pipeline over it and the state store of `DATA_DIR`.

use std::sync::Arc;
use std::time::Duration;

use agent_pipeline::Pipeline;
use agent_pipeline::bus::{BusError, FollowFrom, Subscription};
use agent_pipeline::store::StateStore;
use agent_pipeline_kafka::{KafkaBus, KafkaSettings};
use anyhow::{Context, Result};

use super::{build, pipeline_builder};
use crate::config::{BusKind, Config};
use crate::database::Stores;

/// How long `send` and `replay` keep trying to reach the brokers before they fail: a command
/// line must not wait for ever on a broker that is not there.
pub(crate) const COMMAND_GIVES_UP_AFTER: Duration = Duration::from_secs(10);

/// Who connects, which decides how long the brokers may take to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Connecting {
    /// A service process: it waits for the brokers (they may start after it).
    Service,
    /// A command: it gives up after [`COMMAND_GIVES_UP_AFTER`].
    Command,
}

/// Connects to the brokers of `config`; consumer groups keep their positions in `state`.
pub(crate) async fn connect(
    config: &Config,
    state: Arc<dyn StateStore>,
    who: Connecting,
) -> Result<KafkaBus> {
    let mut settings: KafkaSettings = config.kafka.clone();
    if who == Connecting::Command {
        settings.give_up_after = Some(COMMAND_GIVES_UP_AFTER);
    }
    let brokers = settings.brokers.join(",");
    tracing::info!(%brokers, "connecting to the brokers");
    KafkaBus::connect(settings, state)
        .await
        .map_err(|error| unreachable(&brokers, error))
}

/// The error of a broker operation, saying plainly when no broker answered.
fn unreachable(brokers: &str, error: BusError) -> anyhow::Error {
    match error {
        BusError::Transport(_) => anyhow::Error::new(error).context(format!(
            "no broker answers at {brokers} (REDPANDA_BROKERS): start one (`make broker`, or \
             the Redpanda container of the README) or point REDPANDA_BROKERS at yours"
        )),
        other => anyhow::Error::new(other).context("cannot use the Kafka bus"),
    }
}

/// The pipeline of a serving process on the Kafka bus: the state store of `DATABASE_URL`
/// (else of `DATA_DIR`), the bus connected with that same store (where the groups keep their positions), and every
/// topic created, so that a deployment's topics exist before its first message.
pub(crate) async fn service_pipeline(config: &Config) -> Result<Pipeline> {
    let stores = config.open_stores().await?;
    let bus = connect(config, stores.state.clone(), Connecting::Service).await?;
    bus.create_topics(&config.topics)
        .await
        .map_err(|error| unreachable(&config.kafka.brokers.join(","), error))
        .context("cannot create the topics")?;
    pipeline_on(config, &stores, bus).await
}

/// The pipeline of `config` over `stores` and `bus`, not started.
pub(crate) async fn pipeline_on(
    config: &Config,
    stores: &Stores,
    bus: KafkaBus,
) -> Result<Pipeline> {
    let builder = stores.apply(
        pipeline_builder(config)?
            .service_concurrency(config.execution.service_concurrency(BusKind::Kafka))
            .bus(Arc::new(bus)),
    );
    build(config, builder).await
}

/// Starts reading the report topic from now on: whatever is published once this returns is
/// seen, and nothing older. A command subscribes so before it publishes its request.
pub(crate) async fn follow_reports(
    config: &Config,
    bus: &KafkaBus,
) -> Result<Arc<dyn Subscription>> {
    use agent_pipeline::bus::Bus;
    bus.follow(&config.topics.reports, FollowFrom::Now)
        .await
        .map_err(|error| unreachable(&config.kafka.brokers.join(","), error))
        .with_context(|| format!("cannot follow the report topic {}", config.topics.reports))
}

/// Publishes `payload` with `key` to `topic`.
pub(crate) async fn publish(
    config: &Config,
    bus: &KafkaBus,
    topic: &str,
    key: &str,
    payload: Vec<u8>,
) -> Result<()> {
    use agent_pipeline::bus::Bus;
    bus.publish(topic, key, payload)
        .await
        .map_err(|error| unreachable(&config.kafka.brokers.join(","), error))
        .with_context(|| format!("cannot publish to {topic}"))
}
