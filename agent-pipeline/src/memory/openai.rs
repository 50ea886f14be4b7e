//! Embeddings from an OpenAI-compatible `POST {base_url}/embeddings` endpoint.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::{Value, json};

use super::embed::{EmbedError, Embedder};
use crate::http::{body_message, error_chain};
use crate::llm::LlmSettings;
use crate::machine::{RetryPolicy, random_jitter};

/// `LLM_EMBEDDINGS_MODEL`: the embeddings model of the configured provider
/// ([`LlmSettings::embeddings_model`]); unset, the code memory searches lexically only.
pub const EMBEDDINGS_MODEL_VARIABLE: &str = crate::llm::EMBEDDINGS_MODEL;

/// The backoff between attempts when the server is overloaded or failing.
const BACKOFF: RetryPolicy = RetryPolicy {
    max_attempts: u32::MAX,
    base_delay: Duration::from_millis(500),
    max_delay: Duration::from_secs(20),
};
/// How much of an error body goes into an error message, in characters.
const MESSAGE_LIMIT: usize = 300;

/// A client of an OpenAI-compatible embeddings endpoint, with the server, key, timeout and
/// attempts of [`LlmSettings`] and a model of its own. `Debug` never shows the key.
///
/// ```no_run
/// use agent_pipeline::llm::LlmSettings;
/// use agent_pipeline::memory::OpenAiEmbedder;
///
/// let settings = LlmSettings::from_env(); // reads EMBEDDINGS_MODEL_VARIABLE too
/// if let Some(model) = &settings.embeddings_model {
///     let embedder = OpenAiEmbedder::new(&settings, model)?;
/// }
/// # Ok::<(), agent_pipeline::memory::EmbedError>(())
/// ```
#[derive(Clone)]
pub struct OpenAiEmbedder {
    model: String,
    endpoint: Url,
    authorization: HeaderValue,
    client: reqwest::Client,
    timeout: Duration,
    max_attempts: u32,
}

impl fmt::Debug for OpenAiEmbedder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiEmbedder")
            .field("model", &self.model)
            .field("endpoint", &self.endpoint.as_str())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl OpenAiEmbedder {
    /// A client of `model` at the server of `settings`.
    ///
    /// # Errors
    ///
    /// [`EmbedError::Unauthorized`] with status 0 when no API key is configured;
    /// [`EmbedError::Transport`] when the base URL is not a URL or the client cannot be built.
    pub fn new(settings: &LlmSettings, model: impl Into<String>) -> Result<Self, EmbedError> {
        let key = settings
            .api_key
            .as_ref()
            .map(|key| key.expose().trim())
            .filter(|key| !key.is_empty())
            .ok_or_else(|| EmbedError::Unauthorized {
                status: 0,
                message: "no API key is configured (OPENAI_API_KEY is unset or empty)".to_owned(),
            })?;
        let mut authorization = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
            EmbedError::Unauthorized {
                status: 0,
                message: "the API key cannot be sent in an HTTP header".to_owned(),
            }
        })?;
        authorization.set_sensitive(true);
        let endpoint = format!("{}/embeddings", settings.base_url.trim_end_matches('/'));
        let endpoint = Url::parse(&endpoint).map_err(|e| {
            EmbedError::Transport(format!("OPENAI_BASE_URL is not a valid URL: {e}"))
        })?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .build()
            .map_err(|e| {
                EmbedError::Transport(format!("cannot build the HTTP client: {}", error_chain(e)))
            })?;
        Ok(Self {
            model: model.into(),
            endpoint,
            authorization,
            client,
            timeout: settings.timeout,
            max_attempts: settings.max_attempts.max(1),
        })
    }

    async fn attempt(&self, body: &Value, count: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
        let response = self
            .client
            .post(self.endpoint.clone())
            .header(AUTHORIZATION, self.authorization.clone())
            .json(body)
            .send()
            .await
            .map_err(|e| self.request_error(e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| self.request_error(e))?;
        if status.is_success() {
            return parse_embeddings(&text, count);
        }
        let code = status.as_u16();
        let message = error_message(&text);
        Err(match status {
            StatusCode::NOT_FOUND
            | StatusCode::METHOD_NOT_ALLOWED
            | StatusCode::NOT_IMPLEMENTED => EmbedError::Unsupported {
                status: code,
                message,
            },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => EmbedError::Unauthorized {
                status: code,
                message,
            },
            StatusCode::TOO_MANY_REQUESTS => EmbedError::Unavailable {
                status: code,
                attempts: 0,
                message,
            },
            s if s.is_server_error() => EmbedError::Unavailable {
                status: code,
                attempts: 0,
                message,
            },
            _ => EmbedError::Rejected {
                status: code,
                message,
            },
        })
    }

    fn request_error(&self, error: reqwest::Error) -> EmbedError {
        if error.is_timeout() {
            EmbedError::Timeout(self.timeout)
        } else {
            EmbedError::Transport(error_chain(error))
        }
    }
}

