//! The whole pipeline, end to end, on the embedded default (memory bus, files, SQLite).

mod common;

use std::sync::{Arc, Mutex};

use agent_pipeline::llm::{Llm, LlmError, LlmRequest, LlmResponse, OfflineLlm};
use agent_pipeline::store::{AttemptStatus, SqliteStateStore, StateStore, TaskStatus};
use agent_pipeline::wire::ReportStatus;
use agent_pipeline::{Stage, StepId};
use common::{TestResult, finish, git, reports_until, start, start_with, story};
use serde_json::json;

const HELLO: &str = "Write a tiny Python program that prints 'Hello Earthling'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_earthling_runs_through_all_four_stages() -> TestResult {
    let mut harness = start().await?;
    let task_id = harness.pipeline.submit(HELLO).await?;
    let last = finish(&harness.pipeline, task_id).await?;
    assert_eq!(last.status, ReportStatus::Done, "{last:?}");
    assert!(last.summary.starts_with("Task completed; artifacts in "));
    assert!(last.summary.ends_with(&task_id.to_string()));

    // The ci-monitor's check of the published branch comes after `done`.
    let events = reports_until(&harness, task_id, ReportStatus::Ci).await?;

    // Files, in the contract's layout, with the workspace, the gates and the CI check beside.
    let dir = harness.task_dir(task_id);
    let mut names: Vec<String> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "ci.json",
            "design@v1.json",
            "gates.round1.json",
            "implement@v1.json",
            "review@v1.json",
            "task.json",
            "test@v1.json",
            "workspace"
        ]
    );
    let read = |name: &str| -> Result<serde_json::Value, Box<dyn std::error::Error>> {
        let text = std::fs::read_to_string(dir.join(name))?;
        assert!(text.contains("\n  \""), "{name} is pretty-printed");
        Ok(serde_json::from_str(&text)?)
    };
    let design = read("design@v1.json")?;
    assert_eq!(design["files_touched"], serde_json::json!(["hello.py"]));
    assert_eq!(design["model"], "offline");
    assert_eq!(design["attempt"], 1);
    let implementation = read("implement@v1.json")?;
    assert_eq!(
        implementation["files"][0]["content"],
        "print(\"Hello Earthling\")\n"
    );
    assert!(
        implementation["diff_summary"].is_string() && implementation["code_snippets"].is_array()
    );
    let implemented = implementation["workspace"]["commit"]
        .as_str()
        .ok_or("implement@v1.json names its workspace commit")?;

    // The numbers come from really running the tests in the sandbox.
    let test = read("test@v1.json")?;
    assert_eq!(
        (&test["tests_added"], &test["passed"], &test["failed"]),
        (&json!(1), &json!(1), &json!(0)),
        "{test:#}"
    );
    assert_eq!(test["counted_from"], "unittest");
    assert_eq!(test["run"]["sandbox"], "bubblewrap");
    assert_eq!(test["run"]["command"], "python3 -m unittest -v");
    assert_eq!(test["run"]["exit_code"], 0);
    assert_eq!(test["run"]["timed_out"], false);
    let output = test["run"]["output"].as_str().unwrap_or_default();
    assert!(
        output.contains("Ran 1 test") && output.contains("OK"),
        "{output}"
    );
    let tested = test["commit"]
        .as_str()
        .ok_or("test@v1.json names its commit")?;
    let review = read("review@v1.json")?;
    assert_eq!(review["approved"], true);
    assert_eq!(review["reviewed_commit"], tested);
    assert_eq!(read("task.json")?["prompt"], HELLO);
    let gates = read("gates.round1.json")?;
    assert_eq!(gates["passed"], true, "{gates:#}");
    let ci = read("ci.json")?;
    assert_eq!(
        (&ci["passed"], &ci["run"]["exit_code"]),
        (&json!(true), &json!(0)),
        "{ci:#}"
    );

    // The workspace is a git repository with one commit per attempt, and the tested commit
    // is published as agent/<task_id> in the bare repository under DATA_DIR.
    let workspace = dir.join("workspace");
    let history = git(&workspace, &["log", "--format=%s", tested])?;
    let subjects: Vec<&str> = history.lines().collect();
    assert_eq!(subjects.len(), 3, "{history}");
    assert!(subjects[0].starts_with("test@v1 attempt 1"), "{history}");
    assert!(
        subjects[1].starts_with("implement@v1 attempt 1"),
        "{history}"
    );
    assert_eq!(
        git(&workspace, &["rev-parse", "HEAD~1"])?.trim(),
        implemented
    );
    let files = git(&workspace, &["ls-tree", "-r", "--name-only", tested])?;
    assert_eq!(
        files.lines().collect::<Vec<_>>(),
        ["hello.py", "test_hello.py"]
    );
    let branch = format!("agent/{task_id}");
    let published = harness.data_dir().join("published.git");
    assert_eq!(git(&published, &["rev-parse", &branch])?.trim(), tested);

    // reports.jsonl mirrors every event, in order.
    assert_eq!(
        story(&events),
        [
            "received",
            "stage_done design@v1",
            "stage_done implement@v1",
            "stage_done test@v1",
            "stage_done review@v1",
            "gates",
            "pr",
            "done review@v1",
            "ci"
        ]
    );
    let pr = &events[6];
    assert_eq!(pr.details["branch"], branch.as_str());
    assert_eq!(pr.details["commit"], tested);
    assert_eq!(events[8].details["passed"], true);

    // The state store, read back from the SQLite file by a second handle.
    let data_dir = harness.data_dir();
    harness.stop().await;
    let state = SqliteStateStore::open(data_dir.join("state.sqlite")).await?;
    let task = state.task(task_id).await?.ok_or("task in state.sqlite")?;
    assert_eq!(task.status, TaskStatus::Done);
    assert_eq!(task.prompt, HELLO);
    assert_eq!(task.current_step, Some(StepId::v1(Stage::Review)));
    let attempts = state.attempts(task_id).await?;
    let steps = common::attempt_steps(&attempts);
    assert_eq!(
        steps,
        ["design@v1#1", "implement@v1#1", "test@v1#1", "review@v1#1"]
    );
    assert!(
        attempts
            .iter()
            .all(|a| a.status == AttemptStatus::Succeeded && a.model.as_deref() == Some("offline"))
    );
    assert!(state.unfinished_attempts().await?.is_empty());
    Ok(())
}

