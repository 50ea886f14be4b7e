//! [`KafkaBus`]: the core [`Bus`] over a Kafka-protocol broker.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use agent_pipeline::bus::{Bus, BusError, FollowFrom, Subscription, Topics};
use agent_pipeline::store::StateStore;
use async_trait::async_trait;
use rskafka::client::Client;
use rskafka::client::error::{Error as KafkaError, ProtocolError};

use crate::connect;
use crate::consumer::{KafkaSubscription, Membership};
use crate::partitioner::partition_for;
use crate::producer::Producers;
use crate::settings::{KafkaSettings, PartitionLeases};

/// How long the broker may take to create a topic.
const CREATE_TOPIC_TIMEOUT_MS: i32 = 10_000;
/// How long [`Bus::ping`] waits for the broker.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// The pipeline's bus on Kafka, Redpanda or any broker that speaks the Kafka protocol.
///
/// - Topics are created on first use with [`KafkaSettings::partitions`] partitions and
///   [`KafkaSettings::replication_factor`] replicas (an existing topic keeps its own).
/// - A message goes to the partition of its key (Kafka's default partitioner: murmur2), so
///   one task's messages stay in order; produces are batched per partition
///   ([`KafkaSettings::linger`]).
/// - A group consumes the partitions this process owns ([`KafkaSettings::ownership`]), one
///   restarting fetch stream per partition, on a client of its own so that a waiting fetch
///   never delays a produce. A group's position in each partition (the offset below which
///   every message was acknowledged) is committed to the state store after each
///   acknowledgement, so a restarted process goes on where the group stopped. Delivery is at
///   least once; the services' handlers make the effects happen once.
/// - Messages of other producers are consumed too: a missing key reads as `""`, a key on
///   another partition than its hash is handled where it is.
///
/// ```no_run
/// use std::sync::Arc;
/// use agent_pipeline::{Pipeline, store::SqliteStateStore};
/// use agent_pipeline_kafka::{KafkaBus, KafkaSettings};
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let state = Arc::new(SqliteStateStore::open("data/state.sqlite").await?);
/// let bus = KafkaBus::connect(KafkaSettings::from_env()?, state.clone()).await?;
/// let pipeline = Pipeline::builder()
///     .data_dir("data")
///     .state_store(state)
///     .bus(Arc::new(bus))
///     .build()
///     .await?;
/// let running = pipeline.start().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct KafkaBus {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) settings: KafkaSettings,
    /// Produces, creates topics and reads metadata.
    producing: Client,
    /// Fetches; a waiting fetch holds its connection.
    pub(crate) consuming: Client,
    pub(crate) offsets: Arc<dyn StateStore>,
    producers: Producers,
    /// Topic → partition count, once known.
    partitions: Mutex<HashMap<String, u32>>,
    /// (topic, group) of the live subscriptions of this process.
    pub(crate) members: Mutex<HashSet<(String, String)>>,
    /// This bus in the lease table, with leased partition ownership.
    pub(crate) member_id: Option<String>,
}

