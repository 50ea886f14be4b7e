//! The state store: tasks, steps and attempts, with their status and times.

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreResult;
use crate::ids::{Attempt, StepId, TaskId};
use crate::llm::{LlmCall, Spend};
use crate::wire::{StepMode, StepRequest, StepResult};

/// Where a task stands; serialized as `received`, `running`, `awaiting_approval`, `done`,
/// `error` or `cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Accepted, no step finished yet.
    Received,
    /// Steps are running.
    Running,
    /// The gates passed; the change waits for a person's approval before it is published.
    AwaitingApproval,
    /// All stages finished.
    Done,
    /// A step failed for good, a budget ran out, or the change was rejected.
    Error,
    /// Cancelled by a person before it ended.
    Cancelled,
}

impl TaskStatus {
    /// Every status.
    pub const ALL: [TaskStatus; 6] = [
        TaskStatus::Received,
        TaskStatus::Running,
        TaskStatus::AwaitingApproval,
        TaskStatus::Done,
        TaskStatus::Error,
        TaskStatus::Cancelled,
    ];

    /// The statuses of a task that has not ended (it can still be cancelled).
    pub const ACTIVE: [TaskStatus; 3] = [
        TaskStatus::Received,
        TaskStatus::Running,
        TaskStatus::AwaitingApproval,
    ];

