//! The `Llm` trait and its providers: the OpenAI-compatible client, the offline model and
//! the simulated models of the benchmarks; the limits every call of a process goes through
//! ([`RateLimitedLlm`], guide in `docs/llm-limits.md`) and its [`metrics`]; what models cost
//! ([`PriceTable`]) and what each step's calls spent ([`StepMeter`], [`MeteredLlm`]).

mod limits;
mod metered;
pub mod metrics;
mod offline;
#[cfg(feature = "openai")]
mod openai;
mod prices;
mod settings;
mod simulated;
mod usage;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[cfg(feature = "memory")]
pub(crate) use limits::text_tokens;
pub use limits::{
    BudgetTimeout, Grant, RateLimitFeedback, RateLimitedLlm, RateLimiter, ServerLimits,
    count_as_budget_wait, parse_duration, timeout_excluding_budget_wait,
};
pub use metered::{MeteredLlm, StepMeter};
pub use offline::{OFFLINE_MODEL, OfflineLlm};
#[cfg(feature = "openai")]
pub use openai::OpenAiLlm;
pub use prices::{PriceEntryError, PriceTable};
#[cfg(all(feature = "memory", feature = "openai"))]
pub(crate) use settings::EMBEDDINGS_MODEL;
pub use settings::{ApiKey, LlmLimits, LlmSettings, LlmSettingsError, TokenPrices};
pub use simulated::{INSTANT_MODEL, InstantLlm, Latency, SIMULATED_MODEL, SimulatedLlm};
pub use usage::{LlmCall, Spend};

/// Who speaks in a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions to the model.
    System,
    /// The task and the context.
    User,
    /// An earlier answer of the model.
    Assistant,
}

/// One message of a chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who speaks.
    pub role: Role,
    /// What is said.
    pub content: String,
}

impl Message {
    /// A message of `role` saying `content`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
}

/// A request for one structured answer.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmRequest {
    /// The chat so far.
    pub messages: Vec<Message>,
    /// The name of the answer's schema (e.g. `design`).
    pub schema_name: String,
    /// The strict JSON Schema the answer must follow.
    pub schema: Value,
    /// Ask this model instead of the configured one (the OpenAI-compatible client sends it as
    /// the request's `model`; the offline and simulated models ignore it).
    pub model: Option<String>,
}

/// Tokens spent by one or more calls.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct Usage {
    /// Tokens of the prompt.
    pub prompt_tokens: u64,
    /// Tokens of the answer.
    pub completion_tokens: u64,
    /// Both together.
    pub total_tokens: u64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
    }
}

/// The model's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmResponse {
    /// The answer's text: JSON meant to follow the request's schema.
    pub content: String,
    /// The model that answered, as the server names it (`offline` for [`OfflineLlm`]).
    pub model: String,
    /// Tokens spent.
    pub usage: Usage,
}

/// Why an LLM call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LlmError {
    /// The server refused the credentials (HTTP 401/403).
    #[error("the LLM server refused the API key (HTTP {status}): {message}; check OPENAI_API_KEY")]
    Unauthorized {
        /// The HTTP status.
        status: u16,
        /// The server's explanation.
        message: String,
    },
    /// The model refused to answer.
    #[error("the model refused to answer: {0}")]
    Refused(String),
    /// The server kept answering 429 or 5xx until the retries ran out.
    #[error("the LLM server answered HTTP {status} after {attempts} attempt(s): {message}")]
    Unavailable {
        /// The last HTTP status.
        status: u16,
        /// How many requests were made.
        attempts: u32,
        /// The server's last explanation.
        message: String,
    },
    /// The server rejected the request (another 4xx).
    #[error("the LLM server rejected the request (HTTP {status}): {message}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The server's explanation.
        message: String,
    },
    /// The call took longer than the configured timeout.
    #[error("the LLM call timed out after {0:?}")]
    Timeout(Duration),
    /// The server could not be reached.
    #[error("could not reach the LLM server: {0}")]
    Transport(String),
    /// The server's answer is not a Chat Completions response.
    #[error("the LLM server's answer is not a chat completion: {0}")]
    Protocol(String),
    /// The step's share of the task's budget is spent, so the call was not made.
    #[error("the task's budget is spent: {0}")]
    BudgetExceeded(String),
    /// The call asked for a provider this process does not have.
    #[error("unknown LLM provider {0}")]
    UnknownProvider(String),
}

impl LlmError {
    /// Whether trying the same call again later may succeed: not for a spent budget or an
    /// unknown provider, which stay so however often the step runs.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            LlmError::Unavailable { .. }
                | LlmError::Timeout(_)
                | LlmError::Transport(_)
                | LlmError::Protocol(_)
        )
    }
}

/// A large language model that answers with JSON following a schema.
///
/// ```
/// use agent_pipeline::llm::{Llm, LlmRequest, Message, OfflineLlm, Role};
/// # tokio_test_block_on(async {
/// let llm = OfflineLlm::new();
/// let answer = llm
///     .complete(&LlmRequest {
///         messages: vec![Message::new(Role::User, "Write hello.py")],
///         schema_name: "review".into(),
///         schema: agent_pipeline::output::strict_schema::<agent_pipeline::output::Review>(),
///         model: None,
///     })
///     .await
///     .unwrap();
/// assert_eq!(answer.model, "offline");
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
#[async_trait]
pub trait Llm: Send + Sync + fmt::Debug + 'static {
    /// The configured model name (what artifacts record when the server does not say).
    fn model(&self) -> &str;

    /// Asks for one answer.
    async fn complete(&self, request: &LlmRequest) -> Result<LlmResponse, LlmError>;
}

/// The LLM these settings call for, behind the process's limits: the OpenAI-compatible
/// client when a key is set (and the `openai` feature is on), the offline model otherwise,
/// wrapped in a [`RateLimitedLlm`] that applies [`LlmSettings::limits`], honours the server's
/// rate-limit headers and records the [`metrics`].
///
/// ```
/// use agent_pipeline::llm::{LlmSettings, from_settings};
/// let llm = from_settings(&LlmSettings::default())?;
/// assert_eq!(llm.model(), "offline");
/// # Ok::<(), agent_pipeline::llm::LlmError>(())
/// ```
///
/// # Errors
///
/// What [`OpenAiLlm::new`] refuses, when a key is set.
pub fn from_settings(settings: &LlmSettings) -> Result<Arc<dyn Llm>, LlmError> {
    let limiter = Arc::new(RateLimiter::new(&settings.limits));
    let provider = provider(settings, &limiter)?;
    Ok(Arc::new(
        RateLimitedLlm::new(provider, limiter).with_prices(settings.prices.clone()),
    ))
}

/// The provider the settings name; the OpenAI client reports its headers to `limiter`.
fn provider(
    settings: &LlmSettings,
    #[cfg_attr(not(feature = "openai"), allow(unused_variables))] limiter: &Arc<RateLimiter>,
) -> Result<Arc<dyn Llm>, LlmError> {
    #[cfg(feature = "openai")]
    if settings.api_key.is_some() {
        let client = OpenAiLlm::new(settings.clone())?.with_rate_limit_feedback(limiter.clone());
        return Ok(Arc::new(client));
    }
    if settings.api_key.is_some() {
        tracing::warn!(
            "OPENAI_API_KEY is set but the `openai` feature is off; using the offline model"
        );
    }
    tracing::warn!(
        "no OPENAI_API_KEY: using the offline model; every artifact says \"model\": \"offline\""
    );
    Ok(Arc::new(OfflineLlm::new()))
}