#[async_trait]
impl Embedder for OpenAiEmbedder {
    fn model(&self) -> &str {
        &self.model
    }

    async fn embed(&self, inputs: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let body = json!({ "model": self.model, "input": inputs, "encoding_format": "float" });
        let mut attempt = 1;
        loop {
            let error = match self.attempt(&body, inputs.len()).await {
                Ok(vectors) => return Ok(vectors),
                Err(error) if !error.is_retryable() => return Err(error),
                Err(EmbedError::Unavailable {
                    status, message, ..
                }) => EmbedError::Unavailable {
                    status,
                    attempts: attempt,
                    message,
                },
                Err(error) => error,
            };
            if attempt >= self.max_attempts {
                return Err(error);
            }
            tracing::warn!(model = %self.model, attempt, %error, "embeddings request failed, retrying");
            tokio::time::sleep(BACKOFF.backoff(attempt, random_jitter())).await;
            attempt += 1;
        }
    }
}

#[derive(Deserialize)]
struct EmbeddingList {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    #[serde(default)]
    index: Option<usize>,
    embedding: Vec<f32>,
}

/// The vectors of a successful answer, in input order (by `index` when the server gives it).
fn parse_embeddings(body: &str, count: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
    let list: EmbeddingList = serde_json::from_str(body)
        .map_err(|e| EmbedError::Protocol(format!("not an embedding list: {e}")))?;
    if list.data.len() != count {
        return Err(EmbedError::Protocol(format!(
            "{} vectors for {count} inputs",
            list.data.len()
        )));
    }
    let mut vectors: Vec<Option<Vec<f32>>> = vec![None; count];
    for (position, item) in list.data.into_iter().enumerate() {
        let index = item.index.unwrap_or(position);
        match vectors.get_mut(index) {
            Some(slot @ None) => *slot = Some(item.embedding),
            _ => {
                return Err(EmbedError::Protocol(format!(
                    "index {index} is out of place"
                )));
            }
        }
    }
    let vectors: Vec<Vec<f32>> = vectors.into_iter().flatten().collect();
    let dims = vectors.first().map_or(0, Vec::len);
    if dims == 0 || vectors.iter().any(|v| v.len() != dims) {
        return Err(EmbedError::Protocol(
            "vectors are empty or of different lengths".to_owned(),
        ));
    }
    Ok(vectors)
}

/// The explanation in an error body (`{"error":{"message":…}}`), else the body, shortened.
fn error_message(body: &str) -> String {
    let from_json = serde_json::from_str::<Value>(body).ok().and_then(|value| {
        value
            .pointer("/error/message")
            .or_else(|| value.get("error"))
            .or_else(|| value.get("message"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    body_message(from_json, body, MESSAGE_LIMIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_come_back_in_input_order_and_bad_lists_are_protocol_errors() {
        let body =
            r#"{"data":[{"index":1,"embedding":[0.0,1.0]},{"index":0,"embedding":[1.0,0.0]}]}"#;
        assert_eq!(
            parse_embeddings(body, 2),
            Ok(vec![vec![1.0, 0.0], vec![0.0, 1.0]])
        );
        for bad in [
            r#"{"data":[{"embedding":[1.0]}]}"#,
            r#"{"data":[{"index":0,"embedding":[1.0]},{"index":0,"embedding":[1.0]}]}"#,
            r#"{"data":[{"embedding":[1.0]},{"embedding":[1.0,2.0]}]}"#,
            "<html>",
        ] {
            assert!(
                matches!(parse_embeddings(bad, 2), Err(EmbedError::Protocol(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn debug_never_shows_the_key() -> Result<(), EmbedError> {
        let settings = LlmSettings {
            api_key: Some(crate::llm::ApiKey::new("sk-secret-123")),
            ..LlmSettings::default()
        };
        let embedder = OpenAiEmbedder::new(&settings, "text-embedding-3-small")?;
        assert!(!format!("{embedder:?}").contains("sk-secret-123"));
        Ok(())
    }
}
