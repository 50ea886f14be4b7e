//! The frame every page shares, and the small pieces pages are built of: status badges,
//! times, flashes, error pages.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use crate::web::{WebError, WebState, text};

/// Which entry of the navigation bar a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    /// `/`.
    Home,
    /// `/tasks` and `/task/…`.
    Tasks,
    /// `/reports`.
    Reports,
    /// `/dlq`.
    Dlq,
    /// Pages outside the navigation (login, not found).
    None,
}

/// A whole page.
#[derive(Debug)]
pub(crate) struct Page<'a> {
    /// The `<title>`, before " · agent-pipeline".
    pub(crate) title: &'a str,
    /// The active navigation entry.
    pub(crate) nav: Nav,
    /// The URL of the live event stream to follow (`/api/events` or
    /// `/api/events?task_id=…`); the page's `[data-live]` regions are re-read from the server
    /// whenever an event arrives.
    pub(crate) live: Option<String>,
}

impl Page<'_> {
    /// The page with `body` in its `<main>`.
    pub(crate) fn render(&self, state: &WebState, body: Markup) -> Markup {
        let nav_item = |nav: Nav, href: &str, label: &str| {
            html! {
                a href=(href) class=@if self.nav == nav { "active" } { (label) }
            }
        };
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (self.title) " · agent-pipeline" }
                    link rel="icon" href="/static/favicon.svg" type="image/svg+xml";
                    link rel="stylesheet" href="/static/app.css";
                    link rel="stylesheet" href="/static/task.css";
                    link rel="stylesheet" href="/static/highlight.css";
                    script src="/static/app.js" defer {}
                }
                body data-events=[self.live.as_deref()] {
                    header.topbar {
                        a.brand href="/" { "agent-pipeline" }
                        nav {
                            (nav_item(Nav::Home, "/", "Enqueue"))
                            (nav_item(Nav::Tasks, "/tasks", "Tasks"))
                            (nav_item(Nav::Reports, "/reports", "Reports"))
                            (nav_item(Nav::Dlq, "/dlq", "Dead letters"))
                        }
                        @if self.live.is_some() {
                            span #live-indicator .live title="Live updates" { "live" }
                        }
                    }
                    @if let Some(reason) = &state.settings().read_only {
                        div.flash.warning role="status" { "Read-only: " (reason) }
                    }
                    main #main { (body) }
                    footer {
                        "agent-pipeline " (env!("CARGO_PKG_VERSION"))
                        " · " a href="/api" { "JSON API" }
                    }
                }
            }
        }
    }
}

/// A status as a coloured badge: `done`, `error`, `stage_done`, `running`, …
pub(crate) fn badge(status: &str) -> Markup {
    html! { span class={ "badge status-" (status) } { (status) } }
}

/// A task's status as a coloured badge, worded for people (`awaiting approval`); the class
/// keeps the status as stored (`status-awaiting_approval`).
pub(crate) fn task_badge(status: agent_pipeline::store::TaskStatus) -> Markup {
    let status = status.as_str();
    html! { span class={ "badge status-" (status) } { (words(status)) } }
}

/// Why a task was stopped on purpose (`budget_exceeded`, `rejected`, `cancelled`) as a badge.
pub(crate) fn reason_badge(reason: &str) -> Markup {
    html! { span class={ "badge reason reason-" (reason) } title="why it ended" { (words(reason)) } }
}

/// A name as written on the wire, for people: `budget_exceeded` → `budget exceeded`.
pub(crate) fn words(name: &str) -> String {
    name.replace('_', " ")
}

/// A time: UTC in the page, turned into the reader's local time by the page's script.
pub(crate) fn time(at: DateTime<Utc>) -> Markup {
    html! {
        time datetime=(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)) {
            (at.format("%Y-%m-%d %H:%M:%S UTC"))
        }
    }
}

/// A hidden form field with the CSRF token.
pub(crate) fn csrf_field(state: &WebState) -> Markup {
    html! { input type="hidden" name="csrf" value=(state.csrf_token()); }
}

/// A message at the top of a page.
pub(crate) fn flash(kind: FlashKind, message: &str) -> Markup {
    let class = match kind {
        FlashKind::Success => "flash success",
        FlashKind::Error => "flash error",
    };
    html! { div class=(class) role="status" { (text::user(message)) } }
}

/// What a flash says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlashKind {
    /// Something was done.
    Success,
    /// Something went wrong.
    Error,
}

/// The answer of a page handler: what it made, or its failure as an error page.
pub(crate) fn respond(state: &WebState, result: Result<impl IntoResponse, WebError>) -> Response {
    match result {
        Ok(answer) => answer.into_response(),
        Err(error) => error_page(state, &error),
    }
}

/// A failure as a whole page with its status code (404 page, 409 refusal, …).
pub(crate) fn error_page(state: &WebState, error: &WebError) -> Response {
    let status = error.status();
    let title = match status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Forbidden",
        StatusCode::BAD_REQUEST => "Bad request",
        StatusCode::CONFLICT => "Cannot do that now",
        StatusCode::SERVICE_UNAVAILABLE => "Unavailable",
        _ => "Something went wrong",
    };
    let page = Page {
        title,
        nav: Nav::None,
        live: None,
    };
    let body = html! {
        section.error-page {
            h1 { (status.as_u16()) " · " (title) }
            p.error-message { (text::user(&error.to_string())) }
            p { a href="/" { "Back to the start page" } " · " a href="/tasks" { "All tasks" } }
        }
    };
    (status, page.render(state, body)).into_response()
}

/// The live stream every list page follows: all report events.
pub(crate) const ALL_EVENTS: &str = "/api/events";

/// A link to a task's page, showing the start of its id (the whole id in the tooltip).
pub(crate) fn task_link(task_id: agent_pipeline::TaskId) -> Markup {
    let id = task_id.to_string();
    let short: String = id.chars().take(8).collect();
    html! { a.task-id href={ "/task/" (id) } title=(id) { (short) } }
}

/// A duration in milliseconds for people (`850ms`, `3m05s`).
pub(crate) fn millis(ms: u64) -> String {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    crate::commands::human_duration(chrono::TimeDelta::milliseconds(ms))
}
