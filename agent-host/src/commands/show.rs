//! `show`: one task's prompt, status, budget, spend, attempts (with what each cost and how a
//! replay differed) and artifacts, from the running host or (with `--local`) from `DATA_DIR`.

use std::process::ExitCode;

use agent_pipeline::store::TaskStatus;
use agent_pipeline::wire::{StepMode, Variant};
use anyhow::{Context, Result};
use reqwest::StatusCode;

use super::{
    Target, human_duration, no_such_task, open_existing_stores, parse_task_id, spend_line,
    timestamp, usd,
};
use crate::bidi;
use crate::cli::ShowArgs;
use crate::config::{Config, describe_limits};
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
    if task.status == TaskStatus::AwaitingApproval {
        line(format!(
            "         its gates passed: `agent-host approve {}` publishes the change, \
             `agent-host reject {}` discards it",
            task.task_id, task.task_id
        ));
    }
    line(format!("spent    {}", spend_line(&task.spend)));
    // A budget without rounds of its own has the host's GATE_ROUNDS, which this view does
    // not know: only the limits the task has are shown.
    let budget = task
        .budget
        .as_ref()
        .map_or_else(|| "none".to_owned(), describe_limits);
    let approval = if task.require_approval {
        ", approval required before publishing"
    } else {
        ""
    };
    line(format!("budget   {budget}{approval}"));
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
            let cost = if attempt.spend.is_empty() {
                String::new()
            } else {
                format!(
                    ", {} tokens, {}",
                    attempt.spend.usage.total_tokens,
                    usd(attempt.spend.cost_usd)
                )
            };
            line(format!(
                "  attempt {}{mode}: {}, model {model}, took {took}{cost}",
                attempt.attempt,
                attempt.status.as_str()
            ));
            if let Some(variant) = attempt.variant.as_ref().and_then(describe_variant) {
                line(format!("    variant: {variant}"));
            }
            if let Some(reason) = &attempt.reason {
                line(format!("    why:   {}", super::one_line(reason, 200)));
            }
            if let Some(error) = &attempt.error {
                line(format!("    error: {error}"));
            }
            if let Some(path) = &attempt.file {
                line(format!("    file:  {path}"));
            }
        }
        if view.attempts.len() > 1 {
            line(format!(
                "  spent over its attempts: {}",
                spend_line(&view.spend)
            ));
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
    // The prompt, models and artifacts are not ours: their controls must not reorder the
    // terminal.
    bidi::escape_for_terminal(&out).into_owned()
}

/// How a replayed attempt differed from the run, for people: `model gpt-4o, provider local,
/// edited prompt, edited design@v1, later stages run again`; `None` when it ran as the run
/// did.
pub(super) fn describe_variant(variant: &Variant) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(model) = &variant.model {
        parts.push(format!("model {model}"));
    }
    if let Some(provider) = &variant.provider {
        parts.push(format!("provider {provider}"));
    }
    if variant.prompt.is_some() {
        parts.push("edited prompt".to_owned());
    }
    for step in variant.inputs.keys() {
        parts.push(format!("edited {step}"));
    }
    if variant.continue_downstream {
        parts.push("later stages run again".to_owned());
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_pipeline::{Stage, StepId};

    #[test]
    fn a_variant_says_what_it_changed() {
        assert_eq!(describe_variant(&Variant::default()), None);
        let mut variant = Variant {
            model: Some("gpt-4o".into()),
            provider: Some("local".into()),
            prompt: Some("Say hi".into()),
            continue_downstream: true,
            ..Variant::default()
        };
        variant
            .inputs
            .insert(StepId::v1(Stage::Design), serde_json::Map::new());
        assert_eq!(
            describe_variant(&variant).as_deref(),
            Some(
                "model gpt-4o, provider local, edited prompt, edited design@v1, later stages run again"
            )
        );
    }
}
