//! `DATA_DIR/reports.jsonl`: every report event, one JSON object per line, append-only.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Mutex;

use super::fs_util::io;
use super::{StoreError, StoreResult};
use crate::wire::ReportEvent;

/// An append-only JSON-lines file: the mirror of the report topic (`reports.jsonl`) or of the
/// dead-letter topic (`dead_letters.jsonl`).
///
/// Each event is written with a single `write` on a file opened in append mode, so lines from
/// several writers (threads or processes) never interleave.
#[derive(Debug, Clone)]
pub struct ReportLog {
    path: PathBuf,
    writing: Arc<Mutex<()>>,
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
            writing: Arc::new(Mutex::new(())),
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
        let path = self.path.clone();
        let _guard = self.writing.lock().await;
        tokio::task::spawn_blocking(move || {
            let open = || {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
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
            file.write_all(&bytes)
        })
        .await
        .map_err(|e| StoreError::Database(format!("report writer panicked: {e}")))?
        .map_err(|source| io("append to", &self.path, source))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::TaskId;
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
