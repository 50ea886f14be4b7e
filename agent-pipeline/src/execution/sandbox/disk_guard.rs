//! How much a run has written to the disk of its workdir, so that a run that fills it is
//! stopped before the host's disk is full.
//!
//! The free space of the workdir's filesystem is read often (one `statvfs` call); the
//! workdir is walked only when the free space fell by more than the run may still write,
//! since other programs write to the same disk too.

use std::io;
use std::path::{Path, PathBuf};

/// Follows one run's writes against its limit.
#[derive(Debug)]
pub(super) struct DiskGuard {
    workdir: PathBuf,
    limit: u64,
    /// The size of the workdir when the run started.
    size_at_start: u64,
    /// The free space under which the workdir is walked again.
    walk_below: u64,
}

impl DiskGuard {
    /// Starts following writes to `workdir` (canonical), allowing `limit` bytes more than it
    /// holds now. Blocking: it walks the workdir once.
    pub(super) fn start(workdir: &Path, limit: u64) -> io::Result<Self> {
        let size_at_start = tree_size(workdir)?;
        let free = free_bytes(workdir)?;
        Ok(Self {
            workdir: workdir.to_path_buf(),
            limit,
            size_at_start,
            walk_below: free.saturating_sub(limit),
        })
    }

    /// The bytes the run added to the workdir, once they are more than the limit. Blocking:
    /// it may walk the workdir.
    pub(super) fn overrun(&mut self) -> io::Result<Option<u64>> {
        let free = free_bytes(&self.workdir)?;
        if free > self.walk_below {
            return Ok(None);
        }
        let written = tree_size(&self.workdir)?.saturating_sub(self.size_at_start);
        if written > self.limit {
            return Ok(Some(written));
        }
        // Others wrote the rest: walk again once the disk lost what the run may still write.
        self.walk_below = free.saturating_sub(self.limit - written);
        Ok(None)
    }

    /// The limit, in bytes.
    pub(super) fn limit(&self) -> u64 {
        self.limit
    }
}

/// The free space of the filesystem of `path`, for unprivileged users.
fn free_bytes(path: &Path) -> io::Result<u64> {
    let stats = rustix::fs::statvfs(path)?;
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// The disk space used by the tree at `root`, without following symbolic links.
fn tree_size(root: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0_u64;
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            // Removed meanwhile, or made unreadable by the run: it counts as nothing.
            Err(error) if dir != root => {
                tracing::debug!(dir = %dir.display(), %error, "not measured");
                continue;
            }
            Err(error) => return Err(error),
        };
        for entry in entries.flatten() {
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            total = total.saturating_add(metadata.blocks().saturating_mul(512));
            if metadata.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_past_the_limit_are_found_and_others_are_not() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let workdir = dir.path().join("work");
        std::fs::create_dir(&workdir).unwrap_or_else(|e| panic!("mkdir: {e}"));
        std::fs::write(workdir.join("before"), vec![1_u8; 256 * 1024])
            .unwrap_or_else(|e| panic!("write: {e}"));

        let mut guard =
            DiskGuard::start(&workdir, 1024 * 1024).unwrap_or_else(|e| panic!("start: {e}"));
        assert!(guard.size_at_start >= 256 * 1024);
        // Force a walk at every check, as if the disk had lost the limit meanwhile.
        guard.walk_below = u64::MAX;
        std::fs::write(dir.path().join("beside"), vec![1_u8; 2 * 1024 * 1024])
            .unwrap_or_else(|e| panic!("write: {e}"));
        assert_eq!(guard.overrun().unwrap_or_else(|e| panic!("{e}")), None);

        guard.walk_below = u64::MAX;
        std::fs::create_dir(workdir.join("sub")).unwrap_or_else(|e| panic!("mkdir: {e}"));
        std::fs::write(workdir.join("sub/fill"), vec![1_u8; 2 * 1024 * 1024])
            .unwrap_or_else(|e| panic!("write: {e}"));
        let written = guard.overrun().unwrap_or_else(|e| panic!("{e}"));
        assert!(
            written.is_some_and(|bytes| bytes >= 2 * 1024 * 1024),
            "{written:?}"
        );
    }
}
