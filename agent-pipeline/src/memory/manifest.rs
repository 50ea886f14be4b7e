//! The manifest of an index: which commit it is of, the hash of each file indexed, and each
//! chunk's place and content hash (for updates and for the embeddings cache).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::{MemoryError, Result};

/// The layout of the index directory; an index of another layout is rebuilt.
pub(crate) const FORMAT: u32 = 1;

/// A chunk's entry: where it is, and the hash of its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChunkEntry {
    pub(crate) id: u64,
    pub(crate) path: String,
    pub(crate) start_line: u32,
    pub(crate) end_line: u32,
    pub(crate) hash: u64,
}

/// What `manifest.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub(crate) format: u32,
    pub(crate) commit: String,
    /// The hash of each indexed file's content, by path.
    pub(crate) files: BTreeMap<String, u64>,
    pub(crate) chunks: Vec<ChunkEntry>,
    /// The id the next chunk gets.
    pub(crate) next_id: u64,
}

impl Manifest {
    pub(crate) fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| MemoryError::io(path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| MemoryError::Manifest {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    pub(crate) fn write(&self, path: &Path) -> Result<()> {
        let bytes = serde_json::to_vec(self).map_err(|e| MemoryError::Manifest {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        std::fs::write(path, bytes).map_err(|e| MemoryError::io(path, e))
    }
}

/// A stable 64-bit hash of `bytes` (FNV-1a): the same on every platform and Rust version, so
/// that hashes written by one process can be compared by another.
pub(crate) fn content_hash(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_content_hash_is_fnv1a() {
        assert_eq!(content_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(content_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
