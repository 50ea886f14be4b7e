//! Syntax highlighting of the code the pipeline wrote, on the server: class-based HTML from
//! syntect, coloured by one stylesheet (`/static/highlight.css`), so that the page needs no
//! script and no inline style.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::OnceLock;

use maud::{Markup, PreEscaped, html};
use syntect::highlighting::ThemeSet;
use syntect::html::{ClassStyle, ClassedHTMLGenerator, css_for_theme_with_class_style};
use syntect::parsing::{SyntaxReference, SyntaxSet};
use syntect::util::LinesWithEndings;

use super::text;

/// The prefix of every class the highlighter writes, so that they cannot clash with the
/// page's own classes.
const CLASS_STYLE: ClassStyle = ClassStyle::SpacedPrefixed { prefix: "hl-" };

/// The light theme the colours come from.
const THEME: &str = "InspiredGitHub";

/// Files larger than this are shown without colours: highlighting is CPU work done while
/// the page is rendered, and a file this large is read with a search, not by eye.
pub(crate) const MAX_HIGHLIGHT_BYTES: usize = 256 * 1024;

/// The grammars, loaded once (it takes a few milliseconds).
fn syntaxes() -> &'static SyntaxSet {
    static SYNTAXES: OnceLock<SyntaxSet> = OnceLock::new();
    SYNTAXES.get_or_init(SyntaxSet::load_defaults_newlines)
}

/// The grammar for `path`, from its extension (or its whole name, for `Makefile` and the
/// like); plain text when none matches.
fn syntax_for(path: &str) -> &'static SyntaxReference {
    let set = syntaxes();
    let path = Path::new(path);
    let by_extension = path
        .extension()
        .and_then(|e| e.to_str())
        .and_then(|e| set.find_syntax_by_extension(e));
    let by_name = || {
        path.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| set.find_syntax_by_extension(n))
    };
    by_extension
        .or_else(by_name)
        .unwrap_or_else(|| set.find_syntax_plain_text())
}

/// `code` of the file `path` as a highlighted block with line numbers.
///
/// The generator escapes the code itself, so its output is safe to put in the page as it is.
/// A file above [`MAX_HIGHLIGHT_BYTES`], or one the grammar fails on, is shown escaped and
/// uncoloured. Bidirectional controls in the code are shown as markers, under a warning,
/// rather than obeyed: a reviewer must read the code as the compiler does.
pub(crate) fn highlight(path: &str, code: &str) -> Markup {
    let syntax = syntax_for(path);
    let too_large = code.len() > MAX_HIGHLIGHT_BYTES;
    let highlighted = if too_large {
        None
    } else {
        classed_html(syntax, code)
    };
    let language = syntax.name.as_str();
    html! {
        (text::controls_warning(code))
        @if too_large {
            p.note {
                "This file has " (code.len() / 1024) " KiB, more than the "
                (MAX_HIGHLIGHT_BYTES / 1024) " KiB that are highlighted: it is shown without colours."
            }
        }
        div.code-block data-language=(language) {
            pre.line-numbers aria-hidden="true" { (line_numbers(code)) }
            pre.code {
                code.hl-code {
                    @match highlighted {
                        Some(html) => (PreEscaped(text::reveal_controls(&html))),
                        None => (text::revealed(code)),
                    }
                }
            }
        }
    }
}

/// The highlighted HTML of `code`, or `None` when the grammar fails on it.
fn classed_html(syntax: &SyntaxReference, code: &str) -> Option<String> {
    let mut generator = ClassedHTMLGenerator::new_with_class_style(syntax, syntaxes(), CLASS_STYLE);
    for line in LinesWithEndings::from(code) {
        if let Err(error) = generator.parse_html_for_line_which_includes_newline(line) {
            tracing::debug!(%error, syntax = %syntax.name, "highlighting failed; shown plain");
            return None;
        }
    }
    Some(generator.finalize())
}

/// `1\n2\n…` for the gutter beside the code, one number per line of `code`.
fn line_numbers(code: &str) -> String {
    let lines = code.lines().count().max(1);
    let mut numbers = String::with_capacity(lines * 4);
    for n in 1..=lines {
        let _ = writeln!(numbers, "{n}");
    }
    numbers
}

/// The colours of the highlighted code, as CSS for the `hl-` classes; generated once.
pub(crate) fn stylesheet() -> &'static str {
    static CSS: OnceLock<String> = OnceLock::new();
    CSS.get_or_init(|| {
        let themes = ThemeSet::load_defaults();
        let theme = themes
            .themes
            .get(THEME)
            .or_else(|| themes.themes.values().next());
        match theme.map(|theme| css_for_theme_with_class_style(theme, CLASS_STYLE)) {
            Some(Ok(css)) => css,
            Some(Err(error)) => {
                tracing::warn!(%error, "no stylesheet for the highlighted code");
                String::new()
            }
            None => String::new(),
        }
    })
    .as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_is_coloured_and_escaped() {
        let html = highlight("hello.py", "print('<b>hi</b>')\n").into_string();
        assert!(html.contains("class=\"hl-"), "{html}");
        assert!(html.contains("&lt;b&gt;hi&lt;/b&gt;"), "{html}");
        assert!(!html.contains("<b>"), "{html}");
        assert!(html.contains("data-language=\"Python\""), "{html}");
    }

    #[test]
    fn an_unknown_extension_is_plain_text_still_escaped() {
        let html = highlight("notes.unknown-ext", "<script>alert(1)</script>").into_string();
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("data-language=\"Plain Text\""), "{html}");
    }

    #[test]
    fn a_large_file_is_shown_uncoloured_and_says_so() {
        let code = "x = 1 < 2\n".repeat(MAX_HIGHLIGHT_BYTES / 10 + 1);
        let html = highlight("big.py", &code).into_string();
        assert!(html.contains("shown without colours"), "{}", &html[..300]);
        assert!(!html.contains("class=\"hl-source"), "no highlighting spans");
        assert!(html.contains("x = 1 &lt; 2"));
    }

    #[test]
    fn the_gutter_has_a_number_per_line() {
        assert_eq!(line_numbers("a\nb\nc"), "1\n2\n3\n");
        assert_eq!(line_numbers(""), "1\n");
    }

    #[test]
    fn the_stylesheet_colours_the_prefixed_classes() {
        let css = stylesheet();
        assert!(css.contains(".hl-code"), "{css}");
        assert!(css.contains(".hl-"), "{css}");
    }
}
