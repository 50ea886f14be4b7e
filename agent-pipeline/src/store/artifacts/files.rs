//! Artifacts as files: `DATA_DIR/<task_id>/<step>.json`, one file per later attempt.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    Artifact, ArtifactStore, TASK_DOCUMENT, TaskFile, Written, artifact_writes, attempt_document,
    canonical_document, check_document_name,
};
use crate::ids::{Attempt, StepId, TaskId};
use crate::store::fs_util::{confined, io};
use crate::store::journal::{self, Journal};
use crate::store::{StoreError, StoreResult};

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

    /// The file of the document `name` of a task.
    pub fn path(&self, task_id: TaskId, name: &str) -> StoreResult<PathBuf> {
        check_document_name(name)?;
        confined(&self.root, &[&task_id.to_string(), name])
    }

    /// The canonical file of a step.
    pub fn canonical_path(&self, task_id: TaskId, step: StepId) -> StoreResult<PathBuf> {
        self.path(task_id, &canonical_document(step))
    }

    /// The file of one attempt of a step.
    pub fn attempt_path(
        &self,
        task_id: TaskId,
        step: StepId,
        attempt: Attempt,
    ) -> StoreResult<PathBuf> {
        self.path(task_id, &attempt_document(step, attempt))
    }

    fn journal(&self) -> &Journal {
        self.journal
            .get_or_init(|| Journal::start(self.root.clone()))
    }

    /// Writes one whole file of a task through the journal; returns its path.
    async fn write_file(&self, task_id: TaskId, name: &str, bytes: Vec<u8>) -> StoreResult<String> {
        let path = self.path(task_id, name)?;
        let dir = task_id.to_string();
        let written = path.clone();
        self.journal()
            .run(Box::new(move |journal| {
                journal.prepare_dir(&dir)?;
                journal.write(&written, bytes)
            }))
            .await?;
        Ok(path.display().to_string())
    }

    /// Restores, from the journals of processes that have stopped, the files whose latest
    /// content did not reach the disk before a crash of the machine, then deletes those
    /// journals. Returns how many files were restored. [`crate::PipelineBuilder::build`] calls
    /// it; the journals of running processes are left alone.
    pub async fn recover(&self) -> StoreResult<usize> {
        let root = self.root.clone();
        blocking(move || journal::recover(&root)).await
    }
}

#[async_trait]
impl ArtifactStore for FileArtifactStore {
    fn task_location(&self, task_id: TaskId) -> String {
        self.task_dir(task_id).display().to_string()
    }

    fn location(&self, task_id: TaskId, name: &str) -> String {
        self.task_dir(task_id).join(name).display().to_string()
    }

    async fn write_task(&self, task: &TaskFile) -> StoreResult<String> {
        self.write_file(task.task_id, TASK_DOCUMENT, pretty(task))
            .await
    }

    async fn read_task(&self, task_id: TaskId) -> StoreResult<Option<TaskFile>> {
        read_json(&self.path(task_id, TASK_DOCUMENT)?).await
    }

    /// Writes through the journal: the files of one artifact are durable together.
    async fn write_artifact(&self, artifact: &Artifact) -> StoreResult<String> {
        let (task_id, step, attempt) = (artifact.task_id, artifact.step, artifact.attempt);
        let canonical = self.canonical_path(task_id, step)?;
        let bytes = pretty(artifact);
        let this = self.clone();
        let path = canonical.display().to_string();
        self.journal()
            .run(Box::new(move |journal| {
                journal.prepare_dir(&task_id.to_string())?;
                let previous = match journal.read(&canonical)? {
                    Some(bytes) => Some((attempt_of(&canonical, &bytes)?, bytes)),
                    None => None,
                };
                let previous_attempt = previous.as_ref().map(|(attempt, _)| *attempt);
                for (name, written) in artifact_writes(step, attempt, previous_attempt) {
                    let file = this.path(task_id, &name)?;
                    match (written, &previous) {
                        (Written::New, _) => journal.write(&file, bytes.clone())?,
                        (Written::PreviousIfMissing, Some((_, previous))) => {
                            if journal.read(&file)?.is_none() {
                                journal.write(&file, previous.clone())?;
                            }
                        }
                        (Written::PreviousIfMissing, None) => {}
                    }
                }
                Ok(())
            }))
            .await?;
        Ok(path)
    }

    async fn read_artifact(&self, task_id: TaskId, step: StepId) -> StoreResult<Option<Artifact>> {
        read_json(&self.canonical_path(task_id, step)?).await
    }

