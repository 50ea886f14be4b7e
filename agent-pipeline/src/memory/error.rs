//! What can go wrong in the code memory.

use std::path::{Path, PathBuf};

/// An error of the code memory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MemoryError {
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The lexical index failed.
    #[error("lexical index: {0}")]
    Index(String),
    /// The index directory holds an index of another commit.
    #[error("the index in {} is of commit {found}, not {expected}", dir.display())]
    CommitMismatch {
        /// The index directory.
        dir: PathBuf,
        /// The commit asked for.
        expected: String,
        /// The commit the index was built from.
        found: String,
    },
    /// The manifest of an index could not be read or written.
    #[error("index manifest {}: {reason}", path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A blocking task of the memory was cancelled or panicked.
    #[error("an indexing task did not finish: {0}")]
    Task(String),
}

impl MemoryError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl From<tantivy::TantivyError> for MemoryError {
    fn from(error: tantivy::TantivyError) -> Self {
        Self::Index(error.to_string())
    }
}

/// The result of a code memory operation.
pub type Result<T, E = MemoryError> = std::result::Result<T, E>;
