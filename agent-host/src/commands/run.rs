//! `run`: every service and the web UI in this process, until Ctrl-C or SIGTERM.

use std::process::ExitCode;

use agent_pipeline::Service;
use anyhow::Result;

use super::services::{Process, serve};
use crate::config::Config;

/// Starts every service on the configured bus (on the embedded default resuming unfinished
/// steps), serves the web UI, and stops them cleanly on Ctrl-C or SIGTERM.
pub(crate) async fn run(config: &Config) -> Result<ExitCode> {
    let process = Process {
        name: "agent-host".to_owned(),
        services: Service::ALL.to_vec(),
        web: true,
        bus: config.bus,
    };
    serve(config, &process).await
}
