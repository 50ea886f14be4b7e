//! Runs the Hello Earthling task end to end in this process, on the embedded default
//! (in-process bus, files and SQLite under `./data`, or `DATA_DIR`), and prints each stage's
//! artifact and where the files are.
//!
//! ```text
//! cargo run --example hello_earthling
//! ```
//!
//! Without `OPENAI_API_KEY` it uses the offline model, and every artifact says so.

use std::io::IsTerminal;
use std::time::Instant;

use agent_pipeline::wire::ReportStatus;
use agent_pipeline::{Pipeline, Stage, StepId};
use anyhow::Context;

const PROMPT: &str = "Write a tiny Python program that prints 'Hello Earthling'";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let data_dir = std::env::var("DATA_DIR").unwrap_or_else(|_| "./data".to_owned());

    let pipeline = Pipeline::embedded(&data_dir)
        .await
        .with_context(|| format!("could not open the data directory {data_dir}"))?;
    let running = pipeline.start().await?;
    let started = Instant::now();
    let task_id = pipeline.submit(PROMPT).await?;
    println!("Task {task_id}: {PROMPT}\n");

    let mut reports = pipeline.watch(task_id).await?;
    let last = loop {
        let event = reports.next().await?;
        let stage = event.stage.map(|s| format!(" {s}")).unwrap_or_default();
        println!(
            "[{:>5.1}s] {}{stage} — {}",
            started.elapsed().as_secs_f64(),
            event.status,
            event.summary
        );
        if event.status.is_final() {
            break event;
        }
    };
    running.shutdown().await;

    println!();
    for stage in Stage::ALL {
        let step = StepId::v1(stage);
        let Some(artifact) = pipeline.artifacts().read_artifact(task_id, step).await? else {
            continue;
        };
        let path = pipeline.artifacts().canonical_path(task_id, step)?;
        println!(
            "── {step} ({}, model {}) ──",
            path.display(),
            artifact.model
        );
        println!(
            "{}\n",
            serde_json::to_string_pretty(&artifact.output).unwrap_or_default()
        );
    }
    println!(
        "Artifacts: {}\nReports:   {}",
        pipeline.artifacts().task_dir(task_id).display(),
        pipeline.report_log().path().display()
    );
    if last.status == ReportStatus::Done {
        Ok(())
    } else {
        anyhow::bail!("the task ended in error: {}", last.summary)
    }
}
