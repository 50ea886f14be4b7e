//! What the task page shows of a task on an existing repository: the repository in the
//! header, the implementation's change as a unified diff from the base, the repository's own
//! tests before and after the change, and what the code memory showed each model.

use agent_pipeline::output::{CountedRun, RepositoryTests};
use agent_pipeline::wire::Repository;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::web::text;

/// The repository and base ref of the task header. The URL is shown without its password.
pub(super) fn header_entries(repository: &Repository) -> Markup {
    html! {
        dt { "Repository" }
        dd #task-repository { code.path { (text::user(&repository.redacted_url())) } }
        dt { "Base ref" }
        dd #task-base-ref {
            @match &repository.base_ref {
                Some(base_ref) => code { (text::user(base_ref)) },
                None => span.muted { "the repository's default branch" },
            }
        }
        @if let Some(command) = &repository.test_command {
            dt { "Test command" } dd { code { (text::user(command)) } }
        }
        @if repository.push {
            dt { "Push" } dd #task-push { "the published branch goes to this repository too" }
        }
    }
}

/// The `workspace` of an implementation on a repository: the base it started from and the
/// change as a unified diff (`None` when the output has no diff: a task that started from
/// nothing).
pub(super) fn workspace_diff(workspace: &Value) -> Option<Markup> {
    let diff = workspace.get("diff")?.as_str()?;
    let base = workspace.get("base").and_then(Value::as_str);
    let lines = parse_unified(diff);
    let added = lines.iter().filter(|l| l.kind == LineKind::Added).count();
    let removed = lines.iter().filter(|l| l.kind == LineKind::Removed).count();
    let files = lines.iter().filter(|l| l.kind == LineKind::File).count();
    Some(html! {
        h4 { "Change" }
        p.change-summary {
            @if let Some(base) = base {
                "From the base " (short_commit(base)) ": "
            }
            (files) " " (if files == 1 { "file" } else { "files" }) " changed, "
            span.diff-added-count { "+" (added) } " "
            span.diff-removed-count { "−" (removed) }
        }
        @if diff.trim().is_empty() {
            p.muted { "The change is empty: the files are the base's." }
        } @else {
            (text::controls_warning(diff))
            div.table-wrap.diff-scroll {
                table.diff.unified-diff {
                    thead {
                        tr {
                            th.ln scope="col" title="line in the base" { "old" }
                            th.ln scope="col" title="line after the change" { "new" }
                            th.sign scope="col" { span.visually-hidden { "change" } }
                            th.text scope="col" { "line" }
                        }
                    }
                    tbody {
                        @for line in &lines {
                            @let (class, sign) = line.kind.class_and_sign();
                            tr class=(class) {
                                td.ln { @if let Some(n) = line.old { (n) } }
                                td.ln { @if let Some(n) = line.new { (n) } }
                                td.sign { (sign) }
                                td.text { (text::revealed(line.text)) }
                            }
                        }
                    }
                }
            }
        }
    })
}

/// A commit id, shortened to 12 characters, with the whole id as its title.
fn short_commit(id: &str) -> Markup {
    let short: String = id.chars().take(12).collect();
    html! { code.commit-id title=(id) { (text::user(&short)) } }
}

/// What a line of a unified diff is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineKind {
    /// `diff --git a/x b/x`: a file starts.
    File,
    /// `index …`, `--- a/x`, `+++ b/x`, `new file mode …`, `\ No newline at end of file`.
    Meta,
    /// `@@ -1,2 +1,3 @@`: a hunk starts.
    Hunk,
    /// A line of the change.
    Added,
    /// A line the change removes.
    Removed,
    /// A line around the change.
    Context,
    /// The note that the diff was cut.
    Cut,
}

impl LineKind {
    fn class_and_sign(self) -> (&'static str, &'static str) {
        match self {
            Self::File => ("diff-file", ""),
            Self::Meta => ("diff-meta", ""),
            Self::Hunk => ("diff-skipped diff-hunk", "⋯"),
            Self::Added => ("diff-added", "+"),
            Self::Removed => ("diff-removed", "−"),
            Self::Context => ("diff-same", ""),
            Self::Cut => ("diff-skipped diff-cut", "✂"),
        }
    }
}

