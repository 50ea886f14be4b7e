//! The PostgreSQL state store: one database shared by every process on every host.

mod migrations;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, Row};

use super::memory_state::finished_record;
use super::state::{
    AttemptRecord, AttemptStatus, Lease, NewTaskOutcome, OutboxMessage, Pruning, StateStore,
    TaskRecord, TaskStatus,
};
use super::stored::{self, SpendColumns, StoredAttempt, StoredLease, StoredTask, stage_order};
use super::{StoreError, StoreResult};
use crate::ids::{Attempt, StepId, TaskId};
use crate::wire::{StepRequest, StepResult};

/// How many connections a store opens at most, unless told otherwise.
const DEFAULT_MAX_CONNECTIONS: u32 = 16;
/// How long a query waits for a free connection before it fails.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// A [`StateStore`] in a PostgreSQL database, for deployments where the services run in many
/// processes on many hosts.
///
/// Connecting applies the schema's migrations that the database lacks (embedded in the
/// program; processes starting together take turns through an advisory lock). Every write is
/// one statement or one transaction, committed before it returns; concurrent writers of the
/// same row are serialized by PostgreSQL's row locks, so a redelivered message handled by two
/// processes at once is recorded once. Times are kept to the microsecond.
///
/// ```no_run
/// use agent_pipeline::TaskId;
/// use agent_pipeline::store::{NewTaskOutcome, PostgresStateStore, StateStore};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let store = PostgresStateStore::connect("postgres://agent@db.internal/agent").await?;
/// let id = TaskId::new();
/// let outcome = store.insert_task(id, "Write a haiku", chrono::Utc::now()).await?;
/// assert_eq!(outcome, NewTaskOutcome::Created);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PostgresStateStore {
    pub(in crate::store) pool: PgPool,
    /// The database as errors name it (host, port and database; never the password).
    pub(in crate::store) location: PathBuf,
}

