//! The pipeline's metrics, recorded through the [`metrics`] facade: their names, their
//! descriptions ([`describe`]) and the small helpers the services call.
//!
//! The core records and never exports: a program that wants the numbers installs a recorder
//! (`agent-host` installs Prometheus's and serves `/metrics`) and calls [`describe`] once.
//! Without a recorder every call is a no-op.
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | [`STEP_DURATION_SECONDS`] | histogram | `stage`, `outcome` | how long each step ran, once per result applied (`outcome`: `succeeded`, `failed`) |
//! | [`QUEUE_LAG_SECONDS`] | histogram | `topic` | from a message's publication to the start of its handling |
//! | [`UNACKED_MESSAGES`] | gauge | `topic` | messages received by this process's consumers and not yet acknowledged |
//! | [`STEPS_IN_FLIGHT`] | gauge | `stage` | steps a worker of this process is running |
//! | [`STEP_RETRIES_TOTAL`] | counter | `stage` | failed steps scheduled to run again |
//! | [`DEAD_LETTERS_TOTAL`] | counter | `topic` | messages sent to the dead-letter topic, by the topic they came from |
//! | [`TASKS_TOTAL`] | counter | `status` | tasks `received`, and tasks that ended `done`, `error` or `cancelled` |
//! | [`TASKS_STOPPED_TOTAL`] | counter | `reason` | tasks stopped on purpose: `budget_exceeded`, `cancelled`, `rejected` |
//! | [`STEP_COST_USD_TOTAL`] | gauge | `stage` | what the LLM calls of steps cost in US dollars, over every result applied |
//! | [`TASK_COST_USD`] | histogram | `status` | what each task cost in US dollars when it ended |
//! | [`DUPLICATE_RESULTS_TOTAL`] | counter | | step results that came again after they were applied, and were ignored |
//!
//! Recording costs no allocation on the paths that run once per message or step: the label
//! values are static (stage names, outcomes, statuses) and their keys are built at compile
//! time, and the per-topic handles are registered once per consumer.
//!
//! ```
//! use std::sync::Arc;
//! use agent_pipeline::metrics::{TASKS_TOTAL, STEP_DURATION_SECONDS};
//! use metrics_util::debugging::{DebugValue, DebuggingRecorder};
//!
//! let recorder = DebuggingRecorder::new();
//! let snapshotter = recorder.snapshotter();
//! // A recorder local to this thread, so the pipeline runs on a current-thread runtime.
//! let _recording = metrics::set_default_local_recorder(&recorder);
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let pipeline = agent_pipeline::Pipeline::builder()
//!     .data_dir(dir.path())
//!     .llm(Arc::new(agent_pipeline::llm::OfflineLlm::new()))
//!     .execute_code(false)
//!     .build()
//!     .await
//!     .unwrap();
//! let running = pipeline.start().await.unwrap();
//! let task_id = pipeline.submit("Write a program that prints 'Hello Earthling'").await.unwrap();
//! pipeline.wait(task_id).await.unwrap();
//! running.shutdown().await;
//! # });
//! let snapshot = snapshotter.snapshot().into_vec();
//! let value_of = |name: &str, label: (&str, &str)| {
//!     snapshot.iter().find_map(|(key, _, _, value)| {
//!         let key = key.key();
//!         let labelled = key.labels().any(|l| (l.key(), l.value()) == label);
//!         (key.name() == name && labelled).then_some(value)
//!     })
//! };
//! assert_eq!(value_of(TASKS_TOTAL, ("status", "done")), Some(&DebugValue::Counter(1)));
//! assert!(matches!(
//!     value_of(STEP_DURATION_SECONDS, ("stage", "review")),
//!     Some(DebugValue::Histogram(durations)) if durations.len() == 1
//! ));
//! ```

use ::metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Unit};
use chrono::Utc;

use crate::bus::Delivery;
use crate::ids::Stage;
use crate::store::TaskStatus;
use crate::wire::{StepOutcome, StepRequest, StepResult};

