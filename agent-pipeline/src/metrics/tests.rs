//! The metrics a pipeline records, read back through a debugging recorder local to the test's
//! thread (the tests run on tokio's current-thread runtime, so every service records there).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use serde_json::Value;
use tokio::sync::Semaphore;

use super::*;
use crate::agent::{Agent, AgentError, AgentInput, AgentOutput};
use crate::ids::{Stage, StepId};
use crate::llm::OfflineLlm;
use crate::machine::{RetryPolicy, first_request};
use crate::store::MemoryStateStore;
use crate::wire::{ReportStatus, encode};
use crate::{Pipeline, PipelineBuilder, TaskId};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// How long a test waits for something that must happen.
const PATIENCE: Duration = Duration::from_secs(20);

const HELLO: &str = "Write a tiny Python program that prints 'Hello Earthling'";

/// A metric's name and labels, the labels sorted.
type Series = (String, Vec<(String, String)>);

/// What was recorded so far. A snapshot of the debugging recorder resets what it reads, so
/// the snapshots are added up: counters and gauges (whose changes are relative) are summed,
/// histogram samples are collected.
struct Recorded {
    snapshotter: Snapshotter,
    counters: HashMap<Series, u64>,
    gauges: HashMap<Series, f64>,
    samples: HashMap<Series, Vec<f64>>,
}

impl Recorded {
    fn new(snapshotter: Snapshotter) -> Self {
        Self {
            snapshotter,
            counters: HashMap::new(),
            gauges: HashMap::new(),
            samples: HashMap::new(),
        }
    }

    fn refresh(&mut self) {
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let key = key.key();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            let series = (key.name().to_owned(), labels);
            match value {
                DebugValue::Counter(n) => *self.counters.entry(series).or_default() += n,
                DebugValue::Gauge(v) => *self.gauges.entry(series).or_default() += v.into_inner(),
                DebugValue::Histogram(values) => self
                    .samples
                    .entry(series)
                    .or_default()
                    .extend(values.into_iter().map(|v| v.into_inner())),
            }
        }
    }

    fn series(name: &str, labels: &[(&str, &str)]) -> Series {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        labels.sort();
        (name.to_owned(), labels)
    }

    fn counter(&mut self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.refresh();
        self.counters
            .get(&Self::series(name, labels))
            .copied()
            .unwrap_or(0)
    }

    /// A gauge's value; `None` when it was never registered.
    fn gauge(&mut self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.refresh();
        self.gauges.get(&Self::series(name, labels)).copied()
    }

    fn samples(&mut self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.refresh();
        self.samples
            .get(&Self::series(name, labels))
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `check` holds on what was recorded.
    async fn until(&mut self, what: &str, mut check: impl FnMut(&mut Self) -> bool) -> TestResult {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while tokio::time::Instant::now() < deadline {
            if check(self) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(format!("{what}: not recorded within {PATIENCE:?}").into())
    }
}

/// A pipeline that runs no generated code (no sandbox needed), on the memory bus and store.
fn builder(dir: &tempfile::TempDir) -> PipelineBuilder {
    Pipeline::builder()
        .data_dir(dir.path())
        .llm(Arc::new(OfflineLlm::new()))
        .state_store(Arc::new(MemoryStateStore::new()))
        .execute_code(false)
        .retry_policy(RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        })
}

async fn final_event(pipeline: &Pipeline, task_id: TaskId) -> Result<ReportStatus, String> {
    match tokio::time::timeout(PATIENCE, pipeline.wait(task_id)).await {
        Ok(Ok(event)) => Ok(event.status),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("task {task_id} did not end within {PATIENCE:?}")),
    }
}