    /// The status as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Received => "received",
            TaskStatus::Running => "running",
            TaskStatus::AwaitingApproval => "awaiting_approval",
            TaskStatus::Done => "done",
            TaskStatus::Error => "error",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// Parses a stored status.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether the task has ended: `done`, `error` or `cancelled`.
    pub fn is_final(self) -> bool {
        !Self::ACTIVE.contains(&self)
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one attempt of a step stands; serialized as `requested`, `succeeded` or `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptStatus {
    /// Requested from a worker, no result yet.
    Requested,
    /// The step produced its artifact.
    Succeeded,
    /// The step failed.
    Failed,
}

impl AttemptStatus {
    /// The status as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptStatus::Requested => "requested",
            AttemptStatus::Succeeded => "succeeded",
            AttemptStatus::Failed => "failed",
        }
    }

    /// Parses a stored status.
    pub fn parse(text: &str) -> Option<Self> {
        [
            AttemptStatus::Requested,
            AttemptStatus::Succeeded,
            AttemptStatus::Failed,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    /// Whether a result was recorded.
    pub fn is_finished(self) -> bool {
        self != AttemptStatus::Requested
    }
}

/// A task as the state store knows it.
// Not `Eq`: its spend holds a cost in US dollars, an `f64`.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
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
    /// What its LLM calls spent, over every recorded attempt.
    pub spend: Spend,
}

/// One attempt of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    /// The request that started it (kept whole so that it can be sent again).
    pub request: StepRequest,
    /// Where it stands.
    pub status: AttemptStatus,
    /// The error, when it failed.
    pub error: Option<String>,
    /// The model that ran it, when it finished.
    pub model: Option<String>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// How long the worker took.
    pub duration_ms: Option<u64>,
    /// The LLM calls it made, once it finished.
    pub calls: Vec<LlmCall>,
}

impl AttemptRecord {
    /// The task.
    pub fn task_id(&self) -> TaskId {
        self.request.task_id
    }

    /// The step.
    pub fn step_id(&self) -> StepId {
        self.request.step_id
    }

    /// The attempt number.
    pub fn attempt(&self) -> Attempt {
        self.request.attempt
    }

    /// Run or replay.
    pub fn mode(&self) -> StepMode {
        self.request.mode
    }
}

/// A claim on a named resource (a bus partition, say) by one holder until a time: while it
/// runs nobody else gets the resource; once it expires without renewal, another holder may
/// take it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// What is claimed, e.g. `partition/<group>/<topic>/<n>`.
    pub resource: String,
    /// Who claims it (a process's id).
    pub holder: String,
    /// A fencing token: it grows each time the resource changes holder, so that writes made
    /// under an older lease can be refused ([`StateStore::commit_consumer_offset_fenced`]).
    pub epoch: u64,
    /// Until when the claim holds, unless renewed.
    pub expires_at: DateTime<Utc>,
}

/// A message that must go out once a state change is committed (a report, a CI watch): kept
/// in the same transaction as the change (until the task's next change), so that a handler
/// that dies before sending it sends it on the message's redelivery instead of losing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    /// The topic.
    pub topic: String,
    /// The key.
    pub key: String,
    /// The bytes, sent again unchanged (so that a reader can tell a resend from a new
    /// message).
    pub payload: Vec<u8>,
}

/// What retention does to a task that ended before the cutoff
/// ([`StateStore::prunable_tasks`], [`StateStore::prune_task`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pruning {
    /// Keeps the task and the last attempt of each step; drops the attempts they superseded
    /// and the messages kept with its last result (the outbox).
    History,
    /// Deletes the task with every attempt and message.
    WholeTask,
}

/// What [`StateStore::insert_task`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewTaskOutcome {
    /// The task is new and was recorded.
    Created,
    /// A task with this id and the same prompt exists (a redelivered message).
    AlreadyExists,
    /// A task with this id but another prompt exists.
    Conflict,
}

/// Tasks, steps and attempts: the pipeline's memory of what happened.
///
/// Implementations: [`super::MemoryStateStore`], [`super::SqliteStateStore`] (feature
/// `sqlite`). Every implementation passes `conformance::state_store` (feature `test-util`).
#[async_trait]
pub trait StateStore: Send + Sync + fmt::Debug + 'static {
    /// Records a new task as [`TaskStatus::Received`].
    async fn insert_task(
        &self,
        task_id: TaskId,
        prompt: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<NewTaskOutcome>;

    /// One task.
    async fn task(&self, task_id: TaskId) -> StoreResult<Option<TaskRecord>>;

    /// Tasks, newest first, at most `limit`.
    async fn tasks(&self, limit: usize) -> StoreResult<Vec<TaskRecord>>;

    /// Changes a task's status and current step.
    async fn set_task_status(
        &self,
        task_id: TaskId,
        status: TaskStatus,
        step: Option<StepId>,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// Records that `request` was sent. Returns `false` (and changes nothing) when that
    /// attempt is already recorded.
    async fn reserve_attempt(&self, request: &StepRequest) -> StoreResult<bool>;

    /// Moves the task to `to` (at `now`, keeping its current step) when its status is one of
    /// `from`; returns whether it did. This is how a decision (approve, reject, cancel)
    /// applies once, whatever else happens to the task at the same time.
    async fn transition_task(
        &self,
        task_id: TaskId,
        from: &[TaskStatus],
        to: TaskStatus,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// One attempt.
    async fn attempt(
        &self,
        task_id: TaskId,
        step: StepId,
        attempt: Attempt,
    ) -> StoreResult<Option<AttemptRecord>>;

    /// Records `result` (with its LLM calls, added to the task's spend) and, in the same
    /// transaction, moves the task to `task_status` with the result's step as its current
    /// step (`None` leaves the task as it is: a replay). A cancelled task keeps its status.
    ///
    /// Returns `false` (and changes nothing) when a result for that attempt is already
    /// recorded, so that a redelivered result has no effect. An attempt that was never
    /// reserved is recorded from the result.
    async fn finish_attempt(
        &self,
        result: &StepResult,
        task_status: Option<TaskStatus>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.finish_attempt_with_outbox(result, task_status, now, &[])
            .await
    }

    /// As [`StateStore::finish_attempt`], and in the same transaction keeps `outbox` as the
    /// task's outbox, replacing what was kept for its earlier results (nothing changes when
    /// the result was already recorded). The handler sends the messages after the commit; a
    /// redelivered result finds them with [`StateStore::outbox`] when the handler died before
    /// sending them, and sends them again (they are sent byte for byte as kept, so that a
    /// reader can skip a resend).
    async fn finish_attempt_with_outbox(
        &self,
        result: &StepResult,
        task_status: Option<TaskStatus>,
        now: DateTime<Utc>,
        outbox: &[OutboxMessage],
    ) -> StoreResult<bool>;

    /// The messages kept with the result of one attempt, in the order given; empty once a
    /// later result of the task was recorded.
    async fn outbox(
        &self,
        task_id: TaskId,
        step: StepId,
        attempt: Attempt,
    ) -> StoreResult<Vec<OutboxMessage>>;

    /// Every attempt of a task, by step in pipeline order and then by attempt.
    async fn attempts(&self, task_id: TaskId) -> StoreResult<Vec<AttemptRecord>>;

    /// The highest attempt number recorded for a step.
    async fn last_attempt(&self, task_id: TaskId, step: StepId) -> StoreResult<Option<Attempt>>;

    /// Attempts requested and not finished, oldest first (to send again after a restart).
    async fn unfinished_attempts(&self) -> StoreResult<Vec<AttemptRecord>>;

    /// The next offset consumer group `group` has to read in `partition` of `topic`, as last
    /// committed; `None` when the group never committed one there (it starts at the oldest
    /// message). Bus adapters without consumer groups of their own (Kafka over `rskafka`)
    /// keep their position here, beside the state that the messages changed.
    async fn consumer_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> StoreResult<Option<u64>>;

    /// Every recorded position: `(group, topic, partition, next_offset)`, sorted (what a move
    /// to another store copies).
    async fn consumer_offsets(&self) -> StoreResult<Vec<(String, String, u32, u64)>>;

    /// Records `next_offset` as the next offset `group` reads in `partition` of `topic`.
    async fn commit_consumer_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        next_offset: u64,
    ) -> StoreResult<()>;

    /// As [`StateStore::commit_consumer_offset`], but only while `lease` is still the current
    /// lease of its resource (same holder, same epoch): a holder that lost the partition to
    /// another cannot move its position any more. Returns whether the offset was recorded.
    async fn commit_consumer_offset_fenced(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        next_offset: u64,
        lease: &Lease,
    ) -> StoreResult<bool>;

    /// Claims `resource` for `holder` until `expires_at`. Granted when nobody holds it, when
    /// the current lease expired (at or before `now`), or when `holder` holds it already (a
    /// renewal: the epoch stays); the epoch grows by one when the holder changes. `None`
    /// while another holder's lease runs.
    async fn acquire_lease(
        &self,
        resource: &str,
        holder: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<Option<Lease>>;

    /// Gives `lease` up at `now`, so that another holder can take the resource at once; does
    /// nothing when the lease is no longer its holder's.
    async fn release_lease(&self, lease: &Lease, now: DateTime<Utc>) -> StoreResult<()>;

    /// The leases running at `now` whose resource starts with `prefix`, by resource.
    async fn leases(&self, prefix: &str, now: DateTime<Utc>) -> StoreResult<Vec<Lease>>;

    /// Tasks that `pruning` may touch, oldest first, at most `limit`: ended (`done`,
    /// `error` or `cancelled`) before `cutoff`, with no attempt requested, running or finished
    /// since, and (for [`Pruning::History`]) something left to prune. A task still running is never
    /// among them.
    async fn prunable_tasks(
        &self,
        cutoff: DateTime<Utc>,
        pruning: Pruning,
        limit: usize,
    ) -> StoreResult<Vec<TaskId>>;

    /// Prunes the task as `pruning` says if, checked again in the same transaction, it is
    /// still one [`StateStore::prunable_tasks`] may list (a replay since makes it
    /// untouchable); returns whether it did.
    async fn prune_task(
        &self,
        task_id: TaskId,
        cutoff: DateTime<Utc>,
        pruning: Pruning,
    ) -> StoreResult<bool>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_serialize_as_they_are_stored() {
        for status in TaskStatus::ALL {
            let json = serde_json::to_string(&status).ok();
            assert_eq!(json, Some(format!("\"{}\"", status.as_str())));
        }
        for status in [
            AttemptStatus::Requested,
            AttemptStatus::Succeeded,
            AttemptStatus::Failed,
        ] {
            let json = serde_json::to_string(&status).ok();
            assert_eq!(json, Some(format!("\"{}\"", status.as_str())));
            let back: Option<AttemptStatus> =
                json.and_then(|text| serde_json::from_str(&text).ok());
            assert_eq!(back, Some(status));
        }
    }
}
