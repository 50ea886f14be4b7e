//! Records as the databases keep them: the columns every SQL store reads back, decoded the
//! same way whichever database they came from.

use chrono::{DateTime, Utc};

use crate::ids::{Attempt, Stage, StepId, TaskId};
use crate::llm::{LlmCall, Spend, Usage};
use crate::store::state::{
    AttemptRecord, AttemptStatus, Lease, NewTaskOutcome, TaskRecord, TaskStatus,
};
use crate::store::{StoreError, StoreResult};
use crate::wire::StepRequest;

/// The columns of a task row that [`StoredTask`] reads, in a `SELECT` (a macro, so that the
/// queries built on it stay static strings).
macro_rules! task_columns {
    () => {
        "task_id, prompt, status, current_step, created_at, updated_at,
         prompt_tokens, completion_tokens, cost_usd, llm_calls, unpriced_calls "
    };
}
pub(crate) use task_columns;

/// The columns of a task row: `task_id, prompt, status, current_step, created_at,
/// updated_at`, and its spend: `prompt_tokens, completion_tokens, cost_usd, llm_calls,
/// unpriced_calls`.
pub(crate) struct StoredTask {
    pub(crate) task_id: String,
    pub(crate) prompt: String,
    pub(crate) status: String,
    pub(crate) current_step: Option<String>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    pub(crate) prompt_tokens: i64,
    pub(crate) completion_tokens: i64,
    pub(crate) cost_usd: f64,
    pub(crate) llm_calls: i64,
    pub(crate) unpriced_calls: i64,
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
        let count = |name: &str, stored: i64| {
            u64::try_from(stored).map_err(|_| format!("task {task_id}: negative {name} {stored}"))
        };
        let prompt_tokens = count("prompt_tokens", self.prompt_tokens)?;
        let completion_tokens = count("completion_tokens", self.completion_tokens)?;
        let spend = Spend {
            usage: Usage {
                prompt_tokens,
                completion_tokens,
                total_tokens: prompt_tokens.saturating_add(completion_tokens),
            },
            cost_usd: self.cost_usd,
            calls: count("llm_calls", self.llm_calls)?,
            unpriced_calls: count("unpriced_calls", self.unpriced_calls)?,
        };
        Ok(TaskRecord {
            task_id,
            prompt: self.prompt,
            status,
            current_step,
            created_at: self.created_at,
            updated_at: self.updated_at,
            spend,
        })
    }
}

/// A spend as the `tasks` columns of [`RECORD_RESULT_ON_TASK`] store it.
pub(crate) struct SpendColumns {
    pub(crate) prompt_tokens: i64,
    pub(crate) completion_tokens: i64,
    pub(crate) cost_usd: f64,
    pub(crate) llm_calls: i64,
    pub(crate) unpriced_calls: i64,
}

impl SpendColumns {
    /// Whether it adds nothing (no call).
    pub(crate) fn is_empty(&self) -> bool {
        self.llm_calls == 0
    }

    /// What `calls` add to their task's spend.
    pub(crate) fn of(calls: &[LlmCall]) -> Self {
        let spend = Spend::of(calls);
        // Counts beyond i64 cannot come from real calls; saturating keeps the row valid.
        let column = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        Self {
            prompt_tokens: column(spend.usage.prompt_tokens),
            completion_tokens: column(spend.usage.completion_tokens),
            cost_usd: spend.cost_usd,
            llm_calls: column(spend.calls),
            unpriced_calls: column(spend.unpriced_calls),
        }
    }
}

/// Records a result on task `$9`, in one statement: adds its spend (`$1` prompt tokens, `$2`
/// completion tokens, `$3` US dollars, `$4` calls, `$5` calls without a price, in the order of
/// [`SpendColumns`]) and, when `$6` is a status, moves the task to it at step `$7` at `$8`. A
/// cancelled task keeps its status (a step that was running when it was cancelled still
/// reports, and must not bring the task back); its spend still grows.
pub(crate) const RECORD_RESULT_ON_TASK: &str = "UPDATE tasks SET
         prompt_tokens = prompt_tokens + $1,
         completion_tokens = completion_tokens + $2,
         cost_usd = cost_usd + $3,
         llm_calls = llm_calls + $4,
         unpriced_calls = unpriced_calls + $5,
         status = CASE WHEN CAST($6 AS TEXT) IS NULL OR status = 'cancelled' THEN status ELSE $6 END,
         current_step = CASE WHEN $6 IS NULL OR status = 'cancelled' THEN current_step ELSE $7 END,
         updated_at = CASE WHEN $6 IS NULL OR status = 'cancelled' THEN updated_at ELSE $8 END
     WHERE task_id = $9";

/// The JSON of an attempt's LLM calls, as the `attempts.calls` column keeps it.
pub(crate) fn calls_json(calls: &[LlmCall]) -> StoreResult<String> {
    serde_json::to_string(calls)
        .map_err(|e| StoreError::Database(format!("encoding LLM calls: {e}")))
}

/// The statuses `from` of [`crate::store::StateStore::transition_task`] as one JSON array of
/// their stored names, bound as one parameter so that the statement stays the same whatever
/// the list.
pub(crate) fn statuses_json(from: &[TaskStatus]) -> StoreResult<String> {
    let names: Vec<&str> = from.iter().map(|status| status.as_str()).collect();
    serde_json::to_string(&names)
        .map_err(|e| StoreError::Database(format!("encoding task statuses: {e}")))
}

