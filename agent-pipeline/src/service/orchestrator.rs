//! The orchestrator: persists results, moves tasks along, retries and dead-letters.

use async_trait::async_trait;
use chrono::Utc;
use serde_json::Value;

use super::{Deps, Handler};
use crate::Result;
use crate::bus::Delivery;
use crate::machine::{Command, Context, on_step_result, random_jitter};
use crate::store::Artifact;
use crate::wire::{StepOutcome, StepResult, decode};

#[derive(Debug, Clone)]
pub(crate) struct Orchestrator {
    pub(crate) deps: Deps,
}

#[async_trait]
impl Handler for Orchestrator {
    async fn handle(&self, delivery: &Delivery) -> Result<()> {
        let deps = &self.deps;
        let result: StepResult = match decode(&delivery.payload) {
            Ok(result) => result,
            Err(malformed) => return deps.dead_letter(delivery, &malformed.reason).await,
        };
        if deps.state.task(result.task_id).await?.is_none() {
            return deps
                .dead_letter(
                    delivery,
                    &format!("result for unknown task {}", result.task_id),
                )
                .await;
        }
        // A result already recorded is a redelivery: it must not create a second attempt.
        let recorded = deps
            .state
            .attempt(result.task_id, result.step_id, result.attempt)
            .await?;
        if recorded.is_some_and(|a| a.status.is_finished()) {
            tracing::debug!(task_id = %result.task_id, step = %result.step_id, attempt = %result.attempt, "duplicate result ignored");
            return Ok(());
        }
        if let StepOutcome::Succeeded { output, .. } = &result.outcome
            && !output.is_object()
        {
            return deps
                .dead_letter(delivery, "a step output must be a JSON object")
                .await;
        }

        let now = Utc::now();
        let task_dir = deps
            .artifacts
            .task_dir(result.task_id)
            .display()
            .to_string();
        let context = Context {
            task_dir: &task_dir,
            results_topic: &deps.topics.step_results,
            now,
            jitter: random_jitter(),
        };
        let transition = on_step_result(&deps.policy, &result, context);
        // Artifacts, requests and dead letters first, then the state change, then the
        // reports. A crash before the state change redelivers the result, which redoes the
        // idempotent effects; reports come last so that whoever reacts to one (a waiting CLI,
        // the UI) finds the state store already up to date.
        let mut reports = Vec::new();
        for command in transition.commands {
            match command {
                Command::SaveArtifact => self.save_artifact(&result, now).await?,
                Command::RequestStep(request) => {
                    deps.state.reserve_attempt(&request).await?;
                    deps.publish(&deps.topics.step_requests, request.task_id, &request)
                        .await?;
                }
                Command::Report(event) => reports.push(event),
                Command::DeadLetter(letter) => {
                    deps.publish(&deps.topics.dlq, result.task_id, &letter)
                        .await?
                }
            }
        }
        deps.state
            .finish_attempt(&result, transition.task_status, now)
            .await?;
        for event in &reports {
            deps.report(event).await?;
        }
        Ok(())
    }
}

impl Orchestrator {
    async fn save_artifact(&self, result: &StepResult, now: chrono::DateTime<Utc>) -> Result<()> {
        let StepOutcome::Succeeded {
            output: Value::Object(output),
            model,
            usage,
        } = &result.outcome
        else {
            return Ok(());
        };
        let artifact = Artifact {
            output: output.clone(),
            task_id: result.task_id,
            step: result.step_id,
            attempt: result.attempt,
            model: model.clone(),
            usage: *usage,
            created_at: now,
            duration_ms: result.duration_ms,
            replay_reason: result.reason.clone(),
        };
        let path = self.deps.artifacts.write_artifact(&artifact).await?;
        tracing::info!(task_id = %result.task_id, step = %result.step_id, attempt = %result.attempt, path = %path.display(), "artifact stored");
        Ok(())
    }
}
