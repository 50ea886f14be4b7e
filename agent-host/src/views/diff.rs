//! A line diff between two attempts of a step, over a readable text of each artifact.

use agent_pipeline::llm::Usage;
use agent_pipeline::store::{Artifact, ArtifactStore};
use agent_pipeline::wire::Variant;
use agent_pipeline::{Attempt, StepId, TaskId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use similar::{ChangeTag, TextDiff};

use super::ViewError;

/// Unchanged lines kept around each change.
const CONTEXT_LINES: usize = 3;

/// What changed from one attempt of a step to another.
// Not `Eq`: its sides hold US dollars, `f64`s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptDiff {
    /// The step.
    pub step: StepId,
    /// The older side.
    pub from: Attempt,
    /// The newer side.
    pub to: Attempt,
    /// Lines only in `to`.
    pub added: usize,
    /// Lines only in `from`.
    pub removed: usize,
    /// The changes with a few lines of context; runs of unchanged lines in between are
    /// collapsed into one [`DiffLineKind::Skipped`] line.
    pub lines: Vec<DiffLine>,
    /// How the older attempt ran: model, provider, tokens, cost, duration, variant
    /// ([`diff_attempts`] always sets it).
    #[serde(default)]
    pub from_side: Option<DiffSide>,
    /// How the newer attempt ran ([`diff_attempts`] always sets it).
    #[serde(default)]
    pub to_side: Option<DiffSide>,
}

/// How one attempt of a diff ran, from its artifact: what a comparison of two models or two
/// prompts is about besides the text.
// Not `Eq`: the cost is an `f64`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiffSide {
    /// The attempt.
    pub attempt: Attempt,
    /// The model that produced the artifact.
    pub model: String,
    /// The provider its calls went to, when it was not the default one.
    pub provider: Option<String>,
    /// Tokens spent.
    pub usage: Usage,
    /// What its LLM calls cost in US dollars (calls without a price count as free).
    pub cost_usd: f64,
    /// How many LLM calls it made.
    pub llm_calls: usize,
    /// How many of them had no price.
    pub unpriced_calls: usize,
    /// How long the step took.
    pub duration_ms: u64,
    /// When the artifact was stored.
    pub created_at: DateTime<Utc>,
    /// Why the step was replayed, when it was.
    pub replay_reason: Option<String>,
    /// How a replay differed from the run (model, provider, edited prompt or inputs).
    pub variant: Option<Variant>,
}

impl DiffSide {
    /// The side of `artifact`.
    pub fn of(artifact: &Artifact) -> Self {
        let provider = artifact
            .variant
            .as_ref()
            .and_then(|variant| variant.provider.clone())
            .or_else(|| {
                artifact
                    .llm_calls
                    .iter()
                    .find_map(|call| call.provider.clone())
            });
        Self {
            attempt: artifact.attempt,
            model: artifact.model.clone(),
            provider,
            usage: artifact.usage,
            cost_usd: artifact.cost_usd,
            llm_calls: artifact.llm_calls.len(),
            unpriced_calls: artifact
                .llm_calls
                .iter()
                .filter(|call| call.cost_usd.is_none())
                .count(),
            duration_ms: artifact.duration_ms,
            created_at: artifact.created_at,
            replay_reason: artifact.replay_reason.clone(),
            variant: artifact.variant.clone(),
        }
    }
}

/// One line of a diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffLine {
    /// Added, removed, unchanged or skipped.
    pub kind: DiffLineKind,
    /// Its number in the older text (from 1), unless it is only in the newer one.
    pub old: Option<usize>,
    /// Its number in the newer text (from 1), unless it is only in the older one.
    pub new: Option<usize>,
    /// The line, without its line break (for skipped runs: how many lines were skipped).
    pub text: String,
}

/// What a [`DiffLine`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiffLineKind {
    /// In both texts.
    Same,
    /// Only in the newer text.
    Added,
    /// Only in the older text.
    Removed,
    /// Unchanged lines left out.
    Skipped,
}

/// The artifact as text for people and for diffs: each field of the stage output on its own
/// lines, text as it is (not JSON-escaped), and files (`{path, content}` lists) one after
/// another under a `=== path ===` header.
pub fn artifact_text(artifact: &Artifact) -> String {
    let mut out = String::new();
    for (name, value) in &artifact.output {
        match value {
            Value::String(text) => {
                out.push_str(&format!("{name}:\n"));
                push_lines(&mut out, text);
            }
            Value::Array(items) if !items.is_empty() && items.iter().all(is_file) => {
                for item in items {
                    let field = |key| item.get(key).and_then(Value::as_str).unwrap_or_default();
                    out.push_str(&format!("=== {name}: {} ===\n", field("path")));
                    push_lines(&mut out, field("content"));
                }
            }
            other => {
                let pretty = serde_json::to_string_pretty(other).unwrap_or_default();
                out.push_str(&format!("{name}: "));
                push_lines(&mut out, &pretty);
            }
        }
    }
    out
}

fn is_file(value: &Value) -> bool {
    value.get("path").is_some_and(Value::is_string)
        && value.get("content").is_some_and(Value::is_string)
}

fn push_lines(out: &mut String, text: &str) {
    out.push_str(text);
    if !text.ends_with('\n') {
        out.push('\n');
    }
}

