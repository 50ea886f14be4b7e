//! The SQLite state store: `DATA_DIR/state.sqlite`, shared by every process of one host.
//!
//! SQLite is used synchronously (rusqlite) on threads the store owns, so that the async tasks
//! hand work to a thread once per batch rather than once per statement:
//!
//! - **one writer thread** (`sqlite-writer`, see `store/sqlite_writer.rs`) owns the only
//!   connection of this handle that writes. Writes that queue while it is busy run together in
//!   the next transaction, each in a savepoint of its own, sharing one commit: one wake-up of
//!   the thread and one fsync of the log for the whole batch. Callers are answered after the
//!   commit.
//! - **two reader threads** (`sqlite-reader-N`, see `readers.rs`) each own a connection to the
//!   same file and serve reads from one queue, so that reads never wait for commits. WAL mode
//!   shows them the last committed state only.
//! - **in memory**, the database lives in one connection, so the writer thread serves the reads
//!   too, between batches.
//!
//! The threads end when the last clone of the store is dropped.

mod connections;
mod readers;
mod rows;

use std::path::Path;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::memory_state::finished_record;
use super::sqlite_writer::{self, GroupWriter, Read, execute};
use super::state::{
    AttemptRecord, AttemptStatus, Lease, NewTaskOutcome, OutboxMessage, Pruning, StateStore,
    TaskRecord, TaskStatus,
};
use super::stored::{self, SpendColumns, stage_order};
use super::{StoreError, StoreResult};
use crate::ids::{Attempt, StepId, TaskId};
use crate::wire::{StepRequest, StepResult};
use readers::ReaderPool;
use rows::{Decoder, fetch_all, fetch_optional, time_text};

/// How many reader threads (and connections) a file store keeps.
const READERS: usize = 2;

/// A [`StateStore`] in an SQLite database.
///
/// Several handles (and several processes) may open the same file: the database runs in WAL
/// mode and waits up to five seconds for a lock. Times are kept to the microsecond.
///
/// SQLite runs synchronously on threads the store owns, so that async tasks hand work over
/// once per batch rather than once per statement. Each store opened runs one writer thread
/// (`sqlite-writer`), the only one that writes: the writes that queue while it is busy run
/// together in its next transaction, each in a savepoint of its own (a failing write rolls back
/// alone), and share one commit. A write returns once that commit is durable. On a file, two
/// reader threads (`sqlite-reader-N`) with connections of their own serve the reads, which
/// therefore never wait for a commit and see committed data only; in memory, the writer
/// thread serves the reads too. Clones share the threads, which end with the last clone.
///
/// ```
/// use agent_pipeline::TaskId;
/// use agent_pipeline::store::{NewTaskOutcome, SqliteStateStore, StateStore, TaskStatus};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let dir = tempfile::tempdir()?;
/// let store = SqliteStateStore::open(dir.path().join("state.sqlite")).await?;
/// let id = TaskId::new();
/// let outcome = store.insert_task(id, "Write a haiku", chrono::Utc::now()).await?;
/// assert_eq!(outcome, NewTaskOutcome::Created);
/// // Committed, hence visible to every reader (and to other processes on the same file).
/// let task = store.task(id).await?.ok_or("the task was just inserted")?;
/// assert_eq!(task.status, TaskStatus::Received);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct SqliteStateStore {
    /// The thread that writes, with group commit.
    writer: GroupWriter,
    /// Where reads run.
    reads: ReadRoute,
    /// Decodes rows, naming the database file in errors about its content.
    decoder: Decoder,
}

/// Where a store's reads run.
#[derive(Debug, Clone)]
enum ReadRoute {
    /// On the reader threads of a file database.
    Readers(ReaderPool),
    /// On the writer thread, which holds the only connection to a database in memory.
    Writer,
}

