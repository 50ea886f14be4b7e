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
pub(crate) fn write_replacing(path: &Path, bytes: &[u8], sync: bool) -> StoreResult<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique among the processes writing here: this process's id and a counter.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let temp = dir.join(format!(".{name}.{}-{n}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        if sync {
            file.sync_all()?;
        }
        std::fs::rename(&temp, path)
    })();
    if let Err(source) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(io("write", path, source));
    }
    // Persist the rename itself; not every file system supports syncing a directory.
    if sync && let Ok(handle) = std::fs::File::open(dir) {
        let _ = handle.sync_all();
    }
    Ok(())
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
}
