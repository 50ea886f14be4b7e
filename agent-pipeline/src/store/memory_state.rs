//! The in-memory state store, for tests and for embedding without files.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreResult;
use super::state::{
    AttemptRecord, AttemptStatus, Lease, NewTaskOutcome, OutboxMessage, Pruning, StateStore,
    TaskRecord, TaskStatus,
};
use crate::ids::{Attempt, StepId, TaskId};
use crate::llm::Spend;
use crate::wire::{StepOutcome, StepRequest, StepResult};

/// A [`StateStore`] in memory; everything is lost when it is dropped.
#[derive(Debug, Default)]
pub struct MemoryStateStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    tasks: BTreeMap<TaskId, TaskRecord>,
    attempts: BTreeMap<(TaskId, StepId, Attempt), AttemptRecord>,
    /// (group, topic, partition) → next offset.
    offsets: BTreeMap<(String, String, u32), u64>,
    /// Resource → its lease (expired ones are kept: their epoch goes on).
    leases: BTreeMap<String, Lease>,
    /// The messages kept with each task's latest result.
    outbox: BTreeMap<(TaskId, StepId, Attempt), Vec<OutboxMessage>>,
}

impl MemoryStateStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// The record of `result`, starting from `reserved` when the attempt was reserved.
pub(crate) fn finished_record(
    result: &StepResult,
    reserved: Option<&AttemptRecord>,
    now: DateTime<Utc>,
) -> AttemptRecord {
    let request = match reserved {
        Some(record) => record.request.clone(),
        None => StepRequest {
            task_id: result.task_id,
            step_id: result.step_id,
            attempt: result.attempt,
            try_number: result.try_number,
            mode: result.mode,
            round: result.round,
            reason: result.reason.clone(),
            not_before: None,
            requested_at: result.started_at,
            budget: result.budget,
            require_approval: result.require_approval,
            variant: result.variant.clone(),
        },
    };
    let (status, error, model) = match &result.outcome {
        StepOutcome::Succeeded { model, .. } => {
            (AttemptStatus::Succeeded, None, Some(model.clone()))
        }
        StepOutcome::Failed { error, .. } => (AttemptStatus::Failed, Some(error.clone()), None),
        // A stopped step did not produce its artifact: it is kept as failed, with the reason
        // in words as its error, so that the stores need no status of their own for it.
        StepOutcome::Stopped { detail, .. } => (AttemptStatus::Failed, Some(detail.clone()), None),
    };
    AttemptRecord {
        request,
        status,
        error,
        model,
        finished_at: Some(now),
        duration_ms: Some(result.duration_ms),
        calls: result.calls.clone(),
    }
}