impl SqliteStateStore {
    /// Opens (or creates) the database at `path`, creating its directory and schema as needed.
    ///
    /// Starts the store's writer thread and its two reader threads.
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
        let decoder = Decoder::new(&path);
        let opening = decoder.clone();
        // Opening may wait for another process's lock and creates files: not on async threads.
        let (writer, readers) = tokio::task::spawn_blocking(move || open_file(&path, &opening))
            .await
            .map_err(|e| StoreError::Database(format!("opening the database stopped: {e}")))??;
        Ok(Self {
            writer: GroupWriter::start(writer)?,
            reads: ReadRoute::Readers(ReaderPool::start(readers)?),
            decoder,
        })
    }

    /// A new, private database in memory; everything is lost when the last handle is dropped.
    ///
    /// Starts the store's writer thread, which also serves its reads.
    pub async fn in_memory() -> StoreResult<Self> {
        let decoder = Decoder::new(Path::new(":memory:"));
        let connection = connections::open_in_memory(&decoder)?;
        Ok(Self {
            writer: GroupWriter::start(connection)?,
            reads: ReadRoute::Writer,
            decoder,
        })
    }

    /// Runs `query` where this store's reads run and returns its answer.
    async fn read<T, Q>(&self, query: Q) -> StoreResult<T>
    where
        T: Send + 'static,
        Q: FnOnce(&Connection, &Decoder) -> StoreResult<T> + Send + 'static,
    {
        let (done, answer) = oneshot::channel();
        let decoder = self.decoder.clone();
        let read: Read = Box::new(move |connection| {
            // A caller that stopped waiting no longer needs its answer.
            let _ = done.send(query(connection, &decoder));
        });
        let stopped = match &self.reads {
            ReadRoute::Readers(readers) => {
                readers.submit(read)?;
                readers::stopped
            }
            ReadRoute::Writer => {
                self.writer.read(read)?;
                sqlite_writer::stopped
            }
        };
        answer.await.map_err(|_| stopped())?
    }
}

/// The writing connection and the reading ones of the file at `path`.
fn open_file(path: &Path, decoder: &Decoder) -> StoreResult<(Connection, Vec<Connection>)> {
    // The writer first: it creates the file, switches it to WAL and creates the schema.
    let writer = connections::open_writer(path, decoder)?;
    let readers = (0..READERS)
        .map(|_| connections::open_reader(path))
        .collect::<StoreResult<_>>()?;
    Ok((writer, readers))
}

