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
/// planted in the data directory cannot redirect writes elsewhere.
pub(crate) async fn ensure_dir_within(root: &Path, dir: &Path) -> StoreResult<()> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|source| io("create directory", dir, source))?;
    let real_root = tokio::fs::canonicalize(root)
        .await
        .map_err(|source| io("resolve", root, source))?;
    let real_dir = tokio::fs::canonicalize(dir)
        .await
        .map_err(|source| io("resolve", dir, source))?;
    if !real_dir.starts_with(&real_root) {
        return Err(StoreError::OutsideDataDir {
            path: real_dir,
            root: real_root,
        });
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, flushed to
/// disk, then renamed over `path`. Readers see the old content or the new, never a mix.
pub(crate) async fn write_atomic(path: &Path, bytes: Vec<u8>) -> StoreResult<()> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || write_atomic_blocking(&path, &bytes))
        .await
        .map_err(|e| StoreError::Database(format!("write task panicked: {e}")))?
}

fn write_atomic_blocking(path: &Path, bytes: &[u8]) -> StoreResult<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if let Err(source) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(io("write", path, source));
    }
    // Persist the rename itself; not every file system supports syncing a directory.
    if let Ok(handle) = std::fs::File::open(dir) {
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
    #[tokio::test]
    async fn a_symlink_out_of_the_root_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let root = tempfile::tempdir()?;
        let outside = tempfile::tempdir()?;
        let link = root.path().join("task");
        std::os::unix::fs::symlink(outside.path(), &link)?;
        let refused = ensure_dir_within(root.path(), &link).await;
        assert!(matches!(refused, Err(StoreError::OutsideDataDir { .. })));
        Ok(())
    }

    #[tokio::test]
    async fn atomic_writes_replace_whole_files() -> Result<(), Box<dyn std::error::Error>> {
        let root = tempfile::tempdir()?;
        let path = root.path().join("a.json");
        write_atomic(&path, b"one".to_vec()).await?;
        write_atomic(&path, b"two".to_vec()).await?;
        assert_eq!(std::fs::read(&path)?, b"two");
        assert_eq!(
            std::fs::read_dir(root.path())?.count(),
            1,
            "no temp file left"
        );
        Ok(())
    }
}