#[tokio::test]
async fn a_task_records_one_duration_per_stage_and_a_redelivered_result_is_not_counted_again()
-> TestResult {
    let recorder = DebuggingRecorder::new();
    let _recording = ::metrics::set_default_local_recorder(&recorder);
    let mut recorded = Recorded::new(recorder.snapshotter());
    let dir = tempfile::tempdir()?;
    let pipeline = builder(&dir).build().await?;
    let running = pipeline.start().await?;

    let task_id = pipeline.submit(HELLO).await?;
    assert_eq!(final_event(&pipeline, task_id).await?, ReportStatus::Done);

    for stage in Stage::ALL {
        let stage = stage.as_str();
        let durations = recorded.samples(
            STEP_DURATION_SECONDS,
            &[("stage", stage), ("outcome", "succeeded")],
        );
        assert_eq!(durations.len(), 1, "{stage}: {durations:?}");
        assert!(durations[0] >= 0.0 && durations[0] < PATIENCE.as_secs_f64());
        let failed = recorded.samples(
            STEP_DURATION_SECONDS,
            &[("stage", stage), ("outcome", "failed")],
        );
        assert!(failed.is_empty(), "{stage}: {failed:?}");
        assert_eq!(recorded.counter(STEP_RETRIES_TOTAL, &[("stage", stage)]), 0);
        assert_eq!(
            recorded.gauge(STEPS_IN_FLIGHT, &[("stage", stage)]),
            Some(0.0),
            "{stage} ran and ended"
        );
    }
    assert_eq!(recorded.counter(TASKS_TOTAL, &[("status", "received")]), 1);
    assert_eq!(recorded.counter(TASKS_TOTAL, &[("status", "done")]), 1);
    assert_eq!(recorded.counter(TASKS_TOTAL, &[("status", "error")]), 0);
    let topics = pipeline.topics().clone();
    assert_eq!(
        recorded
            .samples(QUEUE_LAG_SECONDS, &[("topic", &topics.tasks)])
            .len(),
        1,
        "the task"
    );
    assert_eq!(
        recorded
            .samples(QUEUE_LAG_SECONDS, &[("topic", &topics.step_requests)])
            .len(),
        4,
        "one request per stage"
    );
    assert_eq!(
        recorded
            .samples(QUEUE_LAG_SECONDS, &[("topic", &topics.step_results)])
            .len(),
        4,
        "one result per stage"
    );

    // The design result again, as a bus redelivers it after a crash before its acknowledgement.
    let design = pipeline
        .artifacts()
        .read_artifact(task_id, StepId::v1(Stage::Design))
        .await?
        .ok_or("the design artifact")?;
    let duplicate = StepResult::of(
        &first_request(task_id, Utc::now()),
        StepOutcome::Succeeded {
            output: Value::Object(design.output),
            model: design.model,
            usage: design.usage,
        },
        design.llm_calls,
        Utc::now(),
        design.duration_ms,
    );
    pipeline
        .bus()
        .publish(
            &topics.step_results,
            &task_id.to_string(),
            encode(&duplicate),
        )
        .await?;
    recorded
        .until("the duplicate result", |r| {
            r.counter(DUPLICATE_RESULTS_TOTAL, &[]) == 1
        })
        .await?;
    assert_eq!(
        recorded
            .samples(QUEUE_LAG_SECONDS, &[("topic", &topics.step_results)])
            .len(),
        5,
        "the duplicate was received"
    );
    assert_eq!(
        recorded
            .samples(
                STEP_DURATION_SECONDS,
                &[("stage", "design"), ("outcome", "succeeded")]
            )
            .len(),
        1,
        "the duplicate's duration is not counted"
    );
    assert_eq!(recorded.counter(TASKS_TOTAL, &[("status", "done")]), 1);
    running.shutdown().await;
    Ok(())
}

/// A design agent that always fails with a retryable error.
#[derive(Debug)]
struct FailingArchitect;

#[async_trait]
impl Agent for FailingArchitect {
    fn stage(&self) -> Stage {
        Stage::Design
    }

    async fn run(&self, _input: &AgentInput) -> Result<AgentOutput, AgentError> {
        Err(AgentError::Failed {
            message: "the model is overloaded".into(),
            retryable: true,
        })
    }
}

