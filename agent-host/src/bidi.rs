//! The Unicode bidirectional controls: invisible characters that reorder the text around
//! them.
//!
//! A prompt, a model's answer or a dead letter may hold them, by accident or to mislead: a
//! U+202E RIGHT-TO-LEFT OVERRIDE makes the rest of its line read backwards, so that a prompt
//! or a line of code appears to say something it does not (CVE-2021-42574, "Trojan Source").
//! The web pages isolate such text and show these characters in code (`web::text`); the
//! command line prints them as escapes ([`escape_for_terminal`]).

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` is a bidirectional control: an embedding, override or isolate (U+202A to
/// U+202E, U+2066 to U+2069), or an implicit mark (U+200E, U+200F, U+061C).
pub(crate) fn is_control(c: char) -> bool {
    matches!(
        c,
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}'
    )
}

/// Whether `text` holds a bidirectional control.
pub(crate) fn has_control(text: &str) -> bool {
    text.chars().any(is_control)
}

/// `text` with every bidirectional control written as a Rust-style escape (`\u{202e}`), so
/// that a terminal shows it instead of reordering the line; borrowed when it has none.
pub(crate) fn escape_for_terminal(text: &str) -> Cow<'_, str> {
    if !has_control(text) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_control(c) {
            // Writing to a String cannot fail.
            let _ = write!(escaped, "\\u{{{:x}}}", u32::from(c));
        } else {
            escaped.push(c);
        }
    }
    Cow::Owned(escaped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_control_is_escaped_and_other_text_is_kept() {
        let text = "a\u{202E}b\u{2066}c\u{2069}d\u{200F}e\u{061C}f\u{202A}g";
        assert_eq!(
            escape_for_terminal(text),
            "a\\u{202e}b\\u{2066}c\\u{2069}d\\u{200f}e\\u{61c}f\\u{202a}g"
        );
        // Right-to-left letters are text, not controls.
        let hebrew = "שלום ✓ \u{200D}";
        assert!(matches!(escape_for_terminal(hebrew), Cow::Borrowed(_)));
    }
}