#[async_trait]
impl StateStore for MemoryStateStore {
    async fn insert_task(
        &self,
        task_id: TaskId,
        prompt: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<NewTaskOutcome> {
        let mut state = self.lock();
        if let Some(existing) = state.tasks.get(&task_id) {
            return Ok(if existing.prompt == prompt {
                NewTaskOutcome::AlreadyExists
            } else {
                NewTaskOutcome::Conflict
            });
        }
        state.tasks.insert(
            task_id,
            TaskRecord {
                task_id,
                prompt: prompt.to_owned(),
                status: TaskStatus::Received,
                current_step: None,
                created_at: now,
                updated_at: now,
                spend: Spend::default(),
            },
        );
        Ok(NewTaskOutcome::Created)
    }

    async fn task(&self, task_id: TaskId) -> StoreResult<Option<TaskRecord>> {
        Ok(self.lock().tasks.get(&task_id).cloned())
    }

    async fn tasks(&self, limit: usize) -> StoreResult<Vec<TaskRecord>> {
        let mut all: Vec<TaskRecord> = self.lock().tasks.values().cloned().collect();
        all.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then(b.task_id.cmp(&a.task_id))
        });
        all.truncate(limit);
        Ok(all)
    }

    async fn set_task_status(
        &self,
        task_id: TaskId,
        status: TaskStatus,
        step: Option<StepId>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        if let Some(task) = self.lock().tasks.get_mut(&task_id) {
            task.status = status;
            if step.is_some() {
                task.current_step = step;
            }
            task.updated_at = now;
        }
        Ok(())
    }

    async fn reserve_attempt(&self, request: &StepRequest) -> StoreResult<bool> {
        let key = (request.task_id, request.step_id, request.attempt);
        let mut state = self.lock();
        if state.attempts.contains_key(&key) {
            return Ok(false);
        }
        state.attempts.insert(
            key,
            AttemptRecord {
                request: request.clone(),
                status: AttemptStatus::Requested,
                error: None,
                model: None,
                finished_at: None,
                duration_ms: None,
                calls: Vec::new(),
            },
        );
        Ok(true)
    }

    async fn transition_task(
        &self,
        task_id: TaskId,
        from: &[TaskStatus],
        to: TaskStatus,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let mut state = self.lock();
        let Some(task) = state.tasks.get_mut(&task_id) else {
            return Ok(false);
        };
        if !from.contains(&task.status) {
            return Ok(false);
        }
        task.status = to;
        task.updated_at = now;
        Ok(true)
    }

    async fn attempt(
        &self,
        task_id: TaskId,
        step: StepId,
        attempt: Attempt,
    ) -> StoreResult<Option<AttemptRecord>> {
        Ok(self.lock().attempts.get(&(task_id, step, attempt)).cloned())
    }

    async fn finish_attempt_with_outbox(
        &self,
        result: &StepResult,
        task_status: Option<TaskStatus>,
        now: DateTime<Utc>,
        outbox: &[OutboxMessage],
    ) -> StoreResult<bool> {
        let key = (result.task_id, result.step_id, result.attempt);
        let mut state = self.lock();
        let reserved = state.attempts.get(&key);
        if reserved.is_some_and(|r| r.status.is_finished()) {
            return Ok(false);
        }
        let record = finished_record(result, reserved, now);
        state.attempts.insert(key, record);
        if let Some(task) = state.tasks.get_mut(&result.task_id) {
            task.spend += Spend::of(&result.calls);
            // A cancelled task stays cancelled: a step that was running when it was cancelled
            // still reports, and its result must not bring the task back.
            if let Some(task_status) = task_status
                && task.status != TaskStatus::Cancelled
            {
                task.status = task_status;
                task.current_step = Some(result.step_id);
                task.updated_at = now;
            }
        }
        state
            .outbox
            .retain(|(task_id, _, _), _| *task_id != result.task_id);
        if !outbox.is_empty() {
            state.outbox.insert(key, outbox.to_vec());
        }
        Ok(true)
    }

    async fn outbox(
        &self,
        task_id: TaskId,
        step: StepId,
        attempt: Attempt,
    ) -> StoreResult<Vec<OutboxMessage>> {
        Ok(self
            .lock()
            .outbox
            .get(&(task_id, step, attempt))
            .cloned()
            .unwrap_or_default())
    }

    async fn attempts(&self, task_id: TaskId) -> StoreResult<Vec<AttemptRecord>> {
        Ok(self
            .lock()
            .attempts
            .values()
            .filter(|a| a.task_id() == task_id)
            .cloned()
            .collect())
    }

    async fn last_attempt(&self, task_id: TaskId, step: StepId) -> StoreResult<Option<Attempt>> {
        Ok(self
            .lock()
            .attempts
            .keys()
            .filter(|(t, s, _)| *t == task_id && *s == step)
            .map(|(_, _, a)| *a)
            .max())
    }

    async fn unfinished_attempts(&self) -> StoreResult<Vec<AttemptRecord>> {
        let mut open: Vec<AttemptRecord> = self
            .lock()
            .attempts
            .values()
            .filter(|a| a.status == AttemptStatus::Requested)
            .cloned()
            .collect();
        open.sort_by_key(|a| a.request.requested_at);
        Ok(open)
    }

    async fn consumer_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> StoreResult<Option<u64>> {
        let key = (group.to_owned(), topic.to_owned(), partition);
        Ok(self.lock().offsets.get(&key).copied())
    }

    async fn consumer_offsets(&self) -> StoreResult<Vec<(String, String, u32, u64)>> {
        Ok(self
            .lock()
            .offsets
            .iter()
            .map(|((group, topic, partition), offset)| {
                (group.clone(), topic.clone(), *partition, *offset)
            })
            .collect())
    }

    async fn commit_consumer_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        next_offset: u64,
    ) -> StoreResult<()> {
        let key = (group.to_owned(), topic.to_owned(), partition);
        self.lock().offsets.insert(key, next_offset);
        Ok(())
    }

    async fn commit_consumer_offset_fenced(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        next_offset: u64,
        lease: &Lease,
    ) -> StoreResult<bool> {
        let mut state = self.lock();
        let current = state
            .leases
            .get(&lease.resource)
            .is_some_and(|held| held.holder == lease.holder && held.epoch == lease.epoch);
        if current {
            let key = (group.to_owned(), topic.to_owned(), partition);
            state.offsets.insert(key, next_offset);
        }
        Ok(current)
    }

    async fn acquire_lease(
        &self,
        resource: &str,
        holder: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<Option<Lease>> {
        let mut state = self.lock();
        let epoch = match state.leases.get(resource) {
            None => 1,
            Some(held) if held.holder == holder => held.epoch,
            Some(held) if held.expires_at <= now => held.epoch + 1,
            Some(_) => return Ok(None),
        };
        let lease = Lease {
            resource: resource.to_owned(),
            holder: holder.to_owned(),
            epoch,
            expires_at,
        };
        state.leases.insert(resource.to_owned(), lease.clone());
        Ok(Some(lease))
    }

    async fn release_lease(&self, lease: &Lease, now: DateTime<Utc>) -> StoreResult<()> {
        if let Some(held) = self.lock().leases.get_mut(&lease.resource)
            && held.holder == lease.holder
            && held.epoch == lease.epoch
        {
            held.expires_at = now;
        }
        Ok(())
    }

    async fn leases(&self, prefix: &str, now: DateTime<Utc>) -> StoreResult<Vec<Lease>> {
        Ok(self
            .lock()
            .leases
            .values()
            .filter(|lease| lease.resource.starts_with(prefix) && lease.expires_at > now)
            .cloned()
            .collect())
    }

    async fn prunable_tasks(
        &self,
        cutoff: DateTime<Utc>,
        pruning: Pruning,
        limit: usize,
    ) -> StoreResult<Vec<TaskId>> {
        let state = self.lock();
        let mut tasks: Vec<&TaskRecord> = state
            .tasks
            .values()
            .filter(|task| state.prunable(task.task_id, cutoff, pruning))
            .collect();
        tasks.sort_by_key(|task| (task.updated_at, task.task_id.to_string()));
        Ok(tasks.iter().take(limit).map(|task| task.task_id).collect())
    }

    async fn prune_task(
        &self,
        task_id: TaskId,
        cutoff: DateTime<Utc>,
        pruning: Pruning,
    ) -> StoreResult<bool> {
        let mut state = self.lock();
        if !state.prunable(task_id, cutoff, pruning) {
            return Ok(false);
        }
        let last = state.last_attempts(task_id);
        state.attempts.retain(|(task, step, attempt), _| {
            *task != task_id || (pruning == Pruning::History && last.get(step) == Some(attempt))
        });
        state.outbox.retain(|(task, _, _), _| *task != task_id);
        if pruning == Pruning::WholeTask {
            state.tasks.remove(&task_id);
        }
        Ok(true)
    }
}