#[tokio::test]
async fn retries_dead_letters_and_the_failed_task_are_counted() -> TestResult {
    let recorder = DebuggingRecorder::new();
    let _recording = ::metrics::set_default_local_recorder(&recorder);
    let mut recorded = Recorded::new(recorder.snapshotter());
    let dir = tempfile::tempdir()?;
    let pipeline = builder(&dir)
        .agent(Arc::new(FailingArchitect))
        .build()
        .await?;
    let running = pipeline.start().await?;

    let task_id = pipeline.submit(HELLO).await?;
    assert_eq!(final_event(&pipeline, task_id).await?, ReportStatus::Error);

    let design = [("stage", "design")];
    let failed = [("stage", "design"), ("outcome", "failed")];
    assert_eq!(
        recorded.samples(STEP_DURATION_SECONDS, &failed).len(),
        3,
        "three tries"
    );
    assert_eq!(recorded.counter(STEP_RETRIES_TOTAL, &design), 2);
    let results_topic = [("topic", pipeline.topics().step_results.as_str())];
    assert_eq!(recorded.counter(DEAD_LETTERS_TOTAL, &results_topic), 1);
    assert_eq!(recorded.counter(TASKS_TOTAL, &[("status", "received")]), 1);
    assert_eq!(recorded.counter(TASKS_TOTAL, &[("status", "error")]), 1);
    assert_eq!(recorded.counter(TASKS_TOTAL, &[("status", "done")]), 0);
    running.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_malformed_message_is_counted_as_a_dead_letter_of_its_topic() -> TestResult {
    let recorder = DebuggingRecorder::new();
    let _recording = ::metrics::set_default_local_recorder(&recorder);
    let mut recorded = Recorded::new(recorder.snapshotter());
    let dir = tempfile::tempdir()?;
    let pipeline = builder(&dir).build().await?;
    let running = pipeline.start().await?;

    pipeline
        .publish_raw_task_message("not-a-task", b"{ not json".to_vec())
        .await?;
    let tasks_topic = pipeline.topics().tasks.clone();
    recorded
        .until("the dead letter", |r| {
            r.counter(DEAD_LETTERS_TOTAL, &[("topic", &tasks_topic)]) == 1
        })
        .await?;
    assert_eq!(recorded.counter(TASKS_TOTAL, &[("status", "received")]), 0);
    running.shutdown().await;
    Ok(())
}

/// A design agent that waits for a permit, then fails for good.
#[derive(Debug)]
struct GatedArchitect(Arc<Semaphore>);

#[async_trait]
impl Agent for GatedArchitect {
    fn stage(&self) -> Stage {
        Stage::Design
    }

    async fn run(&self, _input: &AgentInput) -> Result<AgentOutput, AgentError> {
        let _permit = self.0.acquire().await;
        Err(AgentError::Failed {
            message: "stopped by the test".into(),
            retryable: false,
        })
    }
}

#[tokio::test]
async fn a_running_step_is_in_flight_and_its_request_unacknowledged_until_it_ends() -> TestResult {
    let recorder = DebuggingRecorder::new();
    let _recording = ::metrics::set_default_local_recorder(&recorder);
    let mut recorded = Recorded::new(recorder.snapshotter());
    let dir = tempfile::tempdir()?;
    let gate = Arc::new(Semaphore::new(0));
    let pipeline = builder(&dir)
        .agent(Arc::new(GatedArchitect(gate.clone())))
        .build()
        .await?;
    let running = pipeline.start().await?;
    let requests = pipeline.topics().step_requests.clone();

    let task_id = pipeline.submit(HELLO).await?;
    recorded
        .until("the design step in flight", |r| {
            r.gauge(STEPS_IN_FLIGHT, &[("stage", "design")]) == Some(1.0)
        })
        .await?;
    assert_eq!(
        recorded.gauge(UNACKED_MESSAGES, &[("topic", &requests)]),
        Some(1.0)
    );

    gate.add_permits(1);
    assert_eq!(final_event(&pipeline, task_id).await?, ReportStatus::Error);
    assert_eq!(
        recorded.gauge(STEPS_IN_FLIGHT, &[("stage", "design")]),
        Some(0.0)
    );
    recorded
        .until("the request acknowledged", |r| {
            r.gauge(UNACKED_MESSAGES, &[("topic", &requests)]) == Some(0.0)
        })
        .await?;
    running.shutdown().await;
    Ok(())
}

#[test]
fn the_static_labels_name_the_stages_in_order() {
    for (index, stage) in Stage::ALL.into_iter().enumerate() {
        assert_eq!(stage.index(), index);
        assert_eq!(STAGE[index][0].value(), stage.as_str());
        for (outcome, name) in ["succeeded", "failed"].into_iter().enumerate() {
            let labels = &STAGE_OUTCOME[index][outcome];
            assert_eq!(labels[0].value(), stage.as_str());
            assert_eq!(labels[1].value(), name);
            let key = &STEP_DURATION[index][outcome];
            assert_eq!(key.name(), STEP_DURATION_SECONDS);
            assert!(key.labels().eq(labels.iter()));
        }
        assert!(STEP_RETRIES[index].labels().eq(STAGE[index].iter()));
        assert!(IN_FLIGHT[index].labels().eq(STAGE[index].iter()));
    }
}
