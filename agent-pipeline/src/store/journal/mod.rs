//! The artifact journal: durable file writes with group commit.
//!
//! A write of the [`FileArtifactStore`](super::FileArtifactStore) is done by one thread of
//! the process, together with every other write waiting at that moment. The thread writes each
//! file in place (a temporary file renamed over the name, so that readers never see half a
//! file), appends the same bytes to this process's journal `DATA_DIR/.journal/<id>.log`, and
//! syncs the journal once for the whole batch. A writer is answered only after that sync: a
//! batch costs one sync instead of two per file, and nothing is acknowledged before it is
//! durable.
//!
//! The files themselves reach the disk when the kernel writes them back. If the machine
//! crashes first, [`recover`] restores them from the journal at the next start. A journal is
//! retired (the file system synced, then the journal deleted) by another thread once it holds
//! [`SEGMENT_BYTES`], on [`Journal::checkpoint`] and when the store is dropped. A journal is
//! locked while its process uses it, so that only the journals of stopped processes are
//! recovered.

mod checkpoint;
mod record;
mod recover;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::SystemTime;

use tokio::sync::oneshot;

use super::batch_thread;
use super::fs_util::{ensure_dir_resolves_within, io, resolve, write_replacing};
use super::{StoreError, StoreResult};
use checkpoint::Retired;
use record::Record;
pub(crate) use recover::recover;

/// The journals' directory under `DATA_DIR`.
pub(crate) const JOURNAL_DIR: &str = ".journal";

/// A journal is retired once it holds this much.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// The most pieces of work one batch holds.
const MAX_BATCH: usize = 1024;

/// Work done in the journal's thread: reads and writes through [`Files`].
pub(crate) type Work = Box<dyn FnOnce(&mut Files<'_>) -> StoreResult<()> + Send>;

enum Job {
    Work {
        work: Work,
        done: oneshot::Sender<StoreResult<()>>,
    },
    Checkpoint {
        done: oneshot::Sender<StoreResult<()>>,
    },
}

/// The handle of a data directory's journal thread; it stops when the handle is dropped,
/// retiring its journal.
#[derive(Debug)]
pub(crate) struct Journal {
    jobs: mpsc::Sender<Job>,
}

impl Journal {
    /// Starts the journal's threads for the data directory `root`. The journal file itself is
    /// created at the first write.
    pub(crate) fn start(root: PathBuf) -> Self {
        Self::start_with(root, SEGMENT_BYTES)
    }

    /// [`Journal::start`], retiring journals at `segment_bytes`.
    fn start_with(root: PathBuf, segment_bytes: u64) -> Self {
        let checkpoint_root = root.clone();
        let retire = batch_thread::spawn_or_log("artifact-checkpoint", usize::MAX, move |batch| {
            checkpoint::retire(&checkpoint_root, batch);
        });
        let mut writer = Writer::new(root, segment_bytes, retire);
        let jobs = batch_thread::spawn_or_log("artifact-journal", MAX_BATCH, move |batch| {
            writer.run_batch(batch);
        });
        Self { jobs }
    }

    /// Runs `work` in the journal's thread; returns its outcome once what it wrote is durable.
    pub(crate) async fn run(&self, work: Work) -> StoreResult<()> {
        batch_thread::ask(&self.jobs, WHAT, |done| Job::Work { work, done }).await
    }

    /// Makes every file written so far durable in place and deletes the journal that held
    /// them.
    pub(crate) async fn checkpoint(&self) -> StoreResult<()> {
        batch_thread::ask(&self.jobs, WHAT, |done| Job::Checkpoint { done }).await
    }
}

/// The journal, as named in errors.
const WHAT: &str = "artifact journal";

fn stopped() -> StoreError {
    StoreError::Database(format!("the {WHAT} has stopped"))
}

/// Reads and writes of one piece of work, in the journal's thread. Paths are absolute, inside
/// the data directory.
pub(crate) struct Files<'a> {
    root: &'a Path,
    /// The root with its symlinks resolved, once it exists.
    real_root: &'a mut Option<PathBuf>,
    prepared: &'a mut HashSet<String>,
    records: &'a mut Vec<Record>,
    now: SystemTime,
}

/// How many prepared directories are remembered before the memory starts over.
const PREPARED_LIMIT: usize = 65_536;

