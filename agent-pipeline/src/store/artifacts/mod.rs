//! A task's documents — `task.json`, each step's artifact, older attempts' artifacts and the
//! records beside them — behind the [`ArtifactStore`] trait: as files under `DATA_DIR`
//! ([`FileArtifactStore`]), or as rows of a PostgreSQL database (`PostgresArtifactStore`,
//! feature `postgres`) so that hosts need no shared disk.

mod files;
#[cfg(feature = "postgres")]
mod postgres;

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{StoreError, StoreResult};
use crate::budget::Budget;
use crate::ids::{Attempt, StepId, TaskId};
use crate::llm::{LlmCall, Usage};
use crate::wire::{Repository, Variant};

pub use files::FileArtifactStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresArtifactStore;

/// The task as first received, kept beside its artifacts as `task.json`.
// Not `Eq`: a budget's cost limit is an `f64`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskFile {
    /// The task.
    pub task_id: TaskId,
    /// What was asked.
    pub prompt: String,
    /// When it was received.
    pub created_at: DateTime<Utc>,
    /// The limits it runs under (the pipeline's defaults with its own on top), when any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// Whether its change waits for a person's approval before it is published.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_approval: bool,
    /// The existing repository it changes, when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<Repository>,
}

/// One step's artifact: the stage output's fields at the top level (the contract), with
/// what produced them beside them.
///
/// The names `task_id`, `step`, `attempt`, `model`, `usage`, `cost_usd`, `llm_calls`,
/// `created_at`, `duration_ms`, `replay_reason`, `round`, `feedback` and `variant` are reserved
/// for this record; a stage output must not use them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    /// The stage output, e.g. `design_summary` and `files_touched`.
    #[serde(flatten)]
    pub output: Map<String, Value>,
    /// The task.
    pub task_id: TaskId,
    /// The step.
    pub step: StepId,
    /// Which execution of the step produced it.
    pub attempt: Attempt,
    /// The model that produced it (`offline` for the offline model).
    pub model: String,
    /// Tokens spent.
    pub usage: Usage,
    /// What the step's LLM calls cost in US dollars (the sum of `llm_calls`; calls without a
    /// price count as free).
    #[serde(default)]
    pub cost_usd: f64,
    /// Every LLM call the step made: model, tokens, cost and duration of each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub llm_calls: Vec<LlmCall>,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
    /// How long the step took.
    pub duration_ms: u64,
    /// Why the step was replayed, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_reason: Option<String>,
    /// The round of the task (1, then one more for each time failed gates sent the change
    /// back to Implement).
    #[serde(default = "first_round")]
    pub round: u32,
    /// What the gates of the last round found, when this step ran to fix it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<String>,
    /// How a replay differed from the run (model, provider, edited prompt or inputs) and the
    /// upstream attempts it read; replays only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<Variant>,
}

fn first_round() -> u32 {
    1
}

impl Artifact {
    /// The stage output as its type.
    pub fn output_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_value(Value::Object(self.output.clone()))
    }
}

/// The name of a task's `task.json`.
pub const TASK_DOCUMENT: &str = "task.json";

/// The name of a step's canonical (latest) artifact: `design@v1.json`.
///
/// ```
/// use agent_pipeline::store::{attempt_document, canonical_document};
/// use agent_pipeline::{Attempt, Stage, StepId};
///
/// let step = StepId::v1(Stage::Design);
/// assert_eq!(canonical_document(step), "design@v1.json");
/// let second = Attempt::new(2)?;
/// assert_eq!(attempt_document(step, second), "design@v1.attempt2.json");
/// # Ok::<(), agent_pipeline::IdError>(())
/// ```
pub fn canonical_document(step: StepId) -> String {
    format!("{step}.json")
}

/// The name of one attempt's own artifact: `design@v1.attempt2.json`.
pub fn attempt_document(step: StepId, attempt: Attempt) -> String {
    format!("{step}.attempt{attempt}.json")
}

