//! The temporary files of atomic writes that their process left behind, swept at start.
//!
//! [`write_replacing`](super::fs_util::write_replacing) writes `.{name}.{pid}-{n}.tmp` next to
//! the file and renames it over the name. A process killed between the two leaves the
//! temporary file for good. Several processes (planner, workers, orchestrators) write into
//! one `DATA_DIR`, possibly from other containers or, over NFS, other machines, so a
//! temporary file is removed only when it cannot belong to a write under way; see
//! [`sweep`].

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::ids::TaskId;

/// A temporary file this old is removed whatever its process: a write takes milliseconds,
/// so none is under way an hour after it began, even if its process id now names another
/// process (ids are reused) or a process this one cannot see (another pid namespace or
/// machine).
pub(crate) const ABANDONED_AFTER: Duration = Duration::from_secs(60 * 60);

/// A temporary file of a process that does not run on this machine is removed once this
/// old. The grace covers a writer this process cannot see whose id happens to be free here:
/// its write is over long before.
pub(crate) const DEAD_WRITER_GRACE: Duration = Duration::from_secs(60);

/// Removes the temporary files that writes under `root` (`DATA_DIR`) left behind; returns
/// how many were removed. Blocking.
///
/// Only where the writers put them is looked at: `root` itself (the report logs) and each
/// task directory `root/<task_id>/` (artifacts and records), not deeper (a task's git
/// workspace is not walked) and through no symlink. A file is removed when its name is
/// exactly `.{name}.{pid}-{n}.tmp` and either
///
/// - it was last modified [`ABANDONED_AFTER`] ago or more, or
/// - it was last modified [`DEAD_WRITER_GRACE`] ago or more, its process id is not this
///   process's, and no process of that id runs (checked in `/proc`; where there is no
///   `/proc`, only the first rule applies).
///
/// A file modified in the future (clocks of machines sharing the directory disagree) is kept.
/// A file that cannot be read or removed is left, and the sweep goes on.
pub(crate) fn sweep(root: &Path, now: SystemTime) -> usize {
    let mut removed = sweep_dir(root, now);
    let Ok(entries) = std::fs::read_dir(root) else {
        return removed;
    };
    for entry in entries.flatten() {
        // `file_type` does not follow symlinks: a linked directory is not walked.
        let is_task_dir = entry.file_type().is_ok_and(|t| t.is_dir())
            && entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.parse::<TaskId>().is_ok());
        if is_task_dir {
            removed += sweep_dir(&entry.path(), now);
        }
    }
    if removed > 0 {
        tracing::info!(data_dir = %root.display(), removed, "removed temporary files that stopped processes left behind");
    }
    removed
}

/// [`sweep`] of the files directly in `dir`.
fn sweep_dir(dir: &Path, now: SystemTime) -> usize {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), %error, "cannot look for left temporary files");
            }
            return 0;
        }
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(writer_pid) else {
            continue;
        };
        // Not followed: a symlink named like a temporary file is no write of ours.
        let Ok(metadata) = entry.metadata() else {
            continue;
        };
        if !metadata.is_file() {
            continue;
        }
        let age = metadata
            .modified()
            .ok()
            .and_then(|modified| now.duration_since(modified).ok())
            .unwrap_or_default();
        if !is_abandoned(age, pid, process_runs) {
            continue;
        }
        let path = entry.path();
        match std::fs::remove_file(&path) {
            Ok(()) => {
                tracing::debug!(path = %path.display(), pid, "removed a left temporary file");
                removed += 1;
            }
            // Removed meanwhile by another process's sweep.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot remove a left temporary file");
            }
        }
    }
    removed
}

/// The process id in the name of a temporary file of `write_replacing`,
/// `.{name}.{pid}-{n}.tmp`; `None` for any other name.
fn writer_pid(file_name: &str) -> Option<u32> {
    let inner = file_name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (name, id) = inner.rsplit_once('.')?;
    let (pid, n) = id.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if name.is_empty() || !digits(pid) || !digits(n) {
        return None;
    }
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// Whether a temporary file `age` old, written by process `pid`, is abandoned, given
/// whether a process runs (`None`: cannot tell).
fn is_abandoned(age: Duration, pid: u32, runs: impl Fn(u32) -> Option<bool>) -> bool {
    if age >= ABANDONED_AFTER {
        return true;
    }
    age >= DEAD_WRITER_GRACE && pid != std::process::id() && runs(pid) == Some(false)
}

/// Whether process `pid` runs on this machine (in this pid namespace), from `/proc`; `None`
/// where there is no `/proc`.
fn process_runs(pid: u32) -> Option<bool> {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return None;
    }
    Some(proc.join(pid.to_string()).exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_of_atomic_writes_are_taken() {
        assert_eq!(writer_pid(".design@v1.json.4242-7.tmp"), Some(4242));
        assert_eq!(writer_pid(".reports.jsonl.1-0.tmp"), Some(1));
        for other in [
            "design@v1.json.4242-7.tmp",
            ".design@v1.json.4242-7",
            "..4242-7.tmp",
            ".a.json.x42-7.tmp",
            ".a.json.42-.tmp",
            ".a.json.-7.tmp",
            ".a.json.42.tmp",
            ".published.git.0f3a9c.tmp",
            ".a.json.+42-7.tmp",
        ] {
            assert_eq!(writer_pid(other), None, "{other}");
        }
    }

    #[test]
    fn the_age_and_the_process_decide() {
        let dead = |_| Some(false);
        let alive = |_| Some(true);
        let unknown = |_| None;
        let minute = DEAD_WRITER_GRACE;
        let hour = ABANDONED_AFTER;
        let other = std::process::id().wrapping_add(1);
        assert!(is_abandoned(hour, other, alive), "old enough whatever runs");
        assert!(is_abandoned(hour, std::process::id(), alive));
        assert!(
            is_abandoned(minute, other, dead),
            "a dead writer's, after the grace"
        );
        assert!(!is_abandoned(minute / 2, other, dead), "within the grace");
        assert!(!is_abandoned(minute, other, alive), "a running writer's");
        assert!(!is_abandoned(minute, other, unknown), "cannot tell");
        assert!(
            !is_abandoned(minute, std::process::id(), dead),
            "this process's"
        );
    }
}
