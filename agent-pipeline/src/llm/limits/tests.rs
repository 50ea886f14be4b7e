//! The limiter's behaviour on tokio's paused clock: rates reached and never exceeded,
//! concurrency, token budgets with usage correction, the server's pauses, step timeouts.

#[cfg(feature = "openai")]
mod against_a_server;

use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::{Instant, sleep};

use super::{RateLimitFeedback, RateLimitedLlm, RateLimiter, ServerLimits};
use crate::llm::{
    InstantLlm, Llm, LlmError, LlmLimits, LlmRequest, LlmResponse, Message, PriceTable, Role,
    TokenPrices, Usage, timeout_excluding_budget_wait,
};

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);

/// What the fake server does with one call: how long it takes, what it reports.
type Script =
    dyn Fn(usize, &dyn RateLimitFeedback, Instant) -> Result<Usage, LlmError> + Send + Sync;

/// A model that records when each call reached it and how many ran at once; `script`
/// decides each call's outcome and may report rate-limit headers to the limiter, as the
/// OpenAI client does.
struct Fake {
    latency: Duration,
    calls: Mutex<Vec<(Instant, u64)>>,
    running: AtomicUsize,
    most_running: AtomicUsize,
    limiter: Arc<RateLimiter>,
    script: Box<Script>,
}

impl std::fmt::Debug for Fake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fake")
    }
}

impl Fake {
    /// Call instants with the tokens each one really used.
    fn calls(&self) -> Vec<(Instant, u64)> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl Llm for Fake {
    fn model(&self) -> &str {
        "fake"
    }

    async fn complete(&self, _request: &LlmRequest) -> Result<LlmResponse, LlmError> {
        let now = Instant::now();
        let n = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_running.fetch_max(n, Ordering::SeqCst);
        let index = self.calls.lock().map(|c| c.len()).unwrap_or_default();
        let outcome = (self.script)(index, self.limiter.as_ref(), now);
        let used = outcome.as_ref().map_or(0, |u| u.total_tokens);
        if let Ok(mut calls) = self.calls.lock() {
            calls.push((now, used));
        }
        sleep(self.latency).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        outcome.map(|usage| LlmResponse {
            content: "{}".into(),
            model: "fake".into(),
            usage,
        })
    }
}

fn usage(prompt_tokens: u64, completion_tokens: u64) -> Usage {
    Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens + completion_tokens,
    }
}

/// A limited fake model.
fn limited(
    limits: LlmLimits,
    latency: Duration,
    script: impl Fn(usize, &dyn RateLimitFeedback, Instant) -> Result<Usage, LlmError>
    + Send
    + Sync
    + 'static,
) -> (Arc<Fake>, Arc<RateLimitedLlm>) {
    let limiter = Arc::new(RateLimiter::new(&limits));
    let fake = Arc::new(Fake {
        latency,
        calls: Mutex::new(Vec::new()),
        running: AtomicUsize::new(0),
        most_running: AtomicUsize::new(0),
        limiter: limiter.clone(),
        script: Box::new(script),
    });
    let llm = Arc::new(RateLimitedLlm::new(fake.clone(), limiter));
    (fake, llm)
}

fn request() -> LlmRequest {
    LlmRequest {
        messages: vec![Message::new(Role::User, "x".repeat(400))],
        schema_name: "s".into(),
        schema: serde_json::json!({}),
        model: None,
    }
}

/// `callers` tasks call `llm` again and again until `span` has passed.
async fn hammer(llm: Arc<dyn Llm>, callers: usize, span: Duration) {
    let end = Instant::now() + span;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..callers {
        let llm = llm.clone();
        tasks.spawn(async move {
            while Instant::now() < end {
                let _ = llm.complete(&request()).await;
            }
        });
    }
    tasks.join_all().await;
}

/// The most of `weight` in any window of `window` starting at a call.
fn busiest_window(calls: &[(Instant, u64)], window: Duration) -> u64 {
    (0..calls.len())
        .map(|i| {
            calls[i..]
                .iter()
                .take_while(|(at, _)| *at < calls[i].0 + window)
                .map(|(_, weight)| *weight)
                .sum()
        })
        .max()
        .unwrap_or(0)
}

fn rpm(n: u32) -> Option<NonZeroU32> {
    NonZeroU32::new(n)
}

