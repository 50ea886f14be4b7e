//! The broker stopped for 10 s and started again in the middle of a run: the services
//! reconnect with backoff, and every task a client got accepted ends `done` exactly once.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_pipeline::bus::FollowFrom;
use agent_pipeline::store::{AttemptStatus, canonical_document};
use agent_pipeline::wire::{ReportEvent, ReportStatus};
use agent_pipeline::{Pipeline, TaskId};
use common::{TestResult, maybe_next};

/// How many tasks the client submits in all.
const TASKS: usize = 40;
/// How many of them it submits before the outage.
const BEFORE_OUTAGE: usize = 12;
/// How many of those are done when the broker stops.
const DONE_BEFORE_OUTAGE: usize = 4;
/// How long the broker is away.
const OUTAGE: Duration = Duration::from_secs(10);
/// The pause between two submissions, so that some fall into the outage.
const SUBMIT_EVERY: Duration = Duration::from_millis(400);
/// How long the whole run may take.
const DEADLINE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_task_ends_done_once_across_a_broker_restart() -> TestResult {
    let warnings = capture_warnings();
    let Some(mut broker) = common::broker() else {
        return Ok(());
    };
    if !broker.can_restart() {
        let message = "an external broker (REDPANDA_BROKERS) cannot be stopped and restarted \
                       by this test";
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{message} (CI=true: the test fails rather than skips)"
        );
        eprintln!("SKIPPED: {message}");
        return Ok(());
    }
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let (pipeline, state, topics) =
        common::pipeline_on(&broker, dir.path(), |b| b.execute_code(false)).await?;
    let running = pipeline.start().await?;

    // The client submits every task through a retry loop, as a client of a broker would:
    // the first ones one after the other, the rest concurrently, one every SUBMIT_EVERY
    // from the moment the broker stops, so that most are submitted while it is away.
    let client = pipeline.clone();
    let submitting = tokio::spawn(async move {
        let mut submissions = tokio::task::JoinSet::new();
        let mut accepted = Vec::new();
        for n in 0..TASKS {
            if n == BEFORE_OUTAGE {
                while !outage_began() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            let submission = submit_until_accepted(client.clone(), n);
            if n < BEFORE_OUTAGE {
                accepted.push(submission.await);
            } else {
                submissions.spawn(submission);
                tokio::time::sleep(SUBMIT_EVERY).await;
            }
        }
        while let Some(submission) = submissions.join_next().await {
            accepted.push(submission?);
        }
        Ok::<_, tokio::task::JoinError>(accepted)
    });

    wait_until(&pipeline, started, |done| done >= DONE_BEFORE_OUTAGE).await?;
    assert!(broker.kill(), "the test's own broker could not be stopped");
    let stopped_at = Instant::now();
    begin_outage();
    // A readiness probe says that the broker is away, rather than hanging.
    let probe = tokio::time::timeout(OUTAGE, pipeline.ready()).await;
    assert!(
        matches!(probe, Ok(Err(_))),
        "the pipeline did not report the broker missing: {probe:?}"
    );
    tokio::time::sleep(OUTAGE.saturating_sub(stopped_at.elapsed())).await;
    let mut broker = tokio::task::spawn_blocking(move || {
        assert!(
            broker.restart(),
            "the test's own broker could not be restarted"
        );
        broker
    })
    .await?;
    let restarted_at = Instant::now();

    let accepted =
        tokio::time::timeout(DEADLINE.saturating_sub(started.elapsed()), submitting).await???;
    assert_eq!(accepted.len(), TASKS);
    let during = accepted
        .iter()
        .filter(|s| s.started > stopped_at && s.started < restarted_at)
        .count();
    let refusals: Vec<&String> = accepted.iter().flat_map(|s| &s.refusals).collect();
    let longest_wait = accepted
        .iter()
        .map(|s| s.accepted.duration_since(s.started))
        .max()
        .unwrap_or_default();
    let ids: BTreeSet<TaskId> = accepted.iter().map(|s| s.task_id).collect();
    assert_eq!(ids.len(), TASKS, "two submissions got the same task id");
    let target = ids.clone();
    wait_until_all(&pipeline, started, &target).await?;

    // Exactly one `done` per task, in reports.jsonl and on the report topic.
    let events: Vec<ReportEvent> = pipeline.report_log().read_all_as().await?;
    let in_file = done_counts(events.iter());
    let mut on_topic_events = Vec::new();
    let follower = pipeline
        .bus()
        .follow(&topics.reports, FollowFrom::Oldest)
        .await?;
    while let Some(delivery) = maybe_next(follower.as_ref(), Duration::from_secs(2)).await {
        follower.ack(delivery.receipt).await?;
        on_topic_events.push(serde_json::from_slice::<ReportEvent>(&delivery.payload)?);
    }
    let on_topic = done_counts(on_topic_events.iter());
    for task_id in &ids {
        assert_eq!(
            in_file.get(task_id),
            Some(&1),
            "`done` of {task_id} in reports.jsonl"
        );
        assert_eq!(
            on_topic.get(task_id),
            Some(&1),
            "`done` of {task_id} on the topic"
        );
        let errors = events
            .iter()
            .filter(|e| e.task_id == *task_id && e.status == ReportStatus::Error)
            .count();
        assert_eq!(errors, 0, "task {task_id} reported an error");
    }

    // One succeeded attempt per step, attempt numbers without gaps, valid canonical artifacts.
    let mut retried_steps = 0;
    for task_id in &ids {
        let attempts = state.attempts(*task_id).await?;
        assert!(!attempts.is_empty(), "task {task_id} has no attempts");
        let mut by_step = BTreeMap::new();
        for attempt in &attempts {
            by_step
                .entry(attempt.step_id().to_string())
                .or_insert_with(Vec::new)
                .push(attempt);
        }
        for (step, attempts) in by_step {
            let mut numbers: Vec<u32> = attempts.iter().map(|a| a.attempt().get()).collect();
            numbers.sort_unstable();
            let expected: Vec<u32> = (1..=u32::try_from(numbers.len())?).collect();
            assert_eq!(numbers, expected, "attempt numbers of {task_id} {step}");
            let succeeded = attempts
                .iter()
                .filter(|a| a.status == AttemptStatus::Succeeded)
                .count();
            assert_eq!(succeeded, 1, "succeeded attempts of {task_id} {step}");
            if numbers.len() > 1 {
                retried_steps += 1;
            }
            let step_id = attempts[0].step_id();
            let path = dir
                .path()
                .join(task_id.to_string())
                .join(canonical_document(step_id));
            let bytes = std::fs::read(&path)
                .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .map_err(|error| format!("{} is not JSON: {error}", path.display()))?;
        }
    }

    // The services reconnected rather than died: the pipeline is ready and runs a new task.
    pipeline.ready().await?;
    let after = pipeline
        .submit("Write a tiny Python program that prints 'Hello again'")
        .await?;
    let remaining = DEADLINE.saturating_sub(started.elapsed());
    let last = tokio::time::timeout(remaining, pipeline.wait(after)).await??;
    assert_eq!(last.status, ReportStatus::Done, "{}", last.summary);

    let logged = String::from_utf8_lossy(&lock(&warnings)).into_owned();
    // rskafka retries the connection with backoff inside the fetch streams and the
    // producers; its warnings name the broker it could not reach.
    assert!(
        logged.contains(broker.brokers()),
        "no warning says that the broker could not be reached while it was away:\n{logged}"
    );
    eprintln!(
        "{TASKS} tasks ({during} submitted during the outage, the longest submission took \
         {longest_wait:?}, {} refusals retried, {retried_steps} steps with more than one \
         attempt) done once each across a {OUTAGE:?} outage, in {:?}",
        refusals.len(),
        started.elapsed()
    );
    if let Some(refusal) = refusals.first() {
        eprintln!("first refusal: {refusal}");
    }

    running.shutdown().await;
    assert!(broker.kill());
    Ok(())
}

