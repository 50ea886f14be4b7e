//! Runs the Hello Earthling task end to end in this process, on the embedded default
//! (in-process bus, files and SQLite under `./data`, or `DATA_DIR`): the implementation is
//! committed to the task's git workspace, its tests really run in the bubblewrap sandbox, the
//! gates pass, the change is published as branch `agent/<task_id>` of the bare repository
//! `DATA_DIR/published.git`, and the ci-monitor checks it. Prints each stage's artifact, the
//! test run and where everything is.
//!
//! ```text
//! cargo run --example hello_earthling
//! ```
//!
//! Without `OPENAI_API_KEY` it uses the offline model, and every artifact says so.

use std::io::IsTerminal;
use std::time::Instant;

use agent_pipeline::output::TestReport;
use agent_pipeline::store::canonical_document;
use agent_pipeline::wire::{ReportEvent, ReportStatus};
use agent_pipeline::{Pipeline, Stage, StepId};
use anyhow::Context;

const PROMPT: &str = "Write a tiny Python program that prints 'Hello Earthling'";

/// How long to wait for the ci-monitor's report once the task is done.
const CI_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

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
    let print = |event: &ReportEvent| {
        let stage = event.stage.map(|s| format!(" {s}")).unwrap_or_default();
        println!(
            "[{:>5.1}s] {}{stage} — {}",
            started.elapsed().as_secs_f64(),
            event.status,
            event.summary
        );
    };
    let last = loop {
        let event = reports.next().await?;
        print(&event);
        if event.status.is_final() {
            break event;
        }
    };
    let mut branch = None;
    if last.status == ReportStatus::Done {
        // The pr event came before done; the ci-monitor's check of the branch comes after.
        let ci = tokio::time::timeout(CI_WAIT, async {
            loop {
                let event = reports.next().await?;
                print(&event);
                if event.status == ReportStatus::Ci {
                    return anyhow::Ok(event);
                }
            }
        })
        .await;
        if ci.is_err() {
            println!("(no ci report within {}s)", CI_WAIT.as_secs());
        }
        branch = Some(agent_pipeline::publish::branch_name(task_id));
    }
    running.shutdown().await;

    println!();
    for stage in Stage::ALL {
        let step = StepId::v1(stage);
        let Some(artifact) = pipeline.artifacts().read_artifact(task_id, step).await? else {
            continue;
        };
        let location = pipeline
            .artifacts()
            .location(task_id, &canonical_document(step));
        println!(
            "── {step} ({location}, model {}, {} tokens, ${:.6}) ──",
            artifact.model, artifact.usage.total_tokens, artifact.cost_usd
        );
        println!(
            "{}\n",
            serde_json::to_string_pretty(&artifact.output).unwrap_or_default()
        );
    }
    if let Some(Ok(tests)) = pipeline
        .artifacts()
        .read_artifact(task_id, StepId::v1(Stage::Test))
        .await?
        .map(|artifact| artifact.output_as::<TestReport>())
    {
        println!(
            "── the test run ({}) ──\n$ {}\n{}\n{}: {} passed, {} failed, counted from {}\n",
            tests.run.sandbox,
            tests.run.command,
            tests.run.output.trim_end(),
            tests.run.ending(),
            tests.passed,
            tests.failed,
            tests
                .counted_from
                .as_deref()
                .unwrap_or("nothing: no summary")
        );
    }
    println!(
        "Artifacts: {}\nWorkspace: {}\nReports:   {}",
        pipeline.artifacts().task_location(task_id),
        pipeline
            .data_dir()
            .join(task_id.to_string())
            .join("workspace")
            .display(),
        pipeline.report_log().path().display()
    );
    if let Some(task) = pipeline.state().task(task_id).await? {
        println!(
            "Spent:     {} LLM calls, {} tokens, ${:.6}",
            task.spend.calls, task.spend.usage.total_tokens, task.spend.cost_usd
        );
    }
    if let (Some(branch), Some(repository)) = (branch, pipeline.publisher().local_repository()) {
        println!(
            "Branch:    {branch}\n           git -C {} log {branch}",
            repository.display()
        );
    }
    if last.status == ReportStatus::Done {
        Ok(())
    } else {
        anyhow::bail!("the task ended in error: {}", last.summary)
    }
}
