//! The OpenAI-compatible Chat Completions client.
//!
//! One [`Llm::complete`] call is one `POST {base_url}/chat/completions` with a strict
//! `json_schema` response format, retried on 429, 5xx, timeouts and connection errors up to
//! [`LlmSettings::max_attempts`] requests in all. With a [`RateLimitFeedback`] attached, every
//! answer's rate-limit headers are reported to it (a 429 pauses every caller of the process),
//! and each retry waits for its budget.

use crate::http::{body_message, error_chain, truncate};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Llm, LlmError, LlmRequest, LlmResponse, LlmSettings, RateLimitFeedback, ServerLimits, Usage,
    count_as_budget_wait,
};
use crate::machine::{RetryPolicy, random_jitter};

/// The backoff when the server gives no `Retry-After`: 500 ms doubling on each retry, at most
/// 20 s, with jitter (the tries themselves are counted by `LlmSettings::max_attempts`).
const BACKOFF: RetryPolicy = RetryPolicy {
    max_attempts: u32::MAX,
    base_delay: Duration::from_millis(500),
    max_delay: Duration::from_secs(20),
};
/// The longest wait a server's `Retry-After` may impose on one retry.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(60);
/// How much of an unexpected body goes into an error message, in characters.
const MESSAGE_LIMIT: usize = 300;
/// How much of a body that is not a chat completion goes into a `Protocol` error.
const EXCERPT_LIMIT: usize = 100;

/// A client of an OpenAI-compatible Chat Completions API (OpenAI itself, or any server that
/// speaks the same protocol at [`LlmSettings::base_url`]).
///
/// Answers are requested with a strict `json_schema` response format, so the model's content
/// is JSON following [`LlmRequest::schema`], from [`LlmRequest::model`] when the request names
/// one and from [`LlmSettings::model`] otherwise. `Debug` shows the settings but never the API
/// key.
///
/// ```no_run
/// use agent_pipeline::llm::{ApiKey, LlmSettings, OpenAiLlm};
///
/// let llm = OpenAiLlm::new(LlmSettings {
///     api_key: Some(ApiKey::new("sk-…")),
///     ..LlmSettings::default()
/// })?;
/// # Ok::<(), agent_pipeline::llm::LlmError>(())
/// ```
#[derive(Clone)]
pub struct OpenAiLlm {
    settings: LlmSettings,
    /// `{base_url}/chat/completions`.
    endpoint: Url,
    /// `Bearer <key>`, marked sensitive so that HTTP libraries do not print it either.
    authorization: HeaderValue,
    client: reqwest::Client,
    /// Where the rate-limit headers of every answer go, if anywhere.
    feedback: Option<Arc<dyn RateLimitFeedback>>,
}

impl fmt::Debug for OpenAiLlm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Written by hand so that the key cannot leak through a field added later: the
        // settings' `ApiKey` redacts itself and the header value is left out.
        f.debug_struct("OpenAiLlm")
            .field("model", &self.settings.model)
            .field("endpoint", &self.endpoint.as_str())
            .field("api_key", &self.settings.api_key)
            .field("timeout", &self.settings.timeout)
            .field("max_attempts", &self.settings.max_attempts)
            .field("feedback", &self.feedback)
            .finish_non_exhaustive()
    }
}

