//! `/login`: the form that gives a browser the `WEB_TOKEN` cookie.
//!
//! The form carries no CSRF token: it changes nothing but the browser's own cookie, and a
//! page of another site cannot read the token it would have to send. Cross-site POSTs are
//! refused before they get here anyway.

use axum::Form;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::layout::{self, FlashKind, Nav, Page};
use crate::web::{WebError, WebState, security};

/// `?next=`: where to go once logged in.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct LoginQuery {
    /// A path of this server.
    next: Option<String>,
}

/// The login form.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct LoginForm {
    /// The token typed in.
    #[serde(default)]
    token: String,
    /// A path of this server to go to.
    #[serde(default)]
    next: String,
}

/// `GET /login?next=`: the form, or the start page when the server needs no token.
pub(crate) async fn login_page(
    State(state): State<WebState>,
    query: Result<Query<LoginQuery>, QueryRejection>,
) -> Response {
    let next = query
        .ok()
        .and_then(|Query(query)| query.next)
        .unwrap_or_default();
    let next = safe_next(&next);
    if state.settings().token.is_none() {
        return Redirect::to(next).into_response();
    }
    render(&state, next, None)
}

/// `POST /login`: sets the cookie and goes on when the token is right; 401 with the form
/// again when it is not.
pub(crate) async fn login(
    State(state): State<WebState>,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) => {
            let error = WebError::rejected(rejection.status(), rejection.body_text());
            return layout::error_page(&state, &error);
        }
    };
    let next = safe_next(&form.next);
    let Some(token) = state.settings().token.as_deref() else {
        return Redirect::to(next).into_response();
    };
    if !security::token_matches(&state, &form.token) {
        let refusal = WebError::Unauthorized("that is not this server's token".into());
        return render(&state, next, Some(&refusal));
    }
    let cookie = security::login_cookie(token);
    layout::respond(
        &state,
        cookie.map(|cookie| ([(header::SET_COOKIE, cookie)], Redirect::to(next))),
    )
}

/// The form, with the status of `error` (200 without one).
fn render(state: &WebState, next: &str, error: Option<&WebError>) -> Response {
    let frame = Page {
        title: "Sign in",
        nav: Nav::None,
        live: None,
    };
    let body = html! {
        section.login {
            h1 { "Sign in" }
            @if let Some(error) = error {
                (layout::flash(FlashKind::Error, &error.to_string()))
            }
            p { "This server needs its access token (" code { "WEB_TOKEN" } ")." }
            form #login-form .stacked method="post" action="/login" {
                label for="token" { "Token" }
                input #token type="password" name="token" autocomplete="current-password"
                    autofocus required;
                input type="hidden" name="next" value=(next);
                div.form-actions {
                    button #login type="submit" { "Sign in" }
                }
            }
        }
    };
    let status = error.map_or(StatusCode::OK, WebError::status);
    (status, frame.render(state, body)).into_response()
}

/// `next` when it is a path of this server, else `/`: a login must not send the browser to
/// another site (`//host` and `/\host` are read by browsers as other hosts).
fn safe_next(next: &str) -> &str {
    let local = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && next.bytes().all(|b| b.is_ascii_graphic());
    if local { next } else { "/" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(safe_next("/task/x?a=1"), "/task/x?a=1");
        assert_eq!(safe_next("https://evil.example/"), "/");
        assert_eq!(safe_next("//evil.example/"), "/");
        assert_eq!(safe_next("/\\evil.example/"), "/");
        assert_eq!(safe_next("/a\r\nSet-Cookie: x"), "/");
        assert_eq!(safe_next(""), "/");
    }
}
