//! `DATA_DIR/reports.jsonl`: every report event, one JSON object per line, append-only.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, mpsc};

use tokio::sync::oneshot;

use super::StoreResult;
use super::batch_thread;
use super::fs_util::io;
use crate::wire::ReportEvent;

/// The most lines one append holds.
const MAX_BATCH: usize = 4096;

/// An append-only JSON-lines file: the mirror of the report topic (`reports.jsonl`) or of the
/// dead-letter topic (`dead_letters.jsonl`).
///
/// One thread per log appends: the lines waiting at that moment go in a single `write` on the
/// file opened in append mode, so lines from several writers (threads or processes) never
/// interleave, followed by one sync. An append returns once its line is on disk.
///
/// [`ReportLog::retain`] rewrites the file without the lines retention drops. It holds an
/// exclusive lock on the file (`flock`) while it copies and renames; an append holds a shared
/// one and, once it has it, checks that the file it opened is still the one at the path, so
/// that no line goes to a file that was just replaced.
#[derive(Debug, Clone)]
pub struct ReportLog {
    path: PathBuf,
    /// Started at the first append.
    appender: Arc<OnceLock<mpsc::Sender<Line>>>,
}

struct Line {
    bytes: Vec<u8>,
    done: oneshot::Sender<StoreResult<()>>,
}

impl ReportLog {
    /// The log `reports.jsonl` in `data_dir`.
    pub fn in_dir(data_dir: &Path) -> Self {
        Self::named(data_dir, "reports.jsonl")
    }

    /// A log named `file_name` in `data_dir` (the dead-letter mirror uses the same format).
    pub fn named(data_dir: &Path, file_name: &str) -> Self {
        Self {
            path: data_dir.join(file_name),
            appender: Arc::default(),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line: `line` must be one JSON object without a newline.
    pub async fn append_raw(&self, line: &[u8]) -> StoreResult<()> {
        let mut bytes: Vec<u8> = line
            .iter()
            .copied()
            .filter(|b| *b != b'\n' && *b != b'\r')
            .collect();
        bytes.push(b'\n');
        let appender = self.appender.get_or_init(|| {
            let path = self.path.clone();
            // Whether the last append failed, possibly leaving part of a line behind.
            let mut failed = false;
            batch_thread::spawn_or_log("report-log", MAX_BATCH, move |lines| {
                append(&path, lines, &mut failed);
            })
        });
        batch_thread::ask(appender, "report log", |done| Line { bytes, done }).await
    }

    /// Appends one event.
    pub async fn append(&self, event: &ReportEvent) -> StoreResult<()> {
        self.append_raw(&crate::wire::encode(event)).await
    }

    /// Rewrites the file keeping only the lines `keep` accepts (lines that are not JSON
    /// objects are kept); returns how many lines were dropped. Appends, from this process or
    /// another, wait while it runs and then go to the new file.
    pub async fn retain(
        &self,
        keep: impl Fn(&serde_json::Value) -> bool + Send + 'static,
    ) -> StoreResult<usize> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || rewrite(&path, keep))
            .await
            .map_err(|e| super::StoreError::Database(format!("a file task panicked: {e}")))?
    }

    /// Every event in the file, oldest first; lines that are not events are skipped.
    pub async fn read_all(&self) -> StoreResult<Vec<ReportEvent>> {
        self.read_all_as().await
    }

    /// Every line of the file that parses as a `T`, oldest first (the dead-letter mirror holds
    /// [`DeadLetter`](crate::wire::DeadLetter)s).
    pub async fn read_all_as<T: serde::de::DeserializeOwned>(&self) -> StoreResult<Vec<T>> {
        let text = match tokio::fs::read_to_string(&self.path).await {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(io("read", &self.path, source)),
        };
        Ok(text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect())
    }
}

/// Appends `lines` with one write and one sync, and answers each. `failed` says whether the
/// previous append failed, and is updated.
fn append(path: &Path, lines: Vec<Line>, failed: &mut bool) {
    let mut bytes = Vec::with_capacity(lines.iter().map(|l| l.bytes.len()).sum());
    for line in &lines {
        bytes.extend_from_slice(&line.bytes);
    }
    let appended = append_bytes(path, &bytes, *failed);
    *failed = appended.is_err();
    for line in lines {
        let _ = line.done.send(match &appended {
            Ok(()) => Ok(()),
            Err(error) => Err(io(
                "append to",
                path,
                std::io::Error::new(error.kind(), error.to_string()),
            )),
        });
    }
}

/// Appends `bytes` in one write. After a failed append (`after_failure`), a write cut short
/// (the disk full) may have left part of a line at the end: the bytes then start on a line
/// of their own, so that the fragment stays one unreadable line and does not swallow the
/// first of them.
fn append_bytes(path: &Path, bytes: &[u8], after_failure: bool) -> std::io::Result<()> {
    let mut file = open_current(path)?;
    if after_failure && !ends_with_newline(&file)? {
        let mut separated = Vec::with_capacity(bytes.len() + 1);
        separated.push(b'\n');
        separated.extend_from_slice(bytes);
        file.write_all(&separated)?;
    } else {
        file.write_all(bytes)?;
    }
    file.sync_data()
}

