//! `run`: every service and the web UI in this process, until Ctrl-C.

use std::process::ExitCode;

use anyhow::{Context, Result};

use super::build_pipeline;
use super::web::WebServer;
use crate::config::Config;
use crate::web::WebSettings;

/// Starts every service on the embedded default, resuming unfinished steps, serves the web UI,
/// and stops them cleanly on Ctrl-C.
pub(crate) async fn run(config: &Config) -> Result<ExitCode> {
    let pipeline = build_pipeline(config, true).await?;
    let unfinished = pipeline
        .state()
        .unfinished_attempts()
        .await
        .context("cannot read the unfinished steps")?
        .len();
    let settings = WebSettings {
        token: config.web.token.clone(),
        read_only: None,
    };
    // Bound before the services start, so that a busy port stops nothing half-way.
    let server = WebServer::bind(config, pipeline.clone(), settings).await?;
    let running = pipeline
        .start()
        .await
        .context("cannot start the services")?;

    // Listen before saying "Press Ctrl-C": tokio's ctrl_c() only registers when first polled.
    let interrupt = Interrupt::listen()?;
    let data = pipeline.data_dir().display();
    println!("agent-host: every service runs in this process (embedded default, in-memory bus)");
    println!("  data:    {data}  (artifacts in {data}/<task_id>/, reports.jsonl, state.sqlite)");
    println!("  model:   {}", config.model_description());
    if let Some(file) = &config.file {
        println!("  config:  {}", file.display());
    }
    println!(
        "  brokers: {} (REDPANDA_BROKERS; not used yet: the embedded bus is in memory)",
        config.brokers
    );
    let topics = &config.topics;
    println!(
        "  topics:  {}, {}, {}, {}, {}, {}",
        topics.tasks,
        topics.step_requests,
        topics.step_results,
        topics.reports,
        topics.ci_watch,
        topics.dlq
    );
    if unfinished > 0 {
        println!("  resumed: {unfinished} unfinished step(s) sent again");
    }
    println!("  web:     {}/  (UI and JSON API under /api)", server.url());
    if config.web.token.is_some() {
        println!(
            "           WEB_TOKEN is set: the UI asks for it, the API wants `Authorization: Bearer`"
        );
    }
    println!("Press Ctrl-C to stop.");

    let serving = server.serve_until(interrupt.received());
    let served = serving.await;
    println!("stopping…");
    running.shutdown().await;
    served?;
    println!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C, listened for from the moment it is created.
#[cfg(unix)]
pub(super) struct Interrupt(tokio::signal::unix::Signal);

#[cfg(unix)]
impl Interrupt {
    /// Starts listening.
    pub(super) fn listen() -> Result<Self> {
        let kind = tokio::signal::unix::SignalKind::interrupt();
        Ok(Self(
            tokio::signal::unix::signal(kind).context("cannot listen for Ctrl-C")?,
        ))
    }

    /// Waits for Ctrl-C.
    pub(super) async fn received(mut self) {
        self.0.recv().await;
    }
}

/// Ctrl-C, listened for when awaited.
#[cfg(not(unix))]
pub(super) struct Interrupt;

#[cfg(not(unix))]
impl Interrupt {
    /// Starts listening.
    pub(super) fn listen() -> Result<Self> {
        Ok(Self)
    }

    /// Waits for Ctrl-C (or for good, when it cannot be listened for).
    pub(super) async fn received(self) {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