/// The columns of an attempt row: `request, status, error, model, finished_at,
/// duration_ms, calls`.
pub(crate) struct StoredAttempt {
    pub(crate) request: String,
    pub(crate) status: String,
    pub(crate) error: Option<String>,
    pub(crate) model: Option<String>,
    pub(crate) finished_at: Option<DateTime<Utc>>,
    pub(crate) duration_ms: Option<i64>,
    /// The JSON array of the attempt's LLM calls; `NULL` while it is requested, and in rows
    /// written before calls were kept.
    pub(crate) calls: Option<String>,
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
        let calls = self
            .calls
            .map(|json| serde_json::from_str::<Vec<LlmCall>>(&json))
            .transpose()
            .map_err(|e| {
                format!(
                    "attempt {} {} {}: calls: {e}",
                    request.task_id, request.step_id, request.attempt
                )
            })?
            .unwrap_or_default();
        Ok(AttemptRecord {
            request,
            status,
            error: self.error,
            model: self.model,
            finished_at: self.finished_at,
            duration_ms,
            calls,
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

/// Lists every consumer position, sorted.
pub(crate) const CONSUMER_OFFSETS: &str =
    "SELECT group_name, topic, partition_id, next_offset FROM consumer_offsets
     ORDER BY group_name, topic, partition_id";

/// A consumer position row as stored, or why it is not one.
pub(crate) fn consumer_position(
    group: String,
    topic: String,
    partition: i64,
    next_offset: i64,
) -> Result<(String, String, u32, u64), String> {
    match (u32::try_from(partition), u64::try_from(next_offset)) {
        (Ok(partition), Ok(offset)) => Ok((group, topic, partition, offset)),
        _ => Err(format!(
            "consumer_offsets: {group}/{topic}: partition {partition}, offset {next_offset}"
        )),
    }
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

/// The condition of a task (`t`) that retention may touch: ended (done, failed or
/// cancelled, as [`TaskStatus::is_final`] says) before the cutoff `$1`, and no attempt
/// requested, running or finished since.
macro_rules! ended_before_cutoff {
    () => {
        "t.status IN ('done', 'error', 'cancelled') AND t.updated_at < $1
         AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.task_id = t.task_id
             AND (a.status = 'requested' OR a.requested_at >= $1 OR a.finished_at >= $1)) "
    };
}

/// The condition of a task (`t`) with history to prune: an attempt superseded by a later
/// one of its step, or an outbox.
macro_rules! has_history {
    () => {
        "AND (EXISTS (SELECT 1 FROM attempts a WHERE a.task_id = t.task_id AND a.attempt <
                  (SELECT max(b.attempt) FROM attempts b
                   WHERE b.task_id = a.task_id AND b.step_id = a.step_id))
              OR EXISTS (SELECT 1 FROM outbox o WHERE o.task_id = t.task_id)) "
    };
}

/// The tasks with history to prune: `$1` the cutoff, `$2` the limit.
pub(crate) const PRUNABLE_HISTORY: &str = concat!(
    "SELECT t.task_id FROM tasks t WHERE ",
    ended_before_cutoff!(),
    has_history!(),
    "ORDER BY t.updated_at, t.task_id LIMIT $2"
);

/// The tasks that may be deleted: `$1` the cutoff, `$2` the limit.
pub(crate) const PRUNABLE_TASKS: &str = concat!(
    "SELECT t.task_id FROM tasks t WHERE ",
    ended_before_cutoff!(),
    "ORDER BY t.updated_at, t.task_id LIMIT $2"
);

/// 1 when the task `$2` still has history to prune with the cutoff `$1`, else 0 (the cutoff
/// comes first in the text: SQLite numbers named parameters by first appearance).
pub(crate) const STILL_PRUNABLE_HISTORY: &str = concat!(
    "SELECT count(*) FROM tasks t WHERE ",
    ended_before_cutoff!(),
    has_history!(),
    "AND t.task_id = $2"
);

/// 1 when the task `$2` may still be deleted with the cutoff `$1`, else 0.
pub(crate) const STILL_PRUNABLE_TASK: &str = concat!(
    "SELECT count(*) FROM tasks t WHERE ",
    ended_before_cutoff!(),
    "AND t.task_id = $2"
);

/// The queries of one kind of pruning: which tasks, whether one still is, and the deletes.
pub(crate) struct PruningSql {
    pub(crate) prunable: &'static str,
    pub(crate) still_prunable: &'static str,
    /// Each takes the task id as `$1`.
    pub(crate) deletes: &'static [&'static str],
}

/// The queries of `pruning`, the same for both SQL databases.
pub(crate) fn pruning_sql(pruning: crate::store::Pruning) -> PruningSql {
    match pruning {
        crate::store::Pruning::History => PruningSql {
            prunable: PRUNABLE_HISTORY,
            still_prunable: STILL_PRUNABLE_HISTORY,
            deletes: &[
                DELETE_SUPERSEDED_ATTEMPTS,
                "DELETE FROM outbox WHERE task_id = $1",
            ],
        },
        crate::store::Pruning::WholeTask => PruningSql {
            prunable: PRUNABLE_TASKS,
            still_prunable: STILL_PRUNABLE_TASK,
            deletes: &[
                "DELETE FROM attempts WHERE task_id = $1",
                "DELETE FROM outbox WHERE task_id = $1",
                "DELETE FROM tasks WHERE task_id = $1",
            ],
        },
    }
}

/// Deletes the attempts of task `$1` that a later attempt of their step superseded.
pub(crate) const DELETE_SUPERSEDED_ATTEMPTS: &str = "DELETE FROM attempts WHERE task_id = $1
     AND attempt < (SELECT max(b.attempt) FROM attempts b
                    WHERE b.task_id = attempts.task_id AND b.step_id = attempts.step_id)";

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
        // Only a task deleted by retention between the insert and this read lacks its row.
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