/// One task a client got accepted.
struct Submission {
    task_id: TaskId,
    /// When the client began submitting it.
    started: Instant,
    /// When `submit` returned its id.
    accepted: Instant,
    /// The errors of the tries before.
    refusals: Vec<String>,
}

/// Submits task `n` until the pipeline accepts it, pausing between tries.
async fn submit_until_accepted(pipeline: Pipeline, n: usize) -> Submission {
    let prompt = format!("Write a tiny Python program that prints 'Hello {n}'");
    let started = Instant::now();
    let mut refusals = Vec::new();
    loop {
        match pipeline.submit(prompt.clone()).await {
            Ok(task_id) => {
                return Submission {
                    task_id,
                    started,
                    accepted: Instant::now(),
                    refusals,
                };
            }
            Err(error) => {
                refusals.push(error.to_string());
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Set once the broker is stopped, for the client that waits for it.
static OUTAGE_BEGAN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn begin_outage() {
    OUTAGE_BEGAN.store(true, std::sync::atomic::Ordering::SeqCst);
}

fn outage_began() -> bool {
    OUTAGE_BEGAN.load(std::sync::atomic::Ordering::SeqCst)
}

/// How many `done` events each task has among `events`.
fn done_counts<'a>(events: impl Iterator<Item = &'a ReportEvent>) -> BTreeMap<TaskId, usize> {
    let mut counts = BTreeMap::new();
    for event in events.filter(|e| e.status == ReportStatus::Done) {
        *counts.entry(event.task_id).or_insert(0) += 1;
    }
    counts
}

/// Waits until `reports.jsonl` holds `done` events for as many tasks as `enough` wants.
async fn wait_until(
    pipeline: &Pipeline,
    started: Instant,
    enough: impl Fn(usize) -> bool,
) -> TestResult {
    loop {
        let events: Vec<ReportEvent> = pipeline.report_log().read_all_as().await?;
        if enough(done_counts(events.iter()).len()) {
            return Ok(());
        }
        if started.elapsed() > DEADLINE {
            return Err(format!("not enough tasks done within {DEADLINE:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every task of `ids` has a `done` event in `reports.jsonl`.
async fn wait_until_all(
    pipeline: &Pipeline,
    started: Instant,
    ids: &BTreeSet<TaskId>,
) -> TestResult {
    loop {
        let events: Vec<ReportEvent> = pipeline.report_log().read_all_as().await?;
        let done = done_counts(events.iter());
        let missing: Vec<&TaskId> = ids.iter().filter(|id| !done.contains_key(id)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        if started.elapsed() > DEADLINE {
            return Err(format!(
                "{} of {} tasks not done within {DEADLINE:?}: {missing:?}",
                missing.len(),
                ids.len()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Collects the warnings logged during the test (and echoes them to stderr).
fn capture_warnings() -> Arc<Mutex<Vec<u8>>> {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let writer = Capture(buffer.clone());
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init();
    buffer
}

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).extend_from_slice(bytes);
        std::io::stderr().write_all(bytes)?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}