/// Records every request, answering like the offline model.
#[derive(Debug, Default)]
struct Recording {
    requests: Mutex<Vec<LlmRequest>>,
}

#[async_trait::async_trait]
impl Llm for Recording {
    fn model(&self) -> &str {
        "recording"
    }

    async fn complete(&self, request: &LlmRequest) -> Result<LlmResponse, LlmError> {
        if let Ok(mut requests) = self.requests.lock() {
            requests.push(request.clone());
        }
        OfflineLlm::new().complete(request).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_agent_sees_the_prompt_and_the_earlier_artifacts() -> TestResult {
    let llm = Arc::new(Recording::default());
    let mut harness = start_with(|b| b.llm(llm.clone())).await?;
    let task_id = harness.pipeline.submit(HELLO).await?;
    assert_eq!(
        finish(&harness.pipeline, task_id).await?.status,
        ReportStatus::Done
    );
    let requests = llm.requests.lock().map(|r| r.clone()).unwrap_or_default();
    let names: Vec<&str> = requests.iter().map(|r| r.schema_name.as_str()).collect();
    assert_eq!(names, ["design", "implementation", "test_plan", "review"]);
    for (request, earlier) in requests.iter().zip([0, 1, 2, 3]) {
        let context = &request.messages[1].content;
        assert!(context.contains(HELLO), "the prompt is in {context}");
        assert_eq!(
            context.matches("### ").count(),
            earlier,
            "earlier artifacts in {context}"
        );
        assert_eq!(
            request.schema["additionalProperties"], false,
            "strict schema"
        );
    }
    // The reviewer sees the real test run and the diff of the change.
    let review = &requests[3].messages[1].content;
    assert!(review.contains("\"exit_code\": 0"), "{review}");
    assert!(review.contains("Ran 1 test"), "{review}");
    assert!(review.contains("## The change (git diff)"), "{review}");
    assert!(review.contains("+print(\"Hello Earthling\")"), "{review}");
    harness.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_run_side_by_side() -> TestResult {
    let mut harness = start().await?;
    let mut ids = Vec::new();
    for n in 0..8 {
        ids.push(
            harness
                .pipeline
                .submit(format!("Write a Python program that prints 'task {n}'"))
                .await?,
        );
    }
    for (n, task_id) in ids.iter().enumerate() {
        assert_eq!(
            finish(&harness.pipeline, *task_id).await?.status,
            ReportStatus::Done
        );
        let implementation = harness
            .pipeline
            .artifacts()
            .read_artifact(*task_id, StepId::v1(Stage::Implement))
            .await?;
        let content = implementation.ok_or("implementation")?.output["files"][0]["content"].clone();
        assert_eq!(content, format!("print(\"task {n}\")\n"));
    }
    assert_eq!(harness.pipeline.state().tasks(100).await?.len(), 8);
    harness.stop().await;
    Ok(())
}
