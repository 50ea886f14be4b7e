//! Records as the databases keep them: the columns every SQL store reads back, decoded the
//! same way whichever database they came from.

use chrono::{DateTime, Utc};

use crate::ids::{Attempt, Stage, StepId, TaskId};
use crate::store::state::{
    AttemptRecord, AttemptStatus, Lease, NewTaskOutcome, TaskRecord, TaskStatus,
};
use crate::store::{StoreError, StoreResult};
use crate::wire::StepRequest;

/// The columns of a task row: `task_id, prompt, status, current_step, created_at,
/// updated_at`.
pub(crate) struct StoredTask {
    pub(crate) task_id: String,
    pub(crate) prompt: String,
    pub(crate) status: String,
    pub(crate) current_step: Option<String>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
}

impl StoredTask {
    /// The task, or why the row is not one this program wrote.
    pub(crate) fn decode(self) -> Result<TaskRecord, String> {
        let task_id = self
            .task_id
            .parse()
            .map_err(|e| format!("tasks.task_id: {e}"))?;
        let status = TaskStatus::parse(&self.status)
            .ok_or_else(|| format!("task {task_id}: unknown status {:?}", self.status))?;
        let current_step = self
            .current_step
            .map(|s| s.parse::<StepId>())
            .transpose()
            .map_err(|e| format!("task {task_id}: {e}"))?;
        Ok(TaskRecord {
            task_id,
            prompt: self.prompt,
            status,
            current_step,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// The columns of an attempt row: `request, status, error, model, finished_at,
/// duration_ms`.
pub(crate) struct StoredAttempt {
    pub(crate) request: String,
    pub(crate) status: String,
    pub(crate) error: Option<String>,
    pub(crate) model: Option<String>,
    pub(crate) finished_at: Option<DateTime<Utc>>,
    pub(crate) duration_ms: Option<i64>,
}

impl StoredAttempt {
    /// The attempt, or why the row is not one this program wrote.
    pub(crate) fn decode(self) -> Result<AttemptRecord, String> {
        let request: StepRequest =
            serde_json::from_str(&self.request).map_err(|e| format!("attempts.request: {e}"))?;
        let status = AttemptStatus::parse(&self.status).ok_or_else(|| {
            format!(
                "attempt {} {} {}: unknown status {:?}",
                request.task_id, request.step_id, request.attempt, self.status
            )
        })?;
        let duration_ms = self
            .duration_ms
            .map(u64::try_from)
            .transpose()
            .map_err(|e| format!("attempts.duration_ms: {e}"))?;
        Ok(AttemptRecord {
            request,
            status,
            error: self.error,
            model: self.model,
            finished_at: self.finished_at,
            duration_ms,
        })
    }
}

/// The columns of a lease row: `resource, holder, epoch, expires_at`.
pub(crate) struct StoredLease {
    pub(crate) resource: String,
    pub(crate) holder: String,
    pub(crate) epoch: i64,
    pub(crate) expires_at: DateTime<Utc>,
}

impl StoredLease {
    /// The lease, or why the row is not one this program wrote.
    pub(crate) fn decode(self) -> Result<Lease, String> {
        let epoch = u64::try_from(self.epoch)
            .map_err(|_| format!("lease {}: negative epoch {}", self.resource, self.epoch))?;
        Ok(Lease {
            resource: self.resource,
            holder: self.holder,
            epoch,
            expires_at: self.expires_at,
        })
    }
}

/// A consumer offset as the databases store it, or why it cannot be.
pub(crate) fn offset_value(next_offset: u64) -> StoreResult<i64> {
    i64::try_from(next_offset)
        .map_err(|_| StoreError::Database(format!("offset {next_offset} is too large")))
}

/// An epoch as the databases store it.
pub(crate) fn epoch_value(epoch: u64) -> i64 {
    i64::try_from(epoch).unwrap_or(i64::MAX)
}

/// Takes or renews a lease in one statement: granted when the resource has no row, when its
/// lease expired (`expires_at` at or before `$4`), or when the holder is the same; the epoch
/// grows when the holder changes. Returns the epoch, or no row when another holder's lease
/// runs. Both databases run this text: SQLite numbers `$N` parameters in the order they first
/// appear, which here is 1 to 4.
pub(crate) const ACQUIRE_LEASE: &str =
    "INSERT INTO leases (resource, holder, epoch, expires_at) VALUES ($1, $2, 1, $3)
     ON CONFLICT (resource) DO UPDATE SET
         epoch = CASE WHEN leases.holder = excluded.holder THEN leases.epoch
                      ELSE leases.epoch + 1 END,
         holder = excluded.holder,
         expires_at = excluded.expires_at
     WHERE leases.holder = excluded.holder OR leases.expires_at <= $4
     RETURNING epoch";

/// What inserting a task found when its id was taken: the same task again (a redelivered
/// message) or another one; `existing` is the stored prompt of that id.
pub(crate) fn outcome_of_taken_id(
    task_id: TaskId,
    prompt: &str,
    existing: Option<String>,
) -> StoreResult<NewTaskOutcome> {
    match existing {
        Some(existing) if existing == prompt => Ok(NewTaskOutcome::AlreadyExists),
        Some(_) => Ok(NewTaskOutcome::Conflict),
        // Rows are never deleted, so a conflict means the row exists.
        None => Err(StoreError::Database(format!(
            "task {task_id} was neither inserted nor found"
        ))),
    }
}

/// An attempt number as stored, or why it is not one.
pub(crate) fn attempt_number(stored: i64) -> Result<Attempt, String> {
    u32::try_from(stored)
        .ok()
        .and_then(|n| Attempt::new(n).ok())
        .ok_or_else(|| format!("attempts.attempt: {stored} is not an attempt"))
}

/// A consumer offset as stored, or why it is not one.
pub(crate) fn consumer_offset(stored: i64) -> Result<u64, String> {
    u64::try_from(stored).map_err(|_| format!("negative consumer offset {stored}"))
}

/// The position of a step's stage in the pipeline, stored so that attempts sort in pipeline
/// order.
pub(crate) fn stage_order(step: StepId) -> i64 {
    let index = Stage::ALL
        .iter()
        .position(|s| *s == step.stage())
        .unwrap_or(Stage::ALL.len());
    i64::try_from(index).unwrap_or(i64::MAX)
}
