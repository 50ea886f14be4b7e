//! Kafka / Redpanda bus adapter for [agent-pipeline](https://docs.rs/agent-pipeline).
//!
//! [`KafkaBus`] implements the core [`Bus`] over [`rskafka`](https://docs.rs/rskafka), so
//! that the pipeline's services run as separate processes, on as many machines as needed,
//! against any broker that speaks the Kafka protocol (Redpanda, Apache Kafka, tansu…).
//! [`KafkaSettings`] reads the brokers, SASL, TLS, partitioning and this process's share of
//! the partitions from the environment (`REDPANDA_BROKERS`, `KAFKA_*`, `AGENT_INSTANCE[S]`).
//!
//! `rskafka` has no consumer groups, so this crate brings its own: each group's position in
//! each partition is kept in the pipeline's state store, and the partitions of a topic are
//! shared between the processes of a group statically (instance `i` of `N` owns the
//! partitions `p % N == i`).

mod bus;
mod connect;
mod consumer;
mod partitioner;
mod producer;
mod settings;
#[cfg(feature = "test-util")]
pub mod testing;

pub use agent_pipeline::bus::{Bus, BusError, FollowFrom, Topics};
pub use bus::KafkaBus;
pub use partitioner::partition_for;
pub use settings::{
    DEFAULT_BROKERS, KafkaSettings, Ownership, PartitionLeases, Sasl, SaslMechanism, SettingsError,
    Tls,
};
