//! Every task with its latest status: `/tasks`, `/api/tasks`, `agent-host tasks`.

use agent_pipeline::StepId;
use agent_pipeline::TaskId;
use agent_pipeline::llm::Spend;
use agent_pipeline::store::{StateStore, TaskStatus};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ViewError;

/// One task in a list of tasks.
// Not `Eq`: its spend holds US dollars, an `f64`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSummary {
    /// The task.
    pub task_id: TaskId,
    /// Where it stands: `received`, `running`, `awaiting_approval`, `done`, `error` or
    /// `cancelled`.
    pub status: TaskStatus,
    /// The step it is at (or ended at).
    pub current_step: Option<StepId>,
    /// Attempts of all its steps.
    pub attempts: usize,
    /// When it was received.
    pub created_at: DateTime<Utc>,
    /// When its status last changed.
    pub updated_at: DateTime<Utc>,
    /// From `created_at` to `updated_at`.
    pub duration_ms: i64,
    /// What was asked.
    pub prompt: String,
    /// What its LLM calls spent so far: tokens, US dollars, calls.
    #[serde(default)]
    pub spend: Spend,
}

/// Every task, newest first.
pub async fn task_summaries(state: &dyn StateStore) -> Result<Vec<TaskSummary>, ViewError> {
    let records = state.tasks(usize::MAX).await?;
    let mut summaries = Vec::with_capacity(records.len());
    for task in records {
        let attempts = state.attempts(task.task_id).await?.len();
        summaries.push(TaskSummary {
            task_id: task.task_id,
            status: task.status,
            current_step: task.current_step,
            attempts,
            created_at: task.created_at,
            updated_at: task.updated_at,
            duration_ms: (task.updated_at - task.created_at)
                .num_milliseconds()
                .max(0),
            prompt: task.prompt,
            spend: task.spend,
        });
    }
    Ok(summaries)
}
