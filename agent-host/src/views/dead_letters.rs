//! The dead-letter queue as mirrored to `DATA_DIR/dead_letters.jsonl`: `/dlq`, `/api/dlq`.

use agent_pipeline::store::ReportLog;
use agent_pipeline::wire::DeadLetter;
use serde::{Deserialize, Serialize};

use super::ViewError;

/// One entry of the dead-letter file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterEntry {
    /// Its line number in the file, from 1: the id used to re-drive it.
    pub id: usize,
    /// The dead letter, when the line is a whole one.
    pub letter: Option<DeadLetter>,
    /// Why it ended here (also for incomplete lines, when they say).
    pub reason: String,
    /// The raw message (for incomplete lines, the line itself).
    pub payload: String,
}

/// The whole queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterPage {
    /// Every entry, newest first.
    pub entries: Vec<DeadLetterEntry>,
    /// The file they come from.
    pub file: std::path::PathBuf,
}

/// Every dead letter in `log`, newest first.
pub async fn dead_letters(log: &ReportLog) -> Result<DeadLetterPage, ViewError> {
    let path = log.path();
    let text = match tokio::fs::read_to_string(path).await {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(ViewError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let mut entries: Vec<DeadLetterEntry> = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| entry(index + 1, line))
        .collect();
    entries.reverse();
    Ok(DeadLetterPage {
        entries,
        file: path.to_path_buf(),
    })
}

/// The dead letter on line `id` of `log`, if there is one.
pub async fn dead_letter(log: &ReportLog, id: usize) -> Result<Option<DeadLetterEntry>, ViewError> {
    Ok(dead_letters(log)
        .await?
        .entries
        .into_iter()
        .find(|entry| entry.id == id))
}

/// Reads one line: a whole dead letter, or whatever reason and payload a partial one has
/// (the mirror keeps a dead letter that is not a JSON object wrapped in `{reason, payload}`).
fn entry(id: usize, line: &str) -> DeadLetterEntry {
    if let Ok(letter) = serde_json::from_str::<DeadLetter>(line) {
        return DeadLetterEntry {
            id,
            reason: letter.reason.clone(),
            payload: letter.payload.clone(),
            letter: Some(letter),
        };
    }
    let value: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
    let field = |name: &str| value.get(name).and_then(serde_json::Value::as_str);
    DeadLetterEntry {
        id,
        letter: None,
        reason: field("reason").unwrap_or("(no reason recorded)").to_owned(),
        payload: field("payload").unwrap_or(line).to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_lines_keep_what_reason_and_payload_they_have() {
        let wrapped = entry(
            3,
            r#"{"reason":"a dead letter that is not a JSON object","payload":"oops"}"#,
        );
        assert_eq!(wrapped.id, 3);
        assert!(wrapped.letter.is_none());
        assert_eq!(wrapped.reason, "a dead letter that is not a JSON object");
        assert_eq!(wrapped.payload, "oops");
        let raw = entry(4, "garbage");
        assert_eq!(raw.reason, "(no reason recorded)");
        assert_eq!(raw.payload, "garbage");
    }
}