impl State {
    /// The last attempt of each step of a task.
    fn last_attempts(&self, task_id: TaskId) -> BTreeMap<StepId, Attempt> {
        let mut last = BTreeMap::new();
        for (_, step, attempt) in self.attempts.keys().filter(|(task, _, _)| *task == task_id) {
            let entry = last.entry(*step).or_insert(*attempt);
            *entry = (*entry).max(*attempt);
        }
        last
    }

    /// Whether retention may touch the task now (see [`StateStore::prunable_tasks`]).
    fn prunable(&self, task_id: TaskId, cutoff: DateTime<Utc>, pruning: Pruning) -> bool {
        let Some(task) = self.tasks.get(&task_id) else {
            return false;
        };
        let attempts = || {
            self.attempts
                .iter()
                .filter(move |((task, _, _), _)| *task == task_id)
        };
        let ended = task.status.is_final()
            && task.updated_at < cutoff
            && !attempts().any(|(_, record)| {
                record.status == AttemptStatus::Requested
                    || record.request.requested_at >= cutoff
                    || record.finished_at.is_some_and(|at| at >= cutoff)
            });
        if !ended {
            return false;
        }
        match pruning {
            Pruning::WholeTask => true,
            Pruning::History => {
                let last = self.last_attempts(task_id);
                attempts().any(|((_, step, attempt), _)| last.get(step) != Some(attempt))
                    || self.outbox.keys().any(|(task, _, _)| *task == task_id)
            }
        }
    }
}
