//! Where the pipeline keeps things: a task's documents behind the [`ArtifactStore`] trait
//! (files under `DATA_DIR` by default), the report mirror as files under `DATA_DIR`, and the
//! state of tasks and attempts behind the [`StateStore`] trait.

mod artifacts;
mod batch_thread;
mod copy;
pub(crate) mod fs_util;
mod journal;
mod memory_state;
#[cfg(feature = "postgres")]
mod postgres;
mod reports;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(feature = "sqlite")]
mod sqlite_writer;
mod state;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod stored;
mod temp_files;

#[cfg(feature = "postgres")]
pub use artifacts::PostgresArtifactStore;
pub use artifacts::{
    Artifact, ArtifactStore, FileArtifactStore, TASK_DOCUMENT, TaskFile, attempt_document,
    canonical_document,
};
pub use copy::{Copied, copy_stores};
pub use memory_state::MemoryStateStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStateStore;
pub use reports::ReportLog;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStateStore;
pub use state::{
    AttemptRecord, AttemptStatus, Lease, NewTaskOutcome, OutboxMessage, Pruning, StateStore,
    TaskRecord, TaskStatus,
};
pub(crate) use temp_files::sweep as sweep_temp_files;

use std::path::PathBuf;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Reading or writing a file failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A path would leave `DATA_DIR`.
    #[error("refused to use {path}: it is outside the data directory {root}")]
    OutsideDataDir {
        /// The offending path.
        path: PathBuf,
        /// The data directory.
        root: PathBuf,
    },
    /// A stored file or database row is not what it should be.
    #[error("{path} is corrupt: {reason}")]
    Corrupt {
        /// The file, or the database (`postgres://host:port/database`).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The database failed.
    #[error("state database: {0}")]
    Database(String),
    /// A document name that is not a plain `*.json` file name.
    #[error("{0:?} is not a document name: a plain file name ending in .json is expected")]
    InvalidName(String),
}

/// The result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;
