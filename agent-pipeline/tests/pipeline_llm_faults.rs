//! Faults of the LLM provider — timeouts, 500s, 429 storms, truncated and non-JSON bodies,
//! schema-violating answers, a refusal — on the real pipeline, with the OpenAI client talking to
//! a local server that speaks the Chat Completions protocol. Each ends as a retry (of the client
//! or of the pipeline), a repair by the agent, or one dead letter with a typed reason; never a
//! hang or a crash, and the pipeline runs the next task as usual.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use agent_pipeline::llm::{ApiKey, LlmSettings, OpenAiLlm};
use agent_pipeline::store::AttemptStatus;
use agent_pipeline::wire::{DeadLetter, ReportEvent, ReportStatus};
use agent_pipeline::{Pipeline, TaskId};
use common::openai::{ChatServer, Fault};
use common::{Harness, TestResult, attempt_steps, finish, mirrored_reports, story};
use serde_json::Value;

const PROMPT: &str = "Write a tiny Python program that prints 'Hello Earthling'";

/// How long one HTTP request of the client may take.
const CLIENT_TIMEOUT: Duration = Duration::from_millis(300);
/// Requests the client makes per call: it retries a 429, a 5xx or a timeout once.
const CLIENT_ATTEMPTS: u32 = 2;
/// Tries of a step by the pipeline (`common::builder`'s retry policy).
const PIPELINE_TRIES: usize = 3;
/// The bound on every test: the faults cost a few seconds of timeouts and backoff at most, so
/// reaching it means something hung.
const BOUND: Duration = Duration::from_secs(60);

/// The clean run of a task, event by event.
const CLEAN_STORY: [&str; 7] = [
    "received",
    "stage_done design@v1",
    "stage_done implement@v1",
    "stage_done test@v1",
    "stage_done review@v1",
    "gates",
    "done review@v1",
];

/// Runs `test`, failing if it takes longer than [`BOUND`].
async fn bounded(test: impl Future<Output = TestResult>) -> TestResult {
    tokio::time::timeout(BOUND, test)
        .await
        .map_err(|_| format!("the test hung for {BOUND:?}"))?
}

/// A pipeline over the server, with the real client's short timeout and two attempts, and
/// without code execution.
async fn start_on(server: &ChatServer) -> Result<Harness, Box<dyn std::error::Error>> {
    let llm = OpenAiLlm::new(LlmSettings {
        api_key: Some(ApiKey::new("sk-test-0123456789abcdef")),
        model: "model-a".to_owned(),
        base_url: server.base_url(),
        timeout: CLIENT_TIMEOUT,
        max_attempts: CLIENT_ATTEMPTS,
        ..LlmSettings::default()
    })?;
    common::start_with(|builder| builder.llm(Arc::new(llm)).execute_code(false)).await
}

/// What one task came to.
struct Outcome {
    task_id: TaskId,
    last: ReportEvent,
    events: Vec<ReportEvent>,
    /// The requests the server saw during the task, in order.
    requests: Vec<Value>,
}

impl Outcome {
    fn story(&self) -> Vec<String> {
        story(&self.events)
    }

    /// The requests for the response schema `schema`.
    fn requests_for(&self, schema: &str) -> Vec<&Value> {
        self.requests
            .iter()
            .filter(|r| r["response_format"]["json_schema"]["name"] == schema)
            .collect()
    }

    /// The summaries of the task's `retry` events.
    fn retries(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter(|e| e.status == ReportStatus::Retry)
            .map(|e| e.summary.as_str())
            .collect()
    }
}

/// Submits the prompt and waits for the task's end and its mirrored events.
async fn run_task(
    harness: &Harness,
    server: &ChatServer,
) -> Result<Outcome, Box<dyn std::error::Error>> {
    let before = server.requests().len();
    let task_id = harness.pipeline.submit(PROMPT).await?;
    let last = finish(&harness.pipeline, task_id).await?;
    let events = mirrored_reports(harness, task_id).await?;
    let requests = server.requests().split_off(before);
    Ok(Outcome {
        task_id,
        last,
        events,
        requests,
    })
}

