//! Recovery: the journals of stopped processes are replayed into the files whose content
//! did not reach the disk, then deleted.

use std::collections::HashMap;
use std::fs::{File, TryLockError};
use std::io::Read;
use std::path::{Path, PathBuf};

use super::JOURNAL_DIR;
use super::record::Record;
use crate::store::StoreResult;
use crate::store::fs_util::{confined, ensure_dir_within, io, write_replacing};

/// Replays the journals under `root` that no running process holds; returns how many files
/// were restored. Each journal is deleted once its files are durable.
pub(crate) fn recover(root: &Path) -> StoreResult<usize> {
    let dir = root.join(JOURNAL_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(source) => return Err(io("list", &dir, source)),
    };
    let mut restored = 0;
    for entry in entries {
        let path = entry.map_err(|source| io("list", &dir, source))?.path();
        if path.extension().is_some_and(|e| e == "log") {
            restored += replay(root, &path)?;
        }
    }
    Ok(restored)
}

/// Replays one journal unless its process still holds it.
fn replay(root: &Path, journal: &Path) -> StoreResult<usize> {
    let mut file = match File::options().read(true).write(true).open(journal) {
        Ok(file) => file,
        // Retired meanwhile by its process.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(source) => return Err(io("open", journal, source)),
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(0),
        Err(TryLockError::Error(source)) => return Err(io("lock", journal, source)),
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|source| io("read", journal, source))?;
    let (records, torn) = Record::decode_all(&bytes);
    if torn {
        tracing::warn!(journal = %journal.display(), "the journal ends in a torn record: it was never acknowledged, so it is skipped");
    }
    // The last write of each file is the one that counts.
    let mut latest: HashMap<&str, &Record> = HashMap::new();
    for record in &records {
        latest.insert(&record.path, record);
    }
    let mut restored = Vec::new();
    for record in latest.into_values() {
        let parts: Vec<&str> = record.path.split('/').collect();
        let path = confined(root, &parts)?;
        if needs_restoring(&path, record) {
            if let Some(parent) = path.parent() {
                ensure_dir_within(root, parent)?;
            }
            write_replacing(&path, &record.data, true)?;
            restored.push(path);
        }
    }
    if !restored.is_empty() {
        tracing::warn!(journal = %journal.display(), files = restored.len(), "restored artifacts that had not reached the disk");
    }
    std::fs::remove_file(journal).map_err(|source| io("delete", journal, source))?;
    sync_parent(journal);
    Ok(restored.len())
}

/// Whether the file lacks the journaled content because of a crash: it is missing, not
/// whole JSON, or older than the journaled write. A file changed after the write (by a later
/// write of another process) keeps its content.
fn needs_restoring(path: &PathBuf, record: &Record) -> bool {
    let current = match std::fs::read(path) {
        Ok(current) => current,
        Err(_) => return true,
    };
    if current == record.data {
        return false;
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(&current).is_err() {
        return true;
    }
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map_or(true, |modified| modified < record.written_at)
}

fn sync_parent(path: &Path) {
    if let Some(dir) = path.parent()
        && let Ok(handle) = File::open(dir)
    {
        let _ = handle.sync_all();
    }
}
