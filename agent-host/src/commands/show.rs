//! `show`: one task's prompt, status, attempts and artifacts, from the running host or (with
//! `--local`) from `DATA_DIR`.

use std::process::ExitCode;

use agent_pipeline::wire::StepMode;
use anyhow::{Context, Result};
use reqwest::StatusCode;

use super::{Target, human_duration, no_such_task, open_existing_stores, parse_task_id, timestamp};
use crate::cli::ShowArgs;
use crate::config::Config;
use crate::views::{self, TaskDetails};

/// Prints the task, or `--json` one JSON document of it.
pub(crate) async fn show(config: &Config, args: &ShowArgs) -> Result<ExitCode> {
    let task_id = parse_task_id(&args.task_id)?;
    let target = Target::to_read(config, &args.host)?;
    let details = match &target {
        Target::Local | Target::Bus => match open_existing_stores(config).await? {
            Some(stores) => {
                views::task_details(stores.state.as_ref(), stores.artifacts.as_ref(), task_id)
                    .await
                    .with_context(|| format!("cannot read task {task_id}"))?
            }
            None => None,
        },
        Target::Host(client) => match client.task(task_id).await {
            Ok(details) => Some(details),
            Err(error) if error.status() == Some(StatusCode::NOT_FOUND) => None,
            Err(error) => return Err(error).with_context(|| format!("cannot read task {task_id}")),
        },
    };
    let Some(details) = details else {
        return Err(no_such_task(task_id, &target, &config.data_dir));
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&details).context("cannot print the task")?
        );
    } else {
        print!("{}", render(&details));
    }
    Ok(ExitCode::SUCCESS)
}

/// The task for people.
fn render(details: &TaskDetails) -> String {
    let task = &details.task;
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
    line(format!("files    {}", task.dir));
    line("prompt".to_owned());
    for prompt_line in task.prompt.lines() {
        line(format!("  {prompt_line}"));
    }
    for view in &details.steps {
        line(String::new());
        line(format!("{}", view.step));
        if view.is_untouched() {
            line("  not run".to_owned());
            continue;
        }
        for attempt in &view.attempts {
            let model = attempt.model.as_deref().unwrap_or("-");
            let took = attempt.duration_ms.map_or_else(
                || "-".to_owned(),
                |ms| {
                    human_duration(chrono::TimeDelta::milliseconds(
                        ms.try_into().unwrap_or(i64::MAX),
                    ))
                },
            );
            let mode = if attempt.mode == StepMode::Replay {
                " (replay)"
            } else {
                ""
            };
            line(format!(
                "  attempt {}{mode}: {}, model {model}, took {took}",
                attempt.attempt,
                attempt.status.as_str()
            ));
            if let Some(error) = &attempt.error {
                line(format!("    error: {error}"));
            }
            if let Some(path) = &attempt.file {
                line(format!("    file:  {path}"));
            }
        }
        match (&view.artifact, &view.file) {
            (Some(artifact), Some(path)) => {
                line(format!("  artifact (attempt {}): {path}", artifact.attempt));
                let pretty = serde_json::to_string_pretty(artifact)
                    .unwrap_or_else(|e| format!("(cannot print: {e})"));
                for text in pretty.lines() {
                    line(format!("    {text}"));
                }
            }
            _ => line("  no artifact".to_owned()),
        }
    }
    out
}