/// The diff from attempt `from` to attempt `to` of `step`; `None` when either attempt has no
/// artifact.
pub async fn diff_attempts(
    artifacts: &dyn ArtifactStore,
    task_id: TaskId,
    step: StepId,
    from: Attempt,
    to: Attempt,
) -> Result<Option<AttemptDiff>, ViewError> {
    let Some(old) = artifacts.read_attempt(task_id, step, from).await? else {
        return Ok(None);
    };
    let Some(new) = artifacts.read_attempt(task_id, step, to).await? else {
        return Ok(None);
    };
    let mut diff = diff_texts(step, from, to, &artifact_text(&old), &artifact_text(&new));
    diff.from_side = Some(DiffSide::of(&old));
    diff.to_side = Some(DiffSide::of(&new));
    Ok(Some(diff))
}

/// The diff of two texts, with [`CONTEXT_LINES`] of context.
fn diff_texts(step: StepId, from: Attempt, to: Attempt, old: &str, new: &str) -> AttemptDiff {
    let diff = TextDiff::from_lines(old, new);
    let mut lines = Vec::new();
    let (mut added, mut removed) = (0, 0);
    let mut last_old_end = 0;
    for group in diff.grouped_ops(CONTEXT_LINES) {
        let Some(first) = group.first() else { continue };
        let skipped = first.old_range().start - last_old_end;
        if skipped > 0 {
            lines.push(skipped_line(skipped));
        }
        for op in &group {
            for change in diff.iter_changes(op) {
                let kind = match change.tag() {
                    ChangeTag::Equal => DiffLineKind::Same,
                    ChangeTag::Insert => {
                        added += 1;
                        DiffLineKind::Added
                    }
                    ChangeTag::Delete => {
                        removed += 1;
                        DiffLineKind::Removed
                    }
                };
                lines.push(DiffLine {
                    kind,
                    old: change.old_index().map(|i| i + 1),
                    new: change.new_index().map(|i| i + 1),
                    text: change.value().trim_end_matches(['\n', '\r']).to_owned(),
                });
            }
        }
        if let Some(last) = group.last() {
            last_old_end = last.old_range().end;
        }
    }
    let total_old = diff.old_slices().len();
    if !lines.is_empty() && total_old > last_old_end {
        lines.push(skipped_line(total_old - last_old_end));
    }
    AttemptDiff {
        step,
        from,
        to,
        added,
        removed,
        lines,
        from_side: None,
        to_side: None,
    }
}

fn skipped_line(count: usize) -> DiffLine {
    DiffLine {
        kind: DiffLineKind::Skipped,
        old: None,
        new: None,
        text: format!("{count} unchanged line(s)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_pipeline::Stage;

    fn attempt(n: u32) -> Attempt {
        Attempt::new(n).expect("a valid attempt number")
    }

    #[test]
    fn a_changed_line_shows_as_removed_then_added_with_context_and_skips() {
        let old: String = (1..=20).map(|i| format!("line {i}\n")).collect();
        let new = old.replace("line 10\n", "line ten\n");
        let diff = diff_texts(
            StepId::v1(Stage::Implement),
            attempt(1),
            attempt(2),
            &old,
            &new,
        );
        assert_eq!((diff.added, diff.removed), (1, 1));
        let kinds: Vec<DiffLineKind> = diff.lines.iter().map(|l| l.kind).collect();
        assert_eq!(kinds.first(), Some(&DiffLineKind::Skipped));
        assert_eq!(kinds.last(), Some(&DiffLineKind::Skipped));
        let removed = diff.lines.iter().find(|l| l.kind == DiffLineKind::Removed);
        assert_eq!(
            removed.map(|l| (l.old, l.text.as_str())),
            Some((Some(10), "line 10"))
        );
        let added = diff.lines.iter().find(|l| l.kind == DiffLineKind::Added);
        assert_eq!(
            added.map(|l| (l.new, l.text.as_str())),
            Some((Some(10), "line ten"))
        );
        assert_eq!(diff.lines[0].text, "6 unchanged line(s)");
    }

    #[test]
    fn identical_attempts_have_an_empty_diff() {
        let diff = diff_texts(
            StepId::v1(Stage::Design),
            attempt(1),
            attempt(2),
            "a\nb\n",
            "a\nb\n",
        );
        assert!(diff.lines.is_empty());
        assert_eq!((diff.added, diff.removed), (0, 0));
    }

    #[test]
    fn files_read_as_text_under_their_path() {
        let artifact: Artifact = serde_json::from_value(serde_json::json!({
            "diff_summary": "Adds hello.py",
            "code_snippets": ["print('hi')"],
            "files": [{"path": "hello.py", "content": "print('hi')\nprint('bye')\n"}],
            "task_id": "3f0c8a52-6a3e-4c1e-9d1e-5b8f2f6f4a10",
            "step": "implement@v1",
            "attempt": 1,
            "model": "offline",
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            "created_at": "2026-11-24T10:00:00Z",
            "duration_ms": 5
        }))
        .expect("an artifact");
        let text = artifact_text(&artifact);
        assert!(text.contains("diff_summary:\nAdds hello.py\n"), "{text}");
        assert!(
            text.contains("=== files: hello.py ===\nprint('hi')\nprint('bye')\n"),
            "{text}"
        );
        assert!(
            text.contains("code_snippets: [\n  \"print('hi')\"\n]"),
            "{text}"
        );
    }
}
