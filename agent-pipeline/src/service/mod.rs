//! The services — planner, worker, orchestrator and the mirrors — as library components wired
//! through the traits. Each consumes one topic as a consumer group.

mod cancellations;
mod ci_monitor;
#[cfg(feature = "memory")]
mod code_context;
mod mirror;
mod orchestrator;
mod planner;
mod publishing;
mod runner;
mod stage_effects;
mod worker;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::agent::Agents;
use crate::budget::Budget;
use crate::bus::{Bus, Delivery, Topics};
use crate::llm::PriceTable;
use crate::machine::RetryPolicy;
use crate::store::{ArtifactStore, ReportLog, StateStore};
use crate::wire::{DeadLetter, ReportEvent, ReportStatus, encode};
use crate::{Result, TaskId};

pub(crate) use cancellations::{Cancellations, follow_cancellations};
pub(crate) use ci_monitor::CiMonitor;
pub(crate) use mirror::Mirror;
pub(crate) use orchestrator::Orchestrator;
pub(crate) use planner::{Planner, check_control, check_prompt, check_replay};
pub(crate) use runner::{Handler, OnStop, run_consumer};
pub(crate) use stage_effects::Execution;
pub(crate) use worker::Worker;

/// One of the services a pipeline runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Service {
    /// Turns tasks and replay commands into step requests.
    Planner,
    /// Runs agents for step requests.
    Worker,
    /// Persists results, requests next steps, retries, dead-letters and reports.
    Orchestrator,
    /// Checks published changes (runs the check command on the branch in the sandbox) and
    /// reports `ci`.
    CiMonitor,
    /// Mirrors the report topic to `reports.jsonl` and the dead-letter topic to
    /// `dead_letters.jsonl`.
    Mirror,
}

impl Service {
    /// Every service: what one process runs on the embedded default.
    pub const ALL: [Service; 5] = [
        Service::Planner,
        Service::Worker,
        Service::Orchestrator,
        Service::CiMonitor,
        Service::Mirror,
    ];

    /// The topics the service consumes, as its consumer group.
    ///
    /// ```
    /// use agent_pipeline::{Service, bus::Topics};
    /// let topics = Topics::default();
    /// assert_eq!(Service::Worker.consumes(&topics), ["step_requests"]);
    /// assert_eq!(Service::Mirror.consumes(&topics), ["agent_reports", "agent_dlq"]);
    /// ```
    pub fn consumes(self, topics: &Topics) -> Vec<&str> {
        match self {
            Service::Planner => vec![&topics.tasks],
            Service::Worker => vec![&topics.step_requests],
            Service::Orchestrator => vec![&topics.step_results],
            Service::CiMonitor => vec![&topics.ci_watch],
            Service::Mirror => vec![&topics.reports, &topics.dlq],
        }
    }

    /// The service's name, also its consumer group.
    pub fn name(self) -> &'static str {
        match self {
            Service::Planner => "planner",
            Service::Worker => "worker",
            Service::Orchestrator => "orchestrator",
            Service::CiMonitor => "ci-monitor",
            Service::Mirror => "mirror",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything the services share.
#[derive(Debug, Clone)]
pub(crate) struct Deps {
    pub(crate) bus: Arc<dyn Bus>,
    pub(crate) state: Arc<dyn StateStore>,
    pub(crate) artifacts: Arc<dyn ArtifactStore>,
    /// `DATA_DIR`: workspaces, the mirrors' files and the published repository.
    pub(crate) data_dir: std::path::PathBuf,
    pub(crate) reports: ReportLog,
    pub(crate) dead_letters: ReportLog,
    /// Report events as the mirror writes them to `reports.jsonl`, for live views.
    pub(crate) report_feed: tokio::sync::broadcast::Sender<ReportEvent>,
    pub(crate) topics: Topics,
    pub(crate) agents: Agents,
    pub(crate) policy: RetryPolicy,
    pub(crate) step_timeout: Duration,
    pub(crate) worker_concurrency: usize,
    pub(crate) execution: Execution,
    /// The limits of every task, unless a task sets its own.
    pub(crate) budget: Budget,
    /// Whether tasks wait for approval before publishing, unless a task says otherwise.
    pub(crate) require_approval: bool,
    /// What LLM calls cost, by model.
    pub(crate) prices: PriceTable,
    /// The providers a replay may name (`offline` and those registered).
    pub(crate) providers: Vec<String>,
    /// The longest prompt a new task may have, in characters.
    pub(crate) max_prompt_chars: usize,
    /// How the code memory indexes and searches a task's repository.
    #[cfg(feature = "memory")]
    pub(crate) memory_options: crate::memory::MemoryOptions,
}

impl Deps {
    /// Publishes a message keyed by its task.
    pub(crate) async fn publish<T: serde::Serialize>(
        &self,
        topic: &str,
        task_id: TaskId,
        message: &T,
    ) -> Result<()> {
        self.bus
            .publish(topic, &task_id.to_string(), encode(message))
            .await
            .map_err(Into::into)
    }

    /// Publishes a report event.
    pub(crate) async fn report(&self, event: &ReportEvent) -> Result<()> {
        self.publish(&self.topics.reports, event.task_id, event)
            .await
    }

    /// Sends a message that cannot be handled to the dead-letter topic, with the reason and
    /// the raw payload, and reports it when the message names a task.
    pub(crate) async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<()> {
        let task_id: Option<TaskId> = delivery.key.parse().ok();
        tracing::warn!(topic = %delivery.topic, key = %delivery.key, %reason, "message sent to the dead-letter queue");
        let letter = DeadLetter {
            task_id: task_id.map(|t| t.to_string()),
            ..dead_letter_of(delivery, reason)
        };
        self.bus
            .publish(&self.topics.dlq, &delivery.key, encode(&letter))
            .await?;
        crate::metrics::dead_lettered(&delivery.topic);
        if let Some(task_id) = task_id
            && self.state.task(task_id).await?.is_some()
        {
            let event = ReportEvent::new(
                task_id,
                ReportStatus::Dlq,
                format!(
                    "a message on {} was dead-lettered: {reason}",
                    delivery.topic
                ),
                chrono::Utc::now(),
            );
            self.report(&event).await?;
        }
        Ok(())
    }
}

/// The dead letter of a delivery: the reason, where it came from and its raw payload.
pub(crate) fn dead_letter_of(delivery: &Delivery, reason: &str) -> DeadLetter {
    DeadLetter {
        reason: reason.to_owned(),
        source_topic: delivery.topic.clone(),
        key: Some(delivery.key.clone()),
        payload: String::from_utf8_lossy(&delivery.payload).into_owned(),
        task_id: None,
        step_id: None,
        attempt: None,
        failed_at: chrono::Utc::now(),
    }
}
