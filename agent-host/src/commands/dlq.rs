//! `dlq`: the dead-letter queue as mirrored to `DATA_DIR/dead_letters.jsonl`.

use std::process::ExitCode;

use agent_pipeline::store::ReportLog;
use agent_pipeline::wire::DeadLetter;
use anyhow::{Context, Result};

use super::{one_line, timestamp};
use crate::bidi;
use crate::config::Config;
use crate::views::{self, DeadLetterEntry};

/// The file the dead-letter topic is mirrored to.
const FILE_NAME: &str = "dead_letters.jsonl";
/// How much of a payload is shown, in characters.
const PAYLOAD_WIDTH: usize = 200;

/// Prints every dead letter, oldest first, so that the newest is last (nearest the prompt).
pub(crate) async fn dlq(config: &Config) -> Result<ExitCode> {
    let log = ReportLog::named(&config.data_dir, FILE_NAME);
    if !tokio::fs::try_exists(log.path()).await.unwrap_or(false) {
        println!(
            "the dead-letter queue is empty ({} does not exist)",
            log.path().display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let queue = views::dead_letters(&log)
        .await
        .with_context(|| format!("cannot read {}", log.path().display()))?;
    for entry in queue.entries.iter().rev() {
        match &entry.letter {
            Some(letter) => print!("{}", render(letter)),
            None => print!("{}", render_other(entry)),
        }
    }
    println!(
        "{} dead letter(s) in {}",
        queue.entries.len(),
        queue.file.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// One dead letter as a short block of lines, followed by an empty line.
fn render(letter: &DeadLetter) -> String {
    let mut out = format!(
        "{}  from {}  key {}\n",
        timestamp(letter.failed_at),
        letter.source_topic,
        letter.key.as_deref().unwrap_or("-")
    );
    let step = match (&letter.step_id, letter.attempt) {
        (Some(step), Some(attempt)) => format!(" {step} attempt {attempt}"),
        (Some(step), None) => format!(" {step}"),
        _ => String::new(),
    };
    if let Some(task_id) = &letter.task_id {
        out.push_str(&format!("  task:    {task_id}{step}\n"));
    }
    out.push_str(&format!("  reason:  {}\n", letter.reason));
    // A payload may span lines (a pretty-printed message); one line of it is enough here.
    let payload = letter.payload.replace(['\n', '\r'], " ");
    out.push_str(&format!(
        "  payload: {}\n\n",
        one_line(&payload, PAYLOAD_WIDTH)
    ));
    // A dead letter is whatever was published: its controls must not reorder the terminal.
    bidi::escape_for_terminal(&out).into_owned()
}

/// A line that is not a whole dead letter (e.g. a malformed message the mirror kept wrapped
/// in `{"reason", "payload"}`): its reason and payload as far as it has them.
fn render_other(entry: &DeadLetterEntry) -> String {
    let payload = entry.payload.replace(['\n', '\r'], " ");
    let text = format!(
        "line {} of the file (an incomplete entry)\n  reason:  {}\n  payload: {}\n\n",
        entry.id,
        entry.reason,
        one_line(&payload, PAYLOAD_WIDTH)
    );
    bidi::escape_for_terminal(&text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letter_shows_reason_topic_key_and_a_cut_payload() {
        let letter = DeadLetter {
            reason: "not valid JSON".into(),
            source_topic: "agent_tasks".into(),
            key: Some("k1".into()),
            payload: "x".repeat(1000),
            task_id: None,
            step_id: None,
            attempt: None,
            failed_at: chrono::Utc::now(),
        };
        let text = render(&letter);
        assert!(text.contains("from agent_tasks  key k1"));
        assert!(text.contains("reason:  not valid JSON"));
        let payload = text
            .lines()
            .find(|l| l.starts_with("  payload: "))
            .unwrap_or_default();
        assert_eq!(payload.chars().count(), "  payload: ".len() + PAYLOAD_WIDTH);
    }

    #[test]
    fn incomplete_entries_still_show_their_reason_and_payload() {
        let entry = |id, reason: &str, payload: &str| DeadLetterEntry {
            id,
            letter: None,
            reason: reason.into(),
            payload: payload.into(),
        };
        let text = render_other(&entry(3, "a dead letter that is not a JSON object", "oops"));
        assert!(text.starts_with("line 3 of the file (an incomplete entry)"));
        assert!(text.contains("reason:  a dead letter that is not a JSON object"));
        assert!(text.contains("payload: oops"));
    }

    #[test]
    fn bidirectional_controls_are_printed_as_escapes() {
        let letter = DeadLetter {
            reason: "bad \u{202E}nosaer".into(),
            source_topic: "agent_tasks".into(),
            key: Some("\u{2066}k".into()),
            payload: "{\"prompt\": \"\u{202E}olleh\"}".into(),
            task_id: None,
            step_id: None,
            attempt: None,
            failed_at: chrono::Utc::now(),
        };
        let text = render(&letter);
        assert!(text.contains("reason:  bad \\u{202e}nosaer"), "{text}");
        assert!(text.contains("key \\u{2066}k"), "{text}");
        assert!(text.contains("\\u{202e}olleh"), "{text}");
        assert!(!bidi::has_control(&text), "{text}");
        let other = render_other(&DeadLetterEntry {
            id: 1,
            letter: None,
            reason: "\u{202E}x".into(),
            payload: "\u{2067}y".into(),
        });
        assert!(!bidi::has_control(&other), "{other}");
    }
}