/// Every entry of the dead-letter topic so far: read until none comes for a while.
async fn all_dead_letters(
    pipeline: &Pipeline,
) -> Result<Vec<DeadLetter>, Box<dyn std::error::Error>> {
    let group = format!("test-{}", TaskId::new());
    let subscription = pipeline
        .bus()
        .subscribe(&pipeline.topics().dlq, &group)
        .await?;
    let mut letters = Vec::new();
    while let Ok(delivery) =
        tokio::time::timeout(Duration::from_millis(500), subscription.next()).await
    {
        let delivery = delivery?;
        subscription.ack(delivery.receipt).await?;
        letters.push(serde_json::from_slice(&delivery.payload)?);
    }
    Ok(letters)
}

/// With the faults used up or cleared, the same pipeline runs a clean task to `done`, one
/// request per stage.
async fn assert_runs_clean(harness: &Harness, server: &ChatServer) -> TestResult {
    server.set_faults(Vec::new());
    let clean = run_task(harness, server).await?;
    assert_eq!(clean.last.status, ReportStatus::Done, "{:?}", clean.last);
    assert_eq!(clean.story(), CLEAN_STORY);
    assert_eq!(clean.requests.len(), 4, "one request per stage");
    Ok(())
}

/// A persistent fault of one stage, and what it must come to.
struct Persistent {
    schema: &'static str,
    step: &'static str,
    /// The faults queued for the stage; more than the budget unless the fault is not retried.
    faults: Vec<Fault>,
    /// How many of them the client and the pipeline use up before they give up.
    used: usize,
    /// The task's events.
    story: Vec<String>,
    reason_parts: Vec<&'static str>,
    /// The stages that must not have been asked.
    never_asked: Vec<&'static str>,
}

/// Runs a task into `case`'s fault: it ends `error` with one dead letter whose reason contains
/// each of `reason_parts`, no later stage is asked, and the pipeline still runs a clean task
/// afterwards.
async fn assert_dead_lettered(case: Persistent) -> TestResult {
    let server = ChatServer::start().await;
    let mut harness = start_on(&server).await?;
    let queued = case.faults.len();
    server.set_faults_for(case.schema, case.faults);

    let outcome = run_task(&harness, &server).await?;
    assert_eq!(
        outcome.last.status,
        ReportStatus::Error,
        "{:?}",
        outcome.last
    );
    assert_eq!(outcome.story(), case.story);
    assert_eq!(
        outcome.requests_for(case.schema).len(),
        case.used,
        "requests of the failing stage"
    );
    assert_eq!(
        server.faults_left(),
        queued - case.used,
        "faults left unused"
    );
    for schema in &case.never_asked {
        assert!(
            outcome.requests_for(schema).is_empty(),
            "{schema} was asked after {} failed",
            case.step
        );
    }

    let letters = all_dead_letters(&harness.pipeline).await?;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter.task_id, Some(outcome.task_id.to_string()));
    assert_eq!(letter.step_id.as_deref(), Some(case.step));
    for part in &case.reason_parts {
        assert!(
            letter.reason.contains(part),
            "{:?} lacks {part:?}",
            letter.reason
        );
    }
    assert_eq!(outcome.last.summary, format!("error: {}", letter.reason));
    let attempts = harness.pipeline.state().attempts(outcome.task_id).await?;
    assert!(
        attempts
            .iter()
            .filter(|a| a.step_id().to_string() == case.step)
            .all(|a| a.status == AttemptStatus::Failed),
        "{:?}",
        attempt_steps(&attempts)
    );

    assert_runs_clean(&harness, &server).await?;
    assert_eq!(
        all_dead_letters(&harness.pipeline).await?.len(),
        1,
        "the clean task adds no dead letter"
    );
    harness.stop().await;
    Ok(())
}

