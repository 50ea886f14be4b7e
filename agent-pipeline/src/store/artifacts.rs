//! Artifacts as files: `DATA_DIR/<task_id>/<step>.json`, one file per later attempt.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::fs_util::{confined, io};
use super::journal::{self, Journal};
use super::{StoreError, StoreResult};
use crate::ids::{Attempt, StepId, TaskId};
use crate::llm::Usage;

/// The task as first received, kept beside its artifacts as `task.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFile {
    /// The task.
    pub task_id: TaskId,
    /// What was asked.
    pub prompt: String,
    /// When it was received.
    pub created_at: DateTime<Utc>,
}

/// One step's artifact: the stage output's fields at the top level (the contract), with
/// what produced them beside them.
///
/// The names `task_id`, `step`, `attempt`, `model`, `usage`, `created_at`, `duration_ms`,
/// `replay_reason`, `round` and `feedback` are reserved for this record; a stage output must not use them.
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

/// Artifacts and task files under a data directory, in the layout of contracts.md:
///
/// ```text
/// <task_id>/task.json                   the prompt
/// <task_id>/design@v1.json              the canonical (latest) artifact of each step
/// <task_id>/implement@v1.attempt2.json  one file per attempt once a step has more than one
/// ```
///
/// Every write is atomic (temporary file and rename), confined to the data directory, and
/// durable when it returns. Writes go through the process's journal (`DATA_DIR/.journal/`):
/// the writes waiting at the same moment share one sync of the disk. After a crash of the
/// machine, [`FileArtifactStore::recover`] restores from the journals the files that did not
/// reach the disk.
#[derive(Debug, Clone)]
pub struct FileArtifactStore {
    root: PathBuf,
    /// Started at the first write.
    journal: Arc<OnceLock<Journal>>,
}