/// One line of a unified diff, with its numbers in the base and after the change.
#[derive(Debug)]
struct DiffLine<'a> {
    kind: LineKind,
    old: Option<u64>,
    new: Option<u64>,
    /// The line without its sign (headers are kept whole).
    text: &'a str,
}

/// The lines of a `git diff`, numbered from their hunk headers. Anything it does not
/// recognise is kept as a header line, so nothing of the diff is hidden.
fn parse_unified(diff: &str) -> Vec<DiffLine<'_>> {
    let mut lines = Vec::new();
    let (mut old, mut new) = (0_u64, 0_u64);
    let mut in_hunk = false;
    for line in diff.lines() {
        let header = |kind| DiffLine {
            kind,
            old: None,
            new: None,
            text: line,
        };
        if line.starts_with("diff --git ") {
            in_hunk = false;
            lines.push(header(LineKind::File));
        } else if line.starts_with("[… ") && line.ends_with(" more bytes of diff …]") {
            lines.push(header(LineKind::Cut));
        } else if let Some((from, to)) = hunk_start(line) {
            in_hunk = true;
            (old, new) = (from, to);
            lines.push(header(LineKind::Hunk));
        } else if !in_hunk {
            lines.push(header(LineKind::Meta));
        } else if let Some(text) = line.strip_prefix('+') {
            lines.push(DiffLine {
                kind: LineKind::Added,
                old: None,
                new: Some(new),
                text,
            });
            new += 1;
        } else if let Some(text) = line.strip_prefix('-') {
            lines.push(DiffLine {
                kind: LineKind::Removed,
                old: Some(old),
                new: None,
                text,
            });
            old += 1;
        } else if let Some(text) = line.strip_prefix(' ').or((line.is_empty()).then_some("")) {
            lines.push(DiffLine {
                kind: LineKind::Context,
                old: Some(old),
                new: Some(new),
                text,
            });
            old += 1;
            new += 1;
        } else {
            lines.push(header(LineKind::Meta));
        }
    }
    lines
}

/// The first old and new line of a hunk header, `@@ -3,4 +3,5 @@ def total():`.
fn hunk_start(line: &str) -> Option<(u64, u64)> {
    let ranges = line.strip_prefix("@@ -")?;
    let (old, rest) = ranges.split_once(" +")?;
    let (new, _) = rest.split_once(" @@")?;
    let first = |range: &str| range.split(',').next()?.parse::<u64>().ok();
    Some((first(old)?, first(new)?))
}

/// The repository's own tests before and after the change, with each run's output folded.
pub(super) fn repository_tests(tests: &RepositoryTests) -> Markup {
    let row = |name: &str, run: &CountedRun| {
        html! {
            tr class=(if run.passed() { "run-passed" } else { "run-failed" }) {
                th scope="row" { (name) }
                td.count-passed { (run.passed) }
                td class={ "count-failed" @if run.failed > 0 { " bad" } } { (run.failed) }
                td.count-skipped { (run.skipped) }
                td { (run.run.ending()) }
                td {
                    @match &run.counted_from {
                        Some(source) => (text::user(source)),
                        None => span.muted { "no summary read" },
                    }
                }
            }
        }
    };
    let output = |name: &str, run: &CountedRun| {
        html! {
            details.repository-test-output {
                summary { "Output " (name) " the change" }
                @if run.run.output_omitted_bytes > 0 {
                    p.note {
                        (run.run.output_omitted_bytes)
                        " bytes of output were cut out (the head and the tail are kept)."
                    }
                }
                (text::controls_warning(&run.run.output))
                pre.test-output { (text::revealed(&run.run.output)) }
            }
        }
    };
    html! {
        div #repository-tests .repository-tests {
            h4 { "The repository's own tests" }
            p { "Command: " code { (text::user(&tests.command)) } }
            div.table-wrap {
                table.repository-tests-table {
                    thead {
                        tr {
                            th scope="col" { "run" }
                            th scope="col" { "passed" }
                            th scope="col" { "failed" }
                            th scope="col" { "skipped" }
                            th scope="col" { "exit" }
                            th scope="col" { "counted from" }
                        }
                    }
                    tbody {
                        (row("before", &tests.before))
                        (row("after", &tests.after))
                    }
                }
            }
            (output("before", &tests.before))
            (output("after", &tests.after))
        }
    }
}

