//! `GET /metrics`: the process's metrics in Prometheus's text format. When `WEB_TOKEN` is set
//! it wants the token as `Authorization: Bearer <token>`, which is what a Prometheus scrape
//! job sends (`authorization: { credentials: … }`); the answer to anything else is 401, never
//! the login page a browser is sent to.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::install;
use crate::web::security::same_secret;

/// The content type of Prometheus's text exposition format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Answers a scrape: the metrics, or 401 when `token` is set and the request does not carry
/// it as a bearer token.
pub(crate) fn scrape(token: Option<&str>, headers: &HeaderMap) -> Response {
    if let Some(token) = token
        && !bearer_matches(token, headers)
    {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
            "this server needs its WEB_TOKEN: send `Authorization: Bearer <token>`\n",
        )
            .into_response();
    }
    let body = install().render();
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        body,
    )
        .into_response()
}

/// Whether the request's `Authorization: Bearer …` is `token`.
fn bearer_matches(token: &str, headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|candidate| same_secret(token, candidate.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn only_the_bearer_token_opens_the_metrics_when_a_token_is_set() {
        assert!(bearer_matches("s3cret", &bearer("Bearer s3cret")));
        assert!(!bearer_matches("s3cret", &bearer("Bearer s3cre")));
        assert!(!bearer_matches("s3cret", &bearer("Basic s3cret")));
        assert!(!bearer_matches("s3cret", &HeaderMap::new()));
        assert_eq!(
            scrape(Some("s3cret"), &HeaderMap::new()).status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            scrape(Some("s3cret"), &bearer("Bearer s3cret")).status(),
            StatusCode::OK
        );
        assert_eq!(scrape(None, &HeaderMap::new()).status(), StatusCode::OK);
    }
}
