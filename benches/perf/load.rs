//! Puts a burst of tasks through a running pipeline and times each until its `done`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use agent_pipeline::bus::FollowFrom;
use agent_pipeline::wire::{ReportEvent, ReportStatus};
use agent_pipeline::{Pipeline, TaskId};
use futures_util::{StreamExt, TryStreamExt, stream};
use serde_json::{Value, json};

use crate::latency::{ms, percentile};

/// What a burst of tasks measured.
#[derive(Debug, Clone)]
pub(crate) struct Burst {
    /// From the first submission to the last final event.
    pub(crate) wall: Duration,
    /// From the first submission to the last one's acknowledgement.
    pub(crate) submit_phase: Duration,
    /// Submission to final event, per task.
    pub(crate) latencies: Vec<Duration>,
    /// Steps completed (`stage_done` events).
    pub(crate) steps: u64,
    /// Tasks that ended in `error`.
    pub(crate) errors: u64,
    /// Per step, the time between the report event before it (the task's `received`, or
    /// the previous `stage_done`) and its `stage_done`, by the events' own timestamps: one
    /// round trip request → worker → result → orchestrator, two hops of the bus.
    pub(crate) step_round_trips: Vec<Duration>,
}

impl Burst {
    /// The figures of a burst of `tasks` tasks at `concurrency`, as JSON.
    pub(crate) fn into_json(mut self, tasks: usize, concurrency: usize) -> Value {
        let seconds = self.wall.as_secs_f64();
        json!({
            "tasks": tasks,
            "concurrency": concurrency,
            "errors": self.errors,
            "wall_s": seconds,
            "submit_s": self.submit_phase.as_secs_f64(),
            "tasks_per_s": tasks as f64 / seconds,
            "steps_per_s": self.steps as f64 / seconds,
            "latency_p50_ms": ms(percentile(&mut self.latencies, 50.0)),
            "latency_p99_ms": ms(percentile(&mut self.latencies, 99.0)),
            "step_round_trip_p50_ms": ms(percentile(&mut self.step_round_trips, 50.0)),
            "step_round_trip_p99_ms": ms(percentile(&mut self.step_round_trips, 99.0)),
        })
    }
}

/// How many submissions may wait for their acknowledgement at once: the burst arrives as
/// from many clients, not one task after the other's round trip to the broker.
const SUBMITTERS: usize = 256;

/// Submits `tasks` tasks at once (up to [`SUBMITTERS`] waiting for their acknowledgement) while
/// following the reports, and waits until every one has its final report event (or `patience`
/// runs out, which is an error).
pub(crate) async fn burst(
    pipeline: &Pipeline,
    tasks: usize,
    patience: Duration,
) -> Result<Burst, String> {
    let reports = pipeline
        .bus()
        .follow(&pipeline.topics().reports, FollowFrom::Now)
        .await
        .map_err(|e| format!("follow reports: {e}"))?;
    let start = Instant::now();
    let deadline = start + patience;
    let submitting = async {
        let submitted: Vec<(TaskId, Instant)> = stream::iter(0..tasks)
            .map(|n| async move {
                let task_id = pipeline
                    .submit(format!("Write a Python program that prints 'task {n}'"))
                    .await
                    .map_err(|e| format!("submit: {e}"))?;
                Ok::<_, String>((task_id, Instant::now()))
            })
            .buffer_unordered(SUBMITTERS)
            .try_collect()
            .await?;
        Ok::<_, String>((submitted, start.elapsed()))
    };
    let following = async {
        let mut followed = Followed::default();
        while followed.finished.len() < tasks {
            let delivery = tokio::time::timeout_at(deadline.into(), reports.next())
                .await
                .map_err(|_| {
                    format!(
                        "only {} of {tasks} tasks finished within {patience:?}",
                        followed.finished.len()
                    )
                })?
                .map_err(|e| format!("reports: {e}"))?;
            reports
                .ack(delivery.receipt)
                .await
                .map_err(|e| format!("ack: {e}"))?;
            if let Ok(event) = serde_json::from_slice::<ReportEvent>(&delivery.payload) {
                followed.record(event);
            }
        }
        Ok::<_, String>(followed)
    };
    let ((submitted, submit_phase), followed) = tokio::try_join!(submitting, following)?;
    let wall = start.elapsed();
    let latencies = submitted
        .iter()
        .filter_map(|(task_id, at)| {
            let finished = followed.finished.get(task_id)?;
            Some(finished.0.saturating_duration_since(*at))
        })
        .collect();
    let errors = followed
        .finished
        .values()
        .filter(|(_, status)| *status == ReportStatus::Error)
        .count() as u64;
    Ok(Burst {
        wall,
        submit_phase,
        latencies,
        steps: followed.steps,
        errors,
        step_round_trips: followed.step_round_trips,
    })
}

/// What the report events of a burst said so far.
#[derive(Default)]
struct Followed {
    /// Per task, when its final event arrived here and what it was.
    finished: HashMap<TaskId, (Instant, ReportStatus)>,
    steps: u64,
    /// Per unfinished task, the timestamp of its last `received` or `stage_done` event.
    last_event_at: HashMap<TaskId, chrono::DateTime<chrono::Utc>>,
    step_round_trips: Vec<Duration>,
}

impl Followed {
    fn record(&mut self, event: ReportEvent) {
        match event.status {
            ReportStatus::Received => {
                self.last_event_at.insert(event.task_id, event.timestamp);
            }
            ReportStatus::StageDone => {
                self.steps += 1;
                if let Some(before) = self.last_event_at.insert(event.task_id, event.timestamp)
                    && let Ok(gap) = (event.timestamp - before).to_std()
                {
                    self.step_round_trips.push(gap);
                }
            }
            status if status.is_final() => {
                self.last_event_at.remove(&event.task_id);
                self.finished
                    .entry(event.task_id)
                    .or_insert((Instant::now(), status));
            }
            _ => {}
        }
    }
}
