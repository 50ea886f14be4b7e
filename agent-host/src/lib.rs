//! `agent-host`: the command line, the services and the web UI of agent-pipeline in one binary.
//!
//! `agent-host` (or `agent-host run`) runs every service and the web UI until Ctrl-C or
//! SIGTERM; `agent-host web` serves the UI (on a broker, with the mirror of the reports);
//! `planner`, `worker`, `orchestrator` and `ci-monitor` run one service each on a Kafka
//! broker; `send`, `replay`, `tasks` and `show` talk to a running host through its JSON API
//! (or to the broker with `--bus kafka`, or work in their own process with `--local`); `dlq`
//! reads `DATA_DIR`. See `agent-host --help`.
//!
//! The library part exists so that the web UI can be tested as a [`web::router`] without a
//! network; the binary is a thin [`main`].

mod cli;
mod client;
mod commands;
mod config;
mod progress;
pub mod views;
pub mod web;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// The whole program: parses the command line, starts the runtime and runs the command.
pub fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_tracing(cli.runs_services());
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
    match runtime.block_on(commands::dispatch(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`). Without `RUST_LOG`, a command
/// that does not run services leaves out the Kafka client's own log: it retries quietly, and
/// the command says itself when no broker answers.
fn init_tracing(runs_services: bool) {
    // rskafka warns "BroadcastOnce dropped without producing" for every batch producer a
    // process drops, also when nothing was lost: it is noise at every exit.
    let default = if runs_services {
        "info,rskafka::client::producer::broadcast=error"
    } else {
        "info,rskafka=off"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
