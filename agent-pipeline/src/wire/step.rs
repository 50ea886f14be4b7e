//! Messages between planner, orchestrator and workers: step requests and step results.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::budget::TaskBudget;
use crate::ids::{Attempt, StepId, TaskId};
use crate::llm::{LlmCall, Usage};

/// Why a step runs: as part of the pipeline, or replayed on request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepMode {
    /// The pipeline runs the step and then the next stages.
    #[default]
    Run,
    /// Only this step runs again; later stages are not rerun.
    Replay,
}

/// One unit of work: run step `step_id` of task `task_id`, attempt `attempt`.
///
/// It names the inputs rather than carrying them: the worker reads the prompt and the earlier
/// artifacts from the artifact store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StepRequest {
    /// The task.
    pub task_id: TaskId,
    /// The step to run.
    pub step_id: StepId,
    /// Which execution of the step this is (every retry and replay gets the next number).
    pub attempt: Attempt,
    /// The try within this run of the step, from 1; retries stop at the configured limit.
    #[serde(default = "first_try")]
    pub try_number: u32,
    /// Run or replay.
    #[serde(default)]
    pub mode: StepMode,
    /// The round of the task this step belongs to: 1, then one more each time failed gates
    /// send the change back to Implement.
    #[serde(default = "first_round")]
    pub round: u32,
    /// Why the step runs again, when it does: a replay's reason, or what failed in the last
    /// round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Do not start before this time (retry backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    /// When the request was made.
    pub requested_at: DateTime<Utc>,
    /// The task's limits and what it had spent, for the steps of its run (replays have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<TaskBudget>,
    /// Whether the task waits for a person's approval before its change is published.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_approval: bool,
    /// What a replay changes and the upstream attempts it reads (replays only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<Variant>,
}

/// How a replayed step differs from the run it replays, and which upstream artifacts it reads.
///
/// The upstream attempts are pinned when the replay is requested, so that the step reads
/// exactly those (nothing upstream runs again, nothing upstream is billed again), whatever
/// happens to the canonical artifacts meanwhile.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Variant {
    /// Another model than the configured one, by its name at the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Another provider than the default one, by the name it was registered under
    /// ([`PipelineBuilder::llm_provider`](crate::PipelineBuilder::llm_provider)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// An edited task prompt, used for this attempt only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Edited outputs of upstream steps, used instead of their stored artifacts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<StepId, Map<String, Value>>,
    /// The attempt of each upstream step the replay reads (those not edited).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pinned: BTreeMap<StepId, Attempt>,
    /// Whether the later stages run again from this attempt once it succeeds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub continue_downstream: bool,
}

impl Variant {
    /// Whether the attempt ran with anything edited or another model or provider.
    pub fn changes_anything(&self) -> bool {
        self.model.is_some()
            || self.provider.is_some()
            || self.prompt.is_some()
            || !self.inputs.is_empty()
    }
}

/// Why a step was stopped before it could succeed or fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The task reached a limit of its budget.
    BudgetExceeded,
    /// The task was cancelled.
    Cancelled,
}

impl StopReason {
    /// The reason as written in events: `budget_exceeded` or `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::BudgetExceeded => "budget_exceeded",
            StopReason::Cancelled => "cancelled",
        }
    }
}

fn first_try() -> u32 {
    1
}

fn first_round() -> u32 {
    1
}

/// What came of one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum StepOutcome {
    /// The agent produced a valid output.
    Succeeded {
        /// The stage output, valid against its type.
        output: Value,
        /// The model that produced it (`offline` for the offline model).
        model: String,
        /// Tokens spent, over all calls the step made.
        usage: Usage,
    },
    /// The step failed.
    Failed {
        /// What went wrong.
        error: String,
        /// Whether running it again may succeed.
        retryable: bool,
    },
    /// The step was stopped: the task reached its budget or was cancelled.
    Stopped {
        /// Why (named apart from the result's `reason`, which says why the step ran).
        cause: StopReason,
        /// In words.
        detail: String,
    },
}

/// The outcome of one step request, published by a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StepResult {
    /// The task.
    pub task_id: TaskId,
    /// The step that ran.
    pub step_id: StepId,
    /// Which execution of the step.
    pub attempt: Attempt,
    /// The try within this run of the step.
    #[serde(default = "first_try")]
    pub try_number: u32,
    /// Run or replay.
    #[serde(default)]
    pub mode: StepMode,
    /// The round of the task.
    #[serde(default = "first_round")]
    pub round: u32,
    /// Why the step ran again, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Success with the output, or failure with the error.
    #[serde(flatten)]
    pub outcome: StepOutcome,
    /// When the worker started the step.
    pub started_at: DateTime<Utc>,
    /// How long the step took.
    pub duration_ms: u64,
    /// Every LLM call the step made, whatever its outcome.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<LlmCall>,
    /// The request's budget, carried on to the next steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<TaskBudget>,
    /// The request's approval requirement, carried on to the gates.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_approval: bool,
    /// The request's variant (replays only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<Variant>,
}

impl StepResult {
    /// The result of `request` with `outcome`, after `calls`.
    pub fn of(
        request: &StepRequest,
        outcome: StepOutcome,
        calls: Vec<LlmCall>,
        started_at: DateTime<Utc>,
        duration_ms: u64,
    ) -> Self {
        Self {
            task_id: request.task_id,
            step_id: request.step_id,
            attempt: request.attempt,
            try_number: request.try_number,
            mode: request.mode,
            round: request.round,
            reason: request.reason.clone(),
            outcome,
            started_at,
            duration_ms,
            calls,
            budget: request.budget,
            require_approval: request.require_approval,
            variant: request.variant.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_survives_the_wire_beside_the_results_reason() {
        let request = StepRequest {
            reason: Some("why it ran".into()),
            ..crate::machine::first_request(TaskId::new(), Utc::now())
        };
        let outcomes = [
            StepOutcome::Succeeded {
                output: serde_json::json!({"design_summary": "x"}),
                model: "m".into(),
                usage: Usage::default(),
            },
            StepOutcome::Failed {
                error: "boom".into(),
                retryable: true,
            },
            StepOutcome::Stopped {
                cause: StopReason::Cancelled,
                detail: "the task was cancelled".into(),
            },
        ];
        for outcome in outcomes {
            let result = StepResult::of(&request, outcome, Vec::new(), Utc::now(), 5);
            let decoded: StepResult = serde_json::from_slice(&crate::wire::encode(&result))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(decoded, result);
        }
    }
}