impl PostgresStateStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`,
    /// with libpq's query parameters such as `sslmode`) and brings its schema up to date.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options: PgConnectOptions = url.parse().map_err(|e| {
            // The URL may hold a password: say what is wrong without repeating it.
            StoreError::Database(format!("DATABASE_URL is not a PostgreSQL URL: {e}"))
        })?;
        Self::connect_with(options, DEFAULT_MAX_CONNECTIONS).await
    }

    /// Connects with `options`, keeping at most `max_connections` connections open, and
    /// brings the schema up to date.
    pub async fn connect_with(
        options: PgConnectOptions,
        max_connections: u32,
    ) -> StoreResult<Self> {
        let location = PathBuf::from(format!(
            "postgres://{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or_default()
        ));
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| {
                StoreError::Database(format!("cannot connect to {}: {e}", location.display()))
            })?;
        Self::with_pool(pool, location).await
    }

    async fn with_pool(pool: PgPool, location: PathBuf) -> StoreResult<Self> {
        migrations::migrate(&pool).await?;
        Ok(Self { pool, location })
    }

    /// The artifact store in the same database, sharing this store's connections.
    pub fn artifact_store(&self) -> super::PostgresArtifactStore {
        super::PostgresArtifactStore::new(self.pool.clone(), self.location.clone())
    }

    /// The version of the newest schema migration this program applies.
    pub fn schema_version() -> i64 {
        migrations::latest_version()
    }

    /// The error for a row that is not what this program wrote.
    fn corrupt(&self, reason: String) -> StoreError {
        StoreError::Corrupt {
            path: self.location.clone(),
            reason,
        }
    }

    fn task_of(&self, row: &PgRow) -> StoreResult<TaskRecord> {
        StoredTask {
            task_id: self.column(row, "task_id")?,
            prompt: self.column(row, "prompt")?,
            status: self.column(row, "status")?,
            current_step: self.column(row, "current_step")?,
            created_at: self.column(row, "created_at")?,
            updated_at: self.column(row, "updated_at")?,
            prompt_tokens: self.column(row, "prompt_tokens")?,
            completion_tokens: self.column(row, "completion_tokens")?,
            cost_usd: self.column(row, "cost_usd")?,
            llm_calls: self.column(row, "llm_calls")?,
            unpriced_calls: self.column(row, "unpriced_calls")?,
        }
        .decode()
        .map_err(|reason| self.corrupt(reason))
    }

    fn attempt_of(&self, row: &PgRow) -> StoreResult<AttemptRecord> {
        StoredAttempt {
            request: self.column(row, "request")?,
            status: self.column(row, "status")?,
            error: self.column(row, "error")?,
            model: self.column(row, "model")?,
            finished_at: self.column(row, "finished_at")?,
            duration_ms: self.column(row, "duration_ms")?,
            calls: self.column(row, "calls")?,
        }
        .decode()
        .map_err(|reason| self.corrupt(reason))
    }

    fn column<'r, T>(&self, row: &'r PgRow, name: &str) -> StoreResult<T>
    where
        T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        row.try_get(name)
            .map_err(|e| self.corrupt(format!("column {name}: {e}")))
    }
}

/// A failure of the database or of the connection to it.
pub(super) fn database(error: sqlx::Error) -> StoreError {
    StoreError::Database(error.to_string())
}

/// A count or limit as PostgreSQL's bigint.
fn bigint(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// `SELECT` of the columns of attempts that [`PostgresStateStore::attempt_of`] reads (a macro,
/// so that the queries built on it stay static strings).
macro_rules! select_attempts {
    () => {
        "SELECT request::text AS request, status, error, model, finished_at, duration_ms,
                calls::text AS calls
         FROM attempts "
    };
}

/// `SELECT` of the columns of tasks that [`PostgresStateStore::task_of`] reads.
macro_rules! select_tasks {
    () => {
        concat!("SELECT ", stored::task_columns!(), "FROM tasks ")
    };
}

#[async_trait]
impl StateStore for PostgresStateStore {
    async fn insert_task(
        &self,
        task_id: TaskId,
        prompt: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<NewTaskOutcome> {
        let inserted = sqlx::query(
            "INSERT INTO tasks (task_id, prompt, status, current_step, created_at, updated_at)
             VALUES ($1, $2, $3, NULL, $4, $4)
             ON CONFLICT (task_id) DO NOTHING",
        )
        .bind(task_id.to_string())
        .bind(prompt)
        .bind(TaskStatus::Received.as_str())
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(database)?
        .rows_affected();
        if inserted == 1 {
            return Ok(NewTaskOutcome::Created);
        }
        let existing: Option<String> =
            sqlx::query_scalar("SELECT prompt FROM tasks WHERE task_id = $1")
                .bind(task_id.to_string())
                .fetch_optional(&self.pool)
                .await
                .map_err(database)?;
        stored::outcome_of_taken_id(task_id, prompt, existing)
    }

    async fn task(&self, task_id: TaskId) -> StoreResult<Option<TaskRecord>> {
        let row = sqlx::query(concat!(select_tasks!(), "WHERE task_id = $1"))
            .bind(task_id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(database)?;
        row.map(|row| self.task_of(&row)).transpose()
    }

    async fn tasks(&self, limit: usize) -> StoreResult<Vec<TaskRecord>> {
        let rows = sqlx::query(concat!(
            select_tasks!(),
            "ORDER BY created_at DESC, task_id DESC LIMIT $1"
        ))
        .bind(bigint(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(database)?;
        rows.iter().map(|row| self.task_of(row)).collect()
    }

    async fn set_task_status(
        &self,
        task_id: TaskId,
        status: TaskStatus,
        step: Option<StepId>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE tasks
             SET status = $1, current_step = COALESCE($2, current_step), updated_at = $3
             WHERE task_id = $4",
        )
        .bind(status.as_str())
        .bind(step.map(|s| s.to_string()))
        .bind(now)
        .bind(task_id.to_string())
        .execute(&self.pool)
        .await
        .map_err(database)?;
        Ok(())
    }

    async fn reserve_attempt(&self, request: &StepRequest) -> StoreResult<bool> {
        let json = serde_json::to_string(request)
            .map_err(|e| StoreError::Database(format!("encoding step request: {e}")))?;
        let inserted = sqlx::query(
            "INSERT INTO attempts
             (task_id, step_id, attempt, stage_order, status, request, requested_at)
             VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)
             ON CONFLICT (task_id, step_id, attempt) DO NOTHING",
        )
        .bind(request.task_id.to_string())
        .bind(request.step_id.to_string())
        .bind(i64::from(request.attempt.get()))
        .bind(stage_order(request.step_id))
        .bind(AttemptStatus::Requested.as_str())
        .bind(json)
        .bind(request.requested_at)
        .execute(&self.pool)
        .await
        .map_err(database)?
        .rows_affected();
        Ok(inserted == 1)
    }

    async fn transition_task(
        &self,
        task_id: TaskId,
        from: &[TaskStatus],
        to: TaskStatus,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let from: Vec<&str> = from.iter().map(|status| status.as_str()).collect();
        // One statement under the row's lock: two decisions at once cannot both apply.
        let moved = sqlx::query(
            "UPDATE tasks SET status = $1, updated_at = $2
             WHERE task_id = $3 AND status = ANY($4)",
        )
        .bind(to.as_str())
        .bind(now)
        .bind(task_id.to_string())
        .bind(from)
        .execute(&self.pool)
        .await
        .map_err(database)?
        .rows_affected();
        Ok(moved == 1)
    }

    async fn attempt(
        &self,
        task_id: TaskId,
        step: StepId,
        attempt: Attempt,
    ) -> StoreResult<Option<AttemptRecord>> {
        let row = sqlx::query(concat!(
            select_attempts!(),
            "WHERE task_id = $1 AND step_id = $2 AND attempt = $3"
        ))
        .bind(task_id.to_string())
        .bind(step.to_string())
        .bind(i64::from(attempt.get()))
        .fetch_optional(&self.pool)
        .await
        .map_err(database)?;
        row.map(|row| self.attempt_of(&row)).transpose()
    }

    async fn finish_attempt_with_outbox(
        &self,
        result: &StepResult,
        task_status: Option<TaskStatus>,
        now: DateTime<Utc>,
        outbox: &[OutboxMessage],
    ) -> StoreResult<bool> {
        let record = finished_record(result, None, now);
        let task_id = result.task_id.to_string();
        let step_id = result.step_id.to_string();
        let attempt = i64::from(result.attempt.get());
        let duration_ms = record.duration_ms.map(bigint);
        let json = serde_json::to_string(&record.request)
            .map_err(|e| StoreError::Database(format!("encoding step request: {e}")))?;
        let status = record.status.as_str();
        let calls = stored::calls_json(&record.calls)?;
        let mut transaction = self.pool.begin().await.map_err(database)?;
        // Under concurrent finishes of one attempt, the row lock makes the second wait and
        // then find the attempt no longer requested.
        let updated = sqlx::query(
            "UPDATE attempts
             SET status = $1, error = $2, model = $3, finished_at = $4, duration_ms = $5,
                 calls = $6::jsonb
             WHERE task_id = $7 AND step_id = $8 AND attempt = $9 AND status = $10",
        )
        .bind(status)
        .bind(&record.error)
        .bind(&record.model)
        .bind(now)
        .bind(duration_ms)
        .bind(&calls)
        .bind(&task_id)
        .bind(&step_id)
        .bind(attempt)
        .bind(AttemptStatus::Requested.as_str())
        .execute(&mut *transaction)
        .await
        .map_err(database)?
        .rows_affected();
        // Either the attempt was never reserved (record it from the result) or it is already
        // finished (the insert does nothing, and nothing changes).
        let recorded = updated == 1
            || sqlx::query(
                "INSERT INTO attempts
                     (task_id, step_id, attempt, stage_order, status, request,
                      error, model, requested_at, finished_at, duration_ms, calls)
                 VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10, $11, $12::jsonb)
                 ON CONFLICT (task_id, step_id, attempt) DO NOTHING",
            )
            .bind(&task_id)
            .bind(&step_id)
            .bind(attempt)
            .bind(stage_order(result.step_id))
            .bind(status)
            .bind(&json)
            .bind(&record.error)
            .bind(&record.model)
            .bind(record.request.requested_at)
            .bind(now)
            .bind(duration_ms)
            .bind(&calls)
            .execute(&mut *transaction)
            .await
            .map_err(database)?
            .rows_affected()
                == 1;
        // Only a newly recorded result counts: a redelivered one was counted already.
        let spend = SpendColumns::of(&record.calls);
        if recorded && (task_status.is_some() || !spend.is_empty()) {
            sqlx::query(stored::RECORD_RESULT_ON_TASK)
                .bind(spend.prompt_tokens)
                .bind(spend.completion_tokens)
                .bind(spend.cost_usd)
                .bind(spend.llm_calls)
                .bind(spend.unpriced_calls)
                .bind(task_status.map(TaskStatus::as_str))
                .bind(&step_id)
                .bind(now)
                .bind(&task_id)
                .execute(&mut *transaction)
                .await
                .map_err(database)?;
        }
        if recorded {
            sqlx::query("DELETE FROM outbox WHERE task_id = $1")
                .bind(&task_id)
                .execute(&mut *transaction)
                .await
                .map_err(database)?;
            for (seq, message) in outbox.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO outbox
                     (task_id, step_id, attempt, seq, topic, message_key, payload)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&task_id)
                .bind(&step_id)
                .bind(attempt)
                .bind(bigint(seq))
                .bind(&message.topic)
                .bind(&message.key)
                .bind(&message.payload)
                .execute(&mut *transaction)
                .await
                .map_err(database)?;
            }
        }
        transaction.commit().await.map_err(database)?;
        Ok(recorded)
    }

    async fn outbox(
        &self,
        task_id: TaskId,
        step: StepId,
        attempt: Attempt,
    ) -> StoreResult<Vec<OutboxMessage>> {
        let rows = sqlx::query(
            "SELECT topic, message_key, payload FROM outbox
             WHERE task_id = $1 AND step_id = $2 AND attempt = $3 ORDER BY seq",
        )
        .bind(task_id.to_string())
        .bind(step.to_string())
        .bind(i64::from(attempt.get()))
        .fetch_all(&self.pool)
        .await
        .map_err(database)?;
        rows.iter()
            .map(|row| {
                Ok(OutboxMessage {
                    topic: self.column(row, "topic")?,
                    key: self.column(row, "message_key")?,
                    payload: self.column(row, "payload")?,
                })
            })
            .collect()
    }

    async fn attempts(&self, task_id: TaskId) -> StoreResult<Vec<AttemptRecord>> {
        let rows = sqlx::query(concat!(
            select_attempts!(),
            "WHERE task_id = $1
             ORDER BY stage_order, step_id, attempt"
        ))
        .bind(task_id.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(database)?;
        rows.iter().map(|row| self.attempt_of(row)).collect()
    }

    async fn last_attempt(&self, task_id: TaskId, step: StepId) -> StoreResult<Option<Attempt>> {
        let last: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(attempt) FROM attempts WHERE task_id = $1 AND step_id = $2",
        )
        .bind(task_id.to_string())
        .bind(step.to_string())
        .fetch_one(&self.pool)
        .await
        .map_err(database)?;
        last.map(|n| stored::attempt_number(n).map_err(|reason| self.corrupt(reason)))
            .transpose()
    }

    async fn unfinished_attempts(&self) -> StoreResult<Vec<AttemptRecord>> {
        let rows = sqlx::query(concat!(
            select_attempts!(),
            "WHERE status = 'requested'
             ORDER BY requested_at, task_id, stage_order, step_id, attempt"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(database)?;
        rows.iter().map(|row| self.attempt_of(row)).collect()
    }

    async fn consumer_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> StoreResult<Option<u64>> {
        let offset: Option<i64> = sqlx::query_scalar(
            "SELECT next_offset FROM consumer_offsets
             WHERE group_name = $1 AND topic = $2 AND partition_id = $3",
        )
        .bind(group)
        .bind(topic)
        .bind(i64::from(partition))
        .fetch_optional(&self.pool)
        .await
        .map_err(database)?;
        offset
            .map(|n| stored::consumer_offset(n).map_err(|reason| self.corrupt(reason)))
            .transpose()
    }

    async fn consumer_offsets(&self) -> StoreResult<Vec<(String, String, u32, u64)>> {
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(stored::CONSUMER_OFFSETS)
            .fetch_all(&self.pool)
            .await
            .map_err(database)?;
        rows.into_iter()
            .map(|(group, topic, partition, offset)| {
                stored::consumer_position(group, topic, partition, offset)
                    .map_err(|reason| self.corrupt(reason))
            })
            .collect()
    }

    async fn commit_consumer_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        next_offset: u64,
    ) -> StoreResult<()> {
        let offset = stored::offset_value(next_offset)?;
        sqlx::query(
            "INSERT INTO consumer_offsets
             (group_name, topic, partition_id, next_offset, committed_at)
             VALUES ($1, $2, $3, $4, now())
             ON CONFLICT (group_name, topic, partition_id)
             DO UPDATE SET next_offset = EXCLUDED.next_offset,
                           committed_at = EXCLUDED.committed_at",
        )
        .bind(group)
        .bind(topic)
        .bind(i64::from(partition))
        .bind(offset)
        .execute(&self.pool)
        .await
        .map_err(database)?;
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
        let offset = stored::offset_value(next_offset)?;
        // The lease row is locked for the statement, so the lease cannot change hands between
        // the check and the write.
        let recorded = sqlx::query(
            "INSERT INTO consumer_offsets
             (group_name, topic, partition_id, next_offset, committed_at)
             SELECT $1, $2, $3, $4, now()
             FROM leases
             WHERE resource = $5 AND holder = $6 AND epoch = $7
             FOR UPDATE
             ON CONFLICT (group_name, topic, partition_id)
             DO UPDATE SET next_offset = EXCLUDED.next_offset,
                           committed_at = EXCLUDED.committed_at",
        )
        .bind(group)
        .bind(topic)
        .bind(i64::from(partition))
        .bind(offset)
        .bind(&lease.resource)
        .bind(&lease.holder)
        .bind(stored::epoch_value(lease.epoch))
        .execute(&self.pool)
        .await
        .map_err(database)?
        .rows_affected();
        Ok(recorded == 1)
    }

    async fn acquire_lease(
        &self,
        resource: &str,
        holder: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<Option<Lease>> {
        let epoch: Option<i64> = sqlx::query_scalar(stored::ACQUIRE_LEASE)
            .bind(resource)
            .bind(holder)
            .bind(expires_at)
            .bind(now)
            .fetch_optional(&self.pool)
            .await
            .map_err(database)?;
        epoch
            .map(|epoch| {
                StoredLease {
                    resource: resource.to_owned(),
                    holder: holder.to_owned(),
                    epoch,
                    expires_at,
                }
                .decode()
                .map_err(|reason| self.corrupt(reason))
            })
            .transpose()
    }

    async fn release_lease(&self, lease: &Lease, now: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query(
            "UPDATE leases SET expires_at = $1
             WHERE resource = $2 AND holder = $3 AND epoch = $4",
        )
        .bind(now)
        .bind(&lease.resource)
        .bind(&lease.holder)
        .bind(stored::epoch_value(lease.epoch))
        .execute(&self.pool)
        .await
        .map_err(database)?;
        Ok(())
    }

    async fn leases(&self, prefix: &str, now: DateTime<Utc>) -> StoreResult<Vec<Lease>> {
        let rows = sqlx::query(
            "SELECT resource, holder, epoch, expires_at FROM leases
             WHERE left(resource, length($1)) = $1 AND expires_at > $2
             ORDER BY resource",
        )
        .bind(prefix)
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(database)?;
        rows.iter()
            .map(|row| {
                StoredLease {
                    resource: self.column(row, "resource")?,
                    holder: self.column(row, "holder")?,
                    epoch: self.column(row, "epoch")?,
                    expires_at: self.column(row, "expires_at")?,
                }
                .decode()
                .map_err(|reason| self.corrupt(reason))
            })
            .collect()
    }

    async fn prunable_tasks(
        &self,
        cutoff: DateTime<Utc>,
        pruning: Pruning,
        limit: usize,
    ) -> StoreResult<Vec<TaskId>> {
        let ids: Vec<String> = sqlx::query_scalar(stored::pruning_sql(pruning).prunable)
            .bind(cutoff)
            .bind(bigint(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(database)?;
        ids.iter()
            .map(|id| {
                id.parse()
                    .map_err(|e| self.corrupt(format!("tasks.task_id: {e}")))
            })
            .collect()
    }

    async fn prune_task(
        &self,
        task_id: TaskId,
        cutoff: DateTime<Utc>,
        pruning: Pruning,
    ) -> StoreResult<bool> {
        let id = task_id.to_string();
        let mut transaction = self.pool.begin().await.map_err(database)?;
        // The task's row stays locked until the end: two pruners take turns.
        sqlx::query("SELECT 1 FROM tasks WHERE task_id = $1 FOR UPDATE")
            .bind(&id)
            .execute(&mut *transaction)
            .await
            .map_err(database)?;
        let sql = stored::pruning_sql(pruning);
        let prunable: i64 = sqlx::query_scalar(sql.still_prunable)
            .bind(cutoff)
            .bind(&id)
            .fetch_one(&mut *transaction)
            .await
            .map_err(database)?;
        if prunable == 0 {
            return Ok(false);
        }
        for statement in sql.deletes {
            sqlx::query(*statement)
                .bind(&id)
                .execute(&mut *transaction)
                .await
                .map_err(database)?;
        }
        transaction.commit().await.map_err(database)?;
        Ok(true)
    }
}
