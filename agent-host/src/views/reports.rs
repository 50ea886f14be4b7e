//! Report events, newest first, filtered and paginated: `/reports`, `/api/reports`.

use agent_pipeline::TaskId;
use agent_pipeline::store::ReportLog;
use agent_pipeline::wire::ReportEvent;
use serde::{Deserialize, Serialize};

use super::ViewError;

/// Which report events to show. Every field is optional (`?status=done&task_id=…&page=2`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportFilter {
    /// Only events with this status (`done`, `stage_done`, `error`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Only events of this task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<TaskId>,
    /// The page, from 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<usize>,
    /// Events per page (at most [`ReportFilter::MAX_PER_PAGE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_page: Option<usize>,
}

impl ReportFilter {
    /// Events per page unless asked otherwise.
    pub const DEFAULT_PER_PAGE: usize = 50;
    /// The most events one page holds.
    pub const MAX_PER_PAGE: usize = 500;

    fn matches(&self, event: &ReportEvent) -> bool {
        let status = self
            .status
            .as_deref()
            .is_none_or(|status| event.status.as_str() == status);
        status && self.task_id.is_none_or(|task_id| event.task_id == task_id)
    }
}

/// One page of report events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportPage {
    /// The events, newest first.
    pub events: Vec<ReportEvent>,
    /// This page, from 1.
    pub page: usize,
    /// How many pages the filter gives (at least 1).
    pub pages: usize,
    /// How many events match the filter.
    pub total: usize,
    /// Events per page.
    pub per_page: usize,
    /// The distinct statuses in the log, for a filter menu.
    pub statuses: Vec<String>,
}

/// The page of `reports.jsonl` that `filter` asks for.
pub async fn report_page(log: &ReportLog, filter: &ReportFilter) -> Result<ReportPage, ViewError> {
    let all = log.read_all().await?;
    let mut statuses: Vec<String> = all.iter().map(|e| e.status.as_str().to_owned()).collect();
    statuses.sort();
    statuses.dedup();
    let matching: Vec<ReportEvent> = all
        .into_iter()
        .rev()
        .filter(|e| filter.matches(e))
        .collect();
    let per_page = filter
        .per_page
        .unwrap_or(ReportFilter::DEFAULT_PER_PAGE)
        .clamp(1, ReportFilter::MAX_PER_PAGE);
    let total = matching.len();
    let pages = total.div_ceil(per_page).max(1);
    let page = filter.page.unwrap_or(1).clamp(1, pages);
    let events = matching
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    Ok(ReportPage {
        events,
        page,
        pages,
        total,
        per_page,
        statuses,
    })
}