impl FileArtifactStore {
    /// A store rooted at `root` (`DATA_DIR`); the directory is created on first write.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            journal: Arc::default(),
        }
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of a task's files.
    pub fn task_dir(&self, task_id: TaskId) -> PathBuf {
        self.root.join(task_id.to_string())
    }

    /// The canonical file of a step.
    pub fn canonical_path(&self, task_id: TaskId, step: StepId) -> StoreResult<PathBuf> {
        confined(&self.root, &[&task_id.to_string(), &format!("{step}.json")])
    }

    /// The file of one attempt of a step.
    pub fn attempt_path(
        &self,
        task_id: TaskId,
        step: StepId,
        attempt: Attempt,
    ) -> StoreResult<PathBuf> {
        confined(
            &self.root,
            &[
                &task_id.to_string(),
                &format!("{step}.attempt{attempt}.json"),
            ],
        )
    }

    fn journal(&self) -> &Journal {
        self.journal
            .get_or_init(|| Journal::start(self.root.clone()))
    }

    /// Writes whole files of one task through the journal.
    async fn write_files(
        &self,
        task_id: TaskId,
        files: Vec<(PathBuf, Vec<u8>)>,
    ) -> StoreResult<()> {
        let dir = task_id.to_string();
        self.journal()
            .run(Box::new(move |journal| {
                journal.prepare_dir(&dir)?;
                files
                    .into_iter()
                    .try_for_each(|(path, bytes)| journal.write(&path, bytes))
            }))
            .await
    }

    /// Makes every file written so far durable in place and deletes the journal that held
    /// them; a process does it by itself from time to time, when its last handle of the store
    /// is dropped, and [`crate::RunningPipeline::shutdown`] does it. Nothing to do for a store
    /// that has written nothing.
    pub async fn checkpoint(&self) -> StoreResult<()> {
        match self.journal.get() {
            Some(journal) => journal.checkpoint().await,
            None => Ok(()),
        }
    }

    /// Restores, from the journals of processes that have stopped, the files whose latest
    /// content did not reach the disk before a crash of the machine, then deletes those
    /// journals. Returns how many files were restored. [`crate::PipelineBuilder::build`] calls
    /// it; the journals of running processes are left alone.
    pub async fn recover(&self) -> StoreResult<usize> {
        let root = self.root.clone();
        blocking(move || journal::recover(&root)).await
    }

    /// Writes `task.json`.
    pub async fn write_task(&self, task: &TaskFile) -> StoreResult<PathBuf> {
        let path = confined(&self.root, &[&task.task_id.to_string(), "task.json"])?;
        self.write_files(task.task_id, vec![(path.clone(), pretty(task))])
            .await?;
        Ok(path)
    }

    /// Reads `task.json`, if the task has one.
    pub async fn read_task(&self, task_id: TaskId) -> StoreResult<Option<TaskFile>> {
        let path = confined(&self.root, &[&task_id.to_string(), "task.json"])?;
        read_json(&path).await
    }

    /// Stores an artifact: the canonical file always, and the attempt's own file when the
    /// step already had an artifact from another attempt (whose content is first kept in its
    /// own attempt file, so that no attempt is lost). Returns the canonical path.
    pub async fn write_artifact(&self, artifact: &Artifact) -> StoreResult<PathBuf> {
        let (task_id, step, attempt) = (artifact.task_id, artifact.step, artifact.attempt);
        let canonical = self.canonical_path(task_id, step)?;
        let own = self.attempt_path(task_id, step, attempt)?;
        let bytes = pretty(artifact);
        let this = self.clone();
        let path = canonical.clone();
        self.journal()
            .run(Box::new(move |journal| {
                journal.prepare_dir(&task_id.to_string())?;
                let previous = match journal.read(&canonical)? {
                    Some(bytes) => Some((attempt_of(&canonical, &bytes)?, bytes)),
                    None => None,
                };
                match previous {
                    Some((previous, previous_bytes)) if previous != attempt => {
                        let previous_path = this.attempt_path(task_id, step, previous)?;
                        if journal.read(&previous_path)?.is_none() {
                            journal.write(&previous_path, previous_bytes)?;
                        }
                        journal.write(&own, bytes.clone())?;
                    }
                    _ if attempt != Attempt::FIRST => journal.write(&own, bytes.clone())?,
                    _ => {}
                }
                journal.write(&canonical, bytes)
            }))
            .await?;
        Ok(path)
    }

    /// The canonical (latest) artifact of a step, if there is one.
    pub async fn read_artifact(
        &self,
        task_id: TaskId,
        step: StepId,
    ) -> StoreResult<Option<Artifact>> {
        read_json(&self.canonical_path(task_id, step)?).await
    }

    /// A task's `task.json` and the canonical artifacts of `steps`, read in one go.
    pub async fn read_task_and_artifacts(
        &self,
        task_id: TaskId,
        steps: &[StepId],
    ) -> StoreResult<(Option<TaskFile>, Vec<Option<Artifact>>)> {
        let task = confined(&self.root, &[&task_id.to_string(), "task.json"])?;
        let artifacts = steps
            .iter()
            .map(|step| self.canonical_path(task_id, *step))
            .collect::<StoreResult<Vec<_>>>()?;
        blocking(move || {
            let task = read_json_blocking(&task)?;
            let artifacts = artifacts
                .iter()
                .map(|path| read_json_blocking(path))
                .collect::<StoreResult<_>>()?;
            Ok((task, artifacts))
        })
        .await
    }

    /// The artifact of one attempt, from its own file or the canonical one.
    pub async fn read_attempt(
        &self,
        task_id: TaskId,
        step: StepId,
        attempt: Attempt,
    ) -> StoreResult<Option<Artifact>> {
        if let Some(artifact) = read_json(&self.attempt_path(task_id, step, attempt)?).await? {
            return Ok(Some(artifact));
        }
        Ok(self
            .read_artifact(task_id, step)
            .await?
            .filter(|a: &Artifact| a.attempt == attempt))
    }

    /// Writes another record of the task beside its artifacts, such as the gate verdicts of a
    /// round (`gates.round1.json`) or the last check of its published change (`ci.json`).
    /// `name` is a plain file name. Returns the path.
    pub async fn write_record<T: Serialize>(
        &self,
        task_id: TaskId,
        name: &str,
        record: &T,
    ) -> StoreResult<PathBuf> {
        let path = confined(&self.root, &[&task_id.to_string(), name])?;
        self.write_files(task_id, vec![(path.clone(), pretty(record))])
            .await?;
        Ok(path)
    }

    /// Reads a record written by [`FileArtifactStore::write_record`], if there is one.
    pub async fn read_record<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        task_id: TaskId,
        name: &str,
    ) -> StoreResult<Option<T>> {
        read_json(&confined(&self.root, &[&task_id.to_string(), name])?).await
    }

    /// The files of a task's directory, sorted by name.
    pub async fn list_files(&self, task_id: TaskId) -> StoreResult<Vec<PathBuf>> {
        let dir = self.task_dir(task_id);
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(io("list", &dir, source)),
        };
        let mut files = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|source| io("list", &dir, source))?
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") && !name.starts_with('.') {
                files.push(entry.path());
            }
        }
        files.sort();
        Ok(files)
    }
}

