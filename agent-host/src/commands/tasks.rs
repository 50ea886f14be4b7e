//! `tasks`: every task with its latest status, newest first.

use std::process::ExitCode;

use agent_pipeline::store::TaskRecord;
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde_json::json;

use super::{Stores, human_duration, one_line, timestamp};
use crate::cli::TasksArgs;
use crate::config::Config;

/// How much of a prompt the table shows.
const PROMPT_WIDTH: usize = 50;

/// One row: a task and how many attempts its steps took.
#[derive(Debug)]
struct Row {
    /// The task.
    task: TaskRecord,
    /// Attempts of all its steps.
    attempts: usize,
}

/// Prints the tasks as an aligned table, or as JSON lines with `--json`.
pub(crate) async fn tasks(config: &Config, args: &TasksArgs) -> Result<ExitCode> {
    let Some(stores) = Stores::open(&config.data_dir).await? else {
        if !args.json {
            println!("no tasks yet in {}", config.data_dir.display());
        }
        return Ok(ExitCode::SUCCESS);
    };
    let records = stores
        .state
        .tasks(usize::MAX)
        .await
        .context("cannot list the tasks")?;
    let mut rows = Vec::with_capacity(records.len());
    for task in records {
        let attempts = stores
            .state
            .attempts(task.task_id)
            .await
            .with_context(|| format!("cannot read the attempts of task {}", task.task_id))?
            .len();
        rows.push(Row { task, attempts });
    }
    let now = Utc::now();
    if args.json {
        for row in &rows {
            println!("{}", json_line(row));
        }
    } else if rows.is_empty() {
        println!("no tasks yet in {}", config.data_dir.display());
    } else {
        print!("{}", table(&rows, now));
    }
    Ok(ExitCode::SUCCESS)
}

/// One task as one JSON object.
fn json_line(row: &Row) -> serde_json::Value {
    let task = &row.task;
    json!({
        "task_id": task.task_id.to_string(),
        "status": task.status.as_str(),
        "current_step": task.current_step.map(|s| s.to_string()),
        "attempts": row.attempts,
        "created_at": task.created_at,
        "updated_at": task.updated_at,
        "duration_ms": (task.updated_at - task.created_at).num_milliseconds().max(0),
        "prompt": task.prompt,
    })
}

/// The rows as a table whose columns line up.
fn table(rows: &[Row], now: DateTime<Utc>) -> String {
    let header = [
        "TASK", "STATUS", "STEP", "ATTEMPTS", "AGE", "DURATION", "CREATED", "PROMPT",
    ]
    .map(str::to_owned);
    let mut lines = vec![header];
    for row in rows {
        let task = &row.task;
        lines.push([
            task.task_id.to_string(),
            task.status.to_string(),
            task.current_step
                .map_or_else(|| "-".to_owned(), |s| s.to_string()),
            row.attempts.to_string(),
            human_duration(now - task.created_at),
            human_duration(task.updated_at - task.created_at),
            timestamp(task.created_at),
            one_line(&task.prompt, PROMPT_WIDTH),
        ]);
    }
    let mut widths = [0usize; 8];
    for line in &lines {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_pipeline::store::TaskStatus;
    use agent_pipeline::{Stage, StepId, TaskId};
    use chrono::TimeDelta;

    #[test]
    fn the_table_lines_up_and_shows_age_and_duration() {
        let now = Utc::now();
        let task = |status, step, created: i64, updated: i64, prompt: &str| Row {
            task: TaskRecord {
                task_id: TaskId::new(),
                prompt: prompt.to_owned(),
                status,
                current_step: step,
                created_at: now - TimeDelta::seconds(created),
                updated_at: now - TimeDelta::seconds(updated),
            },
            attempts: 4,
        };
        let rows = [
            task(
                TaskStatus::Done,
                Some(StepId::v1(Stage::Review)),
                90,
                80,
                "Write hello",
            ),
            task(TaskStatus::Received, None, 5, 5, "Another\nline"),
        ];
        let text = table(&rows, now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let status_column = lines[0].find("STATUS");
        assert!(status_column.is_some());
        assert_eq!(lines[1].find("done"), status_column);
        assert_eq!(lines[2].find("received"), status_column);
        assert!(lines[1].contains("review@v1"));
        assert!(lines[1].contains("1m30s") && lines[1].contains("10s"));
        assert!(lines[2].ends_with("Another"));
    }
}
