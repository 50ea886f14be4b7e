//! `GET /metrics` of the web server: the process's metrics for Prometheus (see
//! `docs/metrics.md`). Outside the login: with `WEB_TOKEN` set it wants the token as a bearer
//! header and answers 401 without it, as a scraper expects.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use super::WebState;

/// `GET /metrics`.
pub(crate) async fn metrics(State(state): State<WebState>, headers: HeaderMap) -> Response {
    crate::telemetry::scrape(state.settings().token.as_deref(), &headers)
}
