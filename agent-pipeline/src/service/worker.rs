//! The worker: runs the agent of one step request and publishes the result.
//!
//! Each step runs under a [`StepMeter`] that records every LLM call (tokens, cost), holds the
//! calls to what the task's budget still allows, and routes a replay's calls to its model or
//! provider; a step whose task is cancelled is dropped at once, abandoning its calls.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use serde_json::{Map, Value};
use tracing::Instrument;

use super::cancellations::Cancellations;
use super::{Deps, Handler};
use crate::Result;
use crate::agent::{AgentError, AgentInput, CodeContext, PriorArtifact};
use crate::bus::Delivery;
use crate::ids::{Stage, StepId};
use crate::llm::{LlmError, StepMeter};
use crate::metrics::StepInFlight;
use crate::store::TaskStatus;
use crate::wire::{StepMode, StepOutcome, StepRequest, StepResult, StopReason, decode};

#[derive(Debug, Clone)]
pub(crate) struct Worker {
    pub(crate) deps: Deps,
    /// The steps this process runs, reached by cancellations.
    pub(crate) cancellations: Cancellations,
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
        // Registered before the task's status is read: a cancellation after the read is then
        // reported to this step.
        let mut cancelled = self.cancellations.register(request.task_id);
        let started_at = Utc::now();
        let clock = Instant::now();
        let meter = self.meter(&request);
        let outcome = if self.is_cancelled(&request).await? {
            cancelled_outcome()
        } else {
            tracing::info!(task_id = %request.task_id, step = %request.step_id, attempt = %request.attempt, "step started");
            let span = tracing::info_span!("step", task_id = %request.task_id, step = %request.step_id, attempt = %request.attempt);
            let in_flight = StepInFlight::start(request.step_id.stage());
            let run = meter.scope(self.run(&request, &meter)).instrument(span);
            // Dropping the step's future abandons its LLM calls and sandboxed runs.
            let outcome = tokio::select! {
                outcome = run => outcome?,
                () = cancelled.wait() => {
                    tracing::info!(task_id = %request.task_id, step = %request.step_id, attempt = %request.attempt, "step abandoned: the task was cancelled");
                    cancelled_outcome()
                }
            };
            drop(in_flight);
            outcome
        };
        drop(cancelled);
        let duration_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
        if let StepOutcome::Failed { error, .. } = &outcome {
            tracing::warn!(task_id = %request.task_id, step = %request.step_id, attempt = %request.attempt, %error, "step failed");
        }
        let result = StepResult::of(&request, outcome, meter.calls(), started_at, duration_ms);
        self.deps
            .publish(&self.deps.topics.step_results, request.task_id, &result)
            .await
    }
}

fn cancelled_outcome() -> StepOutcome {
    StepOutcome::Stopped {
        cause: StopReason::Cancelled,
        detail: "the task was cancelled".to_owned(),
    }
}

fn budget_outcome(detail: impl Into<String>) -> StepOutcome {
    StepOutcome::Stopped {
        cause: StopReason::BudgetExceeded,
        detail: detail.into(),
    }
}

impl Worker {
    /// The meter of the step: the price table, what the budget still allows, and the model
    /// or provider of a replay's variant.
    fn meter(&self, request: &StepRequest) -> StepMeter {
        let mut meter = StepMeter::new(self.deps.prices.clone());
        if let Some(budget) = &request.budget {
            let (tokens, cost_usd) = budget.allowance();
            meter = meter.with_allowance(tokens, cost_usd);
        }
        if let Some(variant) = &request.variant {
            meter = meter.with_override(variant.model.clone(), variant.provider.clone());
        }
        meter
    }

    /// Whether the step belongs to a run that was cancelled (replays run whatever the task's
    /// status).
    async fn is_cancelled(&self, request: &StepRequest) -> Result<bool> {
        if request.mode != StepMode::Run {
            return Ok(false);
        }
        let task = self.deps.state.task(request.task_id).await?;
        Ok(task.is_some_and(|task| task.status == TaskStatus::Cancelled))
    }

