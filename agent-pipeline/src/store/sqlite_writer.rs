//! Group commit for the SQLite store: one thread of our own, `sqlite-writer`, owns the one
//! connection that writes. It takes the first write that arrives, drains up to
//! [`MAX_BATCH`] more that queued meanwhile, and runs them all in ONE `BEGIN IMMEDIATE`
//! transaction, each inside a `SAVEPOINT` of its own, sharing one commit (one fsync of the log)
//! and one wake-up of the thread instead of one each.
//!
//! The statements run synchronously on that thread: a batch is one hand-off from the async
//! callers to the thread and one answer back to each, however many statements and savepoints
//! it holds. A write's caller is answered only after the transaction holding it has committed,
//! so nothing is acknowledged before it is durable. A write that fails rolls back to its
//! savepoint and gets its own error; the others of its batch still commit. When the commit
//! itself fails, every write of the batch gets that error.
//!
//! A database in memory lives in one connection, so its reads come here too
//! ([`GroupWriter::read`]) and run between batches, outside any transaction.

use std::sync::mpsc;

use rusqlite::types::Value;
use rusqlite::{Connection, Params};
use tokio::sync::oneshot;

use super::batch_thread;
use super::{StoreError, StoreResult};

/// One write: statements to run inside the batch's transaction, on the writer's connection.
/// Its result is usually the number of rows it changed.
pub(crate) type Write = Box<dyn FnOnce(&Connection) -> StoreResult<u64> + Send>;

/// One read: a query that answers its caller itself (over a channel it captured).
pub(crate) type Read = Box<dyn FnOnce(&Connection) + Send>;

/// The most writes one transaction holds besides the first.
const MAX_BATCH: usize = 512;

/// What the writer thread is asked to do.
enum Job {
    /// Run `write` in the next transaction and answer on `done` once it has committed.
    Write {
        write: Write,
        done: oneshot::Sender<StoreResult<u64>>,
    },
    /// Run a read outside any transaction (used by databases in memory).
    Read(Read),
}

/// The handle of the writer thread; clones share it. The thread ends when the last handle
/// is dropped, after finishing the jobs already queued.
#[derive(Debug, Clone)]
pub(crate) struct GroupWriter {
    jobs: mpsc::Sender<Job>,
}

impl GroupWriter {
    /// Starts the `sqlite-writer` thread, which owns `connection` from now on.
    pub(crate) fn start(connection: Connection) -> StoreResult<Self> {
        let jobs = batch_thread::spawn("sqlite-writer", MAX_BATCH + 1, move |batch| {
            run_batch(&connection, batch);
        })
        .map_err(|e| StoreError::Database(format!("starting the SQLite writer: {e}")))?;
        Ok(Self { jobs })
    }

    /// Runs `write` in the next transaction; returns its result once that transaction has
    /// committed.
    pub(crate) async fn write(&self, write: Write) -> StoreResult<u64> {
        batch_thread::ask(&self.jobs, "SQLite writer", |done| Job::Write {
            write,
            done,
        })
        .await
    }

    /// Runs one statement with `params` in the next transaction; returns the rows it changed
    /// once that transaction has committed.
    pub(crate) async fn execute(&self, sql: &'static str, params: Vec<Value>) -> StoreResult<u64> {
        self.write(Box::new(move |connection| {
            execute(connection, sql, rusqlite::params_from_iter(params))
        }))
        .await
    }

    /// Queues `read` to run on the writer's connection between two batches.
    pub(crate) fn read(&self, read: Read) -> StoreResult<()> {
        self.jobs.send(Job::Read(read)).map_err(|_| stopped())
    }
}

/// Runs one statement (prepared once per connection and cached) and returns the number of
/// rows it changed.
pub(crate) fn execute(connection: &Connection, sql: &str, params: impl Params) -> StoreResult<u64> {
    let changed = connection
        .prepare_cached(sql)
        .and_then(|mut statement| statement.execute(params))
        .map_err(database)?;
    Ok(u64::try_from(changed).unwrap_or(u64::MAX))
}

/// An SQLite error as a store error.
pub(crate) fn database(error: rusqlite::Error) -> StoreError {
    StoreError::Database(error.to_string())
}

/// The error when the writer thread is gone.
pub(crate) fn stopped() -> StoreError {
    StoreError::Database("the SQLite writer has stopped".to_owned())
}

/// One wake-up of the writer thread: the writes in one transaction, then the reads.
fn run_batch(connection: &Connection, batch: Vec<Job>) {
    let mut writes = Vec::new();
    let mut reads = Vec::new();
    for job in batch {
        match job {
            Job::Write { write, done } => writes.push((write, done)),
            Job::Read(read) => reads.push(read),
        }
    }
    if !writes.is_empty() {
        commit_and_answer(connection, writes);
    }
    for read in reads {
        read(connection);
    }
}

