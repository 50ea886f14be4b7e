//! Group commit for the SQLite store: one connection writes, and the writes that wait while
//! it is busy run together in the next transaction, each in a savepoint of its own, sharing
//! one commit (one fsync of the log) instead of one each.
//!
//! A write's caller is answered only after the transaction holding it has committed, so
//! nothing is acknowledged before it is durable. A write that fails rolls back to its
//! savepoint and gets its own error; the others of its batch still commit.

use std::future::Future;
use std::pin::Pin;

use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteQueryResult};
use sqlx::{Connection, Sqlite, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use super::{StoreError, StoreResult};

/// What a write runs on the writer's connection; its result is usually the rows affected.
pub(crate) type WriteFuture<'c> = Pin<Box<dyn Future<Output = StoreResult<u64>> + Send + 'c>>;

/// One write: statements to run inside the batch's transaction.
pub(crate) type Write = Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> WriteFuture<'c> + Send>;

/// The most writes one transaction holds.
const MAX_BATCH: usize = 512;

/// How many writes may wait for the writer.
const QUEUE: usize = 4096;

struct Job {
    write: Write,
    done: oneshot::Sender<StoreResult<u64>>,
}

/// The handle of the writer task; clones share it. The task ends with the last handle.
#[derive(Debug, Clone)]
pub(crate) struct GroupWriter {
    jobs: mpsc::Sender<Job>,
}

impl GroupWriter {
    /// Starts the writer on `pool` (which should hold one connection: the one that writes).
    pub(crate) fn start(pool: SqlitePool) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, queue));
        Self { jobs }
    }

    /// Runs one statement in the next transaction; returns the rows it affected once that
    /// transaction has committed.
    pub(crate) async fn execute(
        &self,
        statement: Query<'static, Sqlite, SqliteArguments>,
    ) -> StoreResult<u64> {
        self.write(Box::new(move |connection| {
            Box::pin(async move { rows(statement.execute(connection).await) })
        }))
        .await
    }

    /// Runs `write` in the next transaction; returns once that transaction has committed.
    pub(crate) async fn write(&self, write: Write) -> StoreResult<u64> {
        let (done, answer) = oneshot::channel();
        self.jobs
            .send(Job { write, done })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The rows a statement affected, or its error as a store error.
pub(crate) fn rows(outcome: Result<SqliteQueryResult, sqlx::Error>) -> StoreResult<u64> {
    outcome
        .map(|done| done.rows_affected())
        .map_err(|e| StoreError::Database(e.to_string()))
}

fn stopped() -> StoreError {
    StoreError::Database("the SQLite writer has stopped".to_owned())
}

async fn run(pool: SqlitePool, mut queue: mpsc::Receiver<Job>) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (writes, replies): (Vec<Write>, Vec<oneshot::Sender<StoreResult<u64>>>) =
            batch.into_iter().map(|job| (job.write, job.done)).unzip();
        match commit_batch(&pool, writes).await {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(error) => {
                tracing::warn!(%error, writes = replies.len(), "an SQLite batch failed to commit");
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Database(error.to_string())));
                }
            }
        }
    }
}

/// Runs `writes` in one `BEGIN IMMEDIATE` transaction, each in a savepoint.
async fn commit_batch(
    pool: &SqlitePool,
    writes: Vec<Write>,
) -> Result<Vec<StoreResult<u64>>, sqlx::Error> {
    let mut connection = pool.acquire().await?;
    let mut transaction = connection.begin_with("BEGIN IMMEDIATE").await?;
    let mut results = Vec::with_capacity(writes.len());
    for write in writes {
        let mut savepoint = transaction.begin().await?;
        match write(&mut savepoint).await {
            Ok(value) => {
                savepoint.commit().await?;
                results.push(Ok(value));
            }
            Err(error) => {
                savepoint.rollback().await?;
                results.push(Err(error));
            }
        }
    }
    transaction.commit().await?;
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

    fn insert(n: i64) -> Write {
        Box::new(move |connection| {
            Box::pin(async move {
                rows(
                    sqlx::query("INSERT INTO t (n) VALUES (?)")
                        .bind(n)
                        .execute(connection)
                        .await,
                )
            })
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_write_rolls_back_alone() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("t.sqlite"))
            .create_if_missing(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        sqlx::query("CREATE TABLE t (n INTEGER PRIMARY KEY)")
            .execute(&pool)
            .await?;
        let writer = GroupWriter::start(pool.clone());
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
        let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&pool)
            .await?;
        assert_eq!(stored, 180);
        Ok(())
    }
}