/// Histogram of how long each step ran, in seconds, by `stage` and `outcome` (`succeeded`,
/// `failed`); recorded once per result, when the orchestrator applies it.
pub const STEP_DURATION_SECONDS: &str = "agent_pipeline_step_duration_seconds";
/// Histogram of the time from a message's publication to the start of its handling, in
/// seconds, by `topic`.
pub const QUEUE_LAG_SECONDS: &str = "agent_pipeline_queue_lag_seconds";
/// Gauge of the messages this process's consumers received and have not acknowledged yet, by
/// `topic`.
pub const UNACKED_MESSAGES: &str = "agent_pipeline_unacked_messages";
/// Gauge of the steps this process's worker is running, by `stage`.
pub const STEPS_IN_FLIGHT: &str = "agent_pipeline_steps_in_flight";
/// Counter of failed steps scheduled to run again, by `stage`.
pub const STEP_RETRIES_TOTAL: &str = "agent_pipeline_step_retries_total";
/// Counter of messages sent to the dead-letter topic, by the `topic` they came from.
pub const DEAD_LETTERS_TOTAL: &str = "agent_pipeline_dead_letters_total";
/// Counter of tasks by `status`: `received` (accepted by the planner), `done`, `error`,
/// `cancelled`.
pub const TASKS_TOTAL: &str = "agent_pipeline_tasks_total";
/// Counter of tasks stopped on purpose, by `reason`: `budget_exceeded`, `cancelled`,
/// `rejected`.
pub const TASKS_STOPPED_TOTAL: &str = "agent_pipeline_tasks_stopped_total";
/// What the LLM calls of steps cost in US dollars, by `stage`, over every result applied
/// (calls without a price count as free). It only grows, but is a gauge: the facade's
/// counters count whole numbers.
pub const STEP_COST_USD_TOTAL: &str = "agent_pipeline_step_cost_usd_total";
/// Histogram of what each task cost in US dollars when it ended, by final `status`.
pub const TASK_COST_USD: &str = "agent_pipeline_task_cost_usd";
/// Counter of step results that came again after they were applied (a redelivery), and were
/// ignored.
pub const DUPLICATE_RESULTS_TOTAL: &str = "agent_pipeline_duplicate_results_total";

/// Every metric the core records (the LLM clients record their own, under `llm`).
pub const NAMES: [&str; 11] = [
    STEP_DURATION_SECONDS,
    QUEUE_LAG_SECONDS,
    UNACKED_MESSAGES,
    STEPS_IN_FLIGHT,
    STEP_RETRIES_TOTAL,
    DEAD_LETTERS_TOTAL,
    TASKS_TOTAL,
    TASKS_STOPPED_TOTAL,
    STEP_COST_USD_TOTAL,
    TASK_COST_USD,
    DUPLICATE_RESULTS_TOTAL,
];

/// Describes every metric of the core (unit and help text) to the installed recorder; call it
/// once, after installing one.
pub fn describe() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        STEP_DURATION_SECONDS,
        Unit::Seconds,
        "How long each step ran, by stage and outcome, once per result applied."
    );
    describe_histogram!(
        QUEUE_LAG_SECONDS,
        Unit::Seconds,
        "Time from a message's publication to the start of its handling, by topic."
    );
    describe_gauge!(
        UNACKED_MESSAGES,
        Unit::Count,
        "Messages received by this process's consumers and not yet acknowledged, by topic."
    );
    describe_gauge!(
        STEPS_IN_FLIGHT,
        Unit::Count,
        "Steps this process's worker is running, by stage."
    );
    describe_counter!(
        STEP_RETRIES_TOTAL,
        Unit::Count,
        "Failed steps scheduled to run again, by stage."
    );
    describe_counter!(
        DEAD_LETTERS_TOTAL,
        Unit::Count,
        "Messages sent to the dead-letter topic, by the topic they came from."
    );
    describe_counter!(
        TASKS_TOTAL,
        Unit::Count,
        "Tasks received, and tasks that ended done, error or cancelled."
    );
    describe_counter!(
        TASKS_STOPPED_TOTAL,
        Unit::Count,
        "Tasks stopped on purpose, by reason (budget_exceeded, cancelled, rejected)."
    );
    describe_gauge!(
        STEP_COST_USD_TOTAL,
        "What the LLM calls of steps cost in US dollars, by stage (from the price table)."
    );
    describe_histogram!(
        TASK_COST_USD,
        "What each task cost in US dollars when it ended, by final status."
    );
    describe_counter!(
        DUPLICATE_RESULTS_TOTAL,
        Unit::Count,
        "Step results that came again after they were applied, and were ignored."
    );
}

/// What the recorder learns about where the metrics come from.
static METADATA: Metadata<'static> =
    Metadata::new("agent_pipeline", Level::INFO, Some(module_path!()));

/// The `stage` and `outcome` labels of one stage: succeeded, then failed.
macro_rules! outcomes {
    ($stage:literal) => {
        [
            [
                Label::from_static_parts("stage", $stage),
                Label::from_static_parts("outcome", "succeeded"),
            ],
            [
                Label::from_static_parts("stage", $stage),
                Label::from_static_parts("outcome", "failed"),
            ],
        ]
    };
}

