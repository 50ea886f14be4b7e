//! How many tokens a call will use, guessed before it is sent.

use std::collections::HashMap;

use crate::llm::{LlmRequest, Usage};

/// What a completion is guessed to use before any has been seen.
pub(crate) const FIRST_COMPLETION_GUESS: u64 = 500;
/// Tokens a chat message costs beyond its text (role and separators).
const TOKENS_PER_MESSAGE: u64 = 4;
/// How fast the completion guess follows new completions (weight of the newest one).
const COMPLETION_WEIGHT: f64 = 0.2;

/// The tokens `text` is guessed to take: its bytes / 4, rounded up (bytes are at least
/// characters, so non-ASCII text is over- rather than under-estimated). The rule of
/// [`TokenEstimator`], for one text.
#[cfg(feature = "memory")]
pub(crate) fn text_tokens(text: &str) -> u64 {
    text.len().div_ceil(4) as u64
}

/// Guesses a call's tokens: the prompt's bytes / 4 (messages and schema; bytes are at least
/// characters, so non-ASCII text is over- rather than under-estimated) plus the running
/// average of recent completions.
#[derive(Debug)]
pub(crate) struct TokenEstimator {
    expected_completion: f64,
    /// The serialised length of each schema seen, by name: schemas are fixed per stage.
    schema_bytes: HashMap<String, usize>,
}

impl Default for TokenEstimator {
    fn default() -> Self {
        Self {
            expected_completion: FIRST_COMPLETION_GUESS as f64,
            schema_bytes: HashMap::new(),
        }
    }
}

impl TokenEstimator {
    /// The tokens `request` is expected to use, prompt and completion.
    pub(crate) fn estimate(&mut self, request: &LlmRequest) -> u64 {
        let schema_bytes = match self.schema_bytes.get(&request.schema_name) {
            Some(bytes) => *bytes,
            None => {
                let bytes = request.schema.to_string().len();
                self.schema_bytes.insert(request.schema_name.clone(), bytes);
                bytes
            }
        };
        let message_bytes: usize = request.messages.iter().map(|m| m.content.len()).sum();
        let prompt = (message_bytes + schema_bytes).div_ceil(4) as u64
            + TOKENS_PER_MESSAGE * request.messages.len() as u64;
        prompt + self.expected_completion.round() as u64
    }

    /// Learns from a call's real usage.
    pub(crate) fn learn(&mut self, usage: &Usage) {
        self.expected_completion +=
            COMPLETION_WEIGHT * (usage.completion_tokens as f64 - self.expected_completion);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::{Message, Role};

    #[test]
    fn the_estimate_is_prompt_quarter_bytes_plus_the_average_completion() {
        let request = LlmRequest {
            messages: vec![Message::new(Role::User, "x".repeat(400))],
            schema_name: "s".into(),
            schema: serde_json::json!({}),
            model: None,
        };
        let mut estimator = TokenEstimator::default();
        let prompt = 100 + 1 + TOKENS_PER_MESSAGE;
        assert_eq!(
            estimator.estimate(&request),
            prompt + FIRST_COMPLETION_GUESS
        );
        for _ in 0..50 {
            estimator.learn(&Usage {
                prompt_tokens: 0,
                completion_tokens: 100,
                total_tokens: 100,
            });
        }
        assert_eq!(estimator.estimate(&request), prompt + 100);
    }
}