fn pretty<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// The attempt recorded in an artifact file.
fn attempt_of(path: &Path, bytes: &[u8]) -> StoreResult<Attempt> {
    #[derive(Deserialize)]
    struct AttemptOnly {
        attempt: Attempt,
    }
    serde_json::from_slice::<AttemptOnly>(bytes)
        .map(|a| a.attempt)
        .map_err(|e| corrupt(path, &e))
}

fn corrupt(path: &Path, error: &serde_json::Error) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        reason: error.to_string(),
    }
}

async fn read_json<T: serde::de::DeserializeOwned + Send + 'static>(
    path: &Path,
) -> StoreResult<Option<T>> {
    let path = path.to_path_buf();
    blocking(move || read_json_blocking(&path)).await
}

fn read_json_blocking<T: serde::de::DeserializeOwned>(path: &Path) -> StoreResult<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| corrupt(path, &e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(io("read", path, source)),
    }
}

/// Runs file work on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> StoreResult<T> + Send + 'static,
) -> StoreResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Database(format!("a file task panicked: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Stage;
    use serde_json::json;

    fn artifact(task_id: TaskId, attempt: u32, summary: &str) -> Artifact {
        let Value::Object(output) = json!({ "design_summary": summary, "files_touched": ["a.py"] })
        else {
            unreachable!("a JSON object literal");
        };
        Artifact {
            output,
            task_id,
            step: StepId::v1(Stage::Design),
            attempt: Attempt::new(attempt).unwrap_or(Attempt::FIRST),
            model: "offline".into(),
            usage: Usage::default(),
            created_at: Utc::now(),
            duration_ms: 3,
            replay_reason: None,
            round: 1,
            feedback: None,
        }
    }

    #[tokio::test]
    async fn artifacts_follow_the_contract_layout() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = FileArtifactStore::new(dir.path());
        let task_id = TaskId::new();
        let step = StepId::v1(Stage::Design);

        store.write_artifact(&artifact(task_id, 1, "first")).await?;
        let names = |files: Vec<PathBuf>| -> Vec<String> {
            files
                .iter()
                .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect()
        };
        assert_eq!(names(store.list_files(task_id).await?), ["design@v1.json"]);
        let text =
            std::fs::read_to_string(dir.path().join(task_id.to_string()).join("design@v1.json"))?;
        let value: Value = serde_json::from_str(&text)?;
        assert_eq!(
            value["design_summary"], "first",
            "output fields at the top level"
        );
        assert_eq!(value["model"], "offline");
        assert!(text.contains("\n  \""), "pretty-printed");

        store
            .write_artifact(&artifact(task_id, 2, "second"))
            .await?;
        assert_eq!(
            names(store.list_files(task_id).await?),
            [
                "design@v1.attempt1.json",
                "design@v1.attempt2.json",
                "design@v1.json"
            ]
        );
        let canonical = store.read_artifact(task_id, step).await?;
        assert_eq!(
            canonical.map(|a| a.output["design_summary"].clone()),
            Some(json!("second"))
        );
        let first = store.read_attempt(task_id, step, Attempt::FIRST).await?;
        assert_eq!(
            first.map(|a| a.output["design_summary"].clone()),
            Some(json!("first"))
        );
        Ok(())
    }
}