/// The `stage` label of each stage, in [`Stage::ALL`] order (a test checks the names).
static STAGE: [[Label; 1]; 4] = [
    [Label::from_static_parts("stage", "design")],
    [Label::from_static_parts("stage", "implement")],
    [Label::from_static_parts("stage", "test")],
    [Label::from_static_parts("stage", "review")],
];

/// The `stage` and `outcome` labels of each stage: `[stage][0]` succeeded, `[stage][1]` failed.
static STAGE_OUTCOME: [[[Label; 2]; 2]; 4] = [
    outcomes!("design"),
    outcomes!("implement"),
    outcomes!("test"),
    outcomes!("review"),
];

/// One key of `name` per stage, labelled by the `labels` of that stage.
macro_rules! per_stage {
    ($name:expr, |$stage:ident| $labels:expr) => {
        [
            {
                let $stage = 0;
                Key::from_static_parts($name, $labels)
            },
            {
                let $stage = 1;
                Key::from_static_parts($name, $labels)
            },
            {
                let $stage = 2;
                Key::from_static_parts($name, $labels)
            },
            {
                let $stage = 3;
                Key::from_static_parts($name, $labels)
            },
        ]
    };
}

static STEP_DURATION: [[Key; 2]; 4] = [
    [
        Key::from_static_parts(STEP_DURATION_SECONDS, &STAGE_OUTCOME[0][0]),
        Key::from_static_parts(STEP_DURATION_SECONDS, &STAGE_OUTCOME[0][1]),
    ],
    [
        Key::from_static_parts(STEP_DURATION_SECONDS, &STAGE_OUTCOME[1][0]),
        Key::from_static_parts(STEP_DURATION_SECONDS, &STAGE_OUTCOME[1][1]),
    ],
    [
        Key::from_static_parts(STEP_DURATION_SECONDS, &STAGE_OUTCOME[2][0]),
        Key::from_static_parts(STEP_DURATION_SECONDS, &STAGE_OUTCOME[2][1]),
    ],
    [
        Key::from_static_parts(STEP_DURATION_SECONDS, &STAGE_OUTCOME[3][0]),
        Key::from_static_parts(STEP_DURATION_SECONDS, &STAGE_OUTCOME[3][1]),
    ],
];
static STEP_RETRIES: [Key; 4] = per_stage!(STEP_RETRIES_TOTAL, |stage| &STAGE[stage]);
static IN_FLIGHT: [Key; 4] = per_stage!(STEPS_IN_FLIGHT, |stage| &STAGE[stage]);

static RECEIVED_LABEL: [Label; 1] = [Label::from_static_parts("status", "received")];
static DONE_LABEL: [Label; 1] = [Label::from_static_parts("status", "done")];
static ERROR_LABEL: [Label; 1] = [Label::from_static_parts("status", "error")];
static TASKS_RECEIVED: Key = Key::from_static_parts(TASKS_TOTAL, &RECEIVED_LABEL);
static TASKS_DONE: Key = Key::from_static_parts(TASKS_TOTAL, &DONE_LABEL);
static TASKS_ERROR: Key = Key::from_static_parts(TASKS_TOTAL, &ERROR_LABEL);
static CANCELLED_LABEL: [Label; 1] = [Label::from_static_parts("status", "cancelled")];
static TASKS_CANCELLED: Key = Key::from_static_parts(TASKS_TOTAL, &CANCELLED_LABEL);
static STEP_COST: [Key; 4] = per_stage!(STEP_COST_USD_TOTAL, |stage| &STAGE[stage]);
static DUPLICATES: Key = Key::from_static_name(DUPLICATE_RESULTS_TOTAL);

fn counter(key: &'static Key) -> Counter {
    ::metrics::with_recorder(|recorder| recorder.register_counter(key, &METADATA))
}

fn gauge(key: &'static Key) -> Gauge {
    ::metrics::with_recorder(|recorder| recorder.register_gauge(key, &METADATA))
}

fn histogram(key: &'static Key) -> Histogram {
    ::metrics::with_recorder(|recorder| recorder.register_histogram(key, &METADATA))
}

/// The planner accepted a new task.
pub(crate) fn task_received() {
    counter(&TASKS_RECEIVED).increment(1);
}

/// A task ended with `status`: counted in [`TASKS_TOTAL`].
pub(crate) fn task_ended(status: TaskStatus) {
    match status {
        TaskStatus::Done => counter(&TASKS_DONE).increment(1),
        TaskStatus::Error => counter(&TASKS_ERROR).increment(1),
        TaskStatus::Cancelled => counter(&TASKS_CANCELLED).increment(1),
        _ => {}
    }
}

