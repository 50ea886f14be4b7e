//! Puts a burst of tasks through a running pipeline and times each until its `done`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use agent_pipeline::bus::FollowFrom;
use agent_pipeline::wire::{ReportEvent, ReportStatus};
use agent_pipeline::{Pipeline, TaskId};
use serde_json::{Value, json};

use crate::latency::{ms, percentile};

/// What a burst of tasks measured.
#[derive(Debug, Clone)]
pub(crate) struct Burst {
    /// From the first submission to the last final event.
    pub(crate) wall: Duration,
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
            "tasks_per_s": tasks as f64 / seconds,
            "steps_per_s": self.steps as f64 / seconds,
            "latency_p50_ms": ms(percentile(&mut self.latencies, 50.0)),
            "latency_p99_ms": ms(percentile(&mut self.latencies, 99.0)),
            "step_round_trip_p50_ms": ms(percentile(&mut self.step_round_trips, 50.0)),
            "step_round_trip_p99_ms": ms(percentile(&mut self.step_round_trips, 99.0)),
        })
    }
}

/// Submits `tasks` tasks at once and waits until every one has its final report event
/// (or `patience` runs out, which is an error).
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
    let mut submitted: HashMap<TaskId, Instant> = HashMap::with_capacity(tasks);
    for n in 0..tasks {
        let task_id = pipeline
            .submit(format!("Write a Python program that prints 'task {n}'"))
            .await
            .map_err(|e| format!("submit: {e}"))?;
        submitted.insert(task_id, Instant::now());
    }
    let mut latencies = Vec::with_capacity(tasks);
    let (mut steps, mut errors) = (0, 0);
    let mut last_event_at: HashMap<TaskId, chrono::DateTime<chrono::Utc>> = HashMap::new();
    let mut step_round_trips = Vec::with_capacity(tasks * 4);
    let deadline = start + patience;
    while latencies.len() < tasks {
        let delivery = tokio::time::timeout_at(deadline.into(), reports.next())
            .await
            .map_err(|_| {
                format!(
                    "only {} of {tasks} tasks finished within {patience:?}",
                    latencies.len()
                )
            })?
            .map_err(|e| format!("reports: {e}"))?;
        reports
            .ack(delivery.receipt)
            .await
            .map_err(|e| format!("ack: {e}"))?;
        let Ok(event) = serde_json::from_slice::<ReportEvent>(&delivery.payload) else {
            continue;
        };
        match event.status {
            ReportStatus::Received => {
                last_event_at.insert(event.task_id, event.timestamp);
            }
            ReportStatus::StageDone => {
                steps += 1;
                if let Some(before) = last_event_at.insert(event.task_id, event.timestamp)
                    && let Ok(gap) = (event.timestamp - before).to_std()
                {
                    step_round_trips.push(gap);
                }
            }
            status if status.is_final() => {
                last_event_at.remove(&event.task_id);
                if let Some(at) = submitted.remove(&event.task_id) {
                    latencies.push(at.elapsed());
                    if status == ReportStatus::Error {
                        errors += 1;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(Burst {
        wall: start.elapsed(),
        latencies,
        steps,
        errors,
        step_round_trips,
    })
}
