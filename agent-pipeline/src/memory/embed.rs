//! Embeddings: the [`Embedder`] trait and its errors.

use std::time::Duration;

use async_trait::async_trait;

/// Turns texts into vectors whose cosine similarity says how close their meanings are.
///
/// [`OpenAiEmbedder`](super::OpenAiEmbedder) calls an OpenAI-compatible `/embeddings`
/// endpoint; a test or another provider implements it directly.
#[async_trait]
pub trait Embedder: Send + Sync + std::fmt::Debug + 'static {
    /// The model's name: vectors of different models are never compared, and the cache of
    /// an index is keyed by it.
    fn model(&self) -> &str;

    /// One vector per input, in the order of `inputs`, all of the same length.
    ///
    /// # Errors
    ///
    /// [`EmbedError`]; [`EmbedError::Unsupported`] when the provider has no embeddings
    /// endpoint, which the memory takes as "lexical search only".
    async fn embed(&self, inputs: &[String]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// Why texts could not be embedded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EmbedError {
    /// The provider has no embeddings endpoint or model (HTTP 404, 405 or 501).
    #[error("the provider has no embeddings endpoint (HTTP {status}): {message}")]
    Unsupported {
        /// The HTTP status.
        status: u16,
        /// The provider's explanation.
        message: String,
    },
    /// The provider refused the API key (HTTP 401 or 403; 0 when no key is configured).
    #[error("unauthorized (HTTP {status}): {message}")]
    Unauthorized {
        /// The HTTP status, or 0.
        status: u16,
        /// The provider's explanation.
        message: String,
    },
    /// The provider refused the request (another 4xx).
    #[error("rejected (HTTP {status}): {message}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The provider's explanation.
        message: String,
    },
    /// The provider was overloaded or failing (429 or 5xx) on every attempt.
    #[error("unavailable after {attempts} attempts (HTTP {status}): {message}")]
    Unavailable {
        /// The last HTTP status.
        status: u16,
        /// How many requests were made.
        attempts: u32,
        /// The provider's explanation.
        message: String,
    },
    /// A request took longer than allowed.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed, or the client could not be built.
    #[error("transport: {0}")]
    Transport(String),
    /// The answer was not what the protocol says (not JSON, wrong number of vectors, vectors
    /// of different lengths).
    #[error("protocol: {0}")]
    Protocol(String),
}

impl EmbedError {
    /// Whether another request later may succeed (an overloaded provider, a timeout, a
    /// dropped connection).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. } | Self::Timeout(_) | Self::Transport(_)
        )
    }
}
