//! Kafka / Redpanda bus adapter for [agent-pipeline](https://docs.rs/agent-pipeline).
//!
//! This crate will implement `agent_pipeline::bus::Bus` over `rskafka`, so that the pipeline's
//! services can run as separate processes on a Kafka-compatible broker. Until it does, it
//! only re-exports the trait it implements; use `agent_pipeline::bus::MemoryBus`, the embedded
//! default, in the meantime.

pub use agent_pipeline::bus::{Bus, BusError, Topics};
