//! Shared set-up of the pipeline tests: a pipeline in a temporary data directory.
#![allow(dead_code, unreachable_pub)]

pub mod openai;
pub mod repo;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agent_pipeline::agent::{Agent, AgentError, AgentInput, AgentOutput};
use agent_pipeline::llm::OfflineLlm;
use agent_pipeline::machine::RetryPolicy;
use agent_pipeline::wire::{DeadLetter, ReportEvent};
use agent_pipeline::{Pipeline, PipelineBuilder, RunningPipeline, Stage};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// How long a test waits for something that must happen.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A pipeline whose data directory is `<temp>/data`, so that the test can check that nothing
/// is written beside it.
pub struct Harness {
    pub temp: tempfile::TempDir,
    pub pipeline: Pipeline,
    pub running: Option<RunningPipeline>,
}

impl Harness {
    pub fn data_dir(&self) -> PathBuf {
        self.temp.path().join("data")
    }

    pub fn task_dir(&self, task_id: agent_pipeline::TaskId) -> PathBuf {
        self.data_dir().join(task_id.to_string())
    }

    /// Stops the services; the data directory stays until the harness is dropped.
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }
}

/// A builder with the offline model and fast retries. The generated tests run in bubblewrap,
/// as they do by default: these tests need `bwrap` (scripts/test-all installs it).
pub fn builder(temp: &tempfile::TempDir) -> PipelineBuilder {
    assert!(
        std::process::Command::new("bwrap")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "the pipeline tests run generated code in bubblewrap, and `bwrap` is not installed: \
         install the Debian package bubblewrap, or run scripts/test-all, which does"
    );
    Pipeline::builder()
        .data_dir(temp.path().join("data"))
        .llm(Arc::new(OfflineLlm::new()))
        .retry_policy(RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
        })
}

/// Starts a pipeline built by `configure(builder)`.
pub async fn start_with(
    configure: impl FnOnce(PipelineBuilder) -> PipelineBuilder,
) -> Result<Harness, Box<dyn std::error::Error>> {
    let temp = tempfile::tempdir()?;
    let pipeline = configure(builder(&temp)).build().await?;
    let running = pipeline.start().await?;
    Ok(Harness {
        temp,
        pipeline,
        running: Some(running),
    })
}

/// Starts the default test pipeline.
pub async fn start() -> Result<Harness, Box<dyn std::error::Error>> {
    start_with(|b| b).await
}

/// The canonical artifact of the task's `stage`, which must exist.
pub async fn artifact(
    harness: &Harness,
    task_id: agent_pipeline::TaskId,
    stage: Stage,
) -> Result<agent_pipeline::store::Artifact, Box<dyn std::error::Error>> {
    let step = agent_pipeline::StepId::v1(stage);
    let stored = harness
        .pipeline
        .artifacts()
        .read_artifact(task_id, step)
        .await?;
    Ok(stored.ok_or_else(|| format!("{step} has no artifact"))?)
}

