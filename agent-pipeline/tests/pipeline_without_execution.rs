//! The pipeline with code execution off: artifacts only, no workspace, sandbox, gates or
//! publication.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use agent_pipeline::execution::sandbox::{RunOutput, Sandbox, SandboxError, SandboxRun};
use agent_pipeline::wire::ReportStatus;
use agent_pipeline::{Stage, StepId};
use async_trait::async_trait;
use common::{TestResult, artifact, finish, start_with, story};

/// A sandbox that counts its runs: none may happen with execution off.
#[derive(Debug, Default)]
struct CountingSandbox {
    runs: AtomicU32,
}

#[async_trait]
impl Sandbox for CountingSandbox {
    fn name(&self) -> &str {
        "counting"
    }

    async fn run(&self, _run: &SandboxRun) -> Result<RunOutput, SandboxError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        Err(SandboxError::Unavailable("no code may run".to_owned()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_done_after_its_review_with_every_artifact_and_nothing_run() -> TestResult {
    let sandbox = Arc::new(CountingSandbox::default());
    let mut harness = start_with(|b| {
        b.execute_code(false)
            .sandbox(sandbox.clone() as Arc<dyn Sandbox>)
    })
    .await?;
    let task_id = harness
        .pipeline
        .submit("Write a tiny Python program that prints 'Hello Earthling'")
        .await?;
    let last = finish(&harness.pipeline, task_id).await?;
    assert_eq!(last.status, ReportStatus::Done, "{last:?}");
    harness.stop().await;

    let events = harness.pipeline.report_log().read_all().await?;
    let events: Vec<_> = events
        .into_iter()
        .filter(|e| e.task_id == task_id)
        .collect();
    assert_eq!(
        story(&events),
        [
            "received",
            "stage_done design@v1",
            "stage_done implement@v1",
            "stage_done test@v1",
            "stage_done review@v1",
            "gates",
            "done review@v1",
        ]
    );
    let test_done = &events[3];
    assert_eq!(
        test_done.summary,
        "Test plan recorded, not run (code execution is off)"
    );
    assert_eq!(events[5].summary, "No gates to check (round 1)");

    // The model's answers, as they came; the test plan marked as not run.
    let implementation = artifact(&harness, task_id, Stage::Implement).await?;
    assert_eq!(
        implementation.output["files"][0]["content"],
        "print(\"Hello Earthling\")\n"
    );
    assert!(implementation.output.get("workspace").is_none());
    let test = artifact(&harness, task_id, Stage::Test).await?;
    assert_eq!(test.output["executed"], false);
    assert_eq!(test.output["tests_added"], 0);
    assert_eq!(test.output["passed"], 0);
    assert_eq!(test.output["failed"], 0);
    assert!(test.output["command"].is_string(), "the plan is kept");
    let review = artifact(&harness, task_id, Stage::Review).await?;
    assert!(review.output.get("reviewed_commit").is_none());

    // Nothing ran, nothing was written besides the artifacts, nothing was published.
    assert_eq!(sandbox.runs.load(Ordering::SeqCst), 0);
    let mut names: Vec<String> = std::fs::read_dir(harness.task_dir(task_id))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "design@v1.json",
            "implement@v1.json",
            "review@v1.json",
            "task.json",
            "test@v1.json"
        ]
    );
    assert!(!harness.data_dir().join("published.git").exists());
    // A clean shutdown leaves the files durable in place and no journal behind.
    let journals = std::fs::read_dir(harness.data_dir().join(".journal"))?
        .filter_map(|e| e.ok())
        .count();
    assert_eq!(journals, 0, "the journal is retired at shutdown");
    let state = harness.pipeline.state().attempts(task_id).await?;
    assert_eq!(state.len(), 4);
    assert!(StepId::v1(Stage::Review) == state[3].step_id());
    Ok(())
}
