//! Models for benchmarks only: they answer what the offline model answers (valid outputs for
//! every stage, which pass the gates), with fixed token counts, instantly or after a
//! simulated latency. Never use them for real work.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::offline::answer;
use super::{Llm, LlmError, LlmRequest, LlmResponse, Usage};

/// The model name artifacts of [`InstantLlm`] carry.
pub const INSTANT_MODEL: &str = "instant";
/// The model name artifacts of [`SimulatedLlm`] carry.
pub const SIMULATED_MODEL: &str = "simulated";

/// The usage the simulated models report unless told otherwise: a typical stage call.
const DEFAULT_PROMPT_TOKENS: u64 = 1_000;
/// See [`DEFAULT_PROMPT_TOKENS`].
const DEFAULT_COMPLETION_TOKENS: u64 = 250;

/// Fixed token counts.
fn usage(prompt_tokens: u64, completion_tokens: u64) -> Usage {
    Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens + completion_tokens,
    }
}

/// **For benchmarks only.** Answers at once with the offline model's valid output and fixed
/// token counts (default 1,000 prompt + 250 completion), as model `instant`: what is left is
/// the pipeline's own overhead.
///
/// ```
/// use agent_pipeline::llm::{InstantLlm, Llm};
/// let llm = InstantLlm::new().with_usage(10, 5);
/// assert_eq!(llm.model(), "instant");
/// ```
#[derive(Debug, Clone)]
pub struct InstantLlm {
    usage: Usage,
}

impl Default for InstantLlm {
    fn default() -> Self {
        Self::new()
    }
}

impl InstantLlm {
    /// The instant model with the default token counts.
    pub fn new() -> Self {
        Self {
            usage: usage(DEFAULT_PROMPT_TOKENS, DEFAULT_COMPLETION_TOKENS),
        }
    }

    /// Reports `prompt_tokens` and `completion_tokens` for every call.
    pub fn with_usage(mut self, prompt_tokens: u64, completion_tokens: u64) -> Self {
        self.usage = usage(prompt_tokens, completion_tokens);
        self
    }
}

#[async_trait]
impl Llm for InstantLlm {
    fn model(&self) -> &str {
        INSTANT_MODEL
    }

    async fn complete(&self, request: &LlmRequest) -> Result<LlmResponse, LlmError> {
        Ok(LlmResponse {
            content: answer(request),
            model: INSTANT_MODEL.to_owned(),
            usage: self.usage,
        })
    }
}

/// How long a [`SimulatedLlm`] takes to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Latency {
    /// Always this long.
    Fixed(Duration),
    /// Any time from `min` to `max`, all equally likely.
    Uniform {
        /// The shortest.
        min: Duration,
        /// The longest.
        max: Duration,
    },
    /// Bell-shaped from `min` to `max`: the mean of three uniform draws, so the midpoint is
    /// the mean and the standard deviation is a sixth of the range (`min` and `max` are
    /// about three deviations away).
    Bell {
        /// The shortest.
        min: Duration,
        /// The longest.
        max: Duration,
    },
}

impl Latency {
    /// One latency, drawing uniform numbers in `[0, 1)` from `draw`.
    fn sample(&self, mut draw: impl FnMut() -> f64) -> Duration {
        let (min, max, spread) = match *self {
            Latency::Fixed(latency) => return latency,
            Latency::Uniform { min, max } => (min, max, draw()),
            Latency::Bell { min, max } => (min, max, (draw() + draw() + draw()) / 3.0),
        };
        let (min, max) = (min.min(max), min.max(max));
        min + (max - min).mul_f64(spread)
    }
}

/// **For benchmarks only.** Answers with the offline model's valid output and fixed token
/// counts (default 1,000 prompt + 250 completion), as model `simulated`, after a simulated
/// [`Latency`]: a stand-in for a real model's latency that costs no CPU while it waits
/// (a `tokio` timer), so thousands of calls can be in flight.
///
/// Its random latencies come from a seeded generator: the same seed gives the same sequence.
///
/// ```
/// use std::time::Duration;
/// use agent_pipeline::llm::{Latency, Llm, SimulatedLlm};
/// let llm = SimulatedLlm::new(Latency::Bell {
///     min: Duration::from_millis(300),
///     max: Duration::from_millis(700),
/// })
/// .with_usage(800, 200)
/// .with_seed(7);
/// assert_eq!(llm.model(), "simulated");
/// ```
#[derive(Debug)]
pub struct SimulatedLlm {
    latency: Latency,
    usage: Usage,
    /// SplitMix64's state: lock-free, so concurrent calls do not queue for their delays.
    random: AtomicU64,
}

impl SimulatedLlm {
    /// A simulated model that takes `latency` to answer, with the default token counts.
    pub fn new(latency: Latency) -> Self {
        Self {
            latency,
            usage: usage(DEFAULT_PROMPT_TOKENS, DEFAULT_COMPLETION_TOKENS),
            random: AtomicU64::new(0x5EED),
        }
    }

    /// Reports `prompt_tokens` and `completion_tokens` for every call.
    pub fn with_usage(mut self, prompt_tokens: u64, completion_tokens: u64) -> Self {
        self.usage = usage(prompt_tokens, completion_tokens);
        self
    }

    /// Seeds the latency generator.
    pub fn with_seed(self, seed: u64) -> Self {
        self.random.store(seed, Ordering::Relaxed);
        self
    }

    /// The next latency.
    fn next_latency(&self) -> Duration {
        self.latency.sample(|| self.draw())
    }

