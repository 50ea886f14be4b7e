//! The context of an agent: the task, the earlier stages' artifacts and the retrieved chunks,
//! packed within a token budget.

use super::Hit;
use crate::llm::text_tokens;
use crate::output::Retrieved;

/// What [`ContextBuilder::build`] adds when it had to cut a text.
const CUT_MARK: &str = "\n…[cut to fit the context budget]\n";
/// The heading of the retrieved code.
const CODE_HEADING: &str = "## Code from the repository\n\n";

/// The tokens `text` is estimated to take: its bytes / 4, rounded up, as the LLM limiter
/// estimates prompts (`docs/llm-limits.md`).
///
/// ```
/// assert_eq!(agent_pipeline::memory::estimate_tokens("fn main() {}"), 3);
/// ```
pub fn estimate_tokens(text: &str) -> u64 {
    text_tokens(text)
}

/// Packs a task, earlier artifacts and retrieved chunks into one text that never exceeds a
/// token budget (as [`estimate_tokens`] counts).
///
/// The parts go in by priority: the task, then the artifacts in the order given, then the
/// chunks best first. A part that does not fit whole is cut (a chunk at a line, keeping at
/// least its first line) and what comes after it is left out, so the lowest-ranked chunks go
/// first.
///
/// ```
/// use agent_pipeline::memory::{ContextBuilder, Hit, estimate_tokens};
///
/// let hit = Hit {
///     path: "billing/invoice.py".to_owned(),
///     start_line: 3,
///     end_line: 4,
///     symbols: vec!["compute_invoice_total".to_owned()],
///     text: "def compute_invoice_total(lines):\n    return sum(lines)".to_owned(),
///     score: 9.5,
///     lexical_score: Some(9.5),
///     vector_score: None,
/// };
/// let context = ContextBuilder::new(200)
///     .task("Add VAT to the invoice total.")
///     .artifact("design", "Change compute_invoice_total.")
///     .chunks([hit])
///     .build();
/// assert!(context.text.contains("def compute_invoice_total"));
/// assert!(estimate_tokens(&context.text) <= 200);
/// assert_eq!(context.retrieved[0].path, "billing/invoice.py");
///
/// let tiny = ContextBuilder::new(10).task("Add VAT to the invoice total.").build();
/// assert!(estimate_tokens(&tiny.text) <= 10);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ContextBuilder {
    budget_tokens: u64,
    task: Option<String>,
    artifacts: Vec<(String, String)>,
    chunks: Vec<Hit>,
}

/// The packed context, and what of the retrieved code it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct AssembledContext {
    /// The text to give the model.
    pub text: String,
    /// [`estimate_tokens`] of `text`: at most the budget.
    pub tokens: u64,
    /// The chunks included, best first, with the lines really included: to record in the
    /// step's artifact.
    pub retrieved: Vec<Retrieved>,
    /// How many chunks were left out for want of room.
    pub chunks_left_out: usize,
    /// Whether the task or an artifact had to be cut.
    pub cut: bool,
}

impl ContextBuilder {
    /// An empty context of at most `budget_tokens`.
    pub fn new(budget_tokens: u64) -> Self {
        Self {
            budget_tokens,
            ..Self::default()
        }
    }

    /// The task's prompt, which goes first.
    pub fn task(mut self, prompt: impl Into<String>) -> Self {
        self.task = Some(prompt.into());
        self
    }

    /// An earlier stage's artifact, as text, under the heading `name`.
    pub fn artifact(mut self, name: impl Into<String>, text: impl Into<String>) -> Self {
        self.artifacts.push((name.into(), text.into()));
        self
    }

    /// Retrieved chunks, best first (as [`CodeMemory::search`](super::CodeMemory::search)
    /// returns them).
    pub fn chunks(mut self, hits: impl IntoIterator<Item = Hit>) -> Self {
        self.chunks.extend(hits);
        self
    }

