//! The `Bus` trait: keyed messages on topics, consumed by named groups with acknowledgement.

mod memory;
mod topics;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use memory::MemoryBus;
pub use topics::Topics;

/// Why a bus operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// The bus was shut down.
    #[error("the bus is closed")]
    Closed,
    /// The broker or transport failed.
    #[error("bus transport failed: {0}")]
    Transport(String),
    /// This process already has a member of the group on the topic; a bus whose members own
    /// partitions statically takes one subscription per group and process.
    #[error("group {group} already consumes {topic} in this process")]
    AlreadySubscribed {
        /// The topic.
        topic: String,
        /// The group.
        group: String,
    },
    /// The bus is configured wrongly (a setting, a topic that cannot be created).
    #[error("bus configuration: {0}")]
    Config(String),
    /// The message is larger than the bus accepts.
    #[error("message of {size} bytes is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The message's size.
        size: usize,
        /// The bus's limit.
        limit: usize,
    },
}

impl BusError {
    /// Whether the same operation may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, BusError::Transport(_))
    }
}

/// One message received from a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The topic it came from.
    pub topic: String,
    /// Its key (the task id, so that one task's messages stay in order).
    pub key: String,
    /// Its content.
    pub payload: Vec<u8>,
    /// Where it is in the topic; pass it back to [`Subscription::ack`].
    pub receipt: Receipt,
    /// When it was published, if the bus knows (the memory bus stamps each message; a Kafka
    /// record carries its timestamp), for the queue lag metric.
    pub published_at: Option<DateTime<Utc>>,
}

/// Identifies a delivery to acknowledge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Receipt {
    /// The partition (0 for buses without partitions).
    pub partition: u32,
    /// The offset within the partition.
    pub offset: u64,
}

/// A consumer's view of one topic as a member of a group.
///
/// Delivery is at least once: a message that is not acknowledged is delivered again (to this
/// group) once the subscription that received it is dropped. Messages with the same key are
/// delivered in the order they were published, and the next one with a key is not delivered
/// while an earlier one with that key is unacknowledged, so a consumer may work on several
/// keys at once and still keep each key's order.
#[async_trait]
pub trait Subscription: Send + Sync + fmt::Debug {
    /// Waits for the next message.
    async fn next(&self) -> Result<Delivery, BusError>;

    /// Marks a delivered message as handled.
    async fn ack(&self, receipt: Receipt) -> Result<(), BusError>;

    /// Leaves the group when the consumer stops: a bus that shares partitions out gives this
    /// member's up at once, so that the others need not wait for them to expire. Messages not
    /// acknowledged come again to whoever consumes next. Does nothing by default.
    async fn close(&self) -> Result<(), BusError> {
        Ok(())
    }
}

/// Where a [`Bus::follow`] reader starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowFrom {
    /// At the oldest message the bus still has.
    Oldest,
    /// After the newest message: only what is published once `follow` has returned.
    Now,
}

/// A message bus: the in-memory [`MemoryBus`], or an adapter such as Kafka / Redpanda.
///
/// ```
/// use agent_pipeline::bus::{Bus, MemoryBus};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let bus = MemoryBus::new();
/// bus.publish("agent_tasks", "task-1", b"hello".to_vec()).await.unwrap();
/// let subscription = bus.subscribe("agent_tasks", "planner").await.unwrap();
/// let delivery = subscription.next().await.unwrap();
/// assert_eq!(delivery.payload, b"hello");
/// subscription.ack(delivery.receipt).await.unwrap();
/// # });
/// ```
#[async_trait]
pub trait Bus: Send + Sync + fmt::Debug + 'static {
    /// Appends a message with `key` to `topic`.
    async fn publish(&self, topic: &str, key: &str, payload: Vec<u8>) -> Result<(), BusError>;

    /// Joins consumer group `group` on `topic`. Every group sees every message once its
    /// members acknowledge it; a new group starts at the oldest message the bus still has.
    async fn subscribe(&self, topic: &str, group: &str) -> Result<Arc<dyn Subscription>, BusError>;

    /// Reads every message of `topic` (all partitions, whoever owns them) from `from`, for one
    /// reader that records no position: a watcher such as a command line waiting for a task's
    /// reports. Its acknowledgements only release a key's next message; nothing is redelivered
    /// after it is dropped.
    async fn follow(
        &self,
        topic: &str,
        from: FollowFrom,
    ) -> Result<Arc<dyn Subscription>, BusError>;

    /// Whether published messages outlive the process (a broker) or not (the memory bus).
    ///
    /// A pipeline on a bus that is not durable re-sends unfinished steps from the state store
    /// when it starts.
    fn is_durable(&self) -> bool;

    /// Checks that the bus can be reached (a broker answers), for readiness probes. The
    /// default says yes: an in-process bus is always there.
    async fn ping(&self) -> Result<(), BusError> {
        Ok(())
    }
}