/// Whether the file is empty or its last byte is a newline.
fn ends_with_newline(file: &File) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(true);
    }
    let mut last = [0u8];
    file.read_at(&mut last, len - 1)?;
    Ok(last[0] == b'\n')
}

/// The file at `path` opened for appending, with a shared lock, and still the file at `path`
/// once locked (a [`rewrite`] may have replaced it meanwhile).
fn open_current(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::MetadataExt;
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
    };
    loop {
        let file = match open() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                open()?
            }
            opened => opened?,
        };
        file.lock_shared()?;
        let opened = file.metadata()?;
        match std::fs::metadata(path) {
            Ok(current) if current.ino() == opened.ino() && current.dev() == opened.dev() => {
                return Ok(file);
            }
            // Replaced (or removed) between the open and the lock: open the new one.
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
}

/// [`ReportLog::retain`], in a blocking thread.
fn rewrite(path: &Path, keep: impl Fn(&serde_json::Value) -> bool) -> StoreResult<usize> {
    use std::io::Read;
    let mut file = match std::fs::OpenOptions::new().read(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(source) => return Err(io("open", path, source)),
    };
    file.lock().map_err(|source| io("lock", path, source))?;
    let mut text = Vec::new();
    file.read_to_end(&mut text)
        .map_err(|source| io("read", path, source))?;
    let mut kept = Vec::with_capacity(text.len());
    let mut dropped = 0;
    for line in text.split_inclusive(|b| *b == b'\n') {
        let keep_line = match serde_json::from_slice::<serde_json::Value>(line) {
            Ok(value) if value.is_object() => keep(&value),
            _ => !line.iter().all(u8::is_ascii_whitespace),
        };
        if keep_line {
            kept.extend_from_slice(line);
        } else {
            dropped += 1;
        }
    }
    if dropped > 0 {
        super::fs_util::write_replacing(path, &kept, true)?;
    }
    // The lock goes with the old file: appends waiting on it find the new one.
    drop(file);
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::TaskId;
    use crate::store::StoreError;
    use crate::wire::ReportStatus;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_never_interleave_lines() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        // Two handles on the same file behave like two processes: they share no lock.
        let logs = [ReportLog::in_dir(dir.path()), ReportLog::in_dir(dir.path())];
        let mut writers = Vec::new();
        for (index, log) in logs.into_iter().enumerate() {
            writers.push(tokio::spawn(async move {
                for n in 0..200 {
                    let summary = format!("writer {index} event {n} {}", "x".repeat(2000));
                    let event = ReportEvent::new(
                        TaskId::new(),
                        ReportStatus::Received,
                        summary,
                        chrono::Utc::now(),
                    );
                    log.append(&event).await?;
                }
                Ok::<_, StoreError>(())
            }));
        }
        for writer in writers {
            writer.await??;
        }
        let events = ReportLog::in_dir(dir.path()).read_all().await?;
        assert_eq!(events.len(), 400);
        let lines = std::fs::read_to_string(dir.path().join("reports.jsonl"))?;
        assert!(
            lines
                .lines()
                .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
        );
        Ok(())
    }

    /// Appends from two handles (two processes) while the file is rewritten again and again:
    /// every kept line survives, every dropped one is gone, and no line is lost or torn.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rewriting_loses_no_concurrent_append() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let logs = [ReportLog::in_dir(dir.path()), ReportLog::in_dir(dir.path())];
        let mut writers = Vec::new();
        for (index, log) in logs.into_iter().enumerate() {
            writers.push(tokio::spawn(async move {
                for n in 0..300 {
                    let status = if n % 3 == 0 {
                        ReportStatus::Done
                    } else {
                        ReportStatus::Received
                    };
                    let event = ReportEvent::new(
                        TaskId::new(),
                        status,
                        format!("writer {index} event {n}"),
                        chrono::Utc::now(),
                    );
                    log.append(&event).await?;
                }
                Ok::<_, StoreError>(())
            }));
        }
        let rewriter = ReportLog::in_dir(dir.path());
        let mut dropped = 0;
        while writers.iter().any(|w| !w.is_finished()) {
            dropped += rewriter.retain(|line| line["status"] != "done").await?;
        }
        for writer in writers {
            writer.await??;
        }
        dropped += rewriter.retain(|line| line["status"] != "done").await?;
        let events = rewriter.read_all().await?;
        assert_eq!(dropped, 200, "every done event is dropped once");
        assert_eq!(events.len(), 400, "every other event is kept");
        assert!(events.iter().all(|e| e.status == ReportStatus::Received));
        Ok(())
    }
}
