//! `agent-host`: the command line and the services of agent-pipeline in one binary.
//!
//! `agent-host` (or `agent-host run`) runs every service until Ctrl-C; `send`, `replay`,
//! `tasks`, `show` and `dlq` submit work and inspect `DATA_DIR`. See `agent-host --help`.

mod cli;
mod commands;
mod config;
mod progress;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_tracing();
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

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
