//! `DATA_DIR/reports.jsonl`: every report event, one JSON object per line, append-only.

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
            batch_thread::spawn_or_log("report-log", MAX_BATCH, move |lines| append(&path, lines))
        });
        batch_thread::ask(appender, "report log", |done| Line { bytes, done }).await
    }

    /// Appends one event.
    pub async fn append(&self, event: &ReportEvent) -> StoreResult<()> {
        self.append_raw(&crate::wire::encode(event)).await
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

/// Appends `lines` with one write and one sync, and answers each.
fn append(path: &Path, lines: Vec<Line>) {
    let mut bytes = Vec::with_capacity(lines.iter().map(|l| l.bytes.len()).sum());
    for line in &lines {
        bytes.extend_from_slice(&line.bytes);
    }
    let appended = append_bytes(path, &bytes);
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

fn append_bytes(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    };
    let mut file = match open() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            open()?
        }
        opened => opened?,
    };
    file.write_all(bytes)?;
    file.sync_data()
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
}
