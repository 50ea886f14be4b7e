//! Copying tasks from one pair of stores to another: how a deployment moves from the
//! embedded default (SQLite and files) to PostgreSQL.

use serde_json::Value;

use super::state::{AttemptRecord, AttemptStatus, NewTaskOutcome, StateStore, TaskRecord};
use super::{ArtifactStore, StoreError, StoreResult};
use crate::llm::{Spend, Usage};
use crate::wire::{StepOutcome, StepResult};

/// What [`copy_stores`] copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    /// Tasks.
    pub tasks: usize,
    /// Attempts.
    pub attempts: usize,
    /// Documents (`task.json`, artifacts, records).
    pub documents: usize,
    /// Consumer positions (of groups on a broker).
    pub consumer_offsets: usize,
}

/// Copies every task, with its attempts and documents, from `from` to `to`, and returns what
/// it copied. Documents are copied only when the two artifact stores differ (`to.1` is
/// `None` when the documents stay where they are).
///
/// Run it while no service writes to either side. It may run again after an interruption:
/// tasks and attempts the target already has are left as they are, what is missing is
/// copied, and consumer positions are copied over (so that groups on a broker go on where
/// they were). Leases and outboxes are not copied: they belong to running services.
///
/// ```
/// use agent_pipeline::store::{FileArtifactStore, MemoryStateStore, StateStore, copy_stores};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let (from, to) = (MemoryStateStore::new(), MemoryStateStore::new());
/// let dir = tempfile::tempdir()?;
/// let files = FileArtifactStore::new(dir.path());
/// let id = agent_pipeline::TaskId::new();
/// from.insert_task(id, "Write a haiku", chrono::Utc::now()).await?;
/// let copied = copy_stores((&from, &files), (&to, None)).await?;
/// assert_eq!(copied.tasks, 1);
/// assert_eq!(to.task(id).await?.map(|t| t.prompt), Some("Write a haiku".to_owned()));
/// # Ok(())
/// # }
/// # tokio::runtime::Runtime::new().map(|r| r.block_on(example())).ok();
/// ```
pub async fn copy_stores(
    from: (&dyn StateStore, &dyn ArtifactStore),
    to: (&dyn StateStore, Option<&dyn ArtifactStore>),
) -> StoreResult<Copied> {
    let (from_state, from_artifacts) = from;
    let (to_state, to_artifacts) = to;
    let mut copied = Copied::default();
    for task in from_state.tasks(usize::MAX).await? {
        copied.attempts += copy_task(from_state, to_state, &task).await?;
        copied.tasks += 1;
        if let Some(to_artifacts) = to_artifacts {
            for name in from_artifacts.documents(task.task_id).await? {
                let Some(document) = from_artifacts.read_document(task.task_id, &name).await?
                else {
                    continue;
                };
                to_artifacts
                    .write_document(task.task_id, &name, &document)
                    .await?;
                copied.documents += 1;
            }
        }
    }
    for (group, topic, partition, offset) in from_state.consumer_offsets().await? {
        to_state
            .commit_consumer_offset(&group, &topic, partition, offset)
            .await?;
        copied.consumer_offsets += 1;
    }
    Ok(copied)
}

/// Copies one task and its attempts; returns how many attempts were copied.
async fn copy_task(
    from: &dyn StateStore,
    to: &dyn StateStore,
    task: &TaskRecord,
) -> StoreResult<usize> {
    let id = task.task_id;
    if to.insert_task(id, &task.prompt, task.created_at).await? == NewTaskOutcome::Conflict {
        return Err(StoreError::Database(format!(
            "task {id} exists in the target with another prompt"
        )));
    }
    let mut attempts = 0;
    let mut recorded = Spend::default();
    for record in from.attempts(id).await? {
        recorded += Spend::of(&record.calls);
        let reserved = to.reserve_attempt(&record.request).await?;
        // Recording the result with its calls adds them to the task's spend in the target,
        // once: an attempt the target has finished already (an earlier, interrupted copy)
        // is not recorded again, so its calls are not counted twice.
        let finished = match result_of(&record) {
            Some((result, finished_at)) => to.finish_attempt(&result, None, finished_at).await?,
            None => false,
        };
        attempts += usize::from(reserved || finished);
    }
    // Counts, not dollars: sums of the same costs in another order may differ in the last bit.
    if (recorded.calls, recorded.usage) != (task.spend.calls, task.spend.usage) {
        // Retention keeps a task's spend when it prunes the attempts that made it; the
        // target's spend, rebuilt from the attempts left, then lacks theirs.
        tracing::warn!(
            task_id = %id,
            source_calls = task.spend.calls,
            copied_calls = recorded.calls,
            "the task's spend differs from the sum of its attempts' calls (pruned history?): \
             the copy shows the sum of the attempts copied"
        );
    }
    to.set_task_status(id, task.status, task.current_step, task.updated_at)
        .await?;
    Ok(attempts)
}

/// The result that, recorded, gives `record` back (with when it finished); `None` for an
/// attempt still requested.
fn result_of(record: &AttemptRecord) -> Option<(StepResult, chrono::DateTime<chrono::Utc>)> {
    let finished_at = record.finished_at?;
    let outcome = match record.status {
        AttemptStatus::Requested => return None,
        AttemptStatus::Succeeded => StepOutcome::Succeeded {
            output: Value::Null,
            model: record.model.clone().unwrap_or_default(),
            usage: Usage::default(),
        },
        // A stopped attempt is kept as failed with its reason as the error: recorded as a
        // failure, it reads back the same.
        AttemptStatus::Failed => StepOutcome::Failed {
            error: record.error.clone().unwrap_or_default(),
            retryable: false,
        },
    };
    let result = StepResult::of(
        &record.request,
        outcome,
        record.calls.clone(),
        record.request.requested_at,
        record.duration_ms.unwrap_or(0),
    );
    Some((result, finished_at))
}