impl Files<'_> {
    /// Creates the directory `name` of the data directory, checking (once per directory) that
    /// it resolves inside the data directory.
    pub(crate) fn prepare_dir(&mut self, name: &str) -> StoreResult<()> {
        if self.prepared.contains(name) {
            return Ok(());
        }
        let real_root = match self.real_root {
            Some(real_root) => real_root,
            None => {
                std::fs::create_dir_all(self.root)
                    .map_err(|source| io("create directory", self.root, source))?;
                self.real_root.insert(resolve(self.root)?)
            }
        };
        ensure_dir_resolves_within(real_root, &self.root.join(name))?;
        if self.prepared.len() >= PREPARED_LIMIT {
            self.prepared.clear();
        }
        self.prepared.insert(name.to_owned());
        Ok(())
    }

    /// The content of `path`, if it exists.
    pub(crate) fn read(&self, path: &Path) -> StoreResult<Option<Vec<u8>>> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(io("read", path, source)),
        }
    }

    /// Replaces the content of `path` with `data`, journaled.
    pub(crate) fn write(&mut self, path: &Path, data: Vec<u8>) -> StoreResult<()> {
        let relative = path
            .strip_prefix(self.root)
            .ok()
            .and_then(Path::to_str)
            .ok_or_else(|| StoreError::OutsideDataDir {
                path: path.to_path_buf(),
                root: self.root.to_path_buf(),
            })?
            .to_owned();
        write_replacing(path, &data, false)?;
        self.records.push(Record {
            path: relative,
            data,
            written_at: self.now,
        });
        Ok(())
    }
}

/// This process's open journal.
struct Segment {
    file: File,
    path: PathBuf,
    len: u64,
}

struct Writer {
    root: PathBuf,
    real_root: Option<PathBuf>,
    segment_bytes: u64,
    prepared: HashSet<String>,
    segment: Option<Segment>,
    retire: mpsc::Sender<Retired>,
}

impl Writer {
    fn new(root: PathBuf, segment_bytes: u64, retire: mpsc::Sender<Retired>) -> Self {
        Self {
            root,
            real_root: None,
            segment_bytes,
            prepared: HashSet::new(),
            segment: None,
            retire,
        }
    }

    fn run_batch(&mut self, batch: Vec<Job>) {
        let mut records = Vec::new();
        let mut outcomes = Vec::new();
        let mut checkpoints = Vec::new();
        let mut files = Files {
            root: &self.root,
            real_root: &mut self.real_root,
            prepared: &mut self.prepared,
            records: &mut records,
            now: SystemTime::now(),
        };
        for job in batch {
            match job {
                Job::Work { work, done } => outcomes.push((done, work(&mut files))),
                Job::Checkpoint { done } => checkpoints.push(done),
            }
        }
        let appended = self.append(&records);
        for (done, outcome) in outcomes {
            let _ = done.send(match &appended {
                Ok(()) => outcome,
                Err(error) => Err(copy_error(error)),
            });
        }
        if !checkpoints.is_empty() {
            self.retire_segment(Some(checkpoints));
        } else if self
            .segment
            .as_ref()
            .is_some_and(|s| s.len >= self.segment_bytes)
        {
            self.retire_segment(None);
        }
    }

    /// Appends `records` to the journal and syncs it.
    fn append(&mut self, records: &[Record]) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::new();
        for record in records {
            record.encode_into(&mut bytes);
        }
        let segment = match &mut self.segment {
            Some(segment) => segment,
            None => self.segment.insert(open_segment(&self.root)?),
        };
        let appended = segment
            .file
            .write_all(&bytes)
            .and_then(|()| segment.file.sync_data());
        if let Err(source) = appended {
            // What was half appended must not be followed by more: start a new journal.
            let path = segment.path.clone();
            self.retire_segment(None);
            return Err(io("append to", &path, source));
        }
        segment.len += bytes.len() as u64;
        Ok(())
    }

    /// Hands the journal to the checkpoint thread; the next write starts another.
    fn retire_segment(&mut self, waiting: Option<Vec<oneshot::Sender<StoreResult<()>>>>) {
        let retired = Retired {
            segment: self.segment.take().map(|s| (s.file, s.path)),
            waiting: waiting.unwrap_or_default(),
        };
        if let Err(mpsc::SendError(retired)) = self.retire.send(retired) {
            for done in retired.waiting {
                let _ = done.send(Err(stopped()));
            }
        }
    }
}

impl Drop for Writer {
    /// The last handle is gone: retire the journal.
    fn drop(&mut self) {
        self.retire_segment(None);
    }
}

/// Creates and locks a new journal.
fn open_segment(root: &Path) -> StoreResult<Segment> {
    let dir = root.join(JOURNAL_DIR);
    std::fs::create_dir_all(&dir).map_err(|source| io("create directory", &dir, source))?;
    let path = dir.join(format!("{}.log", uuid::Uuid::new_v4().simple()));
    let file = File::options()
        .append(true)
        .create_new(true)
        .open(&path)
        .map_err(|source| io("create", &path, source))?;
    file.try_lock()
        .map_err(|e| io("lock", &path, std::io::Error::other(e.to_string())))?;
    // The journal's own name must survive a crash too.
    if let Ok(handle) = File::open(&dir) {
        let _ = handle.sync_all();
    }
    Ok(Segment { file, path, len: 0 })
}

/// The same error for every writer of a batch.
fn copy_error(error: &StoreError) -> StoreError {
    match error {
        StoreError::Io {
            action,
            path,
            source,
        } => StoreError::Io {
            action,
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        other => StoreError::Database(other.to_string()),
    }
}
