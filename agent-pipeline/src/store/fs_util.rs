//! Small file-system helpers: paths confined to a root, and atomic writes.

use std::path::{Path, PathBuf};

use super::{StoreError, StoreResult};

/// `root/dir/file`, refusing anything that is not a plain name or would resolve outside `root`.
pub(crate) fn confined(root: &Path, parts: &[&str]) -> StoreResult<PathBuf> {
    let mut path = root.to_path_buf();
    for part in parts {
        let plain =
            !part.is_empty() && *part != "." && *part != ".." && !part.contains(['/', '\\', '\0']);
        path.push(part);
        if !plain {
            return Err(StoreError::OutsideDataDir {
                path,
                root: root.to_path_buf(),
            });
        }
    }
    Ok(path)
}

/// Creates `dir` (and parents) and checks that it resolves inside `root`, so that a symlink
/// planted in the data directory cannot redirect writes elsewhere. Blocking.
pub(crate) fn ensure_dir_within(root: &Path, dir: &Path) -> StoreResult<()> {
    std::fs::create_dir_all(root).map_err(|source| io("create directory", root, source))?;
    ensure_dir_resolves_within(&resolve(root)?, dir)
}

/// `root` with every symlink resolved.
pub(crate) fn resolve(root: &Path) -> StoreResult<PathBuf> {
    std::fs::canonicalize(root).map_err(|source| io("resolve", root, source))
}

/// [`ensure_dir_within`] for a root already resolved by [`resolve`].
pub(crate) fn ensure_dir_resolves_within(real_root: &Path, dir: &Path) -> StoreResult<()> {
    std::fs::create_dir_all(dir).map_err(|source| io("create directory", dir, source))?;
    let real_dir = std::fs::canonicalize(dir).map_err(|source| io("resolve", dir, source))?;
    if !real_dir.starts_with(real_root) {
        return Err(StoreError::OutsideDataDir {
            path: real_dir,
            root: real_root.to_path_buf(),
        });
    }
    Ok(())
}

/// Replaces the content of `path` with `bytes` atomically: a temporary file in the same
/// directory renamed over `path`, so that readers see the old content or the new, never a
/// mix. With `sync`, the file and the rename are flushed to disk before it returns. Blocking.
///
/// The temporary file is locked while it is written. A process killed before its rename leaves
/// it behind, unlocked; the next write of the same file (the redelivered message that wrote
/// it, say) removes it.
pub(crate) fn write_replacing(path: &Path, bytes: &[u8], sync: bool) -> StoreResult<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique among the processes writing here: this process's id and a counter.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let write_once = || {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let temp = dir.join(format!(".{name}.{}-{n}.tmp", std::process::id()));
        let result = (|| {
            let mut file = std::fs::File::create(&temp)?;
            // Held until the rename: a write of the same file elsewhere leaves this one alone.
            // Where the file system cannot lock, nothing is removed (see
            // `remove_abandoned_temps`).
            let _ = file.try_lock();
            file.write_all(bytes)?;
            if sync {
                file.sync_all()?;
            }
            std::fs::rename(&temp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result
    };
    // A concurrent write of the same file may remove the temporary file in the instant between
    // its creation and its lock: the rename then finds nothing, and the write is done again.
    let mut result = write_once();
    for _ in 0..2 {
        match &result {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && dir.is_dir() => {
                result = write_once();
            }
            _ => break,
        }
    }
    if let Err(source) = result {
        return Err(io("write", path, source));
    }
    // Persist the rename itself; not every file system supports syncing a directory.
    if sync && let Ok(handle) = std::fs::File::open(dir) {
        let _ = handle.sync_all();
    }
    remove_abandoned_temps(dir, &name);
    Ok(())
}

/// Removes the temporary files of `name` in `dir` that [`write_replacing`] left behind in a
/// process that died before its rename: those no one holds locked. A write under way holds its
/// lock (a process's locks end with it), and a file that cannot be locked for another reason
/// is kept. Blocking.
fn remove_abandoned_temps(dir: &Path, name: &str) {
    let prefix = format!(".{name}.");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let is_temp_of_name = file_name
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|rest| rest.strip_suffix(".tmp"))
            .and_then(|rest| rest.split_once('-'))
            .is_some_and(|(pid, n)| pid.parse::<u32>().is_ok() && n.parse::<u64>().is_ok());
        if !is_temp_of_name {
            continue;
        }
        let path = entry.path();
        let Ok(temp) = std::fs::File::open(&path) else {
            continue;
        };
        if temp.try_lock().is_ok() {
            tracing::info!(path = %path.display(), "removing a temporary file a killed process left behind");
            let _ = std::fs::remove_file(&path);
        }
    }
}

pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_are_joined() {
        let root = Path::new("/data");
        assert!(confined(root, &["abc", "design@v1.json"]).is_ok());
        for bad in ["..", ".", "", "a/b", "a\\b", "/etc"] {
            assert!(confined(root, &[bad]).is_err(), "{bad:?}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_out_of_the_root_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let root = tempfile::tempdir()?;
        let outside = tempfile::tempdir()?;
        let link = root.path().join("task");
        std::os::unix::fs::symlink(outside.path(), &link)?;
        let refused = ensure_dir_within(root.path(), &link);
        assert!(matches!(refused, Err(StoreError::OutsideDataDir { .. })));
        Ok(())
    }

    #[test]
    fn writes_replace_whole_files() -> Result<(), Box<dyn std::error::Error>> {
        let root = tempfile::tempdir()?;
        let path = root.path().join("a.json");
        write_replacing(&path, b"one", true)?;
        write_replacing(&path, b"two", false)?;
        assert_eq!(std::fs::read(&path)?, b"two");
        assert_eq!(
            std::fs::read_dir(root.path())?.count(),
            1,
            "no temp file left"
        );
        Ok(())
    }

    #[test]
    fn a_write_removes_the_temp_files_a_killed_writer_left_of_the_same_file()
    -> Result<(), Box<dyn std::error::Error>> {
        let root = tempfile::tempdir()?;
        let dir = root.path();
        // A writer killed between its temporary file and the rename, one whose write is still
        // under way (holding its lock), and a killed writer of another file.
        let abandoned = dir.join(".a.json.4000000-7.tmp");
        std::fs::write(&abandoned, b"{\"half\":")?;
        let under_way = dir.join(".a.json.4000001-3.tmp");
        let held = std::fs::File::create(&under_way)?;
        held.try_lock()?;
        let other = dir.join(".b.json.4000000-8.tmp");
        std::fs::write(&other, b"{")?;
        write_replacing(&dir.join("a.json"), b"{}", false)?;
        assert!(
            !abandoned.exists(),
            "the killed writer's temp file is removed"
        );
        assert!(under_way.exists(), "a write under way keeps its temp file");
        assert!(
            other.exists(),
            "another file's temp file is left to its next write"
        );
        assert_eq!(std::fs::read(dir.join("a.json"))?, b"{}");
        drop(held);
        Ok(())
    }
}