impl OpenAiLlm {
    /// A client for the server, model and key of `settings`.
    ///
    /// Each HTTP request may take up to `settings.timeout`; one call makes at most
    /// `settings.max_attempts` requests (at least one).
    ///
    /// # Errors
    ///
    /// - [`LlmError::Unauthorized`] with status `0` (no request was made) when
    ///   `settings.api_key` is missing, empty, or not sendable in an HTTP header: the error's
    ///   message points at `OPENAI_API_KEY`, which is what the user has to fix.
    /// - [`LlmError::Transport`] when `settings.base_url` is not a URL or the HTTP client cannot
    ///   be built.
    pub fn new(settings: LlmSettings) -> Result<OpenAiLlm, LlmError> {
        let key = settings
            .api_key
            .as_ref()
            .map(|key| key.expose().trim())
            .filter(|key| !key.is_empty())
            .ok_or_else(|| LlmError::Unauthorized {
                status: 0,
                message: "no API key is configured (OPENAI_API_KEY is unset or empty)".to_owned(),
            })?;
        let mut authorization = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
            LlmError::Unauthorized {
                status: 0,
                message: "the API key contains characters that cannot be sent in an HTTP header"
                    .to_owned(),
            }
        })?;
        authorization.set_sensitive(true);

        let endpoint = format!(
            "{}/chat/completions",
            settings.base_url.trim_end_matches('/')
        );
        // The URL is not echoed back: a base URL may carry credentials of a proxy.
        let endpoint = Url::parse(&endpoint)
            .map_err(|e| LlmError::Transport(format!("OPENAI_BASE_URL is not a valid URL: {e}")))?;

        // reqwest is built without a default TLS provider; the workspace uses ring. Another
        // part of the process may have installed it already, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .build()
            .map_err(|e| {
                LlmError::Transport(format!("cannot build the HTTP client: {}", error_chain(e)))
            })?;

        Ok(OpenAiLlm {
            settings,
            endpoint,
            authorization,
            client,
            feedback: None,
        })
    }

    /// Reports the rate-limit headers of every answer (`x-ratelimit-*`, `Retry-After`,
    /// `retry-after-ms`, and whether it was a 429) to `feedback`, and waits for its
    /// [`before_retry`](RateLimitFeedback::before_retry) before each retry.
    /// [`from_settings`](super::from_settings) attaches the process's
    /// [`RateLimiter`](super::RateLimiter).
    pub fn with_rate_limit_feedback(mut self, feedback: Arc<dyn RateLimitFeedback>) -> Self {
        self.feedback = Some(feedback);
        self
    }

    /// Makes one HTTP request for `model` and sorts its outcome.
    async fn attempt(&self, body: &Value, model: &str) -> Attempt {
        let sent_at = tokio::time::Instant::now();
        let sent = self
            .client
            .post(self.endpoint.clone())
            .header(AUTHORIZATION, self.authorization.clone())
            .json(body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => return Attempt::Retry(self.request_error(e), None),
        };

        let status = response.status();
        let limits = server_limits(
            response.headers(),
            sent_at,
            status == StatusCode::TOO_MANY_REQUESTS,
        );
        if let Some(feedback) = &self.feedback {
            feedback.observe(&limits);
        }
        let wait_hint = retry_wait(&limits);
        let text = match response.text().await {
            Ok(text) => text,
            Err(e) => return Attempt::Retry(self.request_error(e), None),
        };
        tracing::debug!(model, status = status.as_u16(), "LLM server answered");

        if status.is_success() {
            return match parse_completion(&text, model) {
                Ok(response) => Attempt::Done(response),
                Err(e) => Attempt::Fail(e),
            };
        }
        let code = status.as_u16();
        let message = error_message(&text);
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            Attempt::Fail(LlmError::Unauthorized {
                status: code,
                message,
            })
        } else if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            let error = LlmError::Unavailable {
                status: code,
                attempts: 0,
                message,
            };
            Attempt::Retry(error, wait_hint)
        } else if status.is_client_error() {
            Attempt::Fail(LlmError::Rejected {
                status: code,
                message,
            })
        } else {
            Attempt::Fail(LlmError::Protocol(format!("unexpected HTTP status {code}")))
        }
    }

    /// Converts a reqwest error (before or while reading the answer) into ours.
    fn request_error(&self, error: reqwest::Error) -> LlmError {
        if error.is_timeout() {
            LlmError::Timeout(self.settings.timeout)
        } else {
            LlmError::Transport(error_chain(error))
        }
    }
}

#[async_trait]
impl Llm for OpenAiLlm {
    fn model(&self) -> &str {
        &self.settings.model
    }

