//! The token that guards the UI and API (`WEB_TOKEN`), CSRF protection of forms, refusal of
//! cross-site POSTs, and the security headers of every answer.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use super::{WebError, WebState};

/// The cookie the login page sets to the token, for browsers.
pub(crate) const TOKEN_COOKIE: &str = "agent_host_token";

/// What the browser may load: only this server's own files, no inline script or style.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
     style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'self'";

/// The largest request body accepted, in bytes (2 MiB). A prompt of the longest accepted
/// length ([`agent_pipeline::PipelineBuilder::DEFAULT_MAX_PROMPT_CHARS`], 100,000 characters)
/// of four-byte characters takes 1.2 MB once form-encoded, so every prompt the server
/// accepts fits.
pub(crate) const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// 32 random hex digits (from the operating system's random source, through UUID v4).
pub(crate) fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Compares without stopping at the first difference, so that timing does not tell how much
/// of a guess was right.
pub(crate) fn same_secret(expected: &str, candidate: &str) -> bool {
    let (a, b) = (expected.as_bytes(), candidate.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `candidate` is the configured `WEB_TOKEN` (always false when none is set).
pub(crate) fn token_matches(state: &WebState, candidate: &str) -> bool {
    state
        .settings()
        .token
        .as_deref()
        .is_some_and(|token| same_secret(token, candidate.trim()))
}

/// The `Set-Cookie` value that logs a browser in with `token`.
pub(crate) fn login_cookie(token: &str) -> Result<HeaderValue, WebError> {
    HeaderValue::from_str(&format!(
        "{TOKEN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
    ))
    .map_err(|_| WebError::BadRequest("the token must be printable ASCII".into()))
}

/// Checks a form's CSRF token.
pub(crate) fn check_csrf(state: &WebState, candidate: &str) -> Result<(), WebError> {
    if same_secret(state.csrf_token(), candidate) {
        Ok(())
    } else {
        Err(WebError::Forbidden(
            "the form's CSRF token is missing or stale: reload the page and try again".into(),
        ))
    }
}

/// The token a request carries: `Authorization: Bearer …`, else the login cookie.
fn presented_token(headers: &HeaderMap) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    bearer.or_else(|| {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == TOKEN_COOKIE)
            .map(|(_, value)| value.to_owned())
    })
}

/// With `WEB_TOKEN` set, lets only requests that carry it through: the API answers 401, a
/// page redirects to the login page.
pub(crate) async fn require_token(
    State(state): State<WebState>,
    request: Request,
    next: Next,
) -> Response {
    if state.settings().token.is_none() {
        return next.run(request).await;
    }
    let presented = presented_token(request.headers());
    if presented.is_some_and(|token| token_matches(&state, &token)) {
        return next.run(request).await;
    }
    let path = request.uri().path();
    if path == "/api" || path.starts_with("/api/") {
        WebError::Unauthorized(
            "this server needs its WEB_TOKEN: send `Authorization: Bearer <token>`".into(),
        )
        .into_json()
    } else {
        let next_page = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let query = super::query::query_string(&[("next", &next_page)]);
        Redirect::to(&format!("/login{query}")).into_response()
    }
}

/// Refuses with 413 a request whose `Content-Length` is over [`MAX_BODY_BYTES`] before
/// anything reads it, also on routes that take no body. A body without a length is cut off at
/// the same size by the extractors ([`axum::extract::DefaultBodyLimit`]), which refuse it with
/// 413 too.
pub(crate) async fn limit_body(request: Request, next: Next) -> Response {
    let length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if length.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        let refusal = WebError::PayloadTooLarge(format!(
            "the request's body is larger than the {} MiB this server takes",
            MAX_BODY_BYTES / (1024 * 1024)
        ));
        return if request.uri().path().starts_with("/api") {
            refusal.into_json()
        } else {
            (refusal.status(), refusal.to_string()).into_response()
        };
    }
    next.run(request).await
}

/// Refuses state-changing requests that a page of another site made the browser send: the
/// browser says so in `Sec-Fetch-Site`, or its `Origin` names another host than `Host`.
pub(crate) async fn refuse_cross_site_posts(request: Request, next: Next) -> Response {
    let safe = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    let authority = request.uri().authority().map(|a| a.as_str().to_owned());
    if !safe && is_cross_site(request.headers(), authority.as_deref()) {
        let refusal = WebError::Forbidden("cross-site requests may not change anything".into());
        return if request.uri().path().starts_with("/api") {
            refusal.into_json()
        } else {
            (refusal.status(), refusal.to_string()).into_response()
        };
    }
    next.run(request).await
}

/// Whether the browser says the request comes from another site. `authority` is the host of
/// the request's URI, which HTTP/2 sends instead of a `Host` header.
fn is_cross_site(headers: &HeaderMap, authority: Option<&str>) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if text(header::HeaderName::from_static("sec-fetch-site")) == Some("cross-site") {
        return true;
    }
    let Some(origin) = text(header::ORIGIN) else {
        // Not a browser's cross-origin request: browsers send Origin with every POST.
        return false;
    };
    match text(header::HOST).or(authority) {
        // An Origin we cannot compare with anything is refused rather than trusted.
        None => true,
        Some(_) if origin == "null" => true,
        Some(host) => {
            let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
            origin_host != host
        }
    }
}

/// Adds the security headers to every answer.
pub(crate) async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = |headers: &mut HeaderMap, name: &'static str, value: &'static str| {
        headers
            .entry(header::HeaderName::from_static(name))
            .or_insert(HeaderValue::from_static(value));
    };
    set(headers, "content-security-policy", CONTENT_SECURITY_POLICY);
    set(headers, "x-content-type-options", "nosniff");
    set(headers, "x-frame-options", "DENY");
    set(headers, "referrer-policy", "same-origin");
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
        assert!(!same_secret("abc", ""));
    }

    #[test]
    fn the_token_comes_from_the_bearer_header_or_the_cookie() {
        let mut headers = HeaderMap::new();
        assert_eq!(presented_token(&headers), None);
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; agent_host_token=t1"),
        );
        assert_eq!(presented_token(&headers).as_deref(), Some("t1"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t2"));
        assert_eq!(presented_token(&headers).as_deref(), Some("t2"));
    }

    #[test]
    fn cross_site_is_told_by_fetch_metadata_or_origin() {
        let mut headers = HeaderMap::new();
        assert!(!is_cross_site(&headers, None));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:5000"),
        );
        assert!(
            is_cross_site(&headers, None),
            "an Origin and no host to compare it with"
        );
        assert!(
            !is_cross_site(&headers, Some("127.0.0.1:5000")),
            "HTTP/2: the URI's authority"
        );
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:5000"));
        assert!(!is_cross_site(&headers, None));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(is_cross_site(&headers, None));
        headers.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(is_cross_site(&headers, None));
        headers.remove(header::ORIGIN);
        headers.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(is_cross_site(&headers, None));
    }
}
