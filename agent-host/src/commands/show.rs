//! `show`: one task's prompt, status, attempts and artifacts.

use std::path::PathBuf;
use std::process::ExitCode;

use agent_pipeline::store::{Artifact, AttemptRecord, TaskRecord};
use agent_pipeline::wire::StepMode;
use agent_pipeline::{Stage, StepId, TaskId};
use anyhow::{Context, Result};
use serde_json::json;

use super::{Stores, human_duration, no_such_task, parse_task_id, timestamp};
use crate::cli::ShowArgs;
use crate::config::Config;

/// One step of the task: its attempts and its canonical artifact.
#[derive(Debug)]
struct StepView {
    /// The step.
    step: StepId,
    /// Its attempts, in order, each with its own file when it has one.
    attempts: Vec<(AttemptRecord, Option<PathBuf>)>,
    /// The canonical artifact and its file, when there is one.
    artifact: Option<(Artifact, PathBuf)>,
}

/// Prints the task, or `--json` one JSON document of it.
pub(crate) async fn show(config: &Config, args: &ShowArgs) -> Result<ExitCode> {
    let task_id = parse_task_id(&args.task_id)?;
    let Some(stores) = Stores::open(&config.data_dir).await? else {
        return Err(no_such_task(task_id, &config.data_dir));
    };
    let Some(task) = stores
        .state
        .task(task_id)
        .await
        .with_context(|| format!("cannot read task {task_id}"))?
    else {
        return Err(no_such_task(task_id, &config.data_dir));
    };
    let steps = steps(&stores, task_id).await?;
    let task_dir = stores.artifacts.task_dir(task_id);
    if args.json {
        let document = json!({
            "task": {
                "task_id": task_id.to_string(),
                "prompt": task.prompt,
                "status": task.status.as_str(),
                "current_step": task.current_step.map(|s| s.to_string()),
                "created_at": task.created_at,
                "updated_at": task.updated_at,
                "dir": task_dir,
            },
            "steps": steps.iter().map(step_json).collect::<Vec<_>>(),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&document).context("cannot print the task")?
        );
    } else {
        print!("{}", render(&task, &steps, &task_dir));
    }
    Ok(ExitCode::SUCCESS)
}

/// Gathers every stage's attempts and artifact.
async fn steps(stores: &Stores, task_id: TaskId) -> Result<Vec<StepView>> {
    let attempts = stores
        .state
        .attempts(task_id)
        .await
        .with_context(|| format!("cannot read the attempts of task {task_id}"))?;
    let artifacts = &stores.artifacts;
    let mut views = Vec::new();
    for stage in Stage::ALL {
        let step = StepId::v1(stage);
        let mut own = Vec::new();
        for attempt in attempts.iter().filter(|a| a.step_id() == step) {
            let path = artifacts
                .attempt_path(task_id, step, attempt.attempt())
                .ok()
                .filter(|p| p.exists());
            own.push((attempt.clone(), path));
        }
        let artifact = artifacts
            .read_artifact(task_id, step)
            .await
            .with_context(|| format!("cannot read the artifact of {step}"))?;
        let artifact = match artifact {
            Some(artifact) => Some((artifact, artifacts.canonical_path(task_id, step)?)),
            None => None,
        };
        views.push(StepView {
            step,
            attempts: own,
            artifact,
        });
    }
    Ok(views)
}

/// One step as JSON.
fn step_json(view: &StepView) -> serde_json::Value {
    json!({
        "step": view.step.to_string(),
        "attempts": view.attempts.iter().map(|(a, path)| json!({
            "attempt": a.attempt(),
            "mode": a.mode(),
            "status": a.status.as_str(),
            "model": a.model,
            "duration_ms": a.duration_ms,
            "error": a.error,
            "finished_at": a.finished_at,
            "file": path,
        })).collect::<Vec<_>>(),
        "artifact": view.artifact.as_ref().map(|(artifact, _)| artifact),
        "file": view.artifact.as_ref().map(|(_, path)| path),
    })
}

/// The task for people.
fn render(task: &TaskRecord, steps: &[StepView], task_dir: &std::path::Path) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!("task     {}", task.task_id));
    let at = task
        .current_step
        .map(|s| format!(" (at {s})"))
        .unwrap_or_default();
    line(format!("status   {}{at}", task.status));
    line(format!(
        "created  {}, updated {} (took {})",
        timestamp(task.created_at),
        timestamp(task.updated_at),
        human_duration(task.updated_at - task.created_at)
    ));
    line(format!("files    {}/", task_dir.display()));
    line("prompt".to_owned());
    for prompt_line in task.prompt.lines() {
        line(format!("  {prompt_line}"));
    }
    for view in steps {
        line(String::new());
        line(format!("{}", view.step));
        if view.attempts.is_empty() && view.artifact.is_none() {
            line("  not run".to_owned());
            continue;
        }
        for (attempt, path) in &view.attempts {
            let model = attempt.model.as_deref().unwrap_or("-");
            let took = attempt.duration_ms.map_or_else(
                || "-".to_owned(),
                |ms| {
                    human_duration(chrono::TimeDelta::milliseconds(
                        ms.try_into().unwrap_or(i64::MAX),
                    ))
                },
            );
            let mode = if attempt.mode() == StepMode::Replay {
                " (replay)"
            } else {
                ""
            };
            line(format!(
                "  attempt {}{mode}: {}, model {model}, took {took}",
                attempt.attempt(),
                attempt.status.as_str()
            ));
            if let Some(error) = &attempt.error {
                line(format!("    error: {error}"));
            }
            if let Some(path) = path {
                line(format!("    file:  {}", path.display()));
            }
        }
        match &view.artifact {
            Some((artifact, path)) => {
                line(format!(
                    "  artifact (attempt {}): {}",
                    artifact.attempt,
                    path.display()
                ));
                let pretty = serde_json::to_string_pretty(artifact)
                    .unwrap_or_else(|e| format!("(cannot print: {e})"));
                for text in pretty.lines() {
                    line(format!("    {text}"));
                }
            }
            None => line("  no artifact".to_owned()),
        }
    }
    out
}
