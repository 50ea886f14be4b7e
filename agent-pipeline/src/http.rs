//! What the HTTP clients (the OpenAI-compatible client and the GitHub publisher) share: how
//! errors and error bodies become short messages.

/// The message of an error and its sources, without the request URL.
pub(crate) fn error_chain(error: reqwest::Error) -> String {
    crate::error::error_chain(&error.without_url())
}

/// `text` cut to at most `limit` characters, with `…` when something was cut.
pub(crate) fn truncate(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// The explanation of an error answer: the message found in its JSON, else the body itself,
/// shortened to `limit` characters.
pub(crate) fn body_message(from_json: Option<String>, body: &str, limit: usize) -> String {
    match from_json {
        Some(message) => truncate(&message, limit),
        None if body.trim().is_empty() => "(empty body)".to_owned(),
        None => truncate(body.trim(), limit),
    }
}
