//! `run`: every service in this process, until Ctrl-C.

use std::process::ExitCode;

use anyhow::{Context, Result};

use super::build_pipeline;
use crate::config::Config;

/// Starts every service on the embedded default, resuming unfinished steps, and stops them
/// cleanly on Ctrl-C.
pub(crate) async fn run(config: &Config) -> Result<ExitCode> {
    let pipeline = build_pipeline(config, true).await?;
    let unfinished = pipeline
        .state()
        .unfinished_attempts()
        .await
        .context("cannot read the unfinished steps")?
        .len();
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
    println!(
        "  web UI and HTTP enqueue: not yet, they arrive with the UI issue; until then \
         `agent-host send --text \"…\"` runs a task in its own process"
    );
    println!("Press Ctrl-C to stop.");

    interrupt.received().await?;
    println!("stopping…");
    running.shutdown().await;
    println!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C, listened for from the moment it is created.
#[cfg(unix)]
struct Interrupt(tokio::signal::unix::Signal);

#[cfg(unix)]
impl Interrupt {
    fn listen() -> Result<Self> {
        let kind = tokio::signal::unix::SignalKind::interrupt();
        Ok(Self(
            tokio::signal::unix::signal(kind).context("cannot listen for Ctrl-C")?,
        ))
    }

    async fn received(mut self) -> Result<()> {
        self.0.recv().await;
        Ok(())
    }
}

/// Ctrl-C, listened for when awaited.
#[cfg(not(unix))]
struct Interrupt;

#[cfg(not(unix))]
impl Interrupt {
    fn listen() -> Result<Self> {
        Ok(Self)
    }

    async fn received(self) -> Result<()> {
        tokio::signal::ctrl_c()
            .await
            .context("cannot listen for Ctrl-C")
    }
}
