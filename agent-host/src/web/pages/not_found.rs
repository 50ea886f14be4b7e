//! The 404 page of every unknown path.

use axum::extract::State;
use axum::http::Uri;
use axum::response::Response;

use super::layout;
use crate::web::{WebError, WebState};

/// Every path no route takes: a page for people, JSON under `/api/` for programs.
pub(crate) async fn not_found(State(state): State<WebState>, uri: Uri) -> Response {
    let path = uri.path();
    if path == "/api" || path.starts_with("/api/") {
        WebError::NotFound(format!("no such API route: {path}")).into_json()
    } else {
        layout::error_page(&state, &WebError::NotFound(format!("no page at {path}")))
    }
}
