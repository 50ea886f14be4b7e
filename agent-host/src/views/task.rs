//! One task with every step, attempt and artifact: `/task/<id>`, `/api/task/<id>`,
//! `agent-host show`.

use agent_pipeline::store::{
    Artifact, ArtifactStore, AttemptStatus, StateStore, TaskStatus, attempt_document,
    canonical_document,
};
use agent_pipeline::wire::StepMode;
use agent_pipeline::{Attempt, Stage, StepId, TaskId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ViewError;

/// A task with its steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDetails {
    /// The task itself.
    pub task: TaskInfo,
    /// Its four steps, in order, whether they ran or not.
    pub steps: Vec<StepView>,
}

/// The task's own record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskInfo {
    /// The task.
    pub task_id: TaskId,
    /// What was asked.
    pub prompt: String,
    /// Where it stands.
    pub status: TaskStatus,
    /// The step it is at (or ended at).
    pub current_step: Option<StepId>,
    /// When it was received.
    pub created_at: DateTime<Utc>,
    /// When its status last changed.
    pub updated_at: DateTime<Utc>,
    /// Where its documents are: its directory, or (artifacts in PostgreSQL)
    /// `postgres://host:port/database#<task_id>`.
    pub dir: String,
}

/// One step: its attempts and its canonical artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepView {
    /// The step.
    pub step: StepId,
    /// Its attempts, oldest first.
    pub attempts: Vec<AttemptView>,
    /// The canonical (latest) artifact, when the step produced one.
    pub artifact: Option<Artifact>,
    /// Where the canonical artifact is, when there is one.
    pub file: Option<String>,
}

impl StepView {
    /// Whether the step never ran.
    pub fn is_untouched(&self) -> bool {
        self.attempts.is_empty() && self.artifact.is_none()
    }
}

/// One attempt of a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptView {
    /// Its number.
    pub attempt: Attempt,
    /// Whether it ran as part of the pipeline or as a replay.
    pub mode: StepMode,
    /// Where it stands.
    pub status: AttemptStatus,
    /// The model that ran it, when it finished.
    pub model: Option<String>,
    /// How long the worker took.
    pub duration_ms: Option<u64>,
    /// The error, when it failed.
    pub error: Option<String>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Where its own artifact is, when it has one (a step's only attempt lives in the
    /// canonical document alone).
    pub file: Option<String>,
}

/// The task `task_id` with every step; `None` when there is no such task.
pub async fn task_details(
    state: &dyn StateStore,
    artifacts: &dyn ArtifactStore,
    task_id: TaskId,
) -> Result<Option<TaskDetails>, ViewError> {
    let Some(task) = state.task(task_id).await? else {
        return Ok(None);
    };
    let attempts = state.attempts(task_id).await?;
    let documents = artifacts.documents(task_id).await?;
    let stored = |name: String| {
        documents
            .contains(&name)
            .then(|| artifacts.location(task_id, &name))
    };
    let mut steps = Vec::new();
    for stage in Stage::ALL {
        let step = StepId::v1(stage);
        let mut own = Vec::new();
        for record in attempts.iter().filter(|a| a.step_id() == step) {
            let file = stored(attempt_document(step, record.attempt()));
            own.push(AttemptView {
                attempt: record.attempt(),
                mode: record.mode(),
                status: record.status,
                model: record.model.clone(),
                duration_ms: record.duration_ms,
                error: record.error.clone(),
                finished_at: record.finished_at,
                file,
            });
        }
        let artifact = artifacts.read_artifact(task_id, step).await?;
        let file = artifact
            .as_ref()
            .and_then(|_| stored(canonical_document(step)));
        steps.push(StepView {
            step,
            attempts: own,
            artifact,
            file,
        });
    }
    Ok(Some(TaskDetails {
        task: TaskInfo {
            task_id,
            prompt: task.prompt,
            status: task.status,
            current_step: task.current_step,
            created_at: task.created_at,
            updated_at: task.updated_at,
            dir: artifacts.task_location(task_id),
        },
        steps,
    }))
}