impl fmt::Debug for KafkaBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaBus")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl KafkaBus {
    /// Connects to the brokers of `settings`; consumer groups keep their positions in
    /// `offsets` (the pipeline's state store).
    pub async fn connect(
        settings: KafkaSettings,
        offsets: Arc<dyn StateStore>,
    ) -> Result<Self, BusError> {
        if settings.brokers.is_empty() {
            return Err(BusError::Config(
                "no broker given (REDPANDA_BROKERS is empty)".to_owned(),
            ));
        }
        let producing = connect::client(&settings, "producer").await?;
        let consuming = connect::client(&settings, "consumer").await?;
        tracing::info!(brokers = %settings.brokers.join(","), "connected to the brokers");
        Ok(Self {
            inner: Arc::new(Inner {
                producers: Producers::new(settings.linger, settings.max_message_bytes),
                producing,
                consuming,
                offsets,
                partitions: Mutex::new(HashMap::new()),
                members: Mutex::new(HashSet::new()),
                member_id: settings.leases.as_ref().map(PartitionLeases::member_id),
                settings,
            }),
        })
    }

    /// The settings this bus runs with.
    pub fn settings(&self) -> &KafkaSettings {
        &self.inner.settings
    }

    /// This bus's member id in the lease table when partitions are shared by leases
    /// ([`KafkaSettings::leases`]).
    pub fn member_id(&self) -> Option<&str> {
        self.inner.member_id.as_deref()
    }

    /// Creates every topic of `topics` that does not exist yet, so that a deployment's topics
    /// exist before the first message (services call it on start).
    pub async fn create_topics(&self, topics: &Topics) -> Result<(), BusError> {
        for topic in [
            &topics.tasks,
            &topics.step_requests,
            &topics.step_results,
            &topics.reports,
            &topics.ci_watch,
            &topics.dlq,
        ] {
            self.inner.partition_count(topic).await?;
        }
        Ok(())
    }

    /// The number of partitions of `topic`, which is created when it does not exist.
    pub async fn partition_count(&self, topic: &str) -> Result<u32, BusError> {
        self.inner.partition_count(topic).await
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl Inner {
    pub(crate) async fn partition_count(&self, topic: &str) -> Result<u32, BusError> {
        if let Some(count) = lock(&self.partitions).get(topic) {
            return Ok(*count);
        }
        let count = match self.listed_partitions(topic).await? {
            Some(count) => count,
            None => self.create_topic(topic).await?,
        };
        lock(&self.partitions).insert(topic.to_owned(), count);
        Ok(count)
    }

    async fn listed_partitions(&self, topic: &str) -> Result<Option<u32>, BusError> {
        let topics = self
            .producing
            .list_topics()
            .await
            .map_err(|e| transport(&format!("list the topics to find {topic}"), &e))?;
        Ok(topics
            .into_iter()
            .find(|t| t.name == topic)
            .map(|t| t.partitions.len() as u32)
            .filter(|count| *count > 0))
    }

    async fn create_topic(&self, topic: &str) -> Result<u32, BusError> {
        let settings = &self.settings;
        let controller = self
            .producing
            .controller_client()
            .map_err(|e| transport("reach the controller", &e))?;
        match controller
            .create_topic(
                topic,
                settings.partitions as i32,
                settings.replication_factor as i16,
                CREATE_TOPIC_TIMEOUT_MS,
            )
            .await
        {
            Ok(()) => {
                tracing::info!(
                    topic,
                    partitions = settings.partitions,
                    replication_factor = settings.replication_factor,
                    "topic created"
                );
            }
            // Another process created it first.
            Err(KafkaError::ServerError {
                protocol_error: ProtocolError::TopicAlreadyExists,
                ..
            }) => {}
            Err(error) => {
                return Err(BusError::Config(format!(
                    "cannot create topic {topic} with {} partition(s) and replication factor \
                     {} (KAFKA_PARTITIONS, KAFKA_REPLICATION_FACTOR): {error}",
                    settings.partitions, settings.replication_factor
                )));
            }
        }
        // Metadata may lag behind the creation for a moment.
        for _ in 0..50 {
            if let Some(count) = self.listed_partitions(topic).await? {
                return Ok(count);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(BusError::Transport(format!(
            "topic {topic} was created but the brokers do not list it"
        )))
    }
}

/// A transport error while trying to `action`.
pub(crate) fn transport(action: &str, error: &KafkaError) -> BusError {
    BusError::Transport(format!("cannot {action}: {error}"))
}

#[async_trait]
impl Bus for KafkaBus {
    async fn publish(&self, topic: &str, key: &str, payload: Vec<u8>) -> Result<(), BusError> {
        let inner = &self.inner;
        let size = key.len() + payload.len();
        if size > inner.settings.max_message_bytes {
            return Err(BusError::TooLarge {
                size,
                limit: inner.settings.max_message_bytes,
            });
        }
        let partitions = inner.partition_count(topic).await?;
        let partition = partition_for(key.as_bytes(), partitions);
        inner
            .producers
            .produce(&inner.producing, topic, partition, key, payload)
            .await
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Arc<dyn Subscription>, BusError> {
        let membership = Membership::Group(group.to_owned());
        Ok(Arc::new(
            KafkaSubscription::start(self.inner.clone(), topic, membership).await?,
        ))
    }

    async fn follow(
        &self,
        topic: &str,
        from: FollowFrom,
    ) -> Result<Arc<dyn Subscription>, BusError> {
        let membership = Membership::Follower(from);
        Ok(Arc::new(
            KafkaSubscription::start(self.inner.clone(), topic, membership).await?,
        ))
    }

    fn is_durable(&self) -> bool {
        true
    }

    async fn ping(&self) -> Result<(), BusError> {
        let listing = tokio::time::timeout(PING_TIMEOUT, self.inner.producing.list_topics()).await;
        match listing {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(transport("reach the brokers", &error)),
            Err(_) => Err(BusError::Transport(format!(
                "the brokers did not answer within {PING_TIMEOUT:?}"
            ))),
        }
    }
}