/// Refuses a document name that is not a plain `*.json` file name, whichever store keeps it.
pub(crate) fn check_document_name(name: &str) -> StoreResult<()> {
    let plain = name.ends_with(".json")
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && name.len() <= 255;
    if plain {
        Ok(())
    } else {
        Err(StoreError::InvalidName(name.to_owned()))
    }
}

/// Where a task's documents are kept: its prompt (`task.json`), each step's canonical
/// artifact, the artifacts of earlier attempts once a step has several, and records such as
/// `gates.round1.json` and `ci.json`, each a JSON document named as in contracts.md.
///
/// A step's artifact is written with [`ArtifactStore::write_artifact`]: the canonical
/// document always, and the attempt's own document when the step already had an artifact of
/// another attempt (whose content is first kept in its own document, so no attempt is lost).
///
/// Implementations: [`FileArtifactStore`] (the default: files under `DATA_DIR`) and
/// `PostgresArtifactStore` (feature `postgres`). Both pass `conformance::artifact_store`
/// (feature `test-util`). The UI and the CLI read through this trait whichever is used.
///
/// ```
/// use agent_pipeline::store::{ArtifactStore, FileArtifactStore, TaskFile};
/// use agent_pipeline::TaskId;
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let store: std::sync::Arc<dyn ArtifactStore> = std::sync::Arc::new(FileArtifactStore::new(dir.path()));
/// let task = TaskFile {
///     task_id: TaskId::new(),
///     prompt: "Write a haiku".into(),
///     created_at: chrono::Utc::now(),
///     budget: None,
///     require_approval: false,
///     repository: None,
/// };
/// store.write_task(&task).await?;
/// assert_eq!(store.read_task(task.task_id).await?, Some(task.clone()));
/// assert_eq!(store.documents(task.task_id).await?, ["task.json"]);
/// # Ok(())
/// # }
/// # tokio::runtime::Runtime::new().map(|r| r.block_on(example())).ok();
/// ```
#[async_trait]
pub trait ArtifactStore: Send + Sync + fmt::Debug + 'static {
    /// Where a task's documents are, as people find them: a directory, or the database.
    fn task_location(&self, task_id: TaskId) -> String;

    /// Where the document `name` of a task is (or would be), as people find it.
    fn location(&self, task_id: TaskId, name: &str) -> String;

    /// Stores `task.json`; returns its location.
    async fn write_task(&self, task: &TaskFile) -> StoreResult<String> {
        let document = encode(&self.location(task.task_id, TASK_DOCUMENT), task)?;
        self.write_document(task.task_id, TASK_DOCUMENT, &document)
            .await
    }

    /// `task.json`, if the task has one.
    async fn read_task(&self, task_id: TaskId) -> StoreResult<Option<TaskFile>> {
        read_as(self, task_id, TASK_DOCUMENT).await
    }

    /// Stores a step's artifact (see the trait's description); returns the location of the
    /// canonical document.
    async fn write_artifact(&self, artifact: &Artifact) -> StoreResult<String>;

    /// The canonical (latest) artifact of a step, if there is one.
    async fn read_artifact(&self, task_id: TaskId, step: StepId) -> StoreResult<Option<Artifact>> {
        read_as(self, task_id, &canonical_document(step)).await
    }

    /// The artifact of one attempt, from its own document or the canonical one.
    async fn read_attempt(
        &self,
        task_id: TaskId,
        step: StepId,
        attempt: Attempt,
    ) -> StoreResult<Option<Artifact>> {
        let own = attempt_document(step, attempt);
        if let Some(found) = read_as(self, task_id, &own).await? {
            return Ok(Some(found));
        }
        match self.read_artifact(task_id, step).await? {
            Some(canonical) if canonical.attempt == attempt => Ok(Some(canonical)),
            // A later attempt was written between the two reads (a replay finishing): it
            // saves the attempt it replaces in its own document before it replaces the
            // canonical one, so that document is there now.
            Some(_) => read_as(self, task_id, &own).await,
            None => Ok(None),
        }
    }

    /// A task's `task.json` and the canonical artifacts of `steps`, read in one go where
    /// the store can.
    async fn read_task_and_artifacts(
        &self,
        task_id: TaskId,
        steps: &[StepId],
    ) -> StoreResult<(Option<TaskFile>, Vec<Option<Artifact>>)> {
        let task = self.read_task(task_id).await?;
        let mut artifacts = Vec::with_capacity(steps.len());
        for step in steps {
            artifacts.push(self.read_artifact(task_id, *step).await?);
        }
        Ok((task, artifacts))
    }

    /// Stores another document of the task beside its artifacts, such as the gate verdicts
    /// of a round (`gates.round1.json`) or the last check of its published change
    /// (`ci.json`). `name` is a plain `*.json` name. Returns the location.
    async fn write_document(
        &self,
        task_id: TaskId,
        name: &str,
        value: &Value,
    ) -> StoreResult<String>;

    /// A document of the task, if it has one by that name.
    async fn read_document(&self, task_id: TaskId, name: &str) -> StoreResult<Option<Value>>;

    /// The names of a task's documents, sorted.
    async fn documents(&self, task_id: TaskId) -> StoreResult<Vec<String>>;

    /// Deletes the named documents of a task (those it has); returns how many there were.
    async fn delete_documents(&self, task_id: TaskId, names: &[String]) -> StoreResult<usize>;

    /// Deletes everything kept for the task.
    async fn delete_task(&self, task_id: TaskId) -> StoreResult<()>;

    /// Makes every write so far durable in its final place (a store that journals writes
    /// does it here); called when the pipeline shuts down.
    async fn checkpoint(&self) -> StoreResult<()> {
        Ok(())
    }
}