    async fn run(&self, request: &StepRequest, meter: &StepMeter) -> Result<StepOutcome> {
        let deps = &self.deps;
        let failed = |error: String| StepOutcome::Failed {
            error,
            retryable: false,
        };
        if let Some(budget) = &request.budget
            && let Some(hit) = budget
                .limits
                .exceeded(&budget.spent, budget.started_at, Utc::now())
        {
            return Ok(budget_outcome(hit.to_string()));
        }
        let input = match self.input(request).await? {
            Ok(input) => input,
            Err(error) => return Ok(failed(error)),
        };
        let stage = request.step_id.stage();
        let agent = deps.agents.get(stage);
        // The step stops at the task's deadline, or at the step timeout when that comes first.
        let deadline = request
            .budget
            .and_then(|budget| budget.time_left(Utc::now()))
            .filter(|left| *left < deps.step_timeout);
        let timeout = deadline.unwrap_or(deps.step_timeout);
        // Waiting for LLM budget (a concurrency slot, the rate limits) is not the step's time.
        let run = crate::llm::timeout_excluding_budget_wait(timeout, agent.run(&input));
        let output = match run.await {
            Err(_) if deadline.is_some() => {
                return Ok(budget_outcome(format!(
                    "the task reached its wall-time limit while {} ran",
                    request.step_id
                )));
            }
            Err(_) => {
                return Ok(StepOutcome::Failed {
                    error: format!("the step took longer than {:?}", deps.step_timeout),
                    retryable: true,
                });
            }
            Ok(Err(AgentError::Llm(LlmError::BudgetExceeded(detail)))) => {
                return Ok(budget_outcome(detail));
            }
            Ok(Err(error)) => {
                return Ok(StepOutcome::Failed {
                    error: error.to_string(),
                    retryable: error.is_retryable(),
                });
            }
            Ok(Ok(output)) => output,
        };
        // An agent that reports usage without calling the pipeline's LLM (a custom agent with
        // a client of its own) is recorded as one call, so that its tokens count too.
        if meter.calls().is_empty() && output.usage.total_tokens > 0 {
            meter.record(&output.model, None, output.usage, Duration::ZERO, None);
        }
        Ok(match deps.execute(request, output.output).await? {
            Ok(mut artifact) => {
                // What the model saw of the repository, so that a reviewer sees it too.
                if let Some(code) = &input.code {
                    artifact.insert(
                        CodeContext::RETRIEVED.to_owned(),
                        serde_json::to_value(&code.retrieved).unwrap_or(Value::Null),
                    );
                    artifact.insert(
                        CodeContext::RETRIEVED_FROM.to_owned(),
                        Value::from(code.commit.clone()),
                    );
                }
                StepOutcome::Succeeded {
                    output: Value::Object(artifact),
                    model: output.model,
                    usage: output.usage,
                }
            }
            Err(failure) => StepOutcome::Failed {
                error: failure.error,
                retryable: failure.retryable,
            },
        })
    }

    /// What the agent sees: the prompt and the earlier stages' outputs (for a replay, its
    /// edited prompt and inputs and the upstream attempts it pinned), or why they are missing.
    async fn input(
        &self,
        request: &StepRequest,
    ) -> Result<std::result::Result<AgentInput, String>> {
        let deps = &self.deps;
        let stage = request.step_id.stage();
        let inputs: Vec<StepId> = stage.earlier().iter().map(|s| StepId::v1(*s)).collect();
        let (task, artifacts) = deps
            .artifacts
            .read_task_and_artifacts(request.task_id, &inputs)
            .await?;
        let Some(task) = task else {
            return Ok(Err(format!(
                "task {} has no task.json: its prompt is missing",
                request.task_id
            )));
        };
        let variant = request.variant.as_ref();
        let mut prior = Vec::new();
        for (step, canonical) in inputs.into_iter().zip(artifacts) {
            let output: Option<Map<String, Value>> = match variant {
                Some(variant) if variant.inputs.contains_key(&step) => {
                    variant.inputs.get(&step).cloned()
                }
                Some(variant) => match variant.pinned.get(&step) {
                    Some(attempt) => deps
                        .artifacts
                        .read_attempt(request.task_id, step, *attempt)
                        .await?
                        .map(|artifact| artifact.output),
                    None => canonical.map(|artifact| artifact.output),
                },
                None => canonical.map(|artifact| artifact.output),
            };
            match output {
                Some(output) => prior.push(PriorArtifact { step, output }),
                None => return Ok(Err(format!("input {step} has no artifact"))),
            }
        }
        let edited = variant.is_some_and(|variant| variant.changes_anything());
        if stage == Stage::Implement && request.reason.is_some() && !edited {
            // Redone to fix what the last round's tests and review found (or replayed with a
            // reason): show them.
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
        let prompt = variant
            .and_then(|variant| variant.prompt.clone())
            .unwrap_or(task.prompt);
        #[cfg(feature = "memory")]
        let code = deps
            .code_context(request.task_id, task.repository.as_ref(), &prompt, &prior)
            .await;
        #[cfg(not(feature = "memory"))]
        let code = None;
        Ok(Ok(AgentInput {
            task_id: request.task_id,
            step: request.step_id,
            attempt: request.attempt,
            prompt,
            prior,
            reason: request.reason.clone(),
            diff,
            code,
        }))
    }
}
