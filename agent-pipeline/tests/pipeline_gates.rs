//! Gates and feedback rounds, on generated code that really runs in the sandbox: failing
//! tests, a planted secret, a custom gate, publishing, and the ci-monitor's check.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use agent_pipeline::gates::{Gate, GateInput, GateVerdict};
use agent_pipeline::wire::ReportStatus;
use agent_pipeline::{Stage, StepId};
use common::{
    TestResult, Tweaked, artifact, finish, git, is_redone, mirrored_reports, reports_until,
    start_with, story,
};
use serde_json::{Value, json};

const HELLO: &str = "Write a tiny Python program that prints 'Hello Earthling'";

/// An implementation that prints the wrong text, so that the offline tester's test fails.
fn wrong_greeting(value: &mut Value) {
    value["files"][0]["content"] = json!("print(\"Hello Mars\")\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_tests_go_back_to_implement_and_end_in_error_after_the_rounds() -> TestResult {
    let llm = Tweaked::new(|request, value| {
        if request.schema_name == "implementation" {
            wrong_greeting(value);
        }
    });
    let mut harness = start_with(|b| b.llm(llm).gate_rounds(2)).await?;
    let task_id = harness.pipeline.submit(HELLO).await?;
    let last = finish(&harness.pipeline, task_id).await?;
    assert_eq!(last.status, ReportStatus::Error, "{last:?}");
    assert!(
        last.summary
            .starts_with("error: gate(s) tests failed after 2 rounds: tests: 0 passed, 1 failed"),
        "{}",
        last.summary
    );

    let events = mirrored_reports(&harness, task_id).await?;
    let round = [
        "stage_done implement@v1",
        "stage_done test@v1",
        "stage_done review@v1",
        "gates",
    ];
    let mut expected = vec!["received", "stage_done design@v1"];
    expected.extend(round);
    expected.extend(round);
    expected.push("error review@v1");
    assert_eq!(story(&events), expected);

    // The numbers are the real run's: one test, failed, with Python's own output.
    let artifacts = harness.pipeline.artifacts();
    let test = artifacts
        .read_artifact(task_id, StepId::v1(Stage::Test))
        .await?
        .ok_or("test artifact")?;
    assert_eq!(test.attempt.get(), 2);
    assert_eq!(
        (&test.output["passed"], &test.output["failed"]),
        (&json!(0), &json!(1))
    );
    assert_eq!(test.output["run"]["exit_code"], 1);
    let output = test.output["run"]["output"].as_str().unwrap_or_default();
    assert!(
        output.contains("AssertionError") && output.contains("Hello Mars"),
        "{output}"
    );

    // Round 2's implementer was told what failed.
    let second = artifacts
        .read_attempt(
            task_id,
            StepId::v1(Stage::Implement),
            agent_pipeline::Attempt::FIRST.next(),
        )
        .await?
        .ok_or("implement attempt 2")?;
    assert_eq!(second.round, 2);
    let feedback = second.feedback.unwrap_or_default();
    assert!(
        feedback.contains("gate tests: 0 passed, 1 failed") && feedback.contains("Hello Mars"),
        "{feedback}"
    );
    let dir = harness.task_dir(task_id);
    for round in ["gates.round1.json", "gates.round2.json"] {
        let gates: Value = serde_json::from_str(&std::fs::read_to_string(dir.join(round))?)?;
        assert_eq!(gates["passed"], false, "{round}");
    }

    // Nothing failing is published.
    let published = harness.data_dir().join("published.git");
    let branch = format!("agent/{task_id}");
    assert!(git(&published, &["rev-parse", "--verify", &branch]).is_err());
    harness.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feedback_round_fixes_the_change_and_publishes_it() -> TestResult {
    let llm = Tweaked::new(|request, value| {
        if request.schema_name == "implementation" && !is_redone(request) {
            wrong_greeting(value);
        }
    });
    let mut harness = start_with(|b| b.llm(llm)).await?;
    let task_id = harness.pipeline.submit(HELLO).await?;
    let last = finish(&harness.pipeline, task_id).await?;
    assert_eq!(last.status, ReportStatus::Done, "{last:?}");
    assert_eq!(last.details["round"], 2);
    let events = reports_until(&harness, task_id, ReportStatus::Ci).await?;
    let gates: Vec<&str> = events
        .iter()
        .filter(|e| e.status == ReportStatus::Gates)
        .map(|e| e.summary.as_str())
        .collect();
    assert_eq!(
        gates,
        [
            "Gates failed (round 1 of 3): tests",
            "Gates passed (round 2): tests, review, secrets"
        ]
    );

    // The published branch holds round 2's tested commit, on top of round 1's history.
    let test = artifact(&harness, task_id, Stage::Test).await?;
    let tested = test.output["commit"].as_str().ok_or("tested commit")?;
    let published = harness.data_dir().join("published.git");
    let branch = format!("agent/{task_id}");
    assert_eq!(git(&published, &["rev-parse", &branch])?.trim(), tested);
    let log = git(&published, &["log", "--format=%s", &branch])?;
    let subjects: Vec<&str> = log
        .lines()
        .map(|l| l.split(':').next().unwrap_or(l))
        .collect();
    assert_eq!(
        subjects[..4],
        [
            "test@v1 attempt 2",
            "implement@v1 attempt 2",
            "test@v1 attempt 1",
            "implement@v1 attempt 1"
        ],
        "{log}"
    );
    assert!(
        subjects.len() == 5 && subjects[4].starts_with("workspace created"),
        "{log}"
    );
    let hello = git(&published, &["show", &format!("{branch}:hello.py")])?;
    assert_eq!(hello, "print(\"Hello Earthling\")\n");
    harness.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_api_key_is_caught_by_the_secret_scan() -> TestResult {
    // Built at run time, so that this file does not itself look like it holds a key.
    let key = format!("sk-proj-{}", "A1b2C3d4E5f6G7h8".repeat(3));
    let planted = key.clone();
    let llm = Tweaked::new(move |request, value| {
        if request.schema_name == "implementation"
            && let Some(files) = value["files"].as_array_mut()
        {
            files.push(
                json!({ "path": "settings.py", "content": format!("API_KEY = \"{planted}\"\n") }),
            );
        }
    });
    let mut harness = start_with(|b| b.llm(llm).gate_rounds(1)).await?;
    let task_id = harness.pipeline.submit(HELLO).await?;
    let last = finish(&harness.pipeline, task_id).await?;
    assert_eq!(last.status, ReportStatus::Error, "{last:?}");
    assert!(
        last.summary
            .starts_with("error: gate(s) secrets failed after 1 round"),
        "{}",
        last.summary
    );
    assert!(last.summary.contains("settings.py:1"), "{}", last.summary);
    let gates = std::fs::read_to_string(harness.task_dir(task_id).join("gates.round1.json"))?;
    mirrored_reports(&harness, task_id).await?;
    let reports = std::fs::read_to_string(harness.pipeline.report_log().path())?;
    for (name, text) in [("gates.round1.json", &gates), ("reports.jsonl", &reports)] {
        assert!(!text.contains(&key), "{name} shows the secret");
        assert!(text.contains("secrets"), "{name} names the gate");
    }
    // The tests passed and the review approved: only the scan stopped the change.
    let verdicts: Value = serde_json::from_str(&gates)?;
    let passed: Vec<(&str, bool)> = verdicts["verdicts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| (v["gate"].as_str().unwrap_or(""), v["passed"] == true))
        .collect();
    assert_eq!(
        passed,
        [("tests", true), ("review", true), ("secrets", false)]
    );
    harness.stop().await;
    Ok(())
}

/// Fails its first round, then passes: a user's own gate.
#[derive(Debug, Default)]
struct SecondTimeLucky {
    checks: AtomicU32,
}

#[async_trait::async_trait]
impl Gate for SecondTimeLucky {
    fn name(&self) -> &str {
        "lint"
    }

    async fn check(&self, input: &GateInput<'_>) -> GateVerdict {
        self.checks.fetch_add(1, Ordering::SeqCst);
        let names: Vec<&str> = input.files.iter().map(|(path, _)| path.as_str()).collect();
        if input.round == 1 {
            GateVerdict::fail(
                self.name(),
                format!("line too long in {}", names.join(", ")),
            )
        } else {
            GateVerdict::pass(self.name(), "clean")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_gate_sends_its_finding_back_to_implement() -> TestResult {
    let gate = Arc::new(SecondTimeLucky::default());
    let mut harness = start_with(|b| b.gate(gate.clone())).await?;
    let task_id = harness.pipeline.submit(HELLO).await?;
    let last = finish(&harness.pipeline, task_id).await?;
    assert_eq!(last.status, ReportStatus::Done, "{last:?}");
    assert_eq!(gate.checks.load(Ordering::SeqCst), 2);
    let second = artifact(&harness, task_id, Stage::Implement).await?;
    let feedback = second.feedback.unwrap_or_default();
    assert!(
        feedback.contains("gate lint: line too long in hello.py, test_hello.py"),
        "{feedback}"
    );
    harness.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ci_monitor_reports_a_failing_check() -> TestResult {
    let mut harness =
        start_with(|b| b.ci_check_command("echo checking the branch; ls; exit 3")).await?;
    let task_id = harness.pipeline.submit(HELLO).await?;
    assert_eq!(
        finish(&harness.pipeline, task_id).await?.status,
        ReportStatus::Done
    );
    let events = reports_until(&harness, task_id, ReportStatus::Ci).await?;
    let ci = events.last().ok_or("ci event")?;
    assert_eq!(ci.details["passed"], false);
    assert_eq!(ci.details["exit_code"], 3);
    let output = ci.details["output"].as_str().unwrap_or_default();
    // The check ran on a checkout of the published branch.
    assert!(
        output.contains("checking the branch")
            && output.contains("hello.py")
            && output.contains("test_hello.py"),
        "{output}"
    );
    assert!(
        ci.summary
            .starts_with(&format!("CI failed on agent/{task_id}"))
    );
    let record: Value = serde_json::from_str(&std::fs::read_to_string(
        harness.task_dir(task_id).join("ci.json"),
    )?)?;
    assert_eq!(record["passed"], false);
    assert!(
        !harness.task_dir(task_id).join("ci-checkout").exists(),
        "the checkout is removed"
    );
    harness.stop().await;
    Ok(())
}
