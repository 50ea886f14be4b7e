//! The SQLite state store: `DATA_DIR/state.sqlite`, shared by every process of one host.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
};

use super::memory_state::finished_record;
use super::sqlite_writer::{GroupWriter, rows};
use super::state::{
    AttemptRecord, AttemptStatus, NewTaskOutcome, StateStore, TaskRecord, TaskStatus,
};
use super::{StoreError, StoreResult};
use crate::ids::{Attempt, Stage, StepId, TaskId};
use crate::wire::{StepRequest, StepResult};

/// The schema version this code reads and writes.
const SCHEMA_VERSION: i64 = 1;

/// The schema, created idempotently at open. Plain SQL that PostgreSQL also accepts, so that
/// both stores can share the shape. Times are RFC 3339 text with a fixed number of digits,
/// so that text order is time order.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL
);
INSERT INTO schema_version (version)
    SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM schema_version);
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    prompt TEXT NOT NULL,
    status TEXT NOT NULL,
    current_step TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_by_created_at ON tasks (created_at);
CREATE TABLE IF NOT EXISTS attempts (
    task_id TEXT NOT NULL,
    step_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    stage_order INTEGER NOT NULL,
    status TEXT NOT NULL,
    request TEXT NOT NULL,
    error TEXT,
    model TEXT,
    requested_at TEXT NOT NULL,
    finished_at TEXT,
    duration_ms BIGINT,
    PRIMARY KEY (task_id, step_id, attempt)
);
CREATE INDEX IF NOT EXISTS attempts_unfinished ON attempts (requested_at)
    WHERE status = 'requested';
CREATE TABLE IF NOT EXISTS consumer_offsets (
    group_name TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition_id INTEGER NOT NULL,
    next_offset BIGINT NOT NULL,
    committed_at TEXT NOT NULL,
    PRIMARY KEY (group_name, topic, partition_id)
);
";

/// A [`StateStore`] in an SQLite database.
///
/// Several handles (and several processes) may open the same file: the database runs in WAL
/// mode and waits up to five seconds for a lock. Times are kept to the microsecond.
#[derive(Debug, Clone)]
pub struct SqliteStateStore {
    /// Readers: WAL mode lets them run beside the writer.
    pool: SqlitePool,
    /// The one connection that writes, with group commit: this process's writers queue
    /// there instead of sleeping in SQLite's busy handler against each other, and share
    /// commits.
    writer: GroupWriter,
    /// The database file, named in errors about its content.
    path: PathBuf,
}

