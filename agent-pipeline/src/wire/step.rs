//! Messages between planner, orchestrator and workers: step requests and step results.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{Attempt, StepId, TaskId};
use crate::llm::Usage;

/// Why a step runs: as part of the pipeline, or replayed on request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}

fn first_try() -> u32 {
    1
}

fn first_round() -> u32 {
    1
}

/// What came of one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
}

/// The outcome of one step request, published by a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
}

impl StepResult {
    /// The result of `request` with `outcome`.
    pub fn of(
        request: &StepRequest,
        outcome: StepOutcome,
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
        }
    }
}
