//! How code and questions are cut into words for the lexical index: identifiers are split at
//! `_`, `-`, `.` and case changes, so that `parse_config`, `parseConfig` and `ParseConfig` all
//! match the question "parse config".

/// The words of `text`, lowercased: each run of letters and digits, split further at case
/// changes (`parseConfig` → `parse`, `config`; `HTTPServer` → `http`, `server`), followed by
/// the whole run when it was split (`parseconfig`). Single characters are left out.
pub(crate) fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for run in text.split(|c: char| !c.is_alphanumeric()) {
        if run.is_empty() {
            continue;
        }
        let parts = camel_parts(run);
        let split = parts.len() > 1;
        for part in parts {
            if part.chars().count() > 1 {
                out.push(part.to_lowercase());
            }
        }
        if split {
            out.push(run.to_lowercase());
        }
    }
    out
}

/// [`words`] joined by spaces, ready for a whitespace tokenizer.
pub(crate) fn word_text(text: &str) -> String {
    words(text).join(" ")
}

/// `run` cut where a lowercase letter or digit is followed by an uppercase one, and before
/// the last capital of a run of capitals followed by a lowercase letter.
fn camel_parts(run: &str) -> Vec<&str> {
    let chars: Vec<(usize, char)> = run.char_indices().collect();
    let mut parts = Vec::new();
    let mut start = 0;
    for i in 1..chars.len() {
        let (at, c) = chars[i];
        let prev = chars[i - 1].1;
        let next_lower = chars.get(i + 1).is_some_and(|(_, n)| n.is_lowercase());
        let boundary = (c.is_uppercase() && (prev.is_lowercase() || prev.is_ascii_digit()))
            || (c.is_uppercase() && prev.is_uppercase() && next_lower);
        if boundary {
            parts.push(&run[start..at]);
            start = at;
        }
    }
    parts.push(&run[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_of_every_case_style_give_the_same_words() {
        assert_eq!(words("parse_config"), ["parse", "config"]);
        assert_eq!(words("parseConfig"), ["parse", "config", "parseconfig"]);
        assert_eq!(words("ParseConfig()"), ["parse", "config", "parseconfig"]);
        assert_eq!(words("HTTPServer x"), ["http", "server", "httpserver"]);
        assert_eq!(
            words("src/billing/invoice.py"),
            ["src", "billing", "invoice", "py"]
        );
        assert_eq!(
            words("Where is the total?"),
            ["where", "is", "the", "total"]
        );
    }
}
