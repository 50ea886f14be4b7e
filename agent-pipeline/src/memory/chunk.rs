//! How a file is cut into chunks: one per top-level definition where a per-language pattern
//! finds them, else windows of lines that overlap.

use std::sync::LazyLock;

use regex::Regex;

/// How files are cut into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkConfig {
    /// The lines of a window where no definitions are found (default 60).
    pub window_lines: usize,
    /// The lines two windows share (default 10).
    pub window_overlap: usize,
    /// A definition longer than this is cut into windows, each named by it (default 120).
    pub max_chunk_lines: usize,
}

impl Default for ChunkConfig {
    fn default() -> Self {
        Self {
            window_lines: 60,
            window_overlap: 10,
            max_chunk_lines: 120,
        }
    }
}

/// A part of a file: a line range, the names defined in it, and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunk {
    pub(crate) path: String,
    /// 1-based, inclusive.
    pub(crate) start_line: u32,
    /// 1-based, inclusive.
    pub(crate) end_line: u32,
    pub(crate) symbols: Vec<String>,
    pub(crate) text: String,
}

/// The patterns of a language: where a top-level definition starts (group 1 is its name), and
/// where any definition starts, nested ones included (for the names a chunk holds).
struct Language {
    top: Vec<Regex>,
    any: Vec<Regex>,
    /// Prefixes of the lines above a definition that belong to it (comments, decorators).
    leading: &'static [&'static str],
}

fn regexes(patterns: &[&str]) -> Vec<Regex> {
    // The patterns are constants of this file, tested below: a failure is a bug here.
    patterns.iter().filter_map(|p| Regex::new(p).ok()).collect()
}

static PYTHON: LazyLock<Language> = LazyLock::new(|| Language {
    top: regexes(&[r"^(?:async\s+)?(?:def|class)\s+([A-Za-z_]\w*)"]),
    any: regexes(&[r"^\s*(?:async\s+)?(?:def|class)\s+([A-Za-z_]\w*)"]),
    leading: &["#", "@"],
});

const RUST_ITEM: &str = r"(?:pub(?:\([^)]*\))?\s+)?(?:(?:async|const|unsafe|default)\s+)*(?:extern\s+\S+\s+)?(?:fn|struct|enum|trait|mod|type|union|macro_rules!)\s+([A-Za-z_]\w*)";
const RUST_IMPL: &str =
    r"(?:unsafe\s+)?impl(?:<[^{]*?>)?\s+(?:[\w:]+(?:<[^{]*?>)?\s+for\s+)?([\w:]+)";

static RUST: LazyLock<Language> = LazyLock::new(|| Language {
    top: regexes(&[&format!("^{RUST_ITEM}"), &format!("^{RUST_IMPL}")]),
    any: regexes(&[&format!(r"^\s*{RUST_ITEM}")]),
    leading: &["//", "#[", "#!["],
});

static SCRIPT: LazyLock<Language> = LazyLock::new(|| Language {
    top: regexes(&[
        r"^(?:export\s+)?(?:default\s+)?(?:async\s+)?function\*?\s+([A-Za-z_$][\w$]*)",
        r"^(?:export\s+)?(?:default\s+)?(?:abstract\s+)?(?:class|interface|enum)\s+([A-Za-z_$][\w$]*)",
        r"^(?:export\s+)?type\s+([A-Za-z_$][\w$]*)\s*(?:<[^=]*>)?\s*=",
        r"^(?:export\s+)?(?:const|let|var)\s+([A-Za-z_$][\w$]*)\s*(?::[^=]*)?=\s*(?:async\s+)?(?:function\b|(?:\([^)]*\)|[A-Za-z_$][\w$]*)\s*(?::[^=]*)?=>)",
    ]),
    any: regexes(&[
        r"^\s*(?:export\s+)?(?:async\s+)?function\*?\s+([A-Za-z_$][\w$]*)",
        r"^\s+(?:static\s+)?(?:async\s+)?([A-Za-z_$][\w$]*)\s*\([^)]*\)\s*\{",
    ]),
    leading: &["//", "/*", "*", "@"],
});

static GO: LazyLock<Language> = LazyLock::new(|| Language {
    top: regexes(&[
        r"^func\s+(?:\([^)]*\)\s*)?([A-Za-z_]\w*)",
        r"^type\s+([A-Za-z_]\w*)",
    ]),
    any: regexes(&[r"^func\s+(?:\([^)]*\)\s*)?([A-Za-z_]\w*)"]),
    leading: &["//"],
});

fn language(path: &str) -> Option<&'static Language> {
    let extension = path.rsplit_once('.').map(|(_, e)| e)?;
    match extension {
        "py" | "pyi" => Some(&PYTHON),
        "rs" => Some(&RUST),
        "js" | "jsx" | "mjs" | "cjs" | "ts" | "tsx" | "mts" | "cts" => Some(&SCRIPT),
        "go" => Some(&GO),
        _ => None,
    }
}

fn first_name(patterns: &[Regex], line: &str) -> Option<String> {
    patterns
        .iter()
        .find_map(|re| re.captures(line))
        .and_then(|c| c.get(1))
        .map(|m| m.as_str().to_owned())
}

