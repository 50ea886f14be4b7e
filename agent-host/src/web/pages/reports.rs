//! `/reports`: every report event, newest first, filtered and paginated.
//!
//! Also holds the small pieces the other list pages share: the table of report events (the
//! start page shows the most recent ones), task links, and query strings.

use agent_pipeline::wire::ReportEvent;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Nav, Page};
use crate::views::{self, ReportFilter, ReportPage};
use crate::web::actions;
use crate::web::{WebError, WebState, text};

/// `?status=&task_id=&page=&per_page=` as the filter form sends it: every field may be present
/// and empty (an empty `task_id` means "any task"), so they are read as text and checked here
/// rather than by [`ReportFilter`]'s typed fields, which would refuse the empty ones.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ReportQuery {
    /// A status, or empty for any.
    status: Option<String>,
    /// A task id, or empty for any.
    task_id: Option<String>,
    /// The page, from 1.
    page: Option<String>,
    /// Events per page.
    per_page: Option<String>,
}

impl ReportQuery {
    /// The filter this query asks for, or why it is invalid.
    fn filter(&self) -> Result<ReportFilter, WebError> {
        let number = |name: &str, text: Option<&str>| {
            text.map(|text| {
                text.parse::<usize>().map_err(|_| {
                    WebError::BadRequest(format!("invalid {name} {text:?}: expected a number"))
                })
            })
            .transpose()
        };
        Ok(ReportFilter {
            status: non_empty(&self.status).map(str::to_owned),
            task_id: non_empty(&self.task_id)
                .map(actions::parse_task_id)
                .transpose()?,
            page: number("page", non_empty(&self.page))?,
            per_page: number("per_page", non_empty(&self.per_page))?,
        })
    }
}

/// The trimmed text of a query field, unless it is missing or blank.
fn non_empty(field: &Option<String>) -> Option<&str> {
    field
        .as_deref()
        .map(str::trim)
        .filter(|text| !text.is_empty())
}

/// `GET /reports?status=&task_id=&page=&per_page=`.
pub(crate) async fn reports(
    State(state): State<WebState>,
    query: Result<Query<ReportQuery>, QueryRejection>,
) -> Response {
    layout::respond(&state, render(&state, query).await)
}

async fn render(
    state: &WebState,
    query: Result<Query<ReportQuery>, QueryRejection>,
) -> Result<Markup, WebError> {
    let Query(query) = query.map_err(|e| WebError::BadRequest(e.body_text()))?;
    let filter = query.filter()?;
    let page = views::report_page(state.pipeline().report_log(), &filter).await?;
    let frame = Page {
        title: "Reports",
        nav: Nav::Reports,
        live: Some(layout::ALL_EVENTS.to_owned()),
    };
    let body = html! {
        h1 { "Reports" }
        p.lead { "Every status event of every task, newest first." }
        (filter_form(&filter, &page, non_empty(&query.per_page)))
        div #reports data-live {
            p.count {
                (page.total) @if page.total == 1 { " event" } @else { " events" }
                @if filter.status.is_some() || filter.task_id.is_some() { " match the filter" }
            }
            div.table-wrap { (events_table("reports-table", &page.events, Columns::Full)) }
            @if page.events.is_empty() {
                p.empty {
                    @if page.total == 0 && filter == ReportFilter::default() {
                        "No reports yet: enqueue a task and its events appear here."
                    } @else {
                        "No event matches."
                    }
                }
            }
            (pagination(&filter, &page))
        }
    };
    Ok(frame.render(state, body))
}