    /// The context.
    pub fn build(&self) -> AssembledContext {
        // `estimate_tokens` is bytes / 4 rounded up, so a text of at most 4 × budget bytes is
        // within the budget.
        let capacity = usize::try_from(self.budget_tokens.saturating_mul(4)).unwrap_or(usize::MAX);
        let mut out = Packer {
            text: String::new(),
            capacity,
            full: false,
            cut: false,
        };
        if let Some(task) = &self.task {
            out.section("## Task\n\n", task);
        }
        for (name, text) in &self.artifacts {
            out.section(&format!("## {name}\n\n"), text);
        }
        let mut retrieved = Vec::new();
        let mut left_out = 0;
        for hit in &self.chunks {
            if out.full {
                left_out += 1;
                continue;
            }
            let heading = if retrieved.is_empty() {
                CODE_HEADING
            } else {
                ""
            };
            match out.chunk(heading, hit) {
                Some(record) => retrieved.push(record),
                None => left_out += 1,
            }
        }
        let tokens = estimate_tokens(&out.text);
        AssembledContext {
            text: out.text,
            tokens,
            retrieved,
            chunks_left_out: left_out,
            cut: out.cut,
        }
    }
}

/// The text so far and the room left.
struct Packer {
    text: String,
    capacity: usize,
    /// Set once something was cut: nothing goes after it.
    full: bool,
    cut: bool,
}

impl Packer {
    fn room(&self) -> usize {
        self.capacity.saturating_sub(self.text.len())
    }

    /// Adds `heading`, `body` and a blank line, cutting `body` if need be.
    fn section(&mut self, heading: &str, body: &str) {
        if self.full {
            return;
        }
        let whole = heading.len() + body.len() + 2;
        if whole <= self.room() {
            self.text.push_str(heading);
            self.text.push_str(body);
            self.text.push_str("\n\n");
            return;
        }
        self.full = true;
        self.cut = true;
        let Some(room) = self.room().checked_sub(heading.len() + CUT_MARK.len()) else {
            return;
        };
        let kept = floor_char_boundary(body, room);
        if kept > 0 {
            self.text.push_str(heading);
            self.text.push_str(&body[..kept]);
            self.text.push_str(CUT_MARK);
        }
    }

    /// Adds as many of `hit`'s lines as fit (at least one), under `heading`, and the record
    /// of what was added.
    fn chunk(&mut self, heading: &str, hit: &Hit) -> Option<Retrieved> {
        let lines: Vec<&str> = hit.text.split('\n').collect();
        let mut kept = lines.len();
        let mut body_len: usize = hit.text.len();
        loop {
            let end_line = hit
                .start_line
                .saturating_add(u32::try_from(kept).unwrap_or(u32::MAX))
                .saturating_sub(1);
            let header = format!(
                "{heading}### {}:{}-{}\n```\n",
                hit.path, hit.start_line, end_line
            );
            let footer = "\n```\n\n";
            if header.len() + body_len + footer.len() <= self.room() {
                self.text.push_str(&header);
                self.text.push_str(&lines[..kept].join("\n"));
                self.text.push_str(footer);
                let truncated = kept < lines.len();
                if truncated {
                    self.full = true;
                }
                return Some(Retrieved {
                    path: hit.path.clone(),
                    start_line: hit.start_line,
                    end_line,
                    score: hit.score,
                    lexical_score: hit.lexical_score,
                    vector_score: hit.vector_score,
                    truncated,
                });
            }
            if kept <= 1 {
                self.full = true;
                return None;
            }
            kept -= 1;
            // The kept lines and the newlines between them.
            body_len -= lines[kept].len() + 1;
        }
    }
}

/// The largest index at most `at` that is a character boundary of `text`.
fn floor_char_boundary(text: &str, at: usize) -> usize {
    if at >= text.len() {
        return text.len();
    }
    (0..=at)
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0)
}