/// The chunks of the file `path` with content `text`; an empty file has none.
pub(crate) fn chunk_file(path: &str, text: &str, config: &ChunkConfig) -> Vec<Chunk> {
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return Vec::new();
    }
    let Some(language) = language(path) else {
        return windows(path, &lines, 0, lines.len(), None, config);
    };
    // Where each top-level definition starts, moved up over its comments and decorators.
    let mut starts: Vec<usize> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if first_name(&language.top, line).is_none() {
            continue;
        }
        let floor = starts.last().map_or(0, |s| s + 1);
        let mut start = i;
        while start > floor {
            let above = lines[start - 1].trim_start();
            if above.is_empty() || !language.leading.iter().any(|p| above.starts_with(p)) {
                break;
            }
            start -= 1;
        }
        starts.push(start);
    }
    if starts.is_empty() {
        return windows(path, &lines, 0, lines.len(), None, config);
    }
    let mut chunks = Vec::new();
    if starts[0] > 0 {
        // The preamble: imports, module comments.
        chunks.extend(windows(path, &lines, 0, starts[0], None, config));
    }
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(lines.len());
        chunks.extend(windows(path, &lines, start, end, Some(language), config));
    }
    chunks
}

/// Chunks for `lines[start..end]`: one when it is short enough for a definition (or a window),
/// else overlapping windows. With a `language`, each chunk is named by the definitions it
/// holds and by the top-level one it belongs to.
fn windows(
    path: &str,
    lines: &[&str],
    start: usize,
    end: usize,
    language: Option<&Language>,
    config: &ChunkConfig,
) -> Vec<Chunk> {
    let top_name = language.and_then(|l| {
        lines[start..end]
            .iter()
            .find_map(|line| first_name(&l.top, line))
    });
    let limit = if language.is_some() {
        config.max_chunk_lines.max(1)
    } else {
        config.window_lines.max(1)
    };
    let step = config
        .window_lines
        .max(1)
        .saturating_sub(config.window_overlap)
        .max(1);
    let size = if end - start <= limit {
        end - start
    } else {
        config.window_lines.max(1)
    };
    let mut chunks = Vec::new();
    let mut from = start;
    loop {
        let to = (from + size).min(end);
        let mut symbols: Vec<String> = top_name.iter().cloned().collect();
        if let Some(language) = language {
            for line in &lines[from..to] {
                if let Some(name) = first_name(&language.any, line)
                    && !symbols.contains(&name)
                {
                    symbols.push(name);
                }
            }
        }
        chunks.push(Chunk {
            path: path.to_owned(),
            start_line: line_number(from + 1),
            end_line: line_number(to),
            symbols,
            text: lines[from..to].join("\n"),
        });
        if to >= end {
            break;
        }
        from += step;
    }
    chunks
}

fn line_number(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(chunks: &[Chunk]) -> Vec<(u32, u32, Vec<String>)> {
        chunks
            .iter()
            .map(|c| (c.start_line, c.end_line, c.symbols.clone()))
            .collect()
    }

    #[test]
    fn every_pattern_compiles() {
        for language in [&*PYTHON, &*RUST, &*SCRIPT, &*GO] {
            assert!(!language.top.is_empty() && !language.any.is_empty());
        }
        assert_eq!(RUST.top.len(), 2);
        assert_eq!(SCRIPT.top.len(), 4);
        assert_eq!(SCRIPT.any.len(), 2);
        assert_eq!(GO.top.len(), 2);
    }

    #[test]
    fn python_is_cut_at_top_level_definitions_with_their_decorators() {
        let text = "import os\n\n@cached\ndef load(path):\n    return 1\n\nclass Store:\n    def get(self):\n        pass\n";
        let chunks = chunk_file("a/b.py", text, &ChunkConfig::default());
        let s = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            ranges(&chunks),
            [
                (1, 2, s(&[])),
                (3, 6, s(&["load"])),
                (7, 9, s(&["Store", "get"]))
            ]
        );
        assert!(chunks[1].text.starts_with("@cached\ndef load"));
    }

    #[test]
    fn rust_go_and_typescript_definitions_are_named() {
        let config = ChunkConfig::default();
        let rust = "use x;\n/// Doc.\npub(crate) async fn run() {}\nimpl<T: Clone> Display for Wrapper<T> {\n    fn fmt() {}\n}\npub struct Point;\n";
        let names: Vec<Vec<String>> = chunk_file("lib.rs", rust, &config)
            .into_iter()
            .map(|c| c.symbols)
            .collect();
        assert_eq!(
            names,
            [
                vec![],
                vec!["run".to_owned()],
                vec!["Wrapper".to_owned(), "fmt".to_owned()],
                vec!["Point".to_owned()]
            ]
        );
        let go = "package main\nfunc (s *Server) Serve() {}\ntype Config struct{}\n";
        let names: Vec<Vec<String>> = chunk_file("main.go", go, &config)
            .into_iter()
            .map(|c| c.symbols)
            .collect();
        assert_eq!(
            names,
            [vec![], vec!["Serve".to_owned()], vec!["Config".to_owned()]]
        );
        let ts = "export const parseConfig = async (text: string): Config => {\n};\nexport default class App {}\nfunction helper() {}\n";
        let names: Vec<Vec<String>> = chunk_file("app.ts", ts, &config)
            .into_iter()
            .map(|c| c.symbols)
            .collect();
        assert_eq!(names[0], ["parseConfig"]);
        assert_eq!(names[1], ["App"]);
        assert_eq!(names[2], ["helper"]);
    }

    #[test]
    fn other_files_are_cut_into_overlapping_windows_that_cover_every_line() {
        let text: String = (1..=130).map(|n| format!("line {n}\n")).collect();
        let chunks = chunk_file("notes.txt", &text, &ChunkConfig::default());
        let spans: Vec<(u32, u32)> = chunks.iter().map(|c| (c.start_line, c.end_line)).collect();
        assert_eq!(spans, [(1, 60), (51, 110), (101, 130)]);
        assert!(chunk_file("empty.py", "", &ChunkConfig::default()).is_empty());
    }
}
