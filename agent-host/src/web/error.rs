//! What a request can fail with, and how each failure is answered: a JSON `{"error": …}` for
//! the API, an HTML page for the UI.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::views::ViewError;

/// Why a request failed. Each variant is one status code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebError {
    /// 404: no such task, step, attempt or dead letter.
    #[error("{0}")]
    NotFound(String),
    /// 400: the request itself is wrong (an invalid id, an empty prompt).
    #[error("{0}")]
    BadRequest(String),
    /// 409: the request is fine but cannot be done now (a replay whose inputs are missing).
    #[error("{0}")]
    Conflict(String),
    /// 403: a form without its CSRF token, or a cross-site POST.
    #[error("{0}")]
    Forbidden(String),
    /// 401: `WEB_TOKEN` is set and the request does not carry it.
    #[error("{0}")]
    Unauthorized(String),
    /// 413: the request's body is larger than the server takes.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 503: this process cannot do it (read-only, or the bus is down).
    #[error("{0}")]
    Unavailable(String),
    /// 500: a store failed.
    #[error("{0}")]
    Internal(String),
}

impl WebError {
    /// The status code of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            WebError::NotFound(_) => StatusCode::NOT_FOUND,
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::Conflict(_) => StatusCode::CONFLICT,
            WebError::Forbidden(_) => StatusCode::FORBIDDEN,
            WebError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            WebError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            WebError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            WebError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The error of a library call: a refusal the user can act on keeps its own status
    /// (missing inputs → 409, unknown task → 404), anything else is internal.
    pub fn from_pipeline(error: agent_pipeline::Error) -> Self {
        use agent_pipeline::Error;
        match &error {
            Error::TaskNotFound(_) => WebError::NotFound(error.to_string()),
            Error::ReplayInputsMissing { .. }
            | Error::NotRedrivable { .. }
            | Error::NotApplicable { .. } => WebError::Conflict(error.to_string()),
            Error::UnknownStep(_)
            | Error::EmptyPrompt
            | Error::PromptTooLong { .. }
            | Error::Id(_)
            | Error::InvalidReplay(_)
            | Error::InvalidBudget(_)
            | Error::InvalidRepository(_) => WebError::BadRequest(error.to_string()),
            Error::Bus(bus)
                if bus.is_retryable() || matches!(bus, agent_pipeline::bus::BusError::Closed) =>
            {
                WebError::Unavailable(error.to_string())
            }
            _ => internal(&error),
        }
    }

    /// A body or query the extractor refused: 413 when the body was over the limit, 400
    /// otherwise.
    pub(crate) fn rejected(status: StatusCode, text: String) -> Self {
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            WebError::PayloadTooLarge(text)
        } else {
            WebError::BadRequest(text)
        }
    }

    /// The answer of the JSON API: `{"error": "…"}` with the status.
    pub fn into_json(self) -> Response {
        let body = serde_json::json!({ "error": self.to_string() });
        (self.status(), Json(body)).into_response()
    }
}

impl From<ViewError> for WebError {
    fn from(error: ViewError) -> Self {
        internal(&error)
    }
}

/// Logs an unexpected failure with its whole chain and answers with its message.
fn internal(error: &(dyn std::error::Error + 'static)) -> WebError {
    let chain = agent_pipeline::error_chain(error);
    tracing::error!(error = %chain, "request failed");
    WebError::Internal(chain)
}

/// An API failure: [`WebError`] answered as JSON.
#[derive(Debug)]
pub(crate) struct ApiError(pub(crate) WebError);

impl<E: Into<WebError>> From<E> for ApiError {
    fn from(error: E) -> Self {
        ApiError(error.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.0.into_json()
    }
}
