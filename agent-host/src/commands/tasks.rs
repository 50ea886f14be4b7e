//! `tasks`: every task with its latest status and what it spent, newest first, from the
//! running host or (with `--local`) from `DATA_DIR`.

use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use super::{Target, human_duration, one_line, open_existing_stores, timestamp, usd};
use crate::bidi;
use crate::cli::TasksArgs;
use crate::config::Config;
use crate::views::{self, TaskSummary};

/// How much of a prompt the table shows.
const PROMPT_WIDTH: usize = 50;

/// Prints the tasks as an aligned table, or as JSON lines with `--json`.
pub(crate) async fn tasks(config: &Config, args: &TasksArgs) -> Result<ExitCode> {
    let (tasks, place) = match Target::to_read(config, &args.host)? {
        Target::Local | Target::Bus => {
            let place = format!("in {}", config.data_dir.display());
            // Looking creates nothing: without a state database there are no tasks.
            let tasks = match open_existing_stores(config).await? {
                Some(stores) => views::task_summaries(stores.state.as_ref())
                    .await
                    .context("cannot list the tasks")?,
                None => Vec::new(),
            };
            (tasks, place)
        }
        Target::Host(client) => {
            let tasks = client.tasks().await.context("cannot list the tasks")?;
            (tasks, format!("on the host at {}", client.url()))
        }
    };
    if args.json {
        for task in &tasks {
            println!(
                "{}",
                serde_json::to_string(task).context("cannot print the task")?
            );
        }
    } else if tasks.is_empty() {
        println!("no tasks yet {place}");
    } else {
        print!("{}", table(&tasks, Utc::now()));
    }
    Ok(ExitCode::SUCCESS)
}

/// The tasks as a table whose columns line up.
fn table(tasks: &[TaskSummary], now: DateTime<Utc>) -> String {
    let header = [
        "TASK", "STATUS", "STEP", "ATTEMPTS", "TOKENS", "COST", "AGE", "DURATION", "CREATED",
        "PROMPT",
    ]
    .map(str::to_owned);
    let mut lines = vec![header];
    for task in tasks {
        lines.push([
            task.task_id.to_string(),
            task.status.to_string(),
            task.current_step
                .map_or_else(|| "-".to_owned(), |s| s.to_string()),
            task.attempts.to_string(),
            task.spend.usage.total_tokens.to_string(),
            usd(task.spend.cost_usd),
            human_duration(now - task.created_at),
            human_duration(task.updated_at - task.created_at),
            timestamp(task.created_at),
            // The prompt is not ours: its controls must not reorder the terminal.
            bidi::escape_for_terminal(&one_line(&task.prompt, PROMPT_WIDTH)).into_owned(),
        ]);
    }
    let mut widths = [0usize; 10];
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
        let task = |status, step, created: i64, updated: i64, prompt: &str| TaskSummary {
            task_id: TaskId::new(),
            status,
            current_step: step,
            attempts: 4,
            created_at: now - TimeDelta::seconds(created),
            updated_at: now - TimeDelta::seconds(updated),
            duration_ms: (created - updated) * 1000,
            prompt: prompt.to_owned(),
            spend: agent_pipeline::llm::Spend {
                cost_usd: 0.0125,
                ..Default::default()
            },
        };
        let tasks = [
            task(
                TaskStatus::Done,
                Some(StepId::v1(Stage::Review)),
                90,
                80,
                "Write hello",
            ),
            task(TaskStatus::Received, None, 5, 5, "Another\nline"),
        ];
        let text = table(&tasks, now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let status_column = lines[0].find("STATUS");
        assert!(status_column.is_some());
        assert_eq!(lines[1].find("done"), status_column);
        assert_eq!(lines[2].find("received"), status_column);
        assert!(lines[1].contains("$0.0125"), "{}", lines[1]);
        assert!(lines[1].contains("review@v1"));
        assert!(lines[1].contains("1m30s") && lines[1].contains("10s"));
        assert!(lines[2].ends_with("Another"));
    }
}
