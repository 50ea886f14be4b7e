//! `GET /api/events`: report events as server-sent events, as the mirror writes them.
//!
//! The stream starts with a `ready` event once it is subscribed, so that a client can act
//! (enqueue, or re-read a page) knowing that nothing from then on is missed. Then each report
//! event is a `report` event whose data is the event's JSON; `lagged` says that the reader
//! fell behind and missed some (re-read the page). `?task_id=` keeps one task's events.

use std::convert::Infallible;
use std::time::Duration;

use agent_pipeline::TaskId;
use agent_pipeline::wire::ReportEvent;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::error::ApiError;
use super::{WebError, WebState};

/// How often an idle stream sends a comment, so that proxies and clients keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `?task_id=`.
#[derive(Debug, Deserialize)]
pub(crate) struct EventFilter {
    /// Only this task's events.
    task_id: Option<TaskId>,
}

/// What the stream does next.
enum Next {
    /// Send `ready` first.
    Ready,
    /// Send what the feed gives.
    Feed,
}

/// `GET /api/events?task_id=`.
pub(crate) async fn events(
    State(state): State<WebState>,
    filter: Result<Query<EventFilter>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Query(filter) = filter.map_err(|e| WebError::BadRequest(e.body_text()))?;
    let feed = state.pipeline().report_feed();
    let stopping = state.inner.stopping.subscribe();
    let stream = futures_util::stream::unfold(
        (Next::Ready, feed, stopping, filter.task_id),
        |(next, mut feed, mut stopping, task_id)| async move {
            if matches!(next, Next::Ready) {
                let event = Event::default().event("ready").data("{}");
                return Some((Ok(event), (Next::Feed, feed, stopping, task_id)));
            }
            loop {
                if *stopping.borrow() {
                    return None;
                }
                let received = tokio::select! {
                    received = feed.recv() => received,
                    _ = stopping.changed() => return None,
                };
                let event = match received {
                    Ok(report) if task_id.is_none_or(|id| report.task_id == id) => {
                        report_event(&report)
                    }
                    Ok(_) => continue,
                    Err(RecvError::Lagged(missed)) => {
                        Event::default().event("lagged").data(missed.to_string())
                    }
                    Err(RecvError::Closed) => return None,
                };
                return Some((Ok(event), (Next::Feed, feed, stopping, task_id)));
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// One report as a `report` event.
fn report_event(report: &ReportEvent) -> Event {
    let data = String::from_utf8_lossy(&agent_pipeline::wire::encode(report)).into_owned();
    Event::default().event("report").data(data)
}