    async fn complete(&self, request: &LlmRequest) -> Result<LlmResponse, LlmError> {
        let model = request.model.as_deref().unwrap_or(&self.settings.model);
        let body = json!({
            "model": model,
            "messages": request.messages,
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": request.schema_name,
                    "strict": true,
                    "schema": request.schema,
                },
            },
        });
        let max_attempts = self.settings.max_attempts.max(1);
        let mut attempt: u32 = 1;
        loop {
            tracing::debug!(model, attempt, "calling the LLM server");
            let (error, wait_hint) = match self.attempt(&body, model).await {
                Attempt::Done(response) => return Ok(response),
                Attempt::Fail(error) => return Err(error),
                Attempt::Retry(error, wait_hint) => (error, wait_hint),
            };
            let error = match error {
                LlmError::Unavailable {
                    status, message, ..
                } => LlmError::Unavailable {
                    status,
                    attempts: attempt,
                    message,
                },
                other => other,
            };
            if attempt >= max_attempts {
                tracing::warn!(model, attempt, %error, "LLM call failed, no attempts left");
                return Err(error);
            }
            let wait = wait_hint.unwrap_or_else(|| BACKOFF.backoff(attempt, random_jitter()));
            let status = match &error {
                LlmError::Unavailable { status, .. } => Some(*status),
                _ => None,
            };
            tracing::warn!(
                model,
                status,
                attempt,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                %error,
                "LLM call failed, retrying"
            );
            if status == Some(StatusCode::TOO_MANY_REQUESTS.as_u16()) {
                // The server's rate limit: waiting for it is waiting for budget.
                count_as_budget_wait(tokio::time::sleep(wait)).await;
            } else {
                tokio::time::sleep(wait).await;
            }
            if let Some(feedback) = &self.feedback {
                feedback.before_retry().await;
            }
            attempt += 1;
        }
    }
}

/// What one HTTP request came to.
enum Attempt {
    /// A chat completion.
    Done(LlmResponse),
    /// An error that another request would not fix.
    Fail(LlmError),
    /// An error that another request may fix, with the server's wish of how long to wait.
    Retry(LlmError, Option<Duration>),
}

/// The parts of a Chat Completions response that we read.
#[derive(Deserialize)]
struct ChatCompletion {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Choice {
    message: ChoiceMessage,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
}

/// Token counts; some compatible servers leave fields out or send `null`.
#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    total_tokens: Option<u64>,
}

/// Reads a successful answer's body.
fn parse_completion(body: &str, asked_model: &str) -> Result<LlmResponse, LlmError> {
    let value: Value = serde_json::from_str(body).map_err(|e| {
        LlmError::Protocol(format!(
            "the body is not JSON ({e}): {:?}",
            truncate(body, EXCERPT_LIMIT)
        ))
    })?;
    let completion: ChatCompletion = serde_json::from_value(value)
        .map_err(|e| LlmError::Protocol(format!("unexpected shape: {e}")))?;
    let Some(choice) = completion.choices.into_iter().next() else {
        return Err(LlmError::Protocol("the answer has no choices".to_owned()));
    };
    if let Some(refusal) = choice.message.refusal {
        return Err(LlmError::Refused(refusal));
    }
    let content = choice.message.content.ok_or_else(|| {
        LlmError::Protocol("the first choice has neither content nor refusal".to_owned())
    })?;
    let usage = completion
        .usage
        .map(|usage| {
            let prompt_tokens = usage.prompt_tokens.unwrap_or(0);
            let completion_tokens = usage.completion_tokens.unwrap_or(0);
            Usage {
                prompt_tokens,
                completion_tokens,
                total_tokens: usage
                    .total_tokens
                    .unwrap_or(prompt_tokens.saturating_add(completion_tokens)),
            }
        })
        .unwrap_or_default();
    let model = completion
        .model
        .filter(|model| !model.is_empty())
        .unwrap_or_else(|| asked_model.to_owned());
    Ok(LlmResponse {
        content,
        model,
        usage,
    })
}

/// The explanation in an error body: OpenAI's `{"error":{"message":…}}` (or the flatter
/// `{"message":…}` / `{"error":"…"}` of some compatible servers), else the body itself,
/// shortened.
fn error_message(body: &str) -> String {
    let from_json = serde_json::from_str::<Value>(body).ok().and_then(|value| {
        let message = value
            .pointer("/error/message")
            .or_else(|| value.get("error").filter(|error| error.is_string()))
            .or_else(|| value.get("message"))?;
        message.as_str().map(str::to_owned)
    });
    body_message(from_json, body, MESSAGE_LIMIT)
}

