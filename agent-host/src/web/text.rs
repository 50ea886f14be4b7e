//! Text the page did not write (prompts, model names, reasons, comments, artifacts, file
//! names, error messages, dead letters) put in the page so that it cannot reorder the page
//! around it.
//!
//! maud escapes such text, but escaping leaves the Unicode bidirectional controls
//! ([`crate::bidi`]) and right-to-left letters in place: a U+202E in a model name would make
//! the rest of its line read backwards, flipping the columns beside it. Every such text is
//! therefore put in the page through [`user`], which wraps it in a `<bdi>`: the browser lays
//! it out on its own, its controls end where it ends. Where a reader must see exactly what
//! the text says (a prompt, code, an artifact's raw text, a dead letter), [`revealed`] also
//! shows each control as a visible marker, `<U+202E>`, instead of obeying it, as code hosts
//! warn of hidden bidirectional characters in code.

use std::borrow::Cow;
use std::fmt::Write as _;

use maud::{Markup, PreEscaped, html};

use crate::bidi;

/// The class of the marker that stands for a bidirectional control.
const MARKER_CLASS: &str = "bidi-control";

/// `text`, escaped and isolated from the page's own text in a `<bdi>`.
pub(crate) fn user(text: &str) -> Markup {
    html! { bdi { (text) } }
}

/// `text`, escaped and isolated like [`user`], with each bidirectional control shown as a
/// marker rather than obeyed.
pub(crate) fn revealed(text: &str) -> Markup {
    let escaped = html! { (text) }.into_string();
    html! { bdi { (PreEscaped(reveal_controls(&escaped))) } }
}

/// `html` with each bidirectional control replaced by a visible marker, `<U+202E>`, whose
/// title says what it is; borrowed when it has none.
///
/// `html` must be markup whose controls are all in its text, such as escaped text or the
/// highlighter's output: a marker in an attribute would break the markup.
pub(crate) fn reveal_controls(html: &str) -> Cow<'_, str> {
    if !bidi::has_control(html) {
        return Cow::Borrowed(html);
    }
    let mut shown = String::with_capacity(html.len() + 128);
    for c in html.chars() {
        if bidi::is_control(c) {
            let code = u32::from(c);
            // Writing to a String cannot fail.
            let _ = write!(
                shown,
                "<span class=\"{MARKER_CLASS}\" title=\"hidden bidirectional control \
                 character U+{code:04X}\">&lt;U+{code:04X}&gt;</span>"
            );
        } else {
            shown.push(c);
        }
    }
    Cow::Owned(shown)
}

/// A warning above `text` when it holds bidirectional controls, which [`revealed`] and the
/// highlighter show as markers; nothing otherwise.
pub(crate) fn controls_warning(text: &str) -> Markup {
    html! {
        @if bidi::has_control(text) {
            p.note.bidi-warning role="note" {
                "This text contains hidden bidirectional Unicode characters, shown as "
                code { "<U+…>" } ": they can make it read differently from what it is."
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_text_is_escaped_inside_an_isolate() {
        let html = user("<b>\u{202E}evil").into_string();
        assert_eq!(html, "<bdi>&lt;b&gt;\u{202E}evil</bdi>");
    }

    #[test]
    fn revealed_text_shows_each_control_as_a_marker() {
        let html = revealed("a<\u{202E}b\u{2066}c").into_string();
        assert!(html.starts_with("<bdi>a&lt;"), "{html}");
        assert!(html.contains("&lt;U+202E&gt;</span>b"), "{html}");
        assert!(html.contains("&lt;U+2066&gt;</span>c"), "{html}");
        assert!(!bidi::has_control(&html), "{html}");
        assert_eq!(revealed("plain").into_string(), "<bdi>plain</bdi>");
    }

    #[test]
    fn the_warning_shows_only_with_controls() {
        assert!(controls_warning("plain").into_string().is_empty());
        assert!(
            controls_warning("x\u{200F}")
                .into_string()
                .contains("bidirectional")
        );
    }
}
