//! The worker: runs the agent of one step request and publishes the result.

use std::time::Instant;

use async_trait::async_trait;
use chrono::Utc;
use serde_json::Value;
use tracing::Instrument;

use super::{Deps, Handler};
use crate::Result;
use crate::agent::{AgentInput, PriorArtifact};
use crate::bus::Delivery;
use crate::ids::{Stage, StepId};
use crate::metrics::StepInFlight;
use crate::wire::{StepOutcome, StepRequest, StepResult, decode};

#[derive(Debug, Clone)]
pub(crate) struct Worker {
    pub(crate) deps: Deps,
}

#[async_trait]
impl Handler for Worker {
    async fn handle(&self, delivery: &Delivery) -> Result<()> {
        let request: StepRequest = match decode(&delivery.payload) {
            Ok(request) => request,
            Err(malformed) => return self.deps.dead_letter(delivery, &malformed.reason).await,
        };
        if let Some(not_before) = request.not_before
            && let Ok(wait) = (not_before - Utc::now()).to_std()
        {
            tokio::time::sleep(wait).await;
        }
        let started_at = Utc::now();
        let clock = Instant::now();
        tracing::info!(task_id = %request.task_id, step = %request.step_id, attempt = %request.attempt, "step started");
        let span = tracing::info_span!("step", task_id = %request.task_id, step = %request.step_id, attempt = %request.attempt);
        let in_flight = StepInFlight::start(request.step_id.stage());
        let outcome = self.run(&request).instrument(span).await?;
        drop(in_flight);
        let duration_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
        if let StepOutcome::Failed { error, .. } = &outcome {
            tracing::warn!(task_id = %request.task_id, step = %request.step_id, attempt = %request.attempt, %error, "step failed");
        }
        let result = StepResult::of(&request, outcome, started_at, duration_ms);
        self.deps
            .publish(&self.deps.topics.step_results, request.task_id, &result)
            .await
    }
}

impl Worker {
    async fn run(&self, request: &StepRequest) -> Result<StepOutcome> {
        let deps = &self.deps;
        let failed = |error: String| StepOutcome::Failed {
            error,
            retryable: false,
        };
        let stage = request.step_id.stage();
        let inputs: Vec<StepId> = stage.earlier().iter().map(|s| StepId::v1(*s)).collect();
        let (task, artifacts) = deps
            .artifacts
            .read_task_and_artifacts(request.task_id, &inputs)
            .await?;
        let Some(task) = task else {
            return Ok(failed(format!(
                "task {} has no task.json: its prompt is missing",
                request.task_id
            )));
        };
        let mut prior = Vec::new();
        for (step, artifact) in inputs.into_iter().zip(artifacts) {
            match artifact {
                Some(artifact) => prior.push(PriorArtifact {
                    step,
                    output: artifact.output,
                }),
                None => return Ok(failed(format!("input {step} has no artifact"))),
            }
        }
        if stage == Stage::Implement && request.reason.is_some() {
            // Redone to fix what the last round's tests and review found: show them.
            for later in [Stage::Implement, Stage::Test, Stage::Review] {
                let step = StepId::v1(later);
                if let Some(artifact) = deps.artifacts.read_artifact(request.task_id, step).await? {
                    prior.push(PriorArtifact {
                        step,
                        output: artifact.output,
                    });
                }
            }
        }
        let diff = match stage {
            Stage::Review => deps.review_diff(request).await?,
            _ => None,
        };
        let input = AgentInput {
            task_id: request.task_id,
            step: request.step_id,
            attempt: request.attempt,
            prompt: task.prompt,
            prior,
            reason: request.reason.clone(),
            diff,
        };
        let agent = deps.agents.get(stage);
        // Waiting for LLM budget (a concurrency slot, the rate limits) is not the step's time.
        let run = crate::llm::timeout_excluding_budget_wait(deps.step_timeout, agent.run(&input));
        let output = match run.await {
            Err(_) => {
                return Ok(StepOutcome::Failed {
                    error: format!("the step took longer than {:?}", deps.step_timeout),
                    retryable: true,
                });
            }
            Ok(Err(error)) => {
                return Ok(StepOutcome::Failed {
                    error: error.to_string(),
                    retryable: error.is_retryable(),
                });
            }
            Ok(Ok(output)) => output,
        };
        Ok(match deps.execute(request, output.output).await? {
            Ok(artifact) => StepOutcome::Succeeded {
                output: Value::Object(artifact),
                model: output.model,
                usage: output.usage,
            },
            Err(failure) => StepOutcome::Failed {
                error: failure.error,
                retryable: failure.retryable,
            },
        })
    }
}
