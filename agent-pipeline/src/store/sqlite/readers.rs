//! The reader threads of a file database: reads do not queue behind the writer's commits.
//!
//! A few threads of our own (`sqlite-reader-N`), each owning a connection to the same file,
//! take jobs from one shared queue. In WAL mode they read the last committed state beside the
//! writer and never see a transaction in progress. A thread that wakes drains what is queued
//! (up to [`MAX_DRAIN`]) before it blocks again, so that a burst of reads costs few wake-ups.

use std::sync::{Arc, Mutex, mpsc};
use std::thread;

use rusqlite::Connection;

use crate::store::sqlite_writer::Read;
use crate::store::{StoreError, StoreResult};

/// The most reads one thread takes from the queue at once; the rest stay for the others.
const MAX_DRAIN: usize = 64;

/// The handle of the reader threads; clones share them. The threads end when the last handle
/// is dropped, after finishing the reads already queued.
#[derive(Debug, Clone)]
pub(super) struct ReaderPool {
    jobs: mpsc::Sender<Read>,
}

impl ReaderPool {
    /// Starts one thread per connection; the threads own them from now on.
    pub(super) fn start(connections: Vec<Connection>) -> StoreResult<Self> {
        let (jobs, queue) = mpsc::channel();
        let queue = Arc::new(Mutex::new(queue));
        for (n, connection) in connections.into_iter().enumerate() {
            let queue = Arc::clone(&queue);
            thread::Builder::new()
                .name(format!("sqlite-reader-{n}"))
                .spawn(move || serve(&connection, &queue))
                .map_err(|e| StoreError::Database(format!("starting an SQLite reader: {e}")))?;
        }
        Ok(Self { jobs })
    }

    /// Queues `read` for the next free reader.
    pub(super) fn submit(&self, read: Read) -> StoreResult<()> {
        self.jobs.send(read).map_err(|_| stopped())
    }
}

/// The error when no reader thread is left to answer.
pub(super) fn stopped() -> StoreError {
    StoreError::Database("the SQLite readers have stopped".to_owned())
}

/// A reader thread: runs reads until every handle is gone.
fn serve(connection: &Connection, queue: &Mutex<mpsc::Receiver<Read>>) {
    while let Some(reads) = next_reads(queue) {
        for read in reads {
            read(connection);
        }
    }
}

/// Waits for the next read and takes those queued behind it; `None` once every handle is gone
/// (or another reader panicked while holding the queue, which leaves it unusable).
fn next_reads(queue: &Mutex<mpsc::Receiver<Read>>) -> Option<Vec<Read>> {
    // The lock is held while waiting: the other readers wait for it instead of for the queue,
    // and the next one takes over as soon as this one has its reads.
    let queue = queue.lock().ok()?;
    let first = queue.recv().ok()?;
    let mut reads = vec![first];
    reads.extend(queue.try_iter().take(MAX_DRAIN - 1));
    Some(reads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    #[tokio::test]
    async fn reads_queued_before_the_pool_is_dropped_are_all_answered()
    -> Result<(), Box<dyn std::error::Error>> {
        let pool = ReaderPool::start(vec![
            Connection::open_in_memory()?,
            Connection::open_in_memory()?,
        ])?;
        let mut answers = Vec::new();
        for n in 0..100_i64 {
            let (done, answer) = oneshot::channel();
            pool.submit(Box::new(move |connection| {
                let _ = done
                    .send(connection.query_row("SELECT ?1 * 2", [n], |row| row.get::<_, i64>(0)));
            }))?;
            answers.push(answer);
        }
        drop(pool);
        for (n, answer) in (0..100_i64).zip(answers) {
            assert_eq!(answer.await??, n * 2, "read {n}");
        }
        Ok(())
    }
}