/// The GET form that filters by status and task; it sits outside the live region so that a
/// refresh never takes what the user is typing.
fn filter_form(filter: &ReportFilter, page: &ReportPage, per_page: Option<&str>) -> Markup {
    let chosen = filter.status.as_deref();
    // A status asked for in the address but absent from the log still shows as chosen.
    let unknown = chosen.filter(|status| !page.statuses.iter().any(|s| s == status));
    html! {
        form #reports-filter .filters method="get" action="/reports" {
            label {
                span { "Status" }
                select name="status" {
                    option value="" selected[chosen.is_none()] { "any" }
                    @for status in &page.statuses {
                        option value=(status) selected[chosen == Some(status.as_str())] { (status) }
                    }
                    @if let Some(status) = unknown {
                        option value=(status) selected { (status) }
                    }
                }
            }
            label {
                span { "Task id" }
                input.mono type="text" name="task_id" placeholder="any task" spellcheck="false"
                    autocomplete="off" size="38"
                    value=[filter.task_id.map(|id| id.to_string())];
            }
            @if let Some(per_page) = per_page {
                input type="hidden" name="per_page" value=(per_page);
            }
            button type="submit" { "Filter" }
            @if filter.status.is_some() || filter.task_id.is_some() {
                a.button.secondary href="/reports" { "Clear" }
            }
        }
    }
}

/// "Page X of Y" with links to the neighbours that keep the filter.
fn pagination(filter: &ReportFilter, page: &ReportPage) -> Markup {
    let link = |to: usize| {
        let status = filter.status.clone().unwrap_or_default();
        let task_id = filter.task_id.map(|id| id.to_string()).unwrap_or_default();
        let per_page = filter.per_page.map(|n| n.to_string()).unwrap_or_default();
        let page_number = to.to_string();
        let pairs = [
            ("status", status.as_str()),
            ("task_id", task_id.as_str()),
            ("per_page", per_page.as_str()),
            ("page", page_number.as_str()),
        ];
        format!("/reports{}", crate::web::query::query_string(&pairs))
    };
    html! {
        div.pagination {
            @if page.page > 1 {
                a.page-link rel="prev" href=(link(page.page - 1)) { "← Newer" }
            }
            span.page-of { "Page " (page.page) " of " (page.pages) }
            @if page.page < page.pages {
                a.page-link rel="next" href=(link(page.page + 1)) { "Older →" }
            }
        }
    }
}

/// Which columns a table of report events has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Columns {
    /// Time, status, task, stage, summary: the start page's recent events.
    Compact,
    /// Also the attempt: the reports page.
    Full,
}

/// A table of report events, in the order given.
pub(super) fn events_table(id: &str, events: &[ReportEvent], columns: Columns) -> Markup {
    let full = columns == Columns::Full;
    html! {
        table #(id) .events {
            thead {
                tr {
                    th { "Time" }
                    th { "Status" }
                    th { "Task" }
                    th { "Stage" }
                    @if full { th.num { "Attempt" } }
                    th { "Summary" }
                }
            }
            tbody {
                @for event in events {
                    tr.report-row {
                        td.nowrap { (layout::time(event.timestamp)) }
                        td { (layout::badge(event.status.as_str())) }
                        td { (layout::task_link(event.task_id)) }
                        td.mono.nowrap {
                            @match &event.stage { Some(stage) => (stage), None => span.muted { "—" } }
                        }
                        @if full {
                            td.num {
                                @match event.attempt { Some(n) => (n), None => span.muted { "—" } }
                            }
                        }
                        td.summary {
                            @if let Some(reason) = &event.reason {
                                (layout::reason_badge(reason)) " "
                            }
                            (text::user(&event.summary))
                            @if let Some(ms) = event.duration_ms {
                                span.muted { " · " (layout::millis(ms)) }
                            }
                            @if let Some(cost) = event.cost_usd {
                                span.muted.event-cost title="cost of the step's LLM calls" {
                                    " · " (super::spend::usd(cost))
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_filter_form_means_no_filter() {
        let query = ReportQuery {
            status: Some(String::new()),
            task_id: Some(" ".into()),
            page: Some(String::new()),
            per_page: None,
        };
        assert_eq!(query.filter().expect("valid"), ReportFilter::default());
        let bad_page = ReportQuery {
            page: Some("two".into()),
            ..ReportQuery::default()
        };
        assert!(matches!(bad_page.filter(), Err(WebError::BadRequest(_))));
    }
}