#[tokio::test(start_paused = true)]
async fn requests_per_minute_are_used_to_within_a_few_percent_and_never_exceeded() {
    let limits = LlmLimits {
        requests_per_minute: rpm(120),
        ..LlmLimits::default()
    };
    let (fake, llm) = limited(limits, 3 * SECOND, |_, _, _| Ok(usage(1, 1)));
    let start = Instant::now();
    hammer(llm, 50, 2 * MINUTE).await;

    let calls: Vec<(Instant, u64)> = fake.calls().iter().map(|(at, _)| (*at, 1)).collect();
    let in_two_minutes = calls
        .iter()
        .filter(|(at, _)| *at < start + 2 * MINUTE)
        .count();
    assert!(
        (228..=240).contains(&in_two_minutes),
        "{in_two_minutes} calls in 2 minutes at 120/min"
    );
    assert!(busiest_window(&calls, MINUTE) <= 120);
    let first_second = calls
        .iter()
        .filter(|(at, _)| *at < calls[0].0 + SECOND)
        .count();
    assert!(
        first_second <= 2,
        "a fresh start is paced: {first_second} in the first second"
    );
}

#[tokio::test(start_paused = true)]
async fn concurrency_never_exceeds_the_limit() {
    let limits = LlmLimits {
        max_concurrency: NonZeroUsize::new(4),
        ..LlmLimits::default()
    };
    let (fake, llm) = limited(limits, SECOND, |_, _, _| Ok(usage(1, 1)));
    let start = Instant::now();
    hammer(llm, 30, 10 * SECOND).await;
    assert_eq!(fake.most_running.load(Ordering::SeqCst), 4);
    let calls = fake.calls();
    let in_ten_seconds = calls.iter().filter(|(at, _)| *at < start + 10 * SECOND);
    assert_eq!(
        in_ten_seconds.count(),
        40,
        "four at a time, one second each"
    );
}

#[tokio::test(start_paused = true)]
async fn tokens_per_minute_follow_the_real_usage() {
    let limits = LlmLimits {
        tokens_per_minute: NonZeroU64::new(6_000),
        ..LlmLimits::default()
    };
    // Each call is estimated at 605 tokens (400 bytes / 4 + 4 + a first guess of 500) and
    // really uses 1,000: the budget must follow the real usage.
    let (fake, llm) = limited(limits, SECOND, |_, _, _| Ok(usage(400, 600)));
    let start = Instant::now();
    hammer(llm, 10, 2 * MINUTE).await;
    let calls = fake.calls();
    assert!(busiest_window(&calls, MINUTE) <= 6_000, "{calls:?}");
    let used: u64 = calls
        .iter()
        .filter(|(at, _)| *at < start + 2 * MINUTE)
        .map(|(_, t)| t)
        .sum();
    assert!(used >= 11_000, "{used} of 12,000 tokens in 2 minutes");

    // Calls that use far less than estimated give the budget back: paced by their
    // estimates (over 100 tokens) they would make fewer than 120 calls in 2 minutes.
    let (fake, llm) = limited(limits, Duration::ZERO, |_, _, _| Ok(usage(50, 10)));
    let start = Instant::now();
    hammer(llm, 10, 2 * MINUTE).await;
    let calls = fake.calls();
    assert!(busiest_window(&calls, MINUTE) <= 6_000);
    let in_two_minutes = calls
        .iter()
        .filter(|(at, _)| *at < start + 2 * MINUTE)
        .count();
    assert!(in_two_minutes >= 180, "{in_two_minutes} calls of 60 tokens");
}

/// A 429 with `Retry-After: 30` at the first call.
fn rate_limited_first(
    index: usize,
    feedback: &dyn RateLimitFeedback,
    now: Instant,
) -> Result<Usage, LlmError> {
    if index > 0 {
        return Ok(usage(1, 1));
    }
    feedback.observe(&ServerLimits {
        rate_limited: true,
        retry_after: Some(30 * SECOND),
        ..ServerLimits::from_headers(now, true, |_| None)
    });
    Err(LlmError::Unavailable {
        status: 429,
        attempts: 1,
        message: "slow down".into(),
    })
}