/// What the headers say about the server's rate limits.
fn server_limits(
    headers: &HeaderMap,
    sent_at: tokio::time::Instant,
    rate_limited: bool,
) -> ServerLimits {
    ServerLimits::from_headers(sent_at, rate_limited, |name| {
        headers.get(name).and_then(|value| value.to_str().ok())
    })
}

/// The wait a server asks for before a retry: `retry-after-ms` (milliseconds, OpenAI's) or
/// `Retry-After` (whole seconds; HTTP dates are ignored), at most [`RETRY_AFTER_CAP`].
fn retry_wait(limits: &ServerLimits) -> Option<Duration> {
    limits.retry_after.map(|wait| wait.min(RETRY_AFTER_CAP))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::RETRY_AFTER;

    fn retry_after(headers: &HeaderMap) -> Option<Duration> {
        retry_wait(&server_limits(headers, tokio::time::Instant::now(), false))
    }

    #[test]
    fn retry_after_prefers_milliseconds_and_caps_the_wait() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(250)));
        headers.insert("retry-after-ms", HeaderValue::from_static("999999999"));
        assert_eq!(retry_after(&headers), Some(RETRY_AFTER_CAP));
        headers.remove("retry-after-ms");
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn error_message_reads_openai_error_bodies_and_shortens_others() {
        assert_eq!(
            error_message(r#"{"error":{"message":"Incorrect API key provided","type":"x"}}"#),
            "Incorrect API key provided"
        );
        let long = "x".repeat(1000);
        let message = error_message(&long);
        assert_eq!(message.chars().count(), MESSAGE_LIMIT + 1);
        assert!(message.ends_with('…'));
        assert_eq!(error_message(""), "(empty body)");
    }

    #[test]
    fn usage_and_model_default_when_missing() {
        let body = r#"{"choices":[{"message":{"role":"assistant","content":"{}"}}]}"#;
        let response = parse_completion(body, "configured").map_err(|e| e.to_string());
        assert_eq!(
            response,
            Ok(LlmResponse {
                content: "{}".to_owned(),
                model: "configured".to_owned(),
                usage: Usage::default(),
            })
        );
    }

    /// Serves a Chat Completions endpoint that answers `{}` without naming a model, and
    /// keeps the `model` of every request it gets.
    async fn recording_server() -> (String, Arc<std::sync::Mutex<Vec<Value>>>) {
        use axum::routing::post;

        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        let app = axum::Router::new().route(
            "/v1/chat/completions",
            post(move |axum::Json(body): axum::Json<Value>| {
                let record = record.clone();
                async move {
                    if let Ok(mut seen) = record.lock() {
                        seen.push(body["model"].clone());
                    }
                    axum::Json(json!({
                        "choices": [{ "message": { "role": "assistant", "content": "{}" } }],
                    }))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a local port");
        let addr = listener.local_addr().expect("a local address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (format!("http://{addr}/v1"), seen)
    }

    #[tokio::test]
    async fn the_request_model_replaces_the_configured_one() {
        let (base_url, seen) = recording_server().await;
        let llm = OpenAiLlm::new(LlmSettings {
            api_key: Some(crate::llm::ApiKey::new("sk-test")),
            model: "configured".to_owned(),
            base_url,
            max_attempts: 1,
            ..LlmSettings::default()
        })
        .expect("a client");
        let mut request = LlmRequest {
            messages: Vec::new(),
            schema_name: "s".to_owned(),
            schema: json!({}),
            model: None,
        };
        let configured = llm.complete(&request).await.map(|r| r.model);
        request.model = Some("gpt-4.1-nano".to_owned());
        let asked = llm.complete(&request).await.map(|r| r.model);

        // A server that does not name the model is taken to have answered as asked.
        assert_eq!(configured, Ok("configured".to_owned()));
        assert_eq!(asked, Ok("gpt-4.1-nano".to_owned()));
        let seen = seen.lock().map(|seen| seen.clone()).unwrap_or_default();
        assert_eq!(seen, [json!("configured"), json!("gpt-4.1-nano")]);
    }

    #[test]
    fn null_content_without_refusal_is_a_protocol_error() {
        let body =
            r#"{"choices":[{"message":{"role":"assistant","content":null,"refusal":null}}]}"#;
        assert!(matches!(
            parse_completion(body, "m"),
            Err(LlmError::Protocol(_))
        ));
    }
}