/// Each transient fault of the design stage, as a task of its own on one pipeline: the task
/// ends `done`; where the client's own retry covers the fault the pipeline does not retry, and
/// where it does not, the pipeline retries once with the typed cause in the `retry` event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_end_done_with_retries_where_the_pipeline_retried() -> TestResult {
    bounded(async {
        let server = ChatServer::start().await;
        let mut harness = start_on(&server).await?;
        // (what, faults of the design stage, its requests, the pipeline's retry reason if any)
        let cases: Vec<(&str, Vec<Fault>, usize, Option<&str>)> = vec![
            ("one 500", vec![Fault::Status(500)], 2, None),
            (
                "a 429 storm shorter than the budget",
                vec![Fault::TooManyRequests; 3],
                4,
                Some("HTTP 429 after 2 attempt(s)"),
            ),
            (
                "one timeout",
                vec![Fault::Delay(CLIENT_TIMEOUT * 4)],
                2,
                None,
            ),
            (
                "a timeout on both of the client's attempts",
                vec![Fault::Delay(CLIENT_TIMEOUT * 4); 2],
                3,
                Some("the LLM call timed out after 300ms"),
            ),
            (
                "one truncated body",
                vec![Fault::Truncated],
                2,
                Some("not a chat completion: the body is not JSON"),
            ),
            (
                "one HTML page",
                vec![Fault::NotJson],
                2,
                Some("not a chat completion: the body is not JSON"),
            ),
        ];
        for (what, faults, design_requests, retried_because) in cases {
            let abandoned = server.abandoned();
            server.set_faults_for("design", faults.clone());
            let outcome = run_task(&harness, &server).await?;
            assert_eq!(
                outcome.last.status,
                ReportStatus::Done,
                "{what}: {:?}",
                outcome.last
            );
            assert_eq!(server.faults_left(), 0, "{what}: every fault was answered");
            assert_eq!(
                outcome.requests_for("design").len(),
                design_requests,
                "{what}: design requests"
            );
            let attempts = harness.pipeline.state().attempts(outcome.task_id).await?;
            let design: Vec<_> = attempts
                .iter()
                .filter(|a| a.step_id().to_string() == "design@v1")
                .map(|a| a.status)
                .collect();
            let mut expected = CLEAN_STORY.map(str::to_owned).to_vec();
            match retried_because {
                Some(reason) => {
                    expected.insert(1, "retry design@v1".to_owned());
                    assert_eq!(outcome.story(), expected, "{what}");
                    let retries = outcome.retries();
                    assert!(retries[0].contains(reason), "{what}: {retries:?}");
                    assert_eq!(
                        design,
                        [AttemptStatus::Failed, AttemptStatus::Succeeded],
                        "{what}"
                    );
                }
                None => {
                    assert_eq!(outcome.story(), expected, "{what}: no pipeline retry");
                    assert_eq!(design, [AttemptStatus::Succeeded], "{what}");
                }
            }
            let timeouts = faults
                .iter()
                .filter(|f| matches!(f, Fault::Delay(_)))
                .count();
            assert_eq!(
                server.abandoned() - abandoned,
                timeouts,
                "{what}: the client gave up on exactly the delayed calls"
            );
            for stage in ["implementation", "test_plan", "review"] {
                assert_eq!(outcome.requests_for(stage).len(), 1, "{what}: {stage}");
            }
        }
        assert!(all_dead_letters(&harness.pipeline).await?.is_empty());
        assert_runs_clean(&harness, &server).await?;
        harness.stop().await;
        Ok(())
    })
    .await
}