impl SqliteStateStore {
    /// Opens (or creates) the database at `path`, creating its directory and schema as needed.
    pub async fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|source| StoreError::Io {
                    action: "create directory",
                    path: parent.to_path_buf(),
                    source,
                })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(database)?;
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .map_err(database)?;
        Self::with_schema(pool, writer, path).await
    }

    /// A new, private database in memory; everything is lost when the last handle is dropped.
    pub async fn in_memory() -> StoreResult<Self> {
        // `:memory:` gives a uniquely named database. It lives as long as a connection to it is
        // open, so the pool keeps exactly one connection and never closes it.
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(database)?
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(database)?;
        Self::with_schema(pool.clone(), pool, PathBuf::from(":memory:")).await
    }

    async fn with_schema(pool: SqlitePool, writer: SqlitePool, path: PathBuf) -> StoreResult<Self> {
        sqlx::raw_sql(SCHEMA)
            .execute(&writer)
            .await
            .map_err(database)?;
        let writer = GroupWriter::start(writer);
        let store = Self { pool, writer, path };
        let version: i64 = sqlx::query("SELECT MAX(version) FROM schema_version")
            .fetch_one(&store.pool)
            .await
            .map_err(database)?
            .try_get(0)
            .map_err(|e| store.corrupt(format!("schema_version: {e}")))?;
        if version != SCHEMA_VERSION {
            return Err(store.corrupt(format!(
                "schema version {version}, this program knows version {SCHEMA_VERSION}"
            )));
        }
        Ok(store)
    }

    fn corrupt(&self, reason: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    fn task_from_row(&self, row: &SqliteRow) -> StoreResult<TaskRecord> {
        let task_id: String = self.column(row, "task_id")?;
        let task_id = task_id
            .parse()
            .map_err(|e| self.corrupt(format!("tasks.task_id: {e}")))?;
        let status: String = self.column(row, "status")?;
        let status = TaskStatus::parse(&status)
            .ok_or_else(|| self.corrupt(format!("task {task_id}: unknown status {status:?}")))?;
        let current_step: Option<String> = self.column(row, "current_step")?;
        let current_step = current_step
            .map(|s| s.parse::<StepId>())
            .transpose()
            .map_err(|e| self.corrupt(format!("task {task_id}: {e}")))?;
        Ok(TaskRecord {
            task_id,
            prompt: self.column(row, "prompt")?,
            status,
            current_step,
            created_at: self.time(row, "created_at")?,
            updated_at: self.time(row, "updated_at")?,
        })
    }

    fn attempt_from_row(&self, row: &SqliteRow) -> StoreResult<AttemptRecord> {
        let request: String = self.column(row, "request")?;
        let request: StepRequest = serde_json::from_str(&request)
            .map_err(|e| self.corrupt(format!("attempts.request: {e}")))?;
        let status: String = self.column(row, "status")?;
        let status = AttemptStatus::parse(&status).ok_or_else(|| {
            self.corrupt(format!(
                "attempt {} {} {}: unknown status {status:?}",
                request.task_id, request.step_id, request.attempt
            ))
        })?;
        let finished_at: Option<String> = self.column(row, "finished_at")?;
        let finished_at = finished_at
            .map(|text| self.parse_time("attempts.finished_at", &text))
            .transpose()?;
        let duration_ms: Option<i64> = self.column(row, "duration_ms")?;
        let duration_ms = duration_ms
            .map(u64::try_from)
            .transpose()
            .map_err(|e| self.corrupt(format!("attempts.duration_ms: {e}")))?;
        Ok(AttemptRecord {
            request,
            status,
            error: self.column(row, "error")?,
            model: self.column(row, "model")?,
            finished_at,
            duration_ms,
        })
    }

    fn column<T>(&self, row: &SqliteRow, name: &str) -> StoreResult<T>
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
    {
        row.try_get(name)
            .map_err(|e| self.corrupt(format!("column {name}: {e}")))
    }

    fn time(&self, row: &SqliteRow, name: &str) -> StoreResult<DateTime<Utc>> {
        let text: String = self.column(row, name)?;
        self.parse_time(name, &text)
    }

    fn parse_time(&self, name: &str, text: &str) -> StoreResult<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| self.corrupt(format!("{name} {text:?}: {e}")))
    }
}