impl dyn ArtifactStore {
    /// [`ArtifactStore::write_document`] of any serializable record.
    pub async fn write_record<T: Serialize + Sync>(
        &self,
        task_id: TaskId,
        name: &str,
        record: &T,
    ) -> StoreResult<String> {
        let document = encode(&self.location(task_id, name), record)?;
        self.write_document(task_id, name, &document).await
    }

    /// [`ArtifactStore::read_document`] as a `T`.
    pub async fn read_record<T: serde::de::DeserializeOwned>(
        &self,
        task_id: TaskId,
        name: &str,
    ) -> StoreResult<Option<T>> {
        read_as(self, task_id, name).await
    }
}

/// A document of `store` as a `T`, or the error naming where it is.
async fn read_as<S, T>(store: &S, task_id: TaskId, name: &str) -> StoreResult<Option<T>>
where
    S: ArtifactStore + ?Sized,
    T: serde::de::DeserializeOwned,
{
    match store.read_document(task_id, name).await? {
        Some(value) => serde_json::from_value(value)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                path: store.location(task_id, name).into(),
                reason: e.to_string(),
            }),
        None => Ok(None),
    }
}

/// `value` as a document, or the error naming where it was to go.
pub(crate) fn encode<T: Serialize + ?Sized>(location: &str, value: &T) -> StoreResult<Value> {
    serde_json::to_value(value).map_err(|e| StoreError::Corrupt {
        path: location.into(),
        reason: format!("cannot be encoded: {e}"),
    })
}

/// The documents `write_artifact` writes, given the attempt of the step's current canonical
/// artifact (if any): `(name, which)` where `which` is the new artifact or the previous one.
pub(crate) fn artifact_writes(
    step: StepId,
    attempt: Attempt,
    previous: Option<Attempt>,
) -> Vec<(String, Written)> {
    let mut writes = Vec::new();
    match previous {
        Some(previous) if previous != attempt => {
            writes.push((attempt_document(step, previous), Written::PreviousIfMissing));
            writes.push((attempt_document(step, attempt), Written::New));
        }
        _ if attempt != Attempt::FIRST => {
            writes.push((attempt_document(step, attempt), Written::New));
        }
        _ => {}
    }
    writes.push((canonical_document(step), Written::New));
    writes
}

/// Which content a document of [`artifact_writes`] gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    /// The artifact being written.
    New,
    /// The step's previous canonical artifact, unless the document exists already.
    PreviousIfMissing,
}
