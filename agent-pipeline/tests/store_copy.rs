//! Moving from the embedded default to PostgreSQL: everything a real pipeline wrote to
//! SQLite and files reads back the same from a real PostgreSQL server once copied, and copying
//! again changes nothing.

#![cfg(all(feature = "postgres", feature = "sqlite"))]

use std::sync::Arc;

use agent_pipeline::llm::OfflineLlm;
use agent_pipeline::store::{
    ArtifactStore, FileArtifactStore, PostgresStateStore, SqliteStateStore, StateStore, copy_stores,
};
use agent_pipeline::testing::TestDatabase;
use agent_pipeline::wire::ReportStatus;
use agent_pipeline::{Pipeline, Stage, StepId};

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
    let files = FileArtifactStore::new(dir.path());
    let postgres = PostgresStateStore::connect(database.url()).await?;
    let documents = postgres.artifact_store();
    let copied = copy_stores((&sqlite, &files), (&postgres, Some(&documents))).await?;
    assert_eq!(copied.tasks, 2);
    assert_eq!(
        copied.attempts, 9,
        "4 steps each and the replay: {copied:?}"
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

    let again = copy_stores((&sqlite, &files), (&postgres, Some(&documents))).await?;
    assert_eq!(again.attempts, 0, "a second copy adds no attempt");
    assert_eq!(postgres.tasks(10).await?, sqlite.tasks(10).await?);
    database.drop_database().await;
    Ok(())
}
