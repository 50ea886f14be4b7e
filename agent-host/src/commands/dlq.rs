//! `dlq`: the dead-letter queue as mirrored to `DATA_DIR/dead_letters.jsonl`.

use std::process::ExitCode;

use agent_pipeline::wire::DeadLetter;
use anyhow::{Context, Result};

use super::{one_line, timestamp};
use crate::config::Config;

/// The file the dead-letter topic is mirrored to.
const FILE_NAME: &str = "dead_letters.jsonl";
/// How much of a payload is shown, in characters.
const PAYLOAD_WIDTH: usize = 200;

/// Prints every dead letter, oldest first, so that the newest is last (nearest the prompt).
///
/// The file is read line by line here because the library's `ReportLog::read_all` decodes
/// report events, and dead letters are another type.
pub(crate) async fn dlq(config: &Config) -> Result<ExitCode> {
    let path = config.data_dir.join(FILE_NAME);
    let text = match tokio::fs::read_to_string(&path).await {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            println!(
                "the dead-letter queue is empty ({} does not exist)",
                path.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        Err(error) => {
            return Err(error).with_context(|| format!("cannot read {}", path.display()));
        }
    };
    let mut count = 0;
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        count += 1;
        match serde_json::from_str::<DeadLetter>(line) {
            Ok(letter) => print!("{}", render(&letter)),
            Err(_) => print!("{}", render_other(index + 1, line)),
        }
    }
    println!("{count} dead letter(s) in {}", path.display());
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
    out
}

/// A line that is not a whole dead letter (e.g. a malformed message the mirror kept wrapped
/// in `{"reason", "payload"}`): its reason and payload when it has them, else the raw line.
fn render_other(line_number: usize, line: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
    let field = |name: &str| value.get(name).and_then(serde_json::Value::as_str);
    let reason = field("reason").unwrap_or("(no reason recorded)");
    let payload = field("payload").unwrap_or(line).replace(['\n', '\r'], " ");
    format!(
        "line {line_number} of the file (an incomplete entry)\n  reason:  {reason}\n  payload: {}\n\n",
        one_line(&payload, PAYLOAD_WIDTH)
    )
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
        let text = render_other(
            3,
            r#"{"reason":"a dead letter that is not a JSON object","payload":"oops"}"#,
        );
        assert!(text.contains("reason:  a dead letter that is not a JSON object"));
        assert!(text.contains("payload: oops"));
        let raw = render_other(4, "garbage");
        assert!(raw.contains("(no reason recorded)") && raw.contains("payload: garbage"));
    }
}
