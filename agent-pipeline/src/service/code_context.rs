//! The code an agent sees on a task that changes an existing repository: the chunks of the
//! repository that best answer the task, from the code memory, within a token budget.
//!
//! The index is built once per repository and base commit, in
//! `DATA_DIR/memory/<repository key>/<base commit>/`, and reused by every task and step on
//! the same repository and ref; a step after an attempt re-indexes, in memory, the files the
//! attempts changed since the base (`docs/memory.md`).

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::Deps;
use crate::agent::{CodeContext, PriorArtifact};
use crate::execution::TaskWorkspace;
use crate::memory::{CodeMemory, ContextBuilder, IndexOutcome};
use crate::wire::Repository;

/// How many chunks are asked of the code memory for one step.
const CHUNKS_ASKED: usize = 24;

/// The most tokens of code one step's context holds.
const CODE_CONTEXT_TOKENS: u64 = 6_000;

/// The directory the memory keeps (`memory/` beside the task folders).
const MEMORY_DIR: &str = "memory";

/// The earlier artifacts' fields that say what the change is about, added to the question.
const QUESTION_FIELDS: &[&str] = &["design_summary", "files_touched", "diff_summary"];

impl Deps {
    /// The repository's code that matters to the step, or `None` when the task names no
    /// repository or the memory cannot be had (a warning says why: a step never fails for
    /// want of it).
    pub(crate) async fn code_context(
        &self,
        task_id: crate::TaskId,
        repository: Option<&Repository>,
        prompt: &str,
        prior: &[PriorArtifact],
    ) -> Option<CodeContext> {
        let repository = repository?;
        match self.retrieve(task_id, repository, prompt, prior).await {
            Ok(context) => Some(context),
            Err(error) => {
                tracing::warn!(%task_id, %error, "no code from the repository for this step");
                None
            }
        }
    }

    async fn retrieve(
        &self,
        task_id: crate::TaskId,
        repository: &Repository,
        prompt: &str,
        prior: &[PriorArtifact],
    ) -> Result<CodeContext, String> {
        let workspace = TaskWorkspace::open_with(&self.data_dir, task_id, Some(repository))
            .await
            .map_err(|e| e.to_string())?;
        let base = workspace.base().await.map_err(|e| e.to_string())?;
        let index_dir = self.index_dir(repository, base.as_str());
        // The index is of the base: when it has to be built, the work tree must hold the base
        // (a later step's work tree holds the change), and is put back after.
        let head = workspace.head().await.map_err(|e| e.to_string())?;
        let rebuild_on_head = !CodeMemory::is_built(&index_dir) && head != base;
        if rebuild_on_head {
            workspace
                .check_out(&base)
                .await
                .map_err(|e| e.to_string())?;
        }
        let opened = CodeMemory::open(
            &index_dir,
            workspace.dir(),
            base.as_str(),
            self.memory_options.clone(),
        )
        .await;
        if rebuild_on_head {
            workspace
                .check_out(&head)
                .await
                .map_err(|e| e.to_string())?;
        }
        let (mut memory, outcome) = opened.map_err(|e| e.to_string())?;
        // The code as the task's last attempt left it: the base's index, with the files the
        // attempts changed since re-indexed (in memory; the index on disk stays the base's).
        if head != base {
            let changes = workspace
                .changed_files(&base, &head)
                .await
                .map_err(|e| e.to_string())?;
            memory.apply(changes).await.map_err(|e| e.to_string())?;
        }
        let question = question(prompt, prior);
        let hits = memory
            .search(&question, CHUNKS_ASKED)
            .await
            .map_err(|e| e.to_string())?;
        let context = ContextBuilder::new(CODE_CONTEXT_TOKENS)
            .chunks(hits)
            .build();
        tracing::info!(
            %task_id,
            commit = %head,
            reused = matches!(outcome, IndexOutcome::Reused(_)),
            chunks = context.retrieved.len(),
            tokens = context.tokens,
            left_out = context.chunks_left_out,
            "code retrieved from the repository"
        );
        Ok(CodeContext {
            text: context.text,
            retrieved: context.retrieved,
            commit: head.as_str().to_owned(),
        })
    }

    /// `DATA_DIR/memory/<repository key>/<base commit>/`: the key is a hash of the
    /// repository's URL, so that neither a path nor a password shows in the name.
    fn index_dir(&self, repository: &Repository, base: &str) -> PathBuf {
        let digest = Sha256::digest(repository.url.as_bytes());
        let key: String = digest
            .iter()
            .take(8)
            .map(|byte| format!("{byte:02x}"))
            .collect();
        self.data_dir.join(MEMORY_DIR).join(key).join(base)
    }
}

/// What the code memory is asked: the task, and what the earlier stages said the change is
/// about.
fn question(prompt: &str, prior: &[PriorArtifact]) -> String {
    let mut question = prompt.to_owned();
    for artifact in prior {
        for field in QUESTION_FIELDS {
            match artifact.output.get(*field) {
                Some(serde_json::Value::String(text)) => {
                    question.push('\n');
                    question.push_str(text);
                }
                Some(serde_json::Value::Array(items)) => {
                    for item in items.iter().filter_map(serde_json::Value::as_str) {
                        question.push('\n');
                        question.push_str(item);
                    }
                }
                _ => {}
            }
        }
    }
    question
}
