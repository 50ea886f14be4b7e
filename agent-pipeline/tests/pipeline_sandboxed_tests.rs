//! What the pipeline does with generated code that misbehaves: paths out of the workspace, a
//! test command that outlives its time limit, tests that try the network, and a machine
//! without bubblewrap.

mod common;

use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Duration;

use agent_pipeline::Stage;
use agent_pipeline::agent::{Agent, AgentError, AgentInput, AgentOutput};
use agent_pipeline::execution::sandbox::{Bubblewrap, SandboxLimits};
use agent_pipeline::wire::ReportStatus;
use common::{TestResult, Tweaked, artifact, finish, start_with};
use serde_json::{Value, json};

const HELLO: &str = "Write a tiny Python program that prints 'Hello Earthling'";

/// Every entry under `dir`, as paths relative to it, sorted.
fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|read| {
            read.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_writes_outside_the_workspace_fails_the_step() -> TestResult {
    for path in ["../../../../etc/x", "/tmp/agent-pipeline-escape/x"] {
        let llm = Tweaked::new(move |request, value| {
            if request.schema_name == "implementation" {
                value["files"][0]["path"] = json!(path);
            }
        });
        let mut harness = start_with(|b| b.llm(llm)).await?;
        let task_id = harness.pipeline.submit(HELLO).await?;
        let last = finish(&harness.pipeline, task_id).await?;
        assert_eq!(last.status, ReportStatus::Error, "{last:?}");
        assert!(
            last.summary.contains(&format!("path {path:?}")),
            "the error names the path: {}",
            last.summary
        );
        assert_eq!(
            entries(harness.temp.path()),
            ["data"],
            "nothing beside DATA_DIR"
        );
        assert!(!std::path::Path::new("/tmp/agent-pipeline-escape").exists());
        assert!(
            !harness.task_dir(task_id).join("test@v1.json").exists(),
            "no later stage ran"
        );
        harness.stop().await;
    }
    Ok(())
}

/// An implementer that skips the model's validation and hands the pipeline a hostile path
/// directly, as a custom agent could.
#[derive(Debug)]
struct Escaping;

#[async_trait::async_trait]
impl Agent for Escaping {
    fn stage(&self) -> Stage {
        Stage::Implement
    }

    async fn run(&self, _input: &AgentInput) -> Result<AgentOutput, AgentError> {
        let output = json!({
            "diff_summary": "escape",
            "code_snippets": [],
            "files": [{ "path": "../../../etc/x", "content": "owned" }],
        });
        Ok(AgentOutput {
            output: output.as_object().cloned().unwrap_or_default(),
            model: "escaping".into(),
            usage: Default::default(),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workspace_refuses_a_hostile_path_from_a_custom_agent() -> TestResult {
    let mut harness = start_with(|b| b.agent(Arc::new(Escaping))).await?;
    let task_id = harness.pipeline.submit(HELLO).await?;
    let last = finish(&harness.pipeline, task_id).await?;
    assert_eq!(last.status, ReportStatus::Error, "{last:?}");
    assert!(
        last.summary
            .contains("Implement failed: workspace: refused path \"../../../etc/x\""),
        "{}",
        last.summary
    );
    // Refused at once: the same answer would be refused again.
    let attempts = harness.pipeline.state().attempts(task_id).await?;
    assert_eq!(attempts.len(), 2, "design and one implement attempt");
    assert_eq!(entries(harness.temp.path()), ["data"]);
    assert!(!harness.data_dir().join("etc").exists());
    harness.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_command_past_its_time_limit_is_killed_and_reported() -> TestResult {
    let llm = Tweaked::new(|request, value| {
        if request.schema_name == "test_plan" {
            value["command"] = json!("echo started; sleep 30; python3 -m unittest -v");
        }
    });
    let limits = SandboxLimits {
        timeout: Duration::from_secs(2),
        ..SandboxLimits::default()
    };
    let mut harness = start_with(|b| b.llm(llm).sandbox_limits(limits).gate_rounds(1)).await?;
    let task_id = harness.pipeline.submit(HELLO).await?;
    let last = finish(&harness.pipeline, task_id).await?;
    assert_eq!(last.status, ReportStatus::Error, "{last:?}");
    assert!(
        last.summary.contains("gate(s) tests failed") && last.summary.contains("killed after 2."),
        "{}",
        last.summary
    );
    let test = artifact(&harness, task_id, Stage::Test).await?;
    let run = &test.output["run"];
    assert_eq!(run["timed_out"], true);
    assert_eq!(run["exit_code"], Value::Null);
    let took = run["duration_ms"].as_u64().unwrap_or(u64::MAX);
    assert!((2000..10_000).contains(&took), "{took} ms");
    assert!(run["output"].as_str().unwrap_or("").contains("started"));
    assert_eq!(test.output["passed"], 0);
    harness.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_tests_cannot_reach_the_network() -> TestResult {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let test = format!(
        "import socket\nimport unittest\n\n\nclass NetworkTest(unittest.TestCase):\n    \
         def test_reaches_the_host(self):\n        \
         socket.create_connection((\"127.0.0.1\", {port}), timeout=3).close()\n\n\n\
         if __name__ == \"__main__\":\n    unittest.main()\n"
    );
    let llm = Tweaked::new(move |request, value| {
        if request.schema_name == "test_plan" {
            value["test_files"] = json!([{ "path": "test_network.py", "content": test }]);
        }
    });
    let mut harness = start_with(|b| b.llm(llm).gate_rounds(1)).await?;
    let task_id = harness.pipeline.submit(HELLO).await?;
    let last = finish(&harness.pipeline, task_id).await?;
    assert_eq!(last.status, ReportStatus::Error, "{last:?}");
    let test = artifact(&harness, task_id, Stage::Test).await?;
    assert_eq!(
        (&test.output["passed"], &test.output["failed"]),
        (&json!(0), &json!(1)),
        "{:#}",
        test.output["run"]
    );
    let output = test.output["run"]["output"].as_str().unwrap_or_default();
    assert!(
        output.contains("Connection refused") || output.contains("Network is unreachable"),
        "{output}"
    );
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the sandboxed test reached the host: {other:?}"),
    }
    harness.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_bubblewrap_the_tests_are_refused_with_a_clear_message() -> TestResult {
    let missing = Arc::new(Bubblewrap::with_program("/nonexistent/bwrap"));
    let mut harness = start_with(|b| b.sandbox(missing)).await?;
    let task_id = harness.pipeline.submit(HELLO).await?;
    let last = finish(&harness.pipeline, task_id).await?;
    assert_eq!(last.status, ReportStatus::Error, "{last:?}");
    assert!(
        last.summary.contains("bubblewrap") && last.summary.contains("AGENT_SANDBOX=none"),
        "{}",
        last.summary
    );
    let test_attempts: Vec<_> = harness
        .pipeline
        .state()
        .attempts(task_id)
        .await?
        .into_iter()
        .filter(|a| a.step_id().stage() == Stage::Test)
        .collect();
    assert_eq!(test_attempts.len(), 1, "refused, not retried");
    harness.stop().await;
    Ok(())
}
