//! Retiring journals: once the files a journal holds are synced in place, it is deleted.

use std::fs::File;
use std::path::{Path, PathBuf};

use tokio::sync::oneshot;

use super::copy_error;
use crate::store::StoreResult;
use crate::store::fs_util::io;

/// A journal handed over for retirement, and who waits for it.
pub(super) struct Retired {
    /// The journal (kept open, so that it stays locked until deleted) and its path.
    pub(super) segment: Option<(File, PathBuf)>,
    /// Answered once the files are durable in place.
    pub(super) waiting: Vec<oneshot::Sender<StoreResult<()>>>,
}

/// Retires journals; those retired together share one sync.
pub(super) fn retire(root: &Path, batch: Vec<Retired>) {
    let journals: Vec<&PathBuf> = batch
        .iter()
        .filter_map(|r| r.segment.as_ref())
        .map(|(_, path)| path)
        .collect();
    let synced = sync_in_place(root, &journals);
    match &synced {
        Ok(()) => {
            for path in &journals {
                if let Err(error) = std::fs::remove_file(path)
                    && error.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(path = %path.display(), %error, "a retired journal could not be deleted");
                }
            }
        }
        Err(error) => {
            tracing::warn!(%error, "syncing artifacts failed: their journal is kept for the next start")
        }
    }
    for retired in batch {
        for done in retired.waiting {
            let _ = done.send(synced.as_ref().map(|_| ()).map_err(copy_error));
        }
    }
}

/// Makes the files that `journals` hold durable in place: the whole file system at once where
/// it can be (Linux), otherwise file by file, read from the journals, and then their
/// directories.
fn sync_in_place(root: &Path, journals: &[&PathBuf]) -> StoreResult<()> {
    #[cfg(target_os = "linux")]
    {
        let _ = journals;
        let handle = File::open(root).map_err(|source| io("open", root, source))?;
        rustix::fs::syncfs(&handle).map_err(|e| io("sync", root, e.into()))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let mut files = std::collections::BTreeSet::new();
        for journal in journals {
            let bytes = std::fs::read(journal).map_err(|source| io("read", journal, source))?;
            let (records, _) = super::record::Record::decode_all(&bytes);
            files.extend(records.into_iter().map(|r| root.join(r.path)));
        }
        let mut dirs = std::collections::BTreeSet::new();
        for path in &files {
            match File::open(path) {
                Ok(file) => file.sync_all().map_err(|source| io("sync", path, source))?,
                // Replaced or deleted since: nothing of it to keep.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(io("open", path, source)),
            }
            if let Some(dir) = path.parent() {
                dirs.insert(dir.to_path_buf());
            }
        }
        for dir in dirs {
            if let Ok(handle) = File::open(&dir) {
                let _ = handle.sync_all();
            }
        }
        Ok(())
    }
}