/// `git -C dir args…`, its stdout.
pub fn git(dir: &std::path::Path, args: &[&str]) -> Result<String, Box<dyn std::error::Error>> {
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()?;
    if !output.status.success() {
        return Err(format!(
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// The status and step of each event, as `stage_done design@v1`.
pub fn story(events: &[ReportEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            format!(
                "{}{}",
                e.status,
                e.stage.map(|s| format!(" {s}")).unwrap_or_default()
            )
        })
        .collect()
}

/// Each attempt as `design@v1#1`, in the order given.
pub fn attempt_steps(attempts: &[agent_pipeline::store::AttemptRecord]) -> Vec<String> {
    attempts
        .iter()
        .map(|a| format!("{}#{}", a.step_id(), a.attempt()))
        .collect()
}

/// Waits for the task's final event.
pub async fn finish(
    pipeline: &Pipeline,
    task_id: agent_pipeline::TaskId,
) -> Result<ReportEvent, Box<dyn std::error::Error>> {
    Ok(tokio::time::timeout(PATIENCE, pipeline.wait(task_id)).await??)
}

/// The events of `task_id` up to and including the first for which `last` holds (each
/// awaited at most [`PATIENCE`]).
pub async fn events_until(
    pipeline: &Pipeline,
    task_id: agent_pipeline::TaskId,
    last: impl Fn(&ReportEvent) -> bool,
) -> Result<Vec<ReportEvent>, Box<dyn std::error::Error>> {
    let mut watch = pipeline.watch(task_id).await?;
    let mut events = Vec::new();
    loop {
        let event = tokio::time::timeout(PATIENCE, watch.next()).await??;
        let done = last(&event);
        events.push(event);
        if done {
            return Ok(events);
        }
    }
}

/// Waits until `check` holds, polling.
pub async fn eventually<F, Fut>(what: &str, mut check: F) -> TestResult
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!("timed out waiting for {what}").into())
}

/// The first `count` dead letters on the pipeline's dead-letter topic.
pub async fn dead_letters(
    pipeline: &Pipeline,
    count: usize,
) -> Result<Vec<DeadLetter>, Box<dyn std::error::Error>> {
    let group = format!("test-{}", uuid_like());
    let subscription = pipeline
        .bus()
        .subscribe(&pipeline.topics().dlq, &group)
        .await?;
    let mut letters = Vec::new();
    while letters.len() < count {
        let delivery = tokio::time::timeout(PATIENCE, subscription.next()).await??;
        subscription.ack(delivery.receipt).await?;
        letters.push(serde_json::from_slice(&delivery.payload)?);
    }
    Ok(letters)
}

/// Every report event of `reports.jsonl` for the task, once its final event is there.
pub async fn mirrored_reports(
    harness: &Harness,
    task_id: agent_pipeline::TaskId,
) -> Result<Vec<ReportEvent>, Box<dyn std::error::Error>> {
    mirrored_until(harness, task_id, "the final event", |e| e.status.is_final()).await
}

/// Every report event of `reports.jsonl` for the task, once one with `status` is there.
pub async fn reports_until(
    harness: &Harness,
    task_id: agent_pipeline::TaskId,
    status: agent_pipeline::wire::ReportStatus,
) -> Result<Vec<ReportEvent>, Box<dyn std::error::Error>> {
    let what = format!("a {status} event");
    mirrored_until(harness, task_id, &what, move |e| e.status == status).await
}

async fn mirrored_until(
    harness: &Harness,
    task_id: agent_pipeline::TaskId,
    what: &str,
    wanted: impl Fn(&ReportEvent) -> bool,
) -> Result<Vec<ReportEvent>, Box<dyn std::error::Error>> {
    let log = harness.pipeline.report_log().clone();
    let wanted = &wanted;
    eventually(&format!("{what} in reports.jsonl"), || {
        let log = log.clone();
        async move {
            log.read_all()
                .await
                .is_ok_and(|events| events.iter().any(|e| e.task_id == task_id && wanted(e)))
        }
    })
    .await?;
    Ok(log
        .read_all()
        .await?
        .into_iter()
        .filter(|e| e.task_id == task_id)
        .collect())
}

fn uuid_like() -> String {
    agent_pipeline::TaskId::new().to_string()
}

/// An agent that fails its first `failures` runs (retryably or not), then delegates to the
/// offline model's agent for its stage.
#[derive(Debug)]
pub struct Failing {
    pub stage: Stage,
    pub failures: u32,
    pub retryable: bool,
    pub runs: std::sync::atomic::AtomicU32,
}

impl Failing {
    pub fn new(stage: Stage, failures: u32, retryable: bool) -> Arc<Self> {
        Arc::new(Self {
            stage,
            failures,
            retryable,
            runs: Default::default(),
        })
    }

    pub fn runs(&self) -> u32 {
        self.runs.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl Agent for Failing {
    fn stage(&self) -> Stage {
        self.stage
    }

    async fn run(&self, input: &AgentInput) -> Result<AgentOutput, AgentError> {
        let run = self.runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if run <= self.failures {
            return Err(AgentError::Failed {
                message: format!("induced failure {run}"),
                retryable: self.retryable,
            });
        }
        let llm = Arc::new(OfflineLlm::new());
        let agent: Box<dyn Agent> = match self.stage {
            Stage::Design => Box::new(agent_pipeline::agent::architect(llm)),
            Stage::Implement => Box::new(agent_pipeline::agent::implementer(llm)),
            Stage::Test => Box::new(agent_pipeline::agent::tester(llm)),
            Stage::Review => Box::new(agent_pipeline::agent::reviewer(llm)),
        };
        agent.run(input).await
    }
}

/// How a [`Tweaked`] model changes the offline model's answer to a request.
pub type Tweak = dyn Fn(&agent_pipeline::llm::LlmRequest, &mut serde_json::Value) + Send + Sync;

/// The offline model with its answers changed by a function: a stand-in for a real model that
/// gets things wrong (or right) in a chosen way.
pub struct Tweaked {
    tweak: Box<Tweak>,
}

impl Tweaked {
    pub fn new(
        tweak: impl Fn(&agent_pipeline::llm::LlmRequest, &mut serde_json::Value) + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            tweak: Box::new(tweak),
        })
    }
}

impl std::fmt::Debug for Tweaked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tweaked")
    }
}

#[async_trait::async_trait]
impl agent_pipeline::llm::Llm for Tweaked {
    fn model(&self) -> &str {
        "tweaked"
    }

    async fn complete(
        &self,
        request: &agent_pipeline::llm::LlmRequest,
    ) -> Result<agent_pipeline::llm::LlmResponse, agent_pipeline::llm::LlmError> {
        let mut answer = OfflineLlm::new().complete(request).await?;
        let mut value: serde_json::Value =
            serde_json::from_str(&answer.content).unwrap_or_default();
        (self.tweak)(request, &mut value);
        answer.content = value.to_string();
        Ok(answer)
    }
}

/// Whether the request is the implementer's second or later round.
pub fn is_redone(request: &agent_pipeline::llm::LlmRequest) -> bool {
    request
        .messages
        .iter()
        .any(|m| m.content.contains("This step is being redone"))
}
