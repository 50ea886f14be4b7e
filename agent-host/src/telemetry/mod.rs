//! What a serving process tells about itself: its metrics in Prometheus's text format (the
//! recorder, `GET /metrics`, and the `METRICS_ADDR` server of processes without a web UI),
//! and, with the `otel` feature, its tracing spans over OTLP.
//!
//! The metrics are the core's ([`agent_pipeline::metrics`]) and the LLM client's; see
//! `docs/metrics.md` for the list.

mod endpoint;
#[cfg(feature = "otel")]
mod otel;
mod recorder;
mod server;

pub(crate) use endpoint::scrape;
#[cfg(feature = "otel")]
pub(crate) use otel::{OtelGuard, layer as otel_layer};
pub(crate) use recorder::install;
pub(crate) use server::{MetricsServer, MetricsSettings};