/// A count or limit as SQLite's integer.
fn integer(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
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
        let inserted = self
            .writer
            .execute(
                "INSERT INTO tasks
                 (task_id, prompt, status, current_step, created_at, updated_at)
                 VALUES (?1, ?2, ?3, NULL, ?4, ?4)
                 ON CONFLICT (task_id) DO NOTHING",
                vec![
                    task_id.to_string().into(),
                    prompt.to_owned().into(),
                    TaskStatus::Received.as_str().to_owned().into(),
                    now.into(),
                ],
            )
            .await?;
        if inserted == 1 {
            return Ok(NewTaskOutcome::Created);
        }
        let id = task_id.to_string();
        let existing = self
            .read(move |connection, decoder| {
                fetch_optional(
                    connection,
                    "SELECT prompt FROM tasks WHERE task_id = ?1",
                    [id],
                    |row| decoder.column::<String>(row, "prompt"),
                )
            })
            .await?;
        stored::outcome_of_taken_id(task_id, prompt, existing)
    }

    async fn task(&self, task_id: TaskId) -> StoreResult<Option<TaskRecord>> {
        let id = task_id.to_string();
        self.read(move |connection, decoder| {
            fetch_optional(
                connection,
                concat!(
                    "SELECT ",
                    stored::task_columns!(),
                    "FROM tasks WHERE task_id = ?1"
                ),
                [id],
                |row| decoder.task(row),
            )
        })
        .await
    }

    async fn tasks(&self, limit: usize) -> StoreResult<Vec<TaskRecord>> {
        self.read(move |connection, decoder| {
            fetch_all(
                connection,
                concat!(
                    "SELECT ",
                    stored::task_columns!(),
                    "FROM tasks ORDER BY created_at DESC, task_id DESC LIMIT ?1"
                ),
                [integer(limit)],
                |row| decoder.task(row),
            )
        })
        .await
    }

    async fn set_task_status(
        &self,
        task_id: TaskId,
        status: TaskStatus,
        step: Option<StepId>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.writer
            .execute(
                "UPDATE tasks
                 SET status = ?1, current_step = COALESCE(?2, current_step), updated_at = ?3
                 WHERE task_id = ?4",
                vec![
                    status.as_str().to_owned().into(),
                    step.map(|s| s.to_string()).into(),
                    time_text(now).into(),
                    task_id.to_string().into(),
                ],
            )
            .await?;
        Ok(())
    }

    async fn reserve_attempt(&self, request: &StepRequest) -> StoreResult<bool> {
        let json = serde_json::to_string(request)
            .map_err(|e| StoreError::Database(format!("encoding step request: {e}")))?;
        let inserted = self
            .writer
            .execute(
                "INSERT INTO attempts
                 (task_id, step_id, attempt, stage_order, status, request, requested_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (task_id, step_id, attempt) DO NOTHING",
                vec![
                    request.task_id.to_string().into(),
                    request.step_id.to_string().into(),
                    i64::from(request.attempt.get()).into(),
                    stage_order(request.step_id).into(),
                    AttemptStatus::Requested.as_str().to_owned().into(),
                    json.into(),
                    time_text(request.requested_at).into(),
                ],
            )
            .await?;
        Ok(inserted == 1)
    }

    async fn transition_task(
        &self,
        task_id: TaskId,
        from: &[TaskStatus],
        to: TaskStatus,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        // One statement: the check and the change cannot be split by another write.
        let moved = self
            .writer
            .execute(
                "UPDATE tasks SET status = ?1, updated_at = ?2
                 WHERE task_id = ?3 AND status IN (SELECT value FROM json_each(?4))",
                vec![
                    to.as_str().to_owned().into(),
                    time_text(now).into(),
                    task_id.to_string().into(),
                    stored::statuses_json(from)?.into(),
                ],
            )
            .await?;
        Ok(moved == 1)
    }

    async fn attempt(
        &self,
        task_id: TaskId,
        step: StepId,
        attempt: Attempt,
    ) -> StoreResult<Option<AttemptRecord>> {
        let (task_id, step_id, attempt) = (
            task_id.to_string(),
            step.to_string(),
            i64::from(attempt.get()),
        );
        self.read(move |connection, decoder| {
            fetch_optional(
                connection,
                "SELECT request, status, error, model, finished_at, duration_ms, calls
                 FROM attempts WHERE task_id = ?1 AND step_id = ?2 AND attempt = ?3",
                params![task_id, step_id, attempt],
                |row| decoder.attempt(row),
            )
        })
        .await
    }

    async fn finish_attempt_with_outbox(
        &self,
        result: &StepResult,
        task_status: Option<TaskStatus>,
        now: DateTime<Utc>,
        outbox: &[OutboxMessage],
    ) -> StoreResult<bool> {
        let outbox = outbox.to_vec();
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
        let calls = stored::calls_json(&record.calls)?;
        let spend = SpendColumns::of(&record.calls);
        let recorded = self
            .writer
            .write(Box::new(move |connection| {
                let status = record.status.as_str();
                let updated = execute(
                    connection,
                    "UPDATE attempts
                     SET status = ?1, error = ?2, model = ?3, finished_at = ?4, duration_ms = ?5,
                         calls = ?6
                     WHERE task_id = ?7 AND step_id = ?8 AND attempt = ?9 AND status = ?10",
                    params![
                        status,
                        record.error,
                        record.model,
                        finished_at,
                        duration_ms,
                        calls,
                        task_id,
                        step_id,
                        attempt,
                        AttemptStatus::Requested.as_str()
                    ],
                )?;
                // Either the attempt was never reserved (record it from the result) or it is
                // already finished (the insert does nothing, and nothing changes).
                let recorded = updated == 1
                    || execute(
                        connection,
                        "INSERT INTO attempts
                             (task_id, step_id, attempt, stage_order, status, request,
                              error, model, requested_at, finished_at, duration_ms, calls)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                         ON CONFLICT (task_id, step_id, attempt) DO NOTHING",
                        params![
                            task_id,
                            step_id,
                            attempt,
                            order,
                            status,
                            json,
                            record.error,
                            record.model,
                            requested_at,
                            finished_at,
                            duration_ms,
                            calls
                        ],
                    )? == 1;
                // Only a newly recorded result counts: a redelivered one was counted already.
                if recorded && (task_status.is_some() || !spend.is_empty()) {
                    execute(
                        connection,
                        stored::RECORD_RESULT_ON_TASK,
                        params![
                            spend.prompt_tokens,
                            spend.completion_tokens,
                            spend.cost_usd,
                            spend.llm_calls,
                            spend.unpriced_calls,
                            task_status.map(TaskStatus::as_str),
                            step_id,
                            finished_at,
                            task_id
                        ],
                    )?;
                }
                if recorded {
                    execute(
                        connection,
                        "DELETE FROM outbox WHERE task_id = ?1",
                        params![task_id],
                    )?;
                    for (seq, message) in outbox.iter().enumerate() {
                        execute(
                            connection,
                            "INSERT INTO outbox
                             (task_id, step_id, attempt, seq, topic, message_key, payload)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                            params![
                                task_id,
                                step_id,
                                attempt,
                                integer(seq),
                                message.topic,
                                message.key,
                                message.payload
                            ],
                        )?;
                    }
                }
                Ok(u64::from(recorded))
            }))
            .await?;
        Ok(recorded == 1)
    }

    async fn outbox(
        &self,
        task_id: TaskId,
        step: StepId,
        attempt: Attempt,
    ) -> StoreResult<Vec<OutboxMessage>> {
        let (task_id, step_id, attempt) = (
            task_id.to_string(),
            step.to_string(),
            i64::from(attempt.get()),
        );
        self.read(move |connection, decoder| {
            fetch_all(
                connection,
                "SELECT topic, message_key, payload FROM outbox
                 WHERE task_id = ?1 AND step_id = ?2 AND attempt = ?3 ORDER BY seq",
                params![task_id, step_id, attempt],
                |row| {
                    Ok(OutboxMessage {
                        topic: decoder.column(row, "topic")?,
                        key: decoder.column(row, "message_key")?,
                        payload: decoder.column(row, "payload")?,
                    })
                },
            )
        })
        .await
    }

    async fn attempts(&self, task_id: TaskId) -> StoreResult<Vec<AttemptRecord>> {
        let task_id = task_id.to_string();
        self.read(move |connection, decoder| {
            fetch_all(
                connection,
                "SELECT request, status, error, model, finished_at, duration_ms, calls
                 FROM attempts WHERE task_id = ?1
                 ORDER BY stage_order, step_id, attempt",
                [task_id],
                |row| decoder.attempt(row),
            )
        })
        .await
    }

    async fn last_attempt(&self, task_id: TaskId, step: StepId) -> StoreResult<Option<Attempt>> {
        let (task_id, step_id) = (task_id.to_string(), step.to_string());
        self.read(move |connection, decoder| {
            let last = fetch_optional(
                connection,
                "SELECT MAX(attempt) AS last FROM attempts WHERE task_id = ?1 AND step_id = ?2",
                [task_id, step_id],
                |row| decoder.column::<Option<i64>>(row, "last"),
            )?;
            last.flatten()
                .map(|n| decoder.attempt_number(n))
                .transpose()
        })
        .await
    }

    async fn unfinished_attempts(&self) -> StoreResult<Vec<AttemptRecord>> {
        self.read(move |connection, decoder| {
            fetch_all(
                connection,
                "SELECT request, status, error, model, finished_at, duration_ms, calls
                 FROM attempts WHERE status = 'requested'
                 ORDER BY requested_at, task_id, stage_order, step_id, attempt",
                [],
                |row| decoder.attempt(row),
            )
        })
        .await
    }

    async fn consumer_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> StoreResult<Option<u64>> {
        let (group, topic) = (group.to_owned(), topic.to_owned());
        self.read(move |connection, decoder| {
            fetch_optional(
                connection,
                "SELECT next_offset FROM consumer_offsets
                 WHERE group_name = ?1 AND topic = ?2 AND partition_id = ?3",
                params![group, topic, i64::from(partition)],
                |row| {
                    let offset: i64 = decoder.column(row, "next_offset")?;
                    stored::consumer_offset(offset).map_err(|reason| decoder.corrupt(reason))
                },
            )
        })
        .await
    }

    async fn consumer_offsets(&self) -> StoreResult<Vec<(String, String, u32, u64)>> {
        self.read(move |connection, decoder| {
            fetch_all(connection, stored::CONSUMER_OFFSETS, [], |row| {
                stored::consumer_position(
                    decoder.column(row, "group_name")?,
                    decoder.column(row, "topic")?,
                    decoder.column(row, "partition_id")?,
                    decoder.column(row, "next_offset")?,
                )
                .map_err(StoreError::Database)
            })
        })
        .await
    }

    async fn commit_consumer_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        next_offset: u64,
    ) -> StoreResult<()> {
        let offset = stored::offset_value(next_offset)?;
        self.writer
            .execute(
                "INSERT INTO consumer_offsets
                 (group_name, topic, partition_id, next_offset, committed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (group_name, topic, partition_id)
                 DO UPDATE SET next_offset = excluded.next_offset,
                           committed_at = excluded.committed_at",
                vec![
                    group.to_owned().into(),
                    topic.to_owned().into(),
                    i64::from(partition).into(),
                    offset.into(),
                    time_text(Utc::now()).into(),
                ],
            )
            .await?;
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
        let recorded = self
            .writer
            .execute(
                "INSERT INTO consumer_offsets
                 (group_name, topic, partition_id, next_offset, committed_at)
                 SELECT ?1, ?2, ?3, ?4, ?5
                 WHERE EXISTS (SELECT 1 FROM leases
                               WHERE resource = ?6 AND holder = ?7 AND epoch = ?8)
                 ON CONFLICT (group_name, topic, partition_id)
                 DO UPDATE SET next_offset = excluded.next_offset,
                           committed_at = excluded.committed_at",
                vec![
                    group.to_owned().into(),
                    topic.to_owned().into(),
                    i64::from(partition).into(),
                    offset.into(),
                    time_text(Utc::now()).into(),
                    lease.resource.clone().into(),
                    lease.holder.clone().into(),
                    stored::epoch_value(lease.epoch).into(),
                ],
            )
            .await?;
        Ok(recorded == 1)
    }

    async fn acquire_lease(
        &self,
        resource: &str,
        holder: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<Option<Lease>> {
        let (resource_key, holder_key) = (resource.to_owned(), holder.to_owned());
        let (now_text, expires_text) = (time_text(now), time_text(expires_at));
        let epoch = self
            .writer
            .write(Box::new(move |connection| {
                let mut statement = connection
                    .prepare_cached(stored::ACQUIRE_LEASE)
                    .map_err(sqlite_writer::database)?;
                let epoch: Option<i64> = statement
                    .query_row(
                        params![resource_key, holder_key, expires_text, now_text],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(sqlite_writer::database)?;
                // Epochs start at 1: 0 says "not granted".
                Ok(epoch.and_then(|e| u64::try_from(e).ok()).unwrap_or(0))
            }))
            .await?;
        Ok((epoch > 0).then(|| Lease {
            resource: resource.to_owned(),
            holder: holder.to_owned(),
            epoch,
            expires_at,
        }))
    }

    async fn release_lease(&self, lease: &Lease, now: DateTime<Utc>) -> StoreResult<()> {
        self.writer
            .execute(
                "UPDATE leases SET expires_at = ?1
                 WHERE resource = ?2 AND holder = ?3 AND epoch = ?4",
                vec![
                    time_text(now).into(),
                    lease.resource.clone().into(),
                    lease.holder.clone().into(),
                    stored::epoch_value(lease.epoch).into(),
                ],
            )
            .await?;
        Ok(())
    }

    async fn leases(&self, prefix: &str, now: DateTime<Utc>) -> StoreResult<Vec<Lease>> {
        let (prefix, now) = (prefix.to_owned(), time_text(now));
        self.read(move |connection, decoder| {
            fetch_all(
                connection,
                "SELECT resource, holder, epoch, expires_at FROM leases
                 WHERE substr(resource, 1, length(?1)) = ?1 AND expires_at > ?2
                 ORDER BY resource",
                params![prefix, now],
                |row| decoder.lease(row),
            )
        })
        .await
    }

    async fn prunable_tasks(
        &self,
        cutoff: DateTime<Utc>,
        pruning: Pruning,
        limit: usize,
    ) -> StoreResult<Vec<TaskId>> {
        let sql = stored::pruning_sql(pruning).prunable;
        let cutoff = time_text(cutoff);
        let ids = self
            .read(move |connection, decoder| {
                fetch_all(connection, sql, params![cutoff, integer(limit)], |row| {
                    decoder.column::<String>(row, "task_id")
                })
            })
            .await?;
        ids.iter()
            .map(|id| {
                id.parse()
                    .map_err(|e| StoreError::Database(format!("tasks.task_id {id:?}: {e}")))
            })
            .collect()
    }

    async fn prune_task(
        &self,
        task_id: TaskId,
        cutoff: DateTime<Utc>,
        pruning: Pruning,
    ) -> StoreResult<bool> {
        let (id, cutoff) = (task_id.to_string(), time_text(cutoff));
        let sql = stored::pruning_sql(pruning);
        let pruned = self
            .writer
            .write(Box::new(move |connection| {
                // The writer's thread is the only one that writes: nothing changes between
                // the check and the deletes.
                let prunable: i64 = connection
                    .prepare_cached(sql.still_prunable)
                    .and_then(|mut statement| {
                        statement.query_row(params![cutoff, id], |row| row.get(0))
                    })
                    .map_err(sqlite_writer::database)?;
                if prunable == 0 {
                    return Ok(0);
                }
                for statement in sql.deletes {
                    execute(connection, statement, params![id])?;
                }
                Ok(1)
            }))
            .await?;
        Ok(pruned == 1)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;

    use tokio::task::JoinSet;

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

    /// 200 writes from as many tasks queue behind a transaction held open, then commit
    /// together; readers running all along are answered meanwhile and see committed rows only.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_commit_and_readers_see_only_committed_rows() -> TestResult {
        const WRITERS: usize = 200;
        let dir = tempfile::tempdir()?;
        let store = SqliteStateStore::open(dir.path().join("state.sqlite")).await?;
        let now = Utc::now();

        // A write that inserts a task and then waits, inside the writer's transaction.
        let held = TaskId::new();
        let (entered, inside) = oneshot::channel();
        let (release, gate) = mpsc::channel::<()>();
        let holding = {
            let (store, id, at) = (store.clone(), held.to_string(), time_text(now));
            tokio::spawn(async move {
                let write: sqlite_writer::Write = Box::new(move |connection| {
                    let inserted = execute(
                        connection,
                        "INSERT INTO tasks
                         (task_id, prompt, status, current_step, created_at, updated_at)
                         VALUES (?1, 'held', 'received', NULL, ?2, ?2)",
                        params![id, at],
                    )?;
                    let _ = entered.send(());
                    // Until released, or until the test ends and drops `release`.
                    let _ = gate.recv();
                    Ok(inserted)
                });
                store.writer.write(write).await
            })
        };
        inside.await?;
        assert!(
            store.task(held).await?.is_none(),
            "a row of an open transaction must not be visible"
        );

        let writing = Arc::new(AtomicBool::new(true));
        let mut readers = JoinSet::new();
        for _ in 0..2 {
            let (store, writing) = (store.clone(), Arc::clone(&writing));
            readers.spawn(async move {
                let mut seen = 0;
                while writing.load(Ordering::Acquire) {
                    let visible = store.tasks(WRITERS * 2).await?.len();
                    assert!(visible >= seen, "committed rows cannot disappear");
                    seen = visible;
                }
                Ok::<_, StoreError>(seen)
            });
        }
        let mut writers = JoinSet::new();
        for n in 0..WRITERS {
            let store = store.clone();
            writers.spawn(async move {
                let id = TaskId::new();
                let prompt = format!("task {n}");
                store.insert_task(id, &prompt, now).await?;
                // Acknowledged means committed: every read from now on sees it.
                let task = store
                    .task(id)
                    .await?
                    .ok_or("an acknowledged task must be readable")?;
                assert_eq!(task.prompt, prompt);
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            });
        }
        assert!(
            store.tasks(WRITERS * 2).await?.is_empty(),
            "nothing is committed while the writer holds its transaction"
        );

        release.send(())?;
        assert_eq!(holding.await??, 1);
        while let Some(written) = writers.join_next().await {
            written??;
        }
        writing.store(false, Ordering::Release);
        while let Some(read) = readers.join_next().await {
            read??;
        }
        assert_eq!(store.tasks(WRITERS * 2).await?.len(), WRITERS + 1);
        assert_eq!(
            store.task(held).await?.map(|t| t.prompt).as_deref(),
            Some("held")
        );
        Ok(())
    }
}