    /// Reads the files on one thread of the blocking pool.
    async fn read_task_and_artifacts(
        &self,
        task_id: TaskId,
        steps: &[StepId],
    ) -> StoreResult<(Option<TaskFile>, Vec<Option<Artifact>>)> {
        let task = self.path(task_id, TASK_DOCUMENT)?;
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

    async fn write_document(
        &self,
        task_id: TaskId,
        name: &str,
        value: &Value,
    ) -> StoreResult<String> {
        self.write_file(task_id, name, pretty(value)).await
    }

    async fn read_document(&self, task_id: TaskId, name: &str) -> StoreResult<Option<Value>> {
        read_json(&self.path(task_id, name)?).await
    }

    async fn documents(&self, task_id: TaskId) -> StoreResult<Vec<String>> {
        let dir = self.task_dir(task_id);
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(io("list", &dir, source)),
        };
        let mut names = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|source| io("list", &dir, source))?
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if check_document_name(&name).is_ok() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    async fn delete_documents(&self, task_id: TaskId, names: &[String]) -> StoreResult<usize> {
        let paths = names
            .iter()
            .map(|name| self.path(task_id, name))
            .collect::<StoreResult<Vec<_>>>()?;
        blocking(move || {
            let mut deleted = 0;
            for path in paths {
                match std::fs::remove_file(&path) {
                    Ok(()) => deleted += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => return Err(io("delete", &path, source)),
                }
            }
            Ok(deleted)
        })
        .await
    }

    /// Deletes the task's directory: its documents and its workspace.
    async fn delete_task(&self, task_id: TaskId) -> StoreResult<()> {
        let dir = confined(&self.root, &[&task_id.to_string()])?;
        blocking(move || match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(io("delete", &dir, source)),
        })
        .await
    }

    /// Makes every file written so far durable in place and deletes the journal that held
    /// them; a process does it by itself from time to time, when its last handle of the store
    /// is dropped, and [`crate::RunningPipeline::shutdown`] does it. Nothing to do for a store
    /// that has written nothing.
    async fn checkpoint(&self) -> StoreResult<()> {
        match self.journal.get() {
            Some(journal) => journal.checkpoint().await,
            None => Ok(()),
        }
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
    use crate::llm::Usage;
    use chrono::Utc;
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
            cost_usd: 0.0,
            llm_calls: Vec::new(),
            created_at: Utc::now(),
            duration_ms: 3,
            replay_reason: None,
            round: 1,
            feedback: None,
            variant: None,
        }
    }

    #[tokio::test]
    async fn artifacts_follow_the_contract_layout() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = FileArtifactStore::new(dir.path());
        let task_id = TaskId::new();
        let step = StepId::v1(Stage::Design);

        store.write_artifact(&artifact(task_id, 1, "first")).await?;
        assert_eq!(store.documents(task_id).await?, ["design@v1.json"]);
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
            store.documents(task_id).await?,
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

    /// A file store that writes attempt 2 of the design just after the first read of
    /// `design@v1.attempt1.json` (which finds nothing): a replay finishing between the two
    /// reads of `read_attempt`.
    #[derive(Debug)]
    struct ReplayBetweenReads {
        inner: FileArtifactStore,
        replay: std::sync::Mutex<Option<Artifact>>,
    }

    #[async_trait]
    impl ArtifactStore for ReplayBetweenReads {
        fn task_location(&self, task_id: TaskId) -> String {
            self.inner.task_location(task_id)
        }

        fn location(&self, task_id: TaskId, name: &str) -> String {
            self.inner.location(task_id, name)
        }

        async fn write_artifact(&self, artifact: &Artifact) -> StoreResult<String> {
            self.inner.write_artifact(artifact).await
        }

        async fn write_document(
            &self,
            task_id: TaskId,
            name: &str,
            value: &Value,
        ) -> StoreResult<String> {
            self.inner.write_document(task_id, name, value).await
        }

        async fn read_document(&self, task_id: TaskId, name: &str) -> StoreResult<Option<Value>> {
            let read = self.inner.read_document(task_id, name).await;
            let replay = if name == "design@v1.attempt1.json" {
                self.replay.lock().map(|mut r| r.take()).unwrap_or_default()
            } else {
                None
            };
            if let Some(replay) = replay {
                self.inner.write_artifact(&replay).await?;
            }
            read
        }

        async fn documents(&self, task_id: TaskId) -> StoreResult<Vec<String>> {
            self.inner.documents(task_id).await
        }

        async fn delete_documents(&self, task_id: TaskId, names: &[String]) -> StoreResult<usize> {
            self.inner.delete_documents(task_id, names).await
        }

        async fn delete_task(&self, task_id: TaskId) -> StoreResult<()> {
            self.inner.delete_task(task_id).await
        }
    }

    #[tokio::test]
    async fn an_attempt_replaced_while_it_is_read_is_still_found()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let task_id = TaskId::new();
        let store = ReplayBetweenReads {
            inner: FileArtifactStore::new(dir.path()),
            replay: std::sync::Mutex::new(Some(artifact(task_id, 2, "second"))),
        };
        store.write_artifact(&artifact(task_id, 1, "first")).await?;
        let step = StepId::v1(Stage::Design);
        let first = store.read_attempt(task_id, step, Attempt::FIRST).await?;
        assert_eq!(
            first.map(|a| a.output["design_summary"].clone()),
            Some(json!("first")),
            "attempt 1 is read although attempt 2 replaced it as the canonical artifact meanwhile"
        );
        Ok(())
    }
}
