//! `agent-host`: the command line, the services and the web UI of agent-pipeline in one binary.
//!
//! `agent-host` (or `agent-host run`) runs every service and the web UI until Ctrl-C or
//! SIGTERM; `agent-host web` serves the UI (on a broker, with the mirror of the reports);
//! `planner`, `worker`, `orchestrator` and `ci-monitor` run one service each on a Kafka
//! broker; `send`, `replay`, `approve`, `reject`, `cancel`, `tasks` and `show` talk to a
//! running host through its JSON API (or to the broker with `--bus kafka`, or work in their
//! own process with `--local`); `dlq` reads `DATA_DIR`; `schemas` prints the JSON Schema of
//! every message and stage output (`docs/schemas.md`). See `agent-host --help`.
//!
//! The library part exists so that the web UI can be tested as a [`web::router`] without a
//! network; the binary is a thin [`main`].

mod bidi;
mod cli;
mod client;
mod commands;
mod config;
mod database;
mod progress;
mod telemetry;
pub mod views;
pub mod web;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::Layer;
#[cfg(feature = "otel")]
use tracing_subscriber::Registry;
use tracing_subscriber::filter::{EnvFilter, FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// The whole program: parses the command line, starts the runtime and runs the command.
pub fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // reqwest is built without a TLS provider of its own; the workspace uses ring. Installing
    // it once here, before any client exists, keeps rustls from having to choose (and panic).
    let _ = rustls::crypto::ring::default_provider().install_default();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Inside the runtime: the span exporter of the `otel` feature keeps its client there.
    // Dropped before the runtime, which it needs to send its last spans.
    let _tracing = {
        let _inside = runtime.enter();
        init_tracing(cli.runs_services())
    };
    match runtime.block_on(commands::dispatch(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// What must live as long as the program for its traces to reach their destination.
#[derive(Debug, Default)]
struct TracingGuard {
    /// The span export of the `otel` feature, flushed when dropped.
    #[cfg(feature = "otel")]
    _otel: Option<telemetry::OtelGuard>,
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`). Without `RUST_LOG`, a command
/// that does not run services leaves out the Kafka client's own log: it retries quietly, and
/// the command says itself when no broker answers.
///
/// The log shows events only: each carries its `task_id`, `step` and `attempt` itself. The
/// spans around them (a message's handling, a step, a result's application) are for tracing
/// backends: with the `otel` feature and `OTEL_EXPORTER_OTLP_ENDPOINT` set, they are exported
/// over OTLP, filtered by the same `RUST_LOG`.
fn init_tracing(runs_services: bool) -> TracingGuard {
    // rskafka warns "BroadcastOnce dropped without producing" for every batch producer a
    // process drops, also when nothing was lost: it is noise at every exit.
    let default = if runs_services {
        "info,rskafka::client::producer::broadcast=error"
    } else {
        "info,rskafka=off"
    };
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    #[cfg(feature = "otel")]
    {
        let (otel, guard) = match telemetry::otel_layer::<Registry>() {
            Ok(Some((layer, guard))) => (Some(layer.with_filter(filter())), Some(guard)),
            Ok(None) => (None, None),
            Err(error) => {
                eprintln!("warning: the spans cannot be exported over OTLP: {error}");
                (None, None)
            }
        };
        tracing_subscriber::registry()
            .with(otel)
            .with(log_layer(filter()))
            .init();
        TracingGuard { _otel: guard }
    }
    #[cfg(not(feature = "otel"))]
    {
        tracing_subscriber::registry()
            .with(log_layer(filter()))
            .init();
        TracingGuard::default()
    }
}

/// The log on stderr: the events `filter` lets through, without the spans around them.
fn log_layer<S>(filter: EnvFilter) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(filter.and(filter_fn(|metadata| metadata.is_event())))
}