#[tokio::test(start_paused = true)]
async fn a_429_with_retry_after_pauses_every_caller() {
    let (fake, llm) = limited(LlmLimits::default(), SECOND, rate_limited_first);
    let started = Instant::now();
    let first = llm.complete(&request()).await;
    assert!(matches!(
        first,
        Err(LlmError::Unavailable { status: 429, .. })
    ));
    hammer(llm, 5, 10 * SECOND).await;
    let calls = fake.calls();
    assert_eq!(
        calls.len(),
        6,
        "the first call and one of each caller after the pause"
    );
    assert!(
        calls[1..]
            .iter()
            .all(|(at, _)| *at == started + 30 * SECOND)
    );
}

#[tokio::test(start_paused = true)]
async fn a_spent_budget_with_a_reset_pauses_callers_until_the_reset() {
    let script = |index: usize, feedback: &dyn RateLimitFeedback, now: Instant| {
        if index == 0 {
            feedback.observe(&ServerLimits {
                remaining_requests: Some(0),
                reset_requests: Some(Duration::from_millis(6_500)),
                ..ServerLimits::from_headers(now, false, |_| None)
            });
        }
        Ok(usage(1, 1))
    };
    let (fake, llm) = limited(LlmLimits::default(), Duration::ZERO, script);
    let started = Instant::now();
    llm.complete(&request())
        .await
        .expect("the first call succeeds");
    hammer(llm, 3, SECOND).await;
    let calls = fake.calls();
    assert_eq!(calls.len(), 4);
    assert!(
        calls[1..]
            .iter()
            .all(|(at, _)| *at == started + Duration::from_millis(6_500)),
        "{calls:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_step_waiting_for_budget_is_not_a_timeout() {
    let limits = LlmLimits {
        requests_per_minute: rpm(1),
        ..LlmLimits::default()
    };
    let limiter = Arc::new(RateLimiter::new(&limits));
    let llm = RateLimitedLlm::new(Arc::new(InstantLlm::new()), limiter);
    let step = || async {
        llm.complete(&request()).await.expect("an answer");
        sleep(SECOND).await;
    };
    let timeout = 10 * SECOND;
    timeout_excluding_budget_wait(timeout, step())
        .await
        .expect("the first step goes at once");
    let started = Instant::now();
    let second = timeout_excluding_budget_wait(timeout, step()).await;
    assert_eq!(second, Ok(()), "60 s waiting for budget is not a timeout");
    assert!(started.elapsed() > timeout);
    // The same wait under a plain timeout would have failed the step.
    let third = tokio::time::timeout(timeout, step()).await;
    assert!(third.is_err());
}

#[tokio::test(start_paused = true)]
async fn calls_are_counted_in_the_metrics() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let limiter = Arc::new(RateLimiter::new(&LlmLimits {
        requests_per_minute: rpm(60),
        ..LlmLimits::default()
    }));
    let mut prices = PriceTable::empty();
    prices.set(
        "instant",
        TokenPrices {
            input_per_mtok: Some(0.5),
            output_per_mtok: Some(2.0),
        },
    );
    let llm = RateLimitedLlm::new(Arc::new(InstantLlm::new().with_usage(1_000, 250)), limiter)
        .with_prices(prices);
    for _ in 0..3 {
        llm.complete(&request()).await.expect("an answer");
    }

    let mut seen = std::collections::HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let mut name = key.name().to_owned();
        for label in key.labels() {
            name.push_str(&format!(",{}={}", label.key(), label.value()));
        }
        seen.insert(name, value);
    }
    let counter = |name: &str| seen.get(name);
    assert_eq!(
        counter("agent_pipeline_llm_requests_total,model=instant,outcome=ok"),
        Some(&DebugValue::Counter(3))
    );
    assert_eq!(
        counter("agent_pipeline_llm_tokens_total,model=instant,kind=prompt"),
        Some(&DebugValue::Counter(3_000))
    );
    assert_eq!(
        counter("agent_pipeline_llm_tokens_total,model=instant,kind=completion"),
        Some(&DebugValue::Counter(750))
    );
    let Some(DebugValue::Gauge(cost)) = counter("agent_pipeline_llm_cost_usd_total,model=instant")
    else {
        panic!("no cost: {seen:?}");
    };
    assert!((cost.into_inner() - 3.0 * 0.001).abs() < 1e-12, "{cost}");
    assert_eq!(
        counter("agent_pipeline_llm_in_flight,model=instant"),
        Some(&DebugValue::Gauge(0.0.into()))
    );
    let Some(DebugValue::Histogram(waits)) = counter("agent_pipeline_llm_budget_wait_seconds")
    else {
        panic!("no budget waits: {seen:?}");
    };
    let waits: Vec<f64> = waits.iter().map(|w| w.into_inner()).collect();
    assert_eq!(waits.len(), 3);
    assert_eq!(waits[0], 0.0, "the first call goes at once");
    // Tokio's timers count whole milliseconds.
    assert!(
        (waits[1] - 61.0 / 60.0).abs() <= 1e-3,
        "then one per 61/60 s: {waits:?}"
    );
}