    /// A uniform number in `[0, 1)` (SplitMix64).
    fn draw(&self) -> f64 {
        const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut z = self
            .random
            .fetch_add(GAMMA, Ordering::Relaxed)
            .wrapping_add(GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[async_trait]
impl Llm for SimulatedLlm {
    fn model(&self) -> &str {
        SIMULATED_MODEL
    }

    async fn complete(&self, request: &LlmRequest) -> Result<LlmResponse, LlmError> {
        tokio::time::sleep(self.next_latency()).await;
        Ok(LlmResponse {
            content: answer(request),
            model: SIMULATED_MODEL.to_owned(),
            usage: self.usage,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::{Message, OfflineLlm, Role};
    use crate::output::{Design, Implementation, Review, StageOutput, TestPlan, strict_schema};
    use tokio::time::Instant;

    fn request<T: StageOutput>() -> LlmRequest {
        LlmRequest {
            messages: vec![Message::new(
                Role::User,
                "## Task\nWrite a tiny Python program that prints 'Hello Earthling'\n",
            )],
            schema_name: T::SCHEMA_NAME.to_owned(),
            schema: strict_schema::<T>(),
            model: None,
        }
    }

    fn every_stage() -> [LlmRequest; 4] {
        [
            request::<Design>(),
            request::<Implementation>(),
            request::<TestPlan>(),
            request::<Review>(),
        ]
    }

    #[tokio::test(start_paused = true)]
    async fn answers_are_the_offline_models_with_the_configured_usage() {
        let instant = InstantLlm::new().with_usage(30, 12);
        let simulated =
            SimulatedLlm::new(Latency::Fixed(Duration::from_millis(500))).with_usage(300, 120);
        for request in every_stage() {
            let offline = OfflineLlm::new().complete(&request).await;
            let offline = offline.expect("offline answers").content;
            let fast = instant.complete(&request).await.expect("instant answers");
            assert_eq!(fast.content, offline);
            assert_eq!(
                (fast.model.as_str(), fast.usage),
                ("instant", usage(30, 12))
            );
            let slow = simulated
                .complete(&request)
                .await
                .expect("simulated answers");
            assert_eq!(slow.content, offline);
            assert_eq!(slow.usage.total_tokens, 420);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_fixed_latency_is_waited_and_instant_waits_nothing() {
        let started = Instant::now();
        let _ = InstantLlm::new().complete(&request::<Design>()).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
        let llm = SimulatedLlm::new(Latency::Fixed(Duration::from_millis(500)));
        let _ = llm.complete(&request::<Design>()).await;
        assert_eq!(started.elapsed(), Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_calls_wait_side_by_side() {
        let llm = std::sync::Arc::new(SimulatedLlm::new(Latency::Fixed(Duration::from_millis(
            500,
        ))));
        let started = Instant::now();
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..1_000 {
            let llm = llm.clone();
            calls.spawn(async move { llm.complete(&request::<Review>()).await.is_ok() });
        }
        let answered = calls.join_all().await;
        assert_eq!(answered.iter().filter(|ok| **ok).count(), 1_000);
        assert_eq!(started.elapsed(), Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn random_latencies_stay_within_bounds_and_spread() {
        let (min, max) = (Duration::from_millis(200), Duration::from_millis(800));
        for latency in [Latency::Uniform { min, max }, Latency::Bell { min, max }] {
            let llm = SimulatedLlm::new(latency).with_seed(42);
            let samples: Vec<Duration> = (0..2_000).map(|_| llm.next_latency()).collect();
            assert!(
                samples.iter().all(|s| (min..=max).contains(s)),
                "{latency:?}"
            );
            let mean = samples.iter().sum::<Duration>() / 2_000;
            let mid = Duration::from_millis(500);
            assert!(
                mean.abs_diff(mid) < Duration::from_millis(20),
                "{latency:?}: {mean:?}"
            );
            let in_middle_fifth = samples
                .iter()
                .filter(|s| s.abs_diff(mid) < Duration::from_millis(60))
                .count();
            // Uniform: a fifth of the samples; bell-shaped: well over a third.
            match latency {
                Latency::Uniform { .. } => assert!((300..=500).contains(&in_middle_fifth)),
                _ => assert!(in_middle_fifth > 700, "{in_middle_fifth}"),
            }
            let again = SimulatedLlm::new(latency).with_seed(42);
            assert_eq!(
                again.next_latency(),
                samples[0],
                "a seed repeats its sequence"
            );

            let started = Instant::now();
            let _ = llm.complete(&request::<Design>()).await;
            assert!((min..=max).contains(&started.elapsed()));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_task_passes_the_gates_on_the_embedded_pipeline() {
        let temp = tempfile::tempdir().expect("a temporary directory");
        let llm = SimulatedLlm::new(Latency::Uniform {
            min: Duration::from_millis(1),
            max: Duration::from_millis(20),
        });
        let pipeline = crate::Pipeline::builder()
            .data_dir(temp.path().join("data"))
            .state_store(std::sync::Arc::new(crate::store::MemoryStateStore::new()))
            .llm(std::sync::Arc::new(llm))
            .build()
            .await
            .expect("a pipeline");
        let running = pipeline.start().await.expect("the services start");
        let task = pipeline
            .submit("Write a tiny Python program that prints 'Hello Earthling'")
            .await
            .expect("submitted");
        // Patience, not a measurement: the generated tests run in the sandbox.
        let report = tokio::time::timeout(Duration::from_secs(60), pipeline.wait(task)).await;
        let report = report.expect("the task ends").expect("a final report");
        assert_eq!(report.status, crate::wire::ReportStatus::Done, "{report:?}");
        let review = crate::StepId::v1(crate::Stage::Review);
        let artifact = pipeline.artifacts().read_artifact(task, review).await;
        let artifact = artifact.expect("readable").expect("a review artifact");
        assert_eq!(artifact.model, SIMULATED_MODEL);
        running.shutdown().await;
    }
}
