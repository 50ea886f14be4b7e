//! One task with every step, attempt and artifact: `/task/<id>`, `/api/task/<id>`,
//! `agent-host show`.

use agent_pipeline::budget::Budget;
use agent_pipeline::llm::{LlmCall, Spend};
use agent_pipeline::store::{
    Artifact, ArtifactStore, AttemptStatus, StateStore, TaskStatus, attempt_document,
    canonical_document,
};
use agent_pipeline::wire::{StepMode, Variant};
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
    /// The providers a replay of its steps may name (`offline`, and those of
    /// `LLM_PROVIDERS`), for the replay form. The web server fills it in from its pipeline;
    /// [`task_details`] alone, which reads only the stores, leaves it empty.
    #[serde(default)]
    pub providers: Vec<String>,
}

/// The task's own record.
// Not `Eq`: its spend and budget hold US dollars, `f64`s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// What its LLM calls spent so far, over every attempt (replays included): tokens, US
    /// dollars, calls, and how many calls had no price.
    #[serde(default)]
    pub spend: Spend,
    /// The limits it runs under (the host's defaults with its own on top); `None`: no limit
    /// but the rounds of the gates.
    #[serde(default)]
    pub budget: Option<Budget>,
    /// Whether its change waits for a person's approval before it is published.
    #[serde(default)]
    pub require_approval: bool,
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
    /// What the LLM calls of all its attempts spent.
    #[serde(default)]
    pub spend: Spend,
}

impl StepView {
    /// Whether the step never ran.
    pub fn is_untouched(&self) -> bool {
        self.attempts.is_empty() && self.artifact.is_none()
    }
}

/// One attempt of a step.
// Not `Eq`: its calls hold US dollars, `f64`s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// The round of the task it belongs to (1, then one more each time failed gates sent the
    /// change back to Implement).
    #[serde(default = "first_round")]
    pub round: u32,
    /// Why it ran again, when it did: a replay's reason, or what failed in the last round.
    #[serde(default)]
    pub reason: Option<String>,
    /// Every LLM call it made, once it finished: model, provider, tokens, cost, duration.
    #[serde(default)]
    pub calls: Vec<LlmCall>,
    /// The sum of `calls`.
    #[serde(default)]
    pub spend: Spend,
    /// How a replay differed from the run: another model or provider, an edited prompt or
    /// edited inputs, the upstream attempts it read, whether the later stages ran again from
    /// it. Replays only.
    #[serde(default)]
    pub variant: Option<Variant>,
}

fn first_round() -> u32 {
    1
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
    // The budget and approval requirement are kept with the prompt in `task.json`; a task
    // whose document is gone still shows what the state store knows.
    let task_file = artifacts.read_task(task_id).await?;
    let stored = |name: String| {
        documents
            .contains(&name)
            .then(|| artifacts.location(task_id, &name))
    };
    let mut steps = Vec::new();
    for stage in Stage::ALL {
        let step = StepId::v1(stage);
        let mut own = Vec::new();
        let mut step_spend = Spend::default();
        for record in attempts.iter().filter(|a| a.step_id() == step) {
            let file = stored(attempt_document(step, record.attempt()));
            let spend = Spend::of(&record.calls);
            step_spend += spend;
            own.push(AttemptView {
                attempt: record.attempt(),
                mode: record.mode(),
                status: record.status,
                model: record.model.clone(),
                duration_ms: record.duration_ms,
                error: record.error.clone(),
                finished_at: record.finished_at,
                file,
                round: record.request.round,
                reason: record.request.reason.clone(),
                calls: record.calls.clone(),
                spend,
                variant: record.request.variant.clone(),
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
            spend: step_spend,
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
            spend: task.spend,
            budget: task_file.as_ref().and_then(|file| file.budget),
            require_approval: task_file.is_some_and(|file| file.require_approval),
        },
        steps,
        providers: Vec::new(),
    }))
}
