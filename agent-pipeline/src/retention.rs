//! Retention: what is kept of tasks that ended long ago.
//!
//! A [`RetentionPolicy`] names an age; a task that ended (`done` or `error`) longer ago than
//! that, with no attempt requested, running or finished since, is pruned:
//!
//! - [`Pruning::History`] keeps the task, its prompt, the last attempt of each step, each
//!   step's canonical artifact and the records beside them (`gates.round1.json`, `ci.json`),
//!   and drops the attempts they superseded with their own artifacts
//!   (`design@v1.attempt1.json`) and the messages kept with its last result (the outbox).
//! - [`Pruning::WholeTask`] deletes the task and everything kept for it, its workspace too.
//!
//! Either way, report events older than the cutoff are dropped from `reports.jsonl`, except
//! those of tasks still running. A task that is running, or was replayed since the cutoff, is
//! never touched. The dead-letter mirror is left alone: its letters wait for an operator.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::TaskId;
use crate::store::{ArtifactStore, Pruning, ReportLog, StateStore, StoreResult, TaskStatus};

/// How many tasks one query lists.
const BATCH: usize = 256;

/// What is kept of tasks that ended long ago (see the [module](self)).
///
/// ```
/// use std::time::Duration;
/// use agent_pipeline::retention::RetentionPolicy;
/// use agent_pipeline::store::Pruning;
///
/// let policy = RetentionPolicy::after(Duration::from_secs(30 * 24 * 3600));
/// assert_eq!(policy.pruning, Pruning::History);
/// let now = chrono::Utc::now();
/// assert_eq!(now - policy.cutoff(now), chrono::TimeDelta::days(30));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// How long after it ended a task is left whole.
    pub keep_for: Duration,
    /// What pruning does to it then.
    pub pruning: Pruning,
    /// How often a running pipeline prunes (the process that runs the mirror).
    pub every: Duration,
}

impl RetentionPolicy {
    /// Prunes the history of tasks that ended more than `keep_for` ago, once an hour.
    pub fn after(keep_for: Duration) -> Self {
        Self {
            keep_for,
            pruning: Pruning::History,
            every: Duration::from_secs(3600),
        }
    }

    /// The policy deleting such tasks whole instead.
    pub fn deleting_tasks(self) -> Self {
        Self {
            pruning: Pruning::WholeTask,
            ..self
        }
    }

    /// The time before which a task must have ended to be pruned at `now`.
    pub fn cutoff(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let keep = TimeDelta::from_std(self.keep_for).unwrap_or(TimeDelta::MAX);
        now.checked_sub_signed(keep)
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
}

/// What one run of retention did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Tasks pruned (or deleted).
    pub tasks: usize,
    /// Documents deleted (whole tasks' documents are not counted one by one).
    pub documents: usize,
    /// Report events dropped from `reports.jsonl`.
    pub report_events: usize,
}

/// Applies `policy` at `now` to the state, the artifacts and (when given, in the process that
/// mirrors reports) the report log.
pub async fn prune(
    state: &dyn StateStore,
    artifacts: &dyn ArtifactStore,
    reports: Option<&ReportLog>,
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
) -> StoreResult<Pruned> {
    let cutoff = policy.cutoff(now);
    let mut pruned = Pruned::default();
    let mut seen = std::collections::HashSet::new();
    loop {
        let batch = state.prunable_tasks(cutoff, policy.pruning, BATCH).await?;
        // A task a replay made untouchable meanwhile is listed again: stop at a batch of those.
        let new: Vec<TaskId> = batch.into_iter().filter(|id| seen.insert(*id)).collect();
        if new.is_empty() {
            break;
        }
        for task_id in new {
            let (tasks, documents) =
                prune_task(state, artifacts, task_id, cutoff, policy.pruning).await?;
            pruned.tasks += tasks;
            pruned.documents += documents;
        }
    }
    if let Some(reports) = reports {
        pruned.report_events = prune_reports(state, reports, cutoff).await?;
    }
    if pruned != Pruned::default() {
        tracing::info!(tasks = pruned.tasks, documents = pruned.documents, report_events = pruned.report_events, %cutoff, "retention pruned");
    }
    Ok(pruned)
}

/// Prunes one task: (tasks, documents) done.
async fn prune_task(
    state: &dyn StateStore,
    artifacts: &dyn ArtifactStore,
    task_id: TaskId,
    cutoff: DateTime<Utc>,
    pruning: Pruning,
) -> StoreResult<(usize, usize)> {
    match pruning {
        // The documents first: should the process stop between the two, the task is still
        // listed next time.
        Pruning::History => {
            let superseded: Vec<String> = artifacts
                .documents(task_id)
                .await?
                .into_iter()
                .filter(|name| is_attempt_document(name))
                .collect();
            let documents = artifacts.delete_documents(task_id, &superseded).await?;
            let tasks = usize::from(state.prune_task(task_id, cutoff, pruning).await?);
            Ok((tasks, documents))
        }
        // The state first: a task a replay made untouchable meanwhile keeps its documents.
        Pruning::WholeTask => {
            if !state.prune_task(task_id, cutoff, pruning).await? {
                return Ok((0, 0));
            }
            artifacts.delete_task(task_id).await?;
            Ok((1, 0))
        }
    }
}

/// `design@v1.attempt2.json`: an attempt's own artifact (the canonical one holds the last).
fn is_attempt_document(name: &str) -> bool {
    name.strip_suffix(".json")
        .and_then(|stem| stem.rsplit_once(".attempt"))
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Drops the report events older than `cutoff`, except those of tasks still running.
async fn prune_reports(
    state: &dyn StateStore,
    reports: &ReportLog,
    cutoff: DateTime<Utc>,
) -> StoreResult<usize> {
    // The tasks of old events that are still running, found before the rewrite.
    let mut running: HashMap<TaskId, bool> = HashMap::new();
    for event in reports.read_all().await? {
        if event.timestamp < cutoff && !running.contains_key(&event.task_id) {
            let task = state.task(event.task_id).await?;
            let is_running = task.is_some_and(|task| {
                matches!(task.status, TaskStatus::Received | TaskStatus::Running)
            });
            running.insert(event.task_id, is_running);
        }
    }
    reports
        .retain(move |line| {
            let at = line
                .get("timestamp")
                .and_then(|t| serde_json::from_value::<DateTime<Utc>>(t.clone()).ok());
            let task = line
                .get("task_id")
                .and_then(|t| t.as_str())
                .and_then(|t| t.parse::<TaskId>().ok());
            match (at, task) {
                (Some(at), _) if at >= cutoff => true,
                // An event of a task not looked up came after the read: keep it.
                (Some(_), Some(task)) => running.get(&task).copied().unwrap_or(true),
                _ => true,
            }
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_documents_are_told_from_the_others() {
        for name in ["design@v1.attempt1.json", "review@v1.attempt12.json"] {
            assert!(is_attempt_document(name), "{name}");
        }
        for name in [
            "design@v1.json",
            "task.json",
            "gates.round1.json",
            "ci.json",
            "design@v1.attempt.json",
            "design@v1.attemptx.json",
        ] {
            assert!(!is_attempt_document(name), "{name}");
        }
    }

    #[test]
    fn the_cutoff_saturates() {
        let policy = RetentionPolicy::after(Duration::MAX);
        assert_eq!(policy.cutoff(Utc::now()), DateTime::<Utc>::MIN_UTC);
    }
}
