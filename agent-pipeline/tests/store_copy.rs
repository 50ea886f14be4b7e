//! Moving from the embedded default to PostgreSQL: everything a real pipeline wrote to
//! SQLite and files reads back the same from a real PostgreSQL server once copied (LLM calls
//! and what tasks spent included), and copying again changes nothing.

#![cfg(all(feature = "postgres", feature = "sqlite"))]

use std::sync::Arc;

use agent_pipeline::llm::{LlmCall, OfflineLlm, Spend};
use agent_pipeline::store::{
    ArtifactStore, FileArtifactStore, PostgresStateStore, SqliteStateStore, StateStore, TaskStatus,
    copy_stores,
};
use agent_pipeline::testing::TestDatabase;
use agent_pipeline::wire::{
    ReportStatus, StepMode, StepOutcome, StepRequest, StepResult, StopReason,
};
use agent_pipeline::{Attempt, Pipeline, Stage, StepId, TaskId};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelines_tasks_read_back_the_same_after_copying() -> TestResult {
    let Some(database) = TestDatabase::create().await else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let pipeline = Pipeline::builder()
        .data_dir(dir.path())
        .llm(Arc::new(OfflineLlm::new()))
        .execute_code(false)
        .build()
        .await?;
    let running = pipeline.start().await?;
    let mut tasks = Vec::new();
    for prompt in ["Write a haiku", "Write a limerick"] {
        let id = pipeline.submit(prompt).await?;
        assert_eq!(pipeline.wait(id).await?.status, ReportStatus::Done);
        tasks.push(id);
    }
    let design = StepId::v1(Stage::Design);
    let since = chrono::Utc::now();
    pipeline
        .replay(tasks[0], design, Some("again".into()))
        .await?;
    pipeline.wait_replay(tasks[0], design, since).await?;
    running.shutdown().await;

    let sqlite = SqliteStateStore::open(dir.path().join("state.sqlite")).await?;
    sqlite
        .commit_consumer_offset("worker", "step_requests", 3, 42)
        .await?;
    let (spent, spend) = task_that_spent(&sqlite).await?;
    tasks.push(spent);
    let files = FileArtifactStore::new(dir.path());
    let postgres = PostgresStateStore::connect(database.url()).await?;
    let documents = postgres.artifact_store();
    let copied = copy_stores((&sqlite, &files), (&postgres, Some(&documents))).await?;
    assert_eq!(copied.tasks, 3);
    assert_eq!(
        copied.attempts, 13,
        "4 steps each, the replay and the 4 attempts of the task that spent: {copied:?}"
    );
    assert!(copied.documents >= 12, "{copied:?}");
    assert_eq!(
        postgres
            .consumer_offset("worker", "step_requests", 3)
            .await?,
        Some(42),
        "consumer positions come along"
    );

    for id in &tasks {
        assert_eq!(postgres.task(*id).await?, sqlite.task(*id).await?);
        assert_eq!(postgres.attempts(*id).await?, sqlite.attempts(*id).await?);
        let names = files.documents(*id).await?;
        assert_eq!(documents.documents(*id).await?, names);
        for name in names {
            assert_eq!(
                documents.read_document(*id, &name).await?,
                files.read_document(*id, &name).await?,
                "{name}"
            );
        }
    }
    assert_eq!(
        documents
            .read_attempt(tasks[0], design, agent_pipeline::Attempt::FIRST)
            .await?,
        files
            .read_attempt(tasks[0], design, agent_pipeline::Attempt::FIRST)
            .await?
    );

    let copied_spend = postgres.task(spent).await?.map(|t| t.spend);
    assert_eq!(
        copied_spend,
        Some(spend),
        "the spend comes along, counted once"
    );
    let calls: Vec<Vec<LlmCall>> = postgres
        .attempts(spent)
        .await?
        .into_iter()
        .map(|a| a.calls)
        .collect();
    assert_eq!(calls.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1, 1, 0]);

    let again = copy_stores((&sqlite, &files), (&postgres, Some(&documents))).await?;
    assert_eq!(again.attempts, 0, "a second copy adds no attempt");
    assert_eq!(postgres.tasks(10).await?, sqlite.tasks(10).await?);
    assert_eq!(
        postgres.task(spent).await?.map(|t| t.spend),
        Some(spend),
        "a second copy does not count the calls again"
    );
    database.drop_database().await;
    Ok(())
}

/// A task written straight to `store`, cancelled after spending on a failed, a successful and
/// a stopped attempt (and with one attempt still requested); returns it with its spend.
async fn task_that_spent(
    store: &dyn StateStore,
) -> Result<(TaskId, Spend), Box<dyn std::error::Error>> {
    let id = TaskId::new();
    let t0 = chrono::Utc::now();
    let design = StepId::v1(Stage::Design);
    let implement = StepId::v1(Stage::Implement);
    store.insert_task(id, "Spend a little", t0).await?;
    let request = |step, n| -> Result<StepRequest, agent_pipeline::IdError> {
        Ok(StepRequest {
            task_id: id,
            step_id: step,
            attempt: Attempt::new(n)?,
            try_number: n,
            mode: StepMode::Run,
            round: 1,
            reason: None,
            not_before: None,
            requested_at: t0,
            budget: None,
            require_approval: false,
            variant: None,
        })
    };
    // Costs are sums of powers of two, so that any order of adding them gives the same sum.
    let call = |tokens: u64, cost_usd: Option<f64>| LlmCall {
        model: "test-model".to_owned(),
        provider: None,
        prompt_tokens: tokens,
        completion_tokens: tokens / 4,
        cost_usd,
        duration_ms: 300,
        error: None,
    };
    let results = [
        StepResult::of(
            &request(design, 1)?,
            StepOutcome::Failed {
                error: "invalid output".to_owned(),
                retryable: true,
            },
            vec![call(1000, Some(0.25)), call(800, None)],
            t0,
            900,
        ),
        StepResult::of(
            &request(design, 2)?,
            StepOutcome::Succeeded {
                output: serde_json::json!({ "design_summary": "a summary" }),
                model: "test-model".to_owned(),
                usage: call(1200, None).usage(),
            },
            vec![call(1200, Some(0.5))],
            t0,
            700,
        ),
        StepResult::of(
            &request(implement, 1)?,
            StepOutcome::Stopped {
                cause: StopReason::BudgetExceeded,
                detail: "the task reached its limit of 0.75 USD".to_owned(),
            },
            vec![call(400, Some(0.125))],
            t0,
            500,
        ),
    ];
    for result in &results {
        store
            .reserve_attempt(&request(result.step_id, result.attempt.get())?)
            .await?;
        store
            .finish_attempt(result, Some(TaskStatus::Running), t0)
            .await?;
    }
    store.reserve_attempt(&request(implement, 2)?).await?;
    store
        .transition_task(id, &TaskStatus::ACTIVE, TaskStatus::Cancelled, t0)
        .await?;
    let spend = results.iter().map(|r| Spend::of(&r.calls)).sum::<Spend>();
    let task = store.task(id).await?.ok_or("the task was just written")?;
    assert_eq!(task.spend, spend, "the source counts every attempt's calls");
    assert_eq!(task.status, TaskStatus::Cancelled);
    Ok((id, spend))
}