/// One retrieved chunk as an artifact records it. Read leniently, so that a field added
/// later (`symbols`) or left out does not hide the list.
#[derive(Debug, Deserialize)]
struct Chunk {
    path: String,
    start_line: u32,
    end_line: u32,
    #[serde(default)]
    symbols: Vec<String>,
    #[serde(default)]
    score: Option<f64>,
    #[serde(default)]
    lexical_score: Option<f64>,
    #[serde(default)]
    vector_score: Option<f64>,
    #[serde(default)]
    truncated: bool,
}

/// The chunks of the repository the code memory put into the model's context (the output's
/// `retrieved`), as a folded table; marks the field shown. `None` when the output has no
/// such list.
pub(super) fn retrieved(
    output: &Map<String, Value>,
    used: &mut Vec<&'static str>,
) -> Option<Markup> {
    let items = output.get("retrieved")?.as_array()?;
    let chunks: Vec<Chunk> = items
        .iter()
        .map(|item| serde_json::from_value(item.clone()))
        .collect::<Result<_, _>>()
        .ok()?;
    used.push("retrieved");
    let with_symbols = chunks.iter().any(|c| !c.symbols.is_empty());
    let with_lexical = chunks.iter().any(|c| c.lexical_score.is_some());
    let with_vector = chunks.iter().any(|c| c.vector_score.is_some());
    let score = |score: Option<f64>| {
        html! {
            @match score {
                Some(score) => (format!("{score:.3}")),
                None => span.muted { "—" },
            }
        }
    };
    Some(html! {
        details.retrieved {
            summary {
                "What the model saw of the repository "
                span.muted { "(" (chunks.len()) " " (if chunks.len() == 1 { "chunk" } else { "chunks" }) ")" }
            }
            @if chunks.is_empty() {
                p.muted { "Nothing: the code memory found no part of the repository for this step." }
            } @else {
                div.table-wrap {
                    table.retrieved-table {
                        thead {
                            tr {
                                th scope="col" { "lines" }
                                @if with_symbols { th scope="col" { "symbols" } }
                                th scope="col" { "score" }
                                @if with_lexical { th scope="col" { "lexical" } }
                                @if with_vector { th scope="col" { "vector" } }
                            }
                        }
                        tbody {
                            @for chunk in &chunks {
                                tr {
                                    td {
                                        code.path {
                                            (text::user(&chunk.path)) ":" (chunk.start_line)
                                            "–" (chunk.end_line)
                                        }
                                        @if chunk.truncated {
                                            " " span.muted title="cut to stay within the context's budget" { "(cut)" }
                                        }
                                    }
                                    @if with_symbols {
                                        td {
                                            @for (i, symbol) in chunk.symbols.iter().enumerate() {
                                                @if i > 0 { ", " }
                                                code { (text::user(symbol)) }
                                            }
                                        }
                                    }
                                    td.num { (score(chunk.score)) }
                                    @if with_lexical { td.num { (score(chunk.lexical_score)) } }
                                    @if with_vector { td.num { (score(chunk.vector_score)) } }
                                }
                            }
                        }
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIFF: &str = "diff --git a/shop/cart.py b/shop/cart.py\nindex 1..2 100644\n--- a/shop/cart.py\n+++ b/shop/cart.py\n@@ -1,2 +1,2 @@\n def total(prices):\n-    return sum(prices) - 1\n+    return sum(prices)\ndiff --git a/OLD.txt b/OLD.txt\ndeleted file mode 100644\n--- a/OLD.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n--- to be deleted\n[… 12 more bytes of diff …]";

    #[test]
    fn the_header_names_the_repository_without_its_password_and_says_when_it_is_pushed_to() {
        let plain = header_entries(&Repository::new("https://bot:s3cret@example.com/shop.git"))
            .into_string();
        assert!(
            plain.contains("https://bot:***@example.com/shop.git"),
            "{plain}"
        );
        assert!(!plain.contains("s3cret"), "{plain}");
        assert!(!plain.contains("task-push"), "{plain}");
        let pushed =
            header_entries(&Repository::new("/srv/git/shop.git").with_push()).into_string();
        assert!(pushed.contains(r#"id="task-push""#), "{pushed}");
    }

    #[test]
    fn a_unified_diff_is_numbered_from_its_hunks() {
        let lines = parse_unified(DIFF);
        let kinds: Vec<LineKind> = lines.iter().map(|l| l.kind).collect();
        use LineKind::*;
        assert_eq!(
            kinds,
            [
                File, Meta, Meta, Meta, Hunk, Context, Removed, Added, File, Meta, Meta, Meta,
                Hunk, Removed, Cut
            ]
        );
        assert_eq!((lines[6].old, lines[6].new), (Some(2), None));
        assert_eq!(lines[6].text, "    return sum(prices) - 1");
        assert_eq!((lines[7].old, lines[7].new), (None, Some(2)));
        // A removed line that reads like a header is still a removed line.
        assert_eq!(lines[13].text, "-- to be deleted");
    }

    #[test]
    fn retrieved_chunks_show_their_lines_symbols_and_the_scores_there_are() {
        let output = serde_json::json!({
            "retrieved": [
                {"path": "shop/cart.py", "start_line": 1, "end_line": 3, "score": 0.5,
                 "lexical_score": 7.25, "symbols": ["total", "\u{202E}evil"]},
                {"path": "README.md", "start_line": 4, "end_line": 9, "score": 0.25,
                 "truncated": true}
            ],
            "other": 1
        });
        let Value::Object(output) = output else {
            unreachable!("a JSON object")
        };
        let mut used = Vec::new();
        let html = retrieved(&output, &mut used)
            .expect("a table")
            .into_string();
        assert_eq!(used, ["retrieved"]);
        assert!(html.contains("(2 chunks)"), "{html}");
        assert!(
            html.contains("<code class=\"path\"><bdi>shop/cart.py</bdi>:1–3</code>"),
            "{html}"
        );
        assert!(html.contains("<code><bdi>total</bdi></code>"), "{html}");
        assert!(html.contains(">7.250<"), "{html}");
        assert!(html.contains(">lexical<"), "{html}");
        assert!(!html.contains(">vector<"), "{html}");
        assert!(html.contains("(cut)"), "{html}");
        let Value::Object(plain) = serde_json::json!({"retrieved": [
            {"path": "a.py", "start_line": 1, "end_line": 2, "score": 1.0}
        ]}) else {
            unreachable!("a JSON object")
        };
        let html = retrieved(&plain, &mut Vec::new())
            .expect("a table")
            .into_string();
        assert!(!html.contains(">symbols<"), "{html}");
        assert!(!html.contains(">lexical<"), "{html}");
    }

    #[test]
    fn the_diff_shows_its_base_and_counts() {
        let workspace = serde_json::json!({
            "commit": "c", "parent": "p", "base": "0123456789abcdef0123", "diff": DIFF
        });
        let html = workspace_diff(&workspace).expect("a diff").into_string();
        assert!(html.contains("title=\"0123456789abcdef0123\""), "{html}");
        assert!(html.contains("<bdi>0123456789ab</bdi>"), "{html}");
        assert!(html.contains("2 files changed"), "{html}");
        assert!(html.contains("+1</span>"), "{html}");
        assert!(html.contains("−2</span>"), "{html}");
        assert!(html.contains("<tr class=\"diff-added\">"), "{html}");
        assert!(workspace_diff(&serde_json::json!({"commit": "c"})).is_none());
    }
}