/// What a task that ended with `status` cost, and why it was stopped when it was on
/// purpose. Once per task: its labels are built on the spot.
pub(crate) fn task_cost(status: TaskStatus, spent: &crate::llm::Spend, reason: Option<&str>) {
    ::metrics::histogram!(TASK_COST_USD, "status" => status.as_str()).record(spent.cost_usd);
    if let Some(reason) = reason {
        ::metrics::counter!(TASKS_STOPPED_TOTAL, "reason" => reason.to_owned()).increment(1);
    }
}

/// What the LLM calls of one step of `stage` cost.
pub(crate) fn step_spent(stage: Stage, calls: &[crate::llm::LlmCall]) {
    let cost = crate::llm::Spend::of(calls).cost_usd;
    if cost > 0.0 {
        gauge(&STEP_COST[stage.index()]).increment(cost);
    }
}

/// A step result that was already applied came again and was ignored.
pub(crate) fn duplicate_result() {
    counter(&DUPLICATES).increment(1);
}

/// A message of `topic` was sent to the dead-letter topic. Rare: its label is built on the spot.
pub(crate) fn dead_lettered(topic: &str) {
    ::metrics::counter!(DEAD_LETTERS_TOTAL, "topic" => topic.to_owned()).increment(1);
}

/// What applying one step result did, recorded with [`AppliedResult::record`] once the
/// result's state change is durable: a result handled again after a failure half-way is
/// then counted once.
#[derive(Debug, Default)]
pub(crate) struct AppliedResult {
    /// The stage of the retry requested, if one was.
    retried: Option<Stage>,
    /// How many dead letters were sent.
    dead_letters: u64,
}

impl AppliedResult {
    /// A step was requested; a request after the first try is a retry.
    pub(crate) fn requested(&mut self, request: &StepRequest) {
        if request.try_number > 1 {
            self.retried = Some(request.step_id.stage());
        }
    }

    /// The result (of `results_topic`) was sent to the dead-letter topic.
    pub(crate) fn dead_lettered(&mut self) {
        self.dead_letters += 1;
    }

    /// Records the step's duration, the retry, the dead letters and the task's end.
    pub(crate) fn record(
        self,
        result: &StepResult,
        task_status: Option<TaskStatus>,
        results_topic: &str,
    ) {
        let outcome = match result.outcome {
            StepOutcome::Succeeded { .. } => 0,
            StepOutcome::Failed { .. } | StepOutcome::Stopped { .. } => 1,
        };
        let stage = result.step_id.stage().index();
        histogram(&STEP_DURATION[stage][outcome]).record(result.duration_ms as f64 / 1000.0);
        if let Some(stage) = self.retried {
            counter(&STEP_RETRIES[stage.index()]).increment(1);
        }
        if self.dead_letters > 0 {
            ::metrics::counter!(DEAD_LETTERS_TOTAL, "topic" => results_topic.to_owned())
                .increment(self.dead_letters);
        }
        if let Some(status) = task_status {
            task_ended(status);
        }
    }
}

/// A step a worker runs, counted in [`STEPS_IN_FLIGHT`] until it is dropped (also when the
/// step is cancelled at shutdown).
#[derive(Debug)]
pub(crate) struct StepInFlight(Gauge);

impl StepInFlight {
    /// Counts a step of `stage` as running.
    pub(crate) fn start(stage: Stage) -> Self {
        let gauge = gauge(&IN_FLIGHT[stage.index()]);
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for StepInFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// The metrics of one consumer of a topic, registered once so that a message costs no lookup
/// of its label.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerMetrics {
    lag: Histogram,
    unacked: Gauge,
}

impl ConsumerMetrics {
    /// The handles of `topic`'s metrics.
    pub(crate) fn of(topic: &str) -> Self {
        Self {
            lag: ::metrics::histogram!(QUEUE_LAG_SECONDS, "topic" => topic.to_owned()),
            unacked: ::metrics::gauge!(UNACKED_MESSAGES, "topic" => topic.to_owned()),
        }
    }

    /// A delivery's handling starts: records its queue lag (when the bus knows when it was
    /// published; 0 when the publisher's clock is ahead) and counts it as unacknowledged until
    /// the returned guard is dropped.
    pub(crate) fn received(&self, delivery: &Delivery) -> Unacknowledged {
        if let Some(published_at) = delivery.published_at {
            let lag = (Utc::now() - published_at).to_std().unwrap_or_default();
            self.lag.record(lag.as_secs_f64());
        }
        self.unacked.increment(1.0);
        Unacknowledged(self.unacked.clone())
    }
}

/// A delivery received and not acknowledged yet; see [`ConsumerMetrics::received`].
#[derive(Debug)]
pub(crate) struct Unacknowledged(Gauge);

impl Drop for Unacknowledged {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

#[cfg(test)]
mod tests;