/// One schema-violating answer is sent back by the agent with what is wrong, and the repaired
/// answer carries the task to `done` without a retry of the step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_violating_answer_is_repaired_by_the_agent() -> TestResult {
    bounded(async {
        let server = ChatServer::start().await;
        let mut harness = start_on(&server).await?;
        server.set_faults_for("design", vec![Fault::SchemaViolation]);

        let outcome = run_task(&harness, &server).await?;
        assert_eq!(
            outcome.last.status,
            ReportStatus::Done,
            "{:?}",
            outcome.last
        );
        assert_eq!(outcome.story(), CLEAN_STORY, "no retry of the step");
        let design = outcome.requests_for("design");
        assert_eq!(design.len(), 2);
        let feedback = |request: &Value| {
            request["messages"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m["content"].as_str())
                .any(|content| content.starts_with("Your answer was rejected"))
        };
        assert!(!feedback(design[0]));
        assert!(feedback(design[1]), "{}", design[1]["messages"]);
        let attempts = harness.pipeline.state().attempts(outcome.task_id).await?;
        assert_eq!(attempt_steps(&attempts)[0], "design@v1#1");
        assert_eq!(attempts.len(), 4, "one attempt per step");
        let artifact =
            common::artifact(&harness, outcome.task_id, agent_pipeline::Stage::Design).await?;
        assert!(
            artifact.output["files_touched"].is_array(),
            "the repaired design is kept: {:?}",
            artifact.output
        );
        assert!(all_dead_letters(&harness.pipeline).await?.is_empty());
        harness.stop().await;
        Ok(())
    })
    .await
}

/// The implement stage answers 500 every time: two requests per try, three tries, then one dead
/// letter naming the status; the test and review stages are never asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_that_always_answers_500_is_dead_lettered() -> TestResult {
    bounded(assert_dead_lettered(Persistent {
        schema: "implementation",
        step: "implement@v1",
        faults: vec![Fault::Status(500); 20],
        used: CLIENT_ATTEMPTS as usize * PIPELINE_TRIES,
        story: [
            "received",
            "stage_done design@v1",
            "retry implement@v1",
            "retry implement@v1",
            "dlq implement@v1",
            "error implement@v1",
        ]
        .map(str::to_owned)
        .to_vec(),
        reason_parts: vec![
            "Implement failed after 3 tries",
            "HTTP 500 after 2 attempt(s)",
        ],
        never_asked: vec!["test_plan", "review"],
    }))
    .await
}

/// The design stage answers against the schema every time: three calls per try (two repairs),
/// three tries, then one dead letter saying no valid design came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_that_always_violates_the_schema_is_dead_lettered() -> TestResult {
    bounded(assert_dead_lettered(Persistent {
        schema: "design",
        step: "design@v1",
        faults: vec![Fault::SchemaViolation; 20],
        used: 3 * PIPELINE_TRIES,
        story: [
            "received",
            "retry design@v1",
            "retry design@v1",
            "dlq design@v1",
            "error design@v1",
        ]
        .map(str::to_owned)
        .to_vec(),
        reason_parts: vec![
            "Design failed after 3 tries",
            "no valid design after 3 call(s)",
        ],
        never_asked: vec!["implementation", "test_plan", "review"],
    }))
    .await
}

/// A refusal is final: neither the client nor the pipeline asks again, and the dead letter
/// says the model refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_dead_lettered_without_retries() -> TestResult {
    bounded(assert_dead_lettered(Persistent {
        schema: "design",
        step: "design@v1",
        faults: vec![Fault::Refusal; 3],
        used: 1,
        story: ["received", "dlq design@v1", "error design@v1"]
            .map(str::to_owned)
            .to_vec(),
        reason_parts: vec![
            "Design failed: the model refused to answer",
            "I'm sorry, I can't help with that.",
        ],
        never_asked: vec!["implementation", "test_plan", "review"],
    }))
    .await
}

/// A 429 storm longer than the client's attempts times the pipeline's tries: the test stage is
/// dead-lettered with the rate limit as the reason once the budget of six requests is spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_longer_than_the_budget_is_dead_lettered() -> TestResult {
    bounded(assert_dead_lettered(Persistent {
        schema: "test_plan",
        step: "test@v1",
        faults: vec![Fault::TooManyRequests; 20],
        used: CLIENT_ATTEMPTS as usize * PIPELINE_TRIES,
        story: [
            "received",
            "stage_done design@v1",
            "stage_done implement@v1",
            "retry test@v1",
            "retry test@v1",
            "dlq test@v1",
            "error test@v1",
        ]
        .map(str::to_owned)
        .to_vec(),
        reason_parts: vec!["Test failed after 3 tries", "HTTP 429 after 2 attempt(s)"],
        never_asked: vec!["review"],
    }))
    .await
}
