//! `replay`: run one step of a task again, in this process.

use std::process::ExitCode;

use agent_pipeline::wire::ReportStatus;
use agent_pipeline::{Error, StepId};
use anyhow::{Context, Result};
use chrono::Utc;

use super::{INTERRUPTED, build_pipeline, event_line, no_such_task, parse_task_id};
use crate::cli::ReplayArgs;
use crate::config::Config;
use crate::progress::Progress;

/// Checks the ids, starts the services, asks for the replay and waits for its outcome.
pub(crate) async fn replay(config: &Config, args: &ReplayArgs) -> Result<ExitCode> {
    let task_id = parse_task_id(&args.task_id)?;
    let step: StepId = args
        .step
        .trim()
        .parse()
        .with_context(|| format!("invalid step {:?}", args.step))?;
    // The library refuses other versions too; checked here first so that nothing is opened.
    if step != StepId::v1(step.stage()) {
        anyhow::bail!(
            "unknown step {step}: this pipeline runs {}",
            StepId::v1(step.stage())
        );
    }
    let pipeline = build_pipeline(config, false).await?;

    // Checked and enqueued before the services start: a refusal then starts nothing, and the
    // in-memory bus keeps the command for the planner.
    let since = Utc::now();
    match pipeline.replay(task_id, step, args.reason.clone()).await {
        Ok(()) => {}
        Err(Error::TaskNotFound(_)) => return Err(no_such_task(task_id, &config.data_dir)),
        Err(error) => return Err(error).with_context(|| format!("replay of {step} refused")),
    }
    let running = pipeline
        .start()
        .await
        .context("cannot start the services")?;
    let outcome = async {
        eprintln!(
            "replaying {step} of task {task_id} in this process; model: {}",
            config.model_description()
        );
        let mut progress = Progress::new();
        progress.set_running(Some(step));
        let mut ticker = progress.ticker();
        let wait = pipeline.wait_replay(task_id, step, since);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                event = &mut wait => {
                    progress.clear();
                    let event = event.context("cannot follow the replay's reports")?;
                    return Ok::<_, anyhow::Error>(Some(event));
                }
                _ = ticker.tick() => progress.tick(),
                interrupted = tokio::signal::ctrl_c() => {
                    interrupted.context("cannot listen for Ctrl-C")?;
                    progress.clear();
                    eprintln!("interrupted: the replay of {step} is unfinished; `agent-host run` resumes its unfinished steps");
                    return Ok(None);
                }
            }
        }
    }
    .await;
    running.shutdown().await;

    let Some(event) = outcome? else {
        return Ok(ExitCode::from(INTERRUPTED));
    };
    println!("{}", event_line(&event, since));
    if event.status != ReportStatus::Replayed {
        let summary = event
            .summary
            .strip_prefix("error: ")
            .unwrap_or(&event.summary);
        eprintln!("replay of {step} of task {task_id} ended in error: {summary}");
        return Ok(ExitCode::FAILURE);
    }
    let artifacts = pipeline.artifacts();
    if let Some(attempt) = event.attempt {
        let path = artifacts
            .attempt_path(task_id, step, attempt)
            .context("cannot name the attempt's file")?;
        // A step replayed before it ever ran has only its canonical file.
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            println!("attempt {attempt}: {}", path.display());
        }
    }
    let canonical = artifacts
        .canonical_path(task_id, step)
        .context("cannot name the canonical file")?;
    println!("canonical: {}", canonical.display());
    Ok(ExitCode::SUCCESS)
}
