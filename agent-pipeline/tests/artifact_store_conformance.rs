//! Every `ArtifactStore` passes the conformance suite: files under a data directory, and rows
//! of a real PostgreSQL server (`TEST_DATABASE_URL`), where two handles (processes) on one
//! database also see each other's writes.

use std::error::Error;
use std::sync::Arc;

use agent_pipeline::conformance::artifact_store;
use agent_pipeline::store::FileArtifactStore;

type TestResult = Result<(), Box<dyn Error>>;

#[tokio::test]
async fn file_store_conforms() -> TestResult {
    let dir = tempfile::tempdir()?;
    artifact_store(Arc::new(FileArtifactStore::new(dir.path()))).await;
    Ok(())
}

#[cfg(feature = "postgres")]
mod postgres {
    use std::sync::Arc;

    use agent_pipeline::TaskId;
    use agent_pipeline::conformance::artifact_store;
    use agent_pipeline::store::{ArtifactStore, PostgresStateStore, TaskFile};
    use agent_pipeline::testing::TestDatabase;

    use super::TestResult;

    #[tokio::test]
    async fn postgres_store_conforms_also_when_run_twice() -> TestResult {
        let Some(database) = TestDatabase::create().await else {
            return Ok(());
        };
        let store = Arc::new(
            PostgresStateStore::connect(database.url())
                .await?
                .artifact_store(),
        );
        artifact_store(store.clone()).await;
        artifact_store(store).await;
        database.drop_database().await;
        Ok(())
    }

    #[tokio::test]
    async fn another_process_reads_what_one_wrote() -> TestResult {
        let Some(database) = TestDatabase::create().await else {
            return Ok(());
        };
        let writer = PostgresStateStore::connect(database.url())
            .await?
            .artifact_store();
        let reader = PostgresStateStore::connect(database.url())
            .await?
            .artifact_store();
        let task = TaskFile {
            task_id: TaskId::new(),
            prompt: "shared".into(),
            created_at: chrono::Utc::now(),
            budget: None,
            require_approval: false,
            repository: None,
        };
        let location = writer.write_task(&task).await?;
        assert!(
            location.starts_with("postgres://")
                && location.ends_with(&format!("#{}/task.json", task.task_id)),
            "{location}"
        );
        assert!(!location.contains("password"), "{location}");
        assert_eq!(
            reader.read_task(task.task_id).await?.map(|t| t.prompt),
            Some("shared".to_owned())
        );
        database.drop_database().await;
        Ok(())
    }
}