/// Commits `writes` together, then answers each of them.
fn commit_and_answer(
    connection: &Connection,
    writes: Vec<(Write, oneshot::Sender<StoreResult<u64>>)>,
) {
    let (writes, replies): (Vec<Write>, Vec<_>) = writes.into_iter().unzip();
    match commit_batch(connection, writes) {
        Ok(results) => {
            for (reply, result) in replies.into_iter().zip(results) {
                // A caller that stopped waiting no longer needs its answer.
                let _ = reply.send(result);
            }
        }
        Err(error) => {
            // A failed statement may leave the transaction open (a busy COMMIT does): end it,
            // so that the next batch starts afresh. Its own failure changes nothing more.
            if !connection.is_autocommit() {
                let _ = connection.execute_batch("ROLLBACK");
            }
            tracing::warn!(%error, writes = replies.len(), "an SQLite batch failed to commit");
            let message = error.to_string();
            for reply in replies {
                let _ = reply.send(Err(StoreError::Database(message.clone())));
            }
        }
    }
}

/// Runs `writes` in one `BEGIN IMMEDIATE` transaction, each in a savepoint; the outer error
/// is one that ends the whole batch.
fn commit_batch(
    connection: &Connection,
    writes: Vec<Write>,
) -> rusqlite::Result<Vec<StoreResult<u64>>> {
    control(connection, "BEGIN IMMEDIATE")?;
    let mut results = Vec::with_capacity(writes.len());
    for write in writes {
        control(connection, "SAVEPOINT write")?;
        let result = write(connection);
        if result.is_err() {
            control(connection, "ROLLBACK TO write")?;
        }
        control(connection, "RELEASE write")?;
        results.push(result);
    }
    control(connection, "COMMIT")?;
    Ok(results)
}

/// Runs a transaction control statement, prepared once.
fn control(connection: &Connection, sql: &str) -> rusqlite::Result<()> {
    connection.prepare_cached(sql)?.execute([])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(n: i64) -> Write {
        Box::new(move |connection| execute(connection, "INSERT INTO t (n) VALUES (?1)", [n]))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_write_rolls_back_alone() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("t.sqlite");
        let connection = Connection::open(&path)?;
        connection
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (n INTEGER PRIMARY KEY)")?;
        let writer = GroupWriter::start(connection)?;
        let mut writes = tokio::task::JoinSet::new();
        for n in 0..200 {
            let writer = writer.clone();
            // Every tenth write repeats a key: it fails on the primary key, alone.
            let key = if n % 10 == 9 { n - 1 } else { n };
            writes.spawn(async move { (n, writer.write(insert(key)).await) });
        }
        let mut failed = Vec::new();
        while let Some(joined) = writes.join_next().await {
            let (n, outcome) = joined?;
            match outcome {
                Ok(rows) => assert_eq!(rows, 1),
                Err(_) => failed.push(n),
            }
        }
        // Of each pair (8, 9), (18, 19) … the first to commit wins, the other fails.
        assert_eq!(failed.len(), 20, "{failed:?}");
        let stored: i64 =
            Connection::open(&path)?.query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0))?;
        assert_eq!(stored, 180);
        Ok(())
    }

    #[tokio::test]
    async fn a_write_that_fails_after_changing_rows_leaves_nothing_behind()
    -> Result<(), Box<dyn std::error::Error>> {
        let connection = Connection::open_in_memory()?;
        connection.execute_batch("CREATE TABLE t (n INTEGER PRIMARY KEY)")?;
        let writer = GroupWriter::start(connection)?;
        let half_done: Write = Box::new(|connection| {
            execute(connection, "INSERT INTO t (n) VALUES (1)", [])?;
            Err(StoreError::Database("second statement failed".to_owned()))
        });
        let (failed, kept) = tokio::join!(writer.write(half_done), writer.write(insert(2)));
        assert!(failed.is_err(), "the failing write must get its error");
        assert_eq!(kept?, 1);

        let (done, answer) = oneshot::channel();
        writer.read(Box::new(move |connection| {
            let _ = done.send(
                connection
                    .prepare("SELECT n FROM t ORDER BY n")
                    .and_then(|mut s| s.query_map([], |row| row.get::<_, i64>(0))?.collect()),
            );
        }))?;
        let stored: Vec<i64> = answer.await??;
        assert_eq!(
            stored,
            vec![2],
            "the failed write's first insert must be rolled back"
        );
        Ok(())
    }
}