/// Answers as the model the request asks for, else as a dated snapshot of `gpt-4o-mini`.
#[derive(Debug)]
struct Snapshots;

#[async_trait]
impl Llm for Snapshots {
    fn model(&self) -> &str {
        "gpt-4o-mini"
    }

    async fn complete(&self, request: &LlmRequest) -> Result<LlmResponse, LlmError> {
        Ok(LlmResponse {
            content: "{}".into(),
            model: request
                .model
                .clone()
                .unwrap_or_else(|| "gpt-4o-mini-2024-07-18".into()),
            usage: usage(1_000_000, 100_000),
        })
    }
}

#[tokio::test]
async fn the_cost_metric_prices_the_model_that_answered() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let limiter = Arc::new(RateLimiter::new(&LlmLimits::default()));
    let llm = RateLimitedLlm::new(Arc::new(Snapshots), limiter).with_prices(PriceTable::default());
    for model in [None, Some("gpt-4o"), Some("a-model-without-a-price")] {
        let request = LlmRequest {
            model: model.map(str::to_owned),
            ..request()
        };
        llm.complete(&request).await.expect("an answer");
    }

    let cost = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .find(|(key, ..)| key.key().name() == "agent_pipeline_llm_cost_usd_total")
        .map(|(key, _, _, value)| {
            (
                key.key()
                    .labels()
                    .map(|l| l.value().to_owned())
                    .collect::<Vec<_>>(),
                value,
            )
        });
    let Some((labels, DebugValue::Gauge(cost))) = cost else {
        panic!("no cost: {cost:?}");
    };
    // The label stays the configured model, so that the label set stays small.
    assert_eq!(labels, ["gpt-4o-mini"]);
    // gpt-4o-mini's snapshot, gpt-4o, then gpt-4o-mini's price again for the unknown model.
    let mini = 0.15 + 0.1 * 0.6;
    let expected = mini + (2.5 + 0.1 * 10.0) + mini;
    assert!(
        (cost.into_inner() - expected).abs() < 1e-9,
        "{cost} != {expected}"
    );
}

#[tokio::test(start_paused = true)]
async fn pipeline_steps_waiting_for_budget_do_not_time_out() {
    use crate::wire::ReportStatus;

    let temp = tempfile::tempdir().expect("a temporary directory");
    // Two requests a minute: after the first call, each one waits about 30 s for budget,
    // six times the step timeout.
    let limiter = Arc::new(RateLimiter::new(&LlmLimits {
        requests_per_minute: rpm(2),
        ..LlmLimits::default()
    }));
    let llm = RateLimitedLlm::new(Arc::new(InstantLlm::new()), limiter);
    let pipeline = crate::Pipeline::builder()
        .data_dir(temp.path().join("data"))
        .state_store(Arc::new(crate::store::MemoryStateStore::new()))
        .llm(Arc::new(llm))
        .execute_code(false)
        .step_timeout(5 * SECOND)
        .worker_concurrency(4)
        .build()
        .await
        .expect("a pipeline");
    let running = pipeline.start().await.expect("the services start");
    let started = Instant::now();
    let tasks = [
        pipeline.submit("Write 'one' in Python").await,
        pipeline.submit("Write 'two' in Python").await,
    ];
    for task in tasks {
        let task = task.expect("submitted");
        let report = pipeline.wait(task).await.expect("a final report");
        assert_eq!(report.status, ReportStatus::Done, "{report:?}");
    }
    assert!(started.elapsed() >= 3 * MINUTE, "8 calls at 2 per minute");
    running.shutdown().await;
}