/// A time as stored: RFC 3339 in UTC with six fractional digits, so that text order is time
/// order.
fn time_text(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The position of a step's stage in the pipeline, stored so that attempts sort in pipeline
/// order.
fn stage_order(step: StepId) -> i64 {
    let index = Stage::ALL
        .iter()
        .position(|s| *s == step.stage())
        .unwrap_or(Stage::ALL.len());
    i64::try_from(index).unwrap_or(i64::MAX)
}

fn database(error: sqlx::Error) -> StoreError {
    StoreError::Database(error.to_string())
}

#[async_trait]
impl StateStore for SqliteStateStore {
    async fn insert_task(
        &self,
        task_id: TaskId,
        prompt: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<NewTaskOutcome> {
        let now = time_text(now);
        let (id, text) = (task_id.to_string(), prompt.to_owned());
        let inserted = self
            .writer
            .execute(
                sqlx::query(
                    "INSERT INTO tasks
                     (task_id, prompt, status, current_step, created_at, updated_at)
                     VALUES (?, ?, ?, NULL, ?, ?)
                     ON CONFLICT (task_id) DO NOTHING",
                )
                .bind(id)
                .bind(text)
                .bind(TaskStatus::Received.as_str())
                .bind(&now)
                .bind(&now),
            )
            .await?;
        if inserted == 1 {
            return Ok(NewTaskOutcome::Created);
        }
        let existing: Option<String> = sqlx::query("SELECT prompt FROM tasks WHERE task_id = ?")
            .bind(task_id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(database)?
            .map(|row| self.column(&row, "prompt"))
            .transpose()?;
        match existing {
            Some(existing) if existing == prompt => Ok(NewTaskOutcome::AlreadyExists),
            Some(_) => Ok(NewTaskOutcome::Conflict),
            // Rows are never deleted, so a conflict means the row exists.
            None => Err(StoreError::Database(format!(
                "task {task_id} was neither inserted nor found"
            ))),
        }
    }

    async fn task(&self, task_id: TaskId) -> StoreResult<Option<TaskRecord>> {
        sqlx::query(
            "SELECT task_id, prompt, status, current_step, created_at, updated_at
             FROM tasks WHERE task_id = ?",
        )
        .bind(task_id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(database)?
        .map(|row| self.task_from_row(&row))
        .transpose()
    }

    async fn tasks(&self, limit: usize) -> StoreResult<Vec<TaskRecord>> {
        sqlx::query(
            "SELECT task_id, prompt, status, current_step, created_at, updated_at
             FROM tasks ORDER BY created_at DESC, task_id DESC LIMIT ?",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(database)?
        .iter()
        .map(|row| self.task_from_row(row))
        .collect()
    }

    async fn set_task_status(
        &self,
        task_id: TaskId,
        status: TaskStatus,
        step: Option<StepId>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let (step, now, task_id) = (
            step.map(|s| s.to_string()),
            time_text(now),
            task_id.to_string(),
        );
        self.writer
            .execute(
                sqlx::query(
                    "UPDATE tasks
                     SET status = ?, current_step = COALESCE(?, current_step),
                     updated_at = ?
                     WHERE task_id = ?",
                )
                .bind(status.as_str())
                .bind(step)
                .bind(now)
                .bind(task_id),
            )
            .await?;
        Ok(())
    }

    async fn reserve_attempt(&self, request: &StepRequest) -> StoreResult<bool> {
        let json = serde_json::to_string(request)
            .map_err(|e| StoreError::Database(format!("encoding step request: {e}")))?;
        let (task_id, step_id, attempt, order, requested_at) = (
            request.task_id.to_string(),
            request.step_id.to_string(),
            i64::from(request.attempt.get()),
            stage_order(request.step_id),
            time_text(request.requested_at),
        );
        let inserted = self
            .writer
            .execute(
                sqlx::query(
                    "INSERT INTO attempts
                     (task_id, step_id, attempt, stage_order, status, request,
                      requested_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?)
                     ON CONFLICT (task_id, step_id, attempt) DO NOTHING",
                )
                .bind(task_id)
                .bind(step_id)
                .bind(attempt)
                .bind(order)
                .bind(AttemptStatus::Requested.as_str())
                .bind(json)
                .bind(requested_at),
            )
            .await?;
        Ok(inserted == 1)
    }

    async fn attempt(
        &self,
        task_id: TaskId,
        step: StepId,
        attempt: Attempt,
    ) -> StoreResult<Option<AttemptRecord>> {
        sqlx::query(
            "SELECT request, status, error, model, finished_at, duration_ms
             FROM attempts WHERE task_id = ? AND step_id = ? AND attempt = ?",
        )
        .bind(task_id.to_string())
        .bind(step.to_string())
        .bind(i64::from(attempt.get()))
        .fetch_optional(&self.pool)
        .await
        .map_err(database)?
        .map(|row| self.attempt_from_row(&row))
        .transpose()
    }

    async fn finish_attempt(
        &self,
        result: &StepResult,
        task_status: Option<TaskStatus>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let record = finished_record(result, None, now);
        let task_id = result.task_id.to_string();
        let step_id = result.step_id.to_string();
        let attempt = i64::from(result.attempt.get());
        let finished_at = time_text(now);
        let duration_ms = record
            .duration_ms
            .map(|d| i64::try_from(d).unwrap_or(i64::MAX));

        let json = serde_json::to_string(&record.request)
            .map_err(|e| StoreError::Database(format!("encoding step request: {e}")))?;
        let order = stage_order(result.step_id);
        let requested_at = time_text(record.request.requested_at);
        let recorded = self
            .writer
            .write(Box::new(move |connection| {
                Box::pin(async move {
                    let updated = rows(
                        sqlx::query(
                            "UPDATE attempts
                             SET status = ?, error = ?, model = ?, finished_at = ?,
                                 duration_ms = ?
                             WHERE task_id = ? AND step_id = ? AND attempt = ? AND status = ?",
                        )
                        .bind(record.status.as_str())
                        .bind(record.error.as_deref())
                        .bind(record.model.as_deref())
                        .bind(&finished_at)
                        .bind(duration_ms)
                        .bind(&task_id)
                        .bind(&step_id)
                        .bind(attempt)
                        .bind(AttemptStatus::Requested.as_str())
                        .execute(&mut *connection)
                        .await,
                    )?;
                    // Either the attempt was never reserved (record it from the result) or it
                    // is already finished (the insert does nothing, and nothing changes).
                    let recorded = updated == 1
                        || rows(
                            sqlx::query(
                                "INSERT INTO attempts
                                     (task_id, step_id, attempt, stage_order, status, request,
                                      error, model, requested_at, finished_at, duration_ms)
                                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                                 ON CONFLICT (task_id, step_id, attempt) DO NOTHING",
                            )
                            .bind(&task_id)
                            .bind(&step_id)
                            .bind(attempt)
                            .bind(order)
                            .bind(record.status.as_str())
                            .bind(json)
                            .bind(record.error.as_deref())
                            .bind(record.model.as_deref())
                            .bind(requested_at)
                            .bind(&finished_at)
                            .bind(duration_ms)
                            .execute(&mut *connection)
                            .await,
                        )? == 1;
                    if recorded && let Some(task_status) = task_status {
                        rows(
                            sqlx::query(
                                "UPDATE tasks SET status = ?, current_step = ?, updated_at = ?
                                 WHERE task_id = ?",
                            )
                            .bind(task_status.as_str())
                            .bind(&step_id)
                            .bind(&finished_at)
                            .bind(&task_id)
                            .execute(&mut *connection)
                            .await,
                        )?;
                    }
                    Ok(u64::from(recorded))
                })
            }))
            .await?;
        Ok(recorded == 1)
    }

    async fn attempts(&self, task_id: TaskId) -> StoreResult<Vec<AttemptRecord>> {
        sqlx::query(
            "SELECT request, status, error, model, finished_at, duration_ms
             FROM attempts WHERE task_id = ?
             ORDER BY stage_order, step_id, attempt",
        )
        .bind(task_id.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(database)?
        .iter()
        .map(|row| self.attempt_from_row(row))
        .collect()
    }

    async fn last_attempt(&self, task_id: TaskId, step: StepId) -> StoreResult<Option<Attempt>> {
        let row = sqlx::query(
            "SELECT MAX(attempt) AS last FROM attempts WHERE task_id = ? AND step_id = ?",
        )
        .bind(task_id.to_string())
        .bind(step.to_string())
        .fetch_one(&self.pool)
        .await
        .map_err(database)?;
        let last: Option<i64> = self.column(&row, "last")?;
        last.map(|n| {
            u32::try_from(n)
                .ok()
                .and_then(|n| Attempt::new(n).ok())
                .ok_or_else(|| self.corrupt(format!("attempts.attempt: {n} is not an attempt")))
        })
        .transpose()
    }

    async fn unfinished_attempts(&self) -> StoreResult<Vec<AttemptRecord>> {
        sqlx::query(
            "SELECT request, status, error, model, finished_at, duration_ms
             FROM attempts WHERE status = 'requested'
             ORDER BY requested_at, task_id, stage_order, step_id, attempt",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(database)?
        .iter()
        .map(|row| self.attempt_from_row(row))
        .collect()
    }

    async fn consumer_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> StoreResult<Option<u64>> {
        let row = sqlx::query(
            "SELECT next_offset FROM consumer_offsets
             WHERE group_name = ? AND topic = ? AND partition_id = ?",
        )
        .bind(group)
        .bind(topic)
        .bind(i64::from(partition))
        .fetch_optional(&self.pool)
        .await
        .map_err(database)?;
        row.map(|row| {
            let offset: i64 = self.column(&row, "next_offset")?;
            u64::try_from(offset)
                .map_err(|_| self.corrupt(format!("negative consumer offset {offset}")))
        })
        .transpose()
    }

    async fn commit_consumer_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        next_offset: u64,
    ) -> StoreResult<()> {
        let offset = i64::try_from(next_offset)
            .map_err(|_| StoreError::Database(format!("offset {next_offset} is too large")))?;
        let (group, topic, now) = (group.to_owned(), topic.to_owned(), time_text(Utc::now()));
        self.writer
            .execute(
                sqlx::query(
                    "INSERT INTO consumer_offsets
                     (group_name, topic, partition_id, next_offset, committed_at)
                     VALUES (?, ?, ?, ?, ?)
                     ON CONFLICT (group_name, topic, partition_id)
                     DO UPDATE SET next_offset = excluded.next_offset,
                               committed_at = excluded.committed_at",
                )
                .bind(group)
                .bind(topic)
                .bind(i64::from(partition))
                .bind(offset)
                .bind(now),
            )
            .await?;
        Ok(())
    }
}
