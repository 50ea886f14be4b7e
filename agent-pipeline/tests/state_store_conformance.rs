//! Every `StateStore` passes the conformance suite; the SQLite store also keeps its data across
//! reopening and can be shared by several handles (processes) on one file.

use agent_pipeline::conformance::state_store;
use agent_pipeline::store::MemoryStateStore;

#[tokio::test]
async fn memory_store_conforms() {
    state_store(&MemoryStateStore::new()).await;
}

/// The SQLite store, in memory and in files.
#[cfg(feature = "sqlite")]
mod sqlite {
    use std::error::Error;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use agent_pipeline::conformance::state_store;
    use agent_pipeline::store::{
        AttemptRecord, AttemptStatus, NewTaskOutcome, SqliteStateStore, StateStore, StoreError,
        TaskRecord, TaskStatus,
    };
    use agent_pipeline::wire::{StepMode, StepOutcome, StepRequest, StepResult};
    use agent_pipeline::{Attempt, Stage, StepId, TaskId};
    use chrono::{DateTime, SubsecRound, Utc};
    use tokio::sync::Barrier;
    use tokio::task::JoinSet;

    type TestResult = Result<(), Box<dyn Error>>;

    #[tokio::test]
    async fn sqlite_in_memory_store_conforms() -> TestResult {
        state_store(&SqliteStateStore::in_memory().await?).await;
        Ok(())
    }

    #[tokio::test]
    async fn sqlite_file_store_conforms_also_when_run_twice() -> TestResult {
        let dir = tempfile::tempdir()?;
        let store = SqliteStateStore::open(dir.path().join("state.sqlite")).await?;
        state_store(&store).await;
        // A second run finds the first run's data, as a store shared with other tests would.
        state_store(&store).await;
        Ok(())
    }

    #[tokio::test]
    async fn in_memory_stores_are_private() -> TestResult {
        let first = SqliteStateStore::in_memory().await?;
        let second = SqliteStateStore::in_memory().await?;
        let id = TaskId::new();
        first.insert_task(id, "only in the first", now()).await?;
        assert!(
            second.task(id).await?.is_none(),
            "in-memory stores must not share data"
        );
        assert!(
            first.clone().task(id).await?.is_some(),
            "a clone must share its store's data"
        );
        Ok(())
    }

    #[tokio::test]
    async fn sqlite_data_survives_closing_and_reopening() -> TestResult {
        let dir = tempfile::tempdir()?;
        // The directory does not exist yet: open creates it.
        let path = dir.path().join("data").join("state.sqlite");
        let id = TaskId::new();
        let t0 = now();
        let design = StepId::v1(Stage::Design);
        let implement = StepId::v1(Stage::Implement);
        let first = request(id, design, 1, t0);
        let second = request(id, implement, 1, t0);
        {
            let store = SqliteStateStore::open(&path).await?;
            assert_eq!(
                store.insert_task(id, "persist me", t0).await?,
                NewTaskOutcome::Created
            );
            assert!(store.reserve_attempt(&first).await?);
            assert!(
                store
                    .finish_attempt(&succeeded(&first, t0), Some(TaskStatus::Running), t0)
                    .await?
            );
            assert!(store.reserve_attempt(&second).await?);
        }

        let store = SqliteStateStore::open(&path).await?;
        let task = store
            .task(id)
            .await?
            .ok_or("the task must survive reopening")?;
        assert_eq!(task.prompt, "persist me");
        assert_eq!(task.status, TaskStatus::Running);
        assert_eq!(task.current_step, Some(design));
        assert_eq!(task.created_at, t0);
        assert_eq!(
            store.insert_task(id, "persist me", t0).await?,
            NewTaskOutcome::AlreadyExists,
            "a redelivered task must be recognised after a restart"
        );

        let attempts = store.attempts(id).await?;
        assert_eq!(attempts.len(), 2, "both attempts must survive reopening");
        assert_eq!(attempts[0].request, first);
        assert_eq!(attempts[0].status, AttemptStatus::Succeeded);
        assert_eq!(attempts[0].model.as_deref(), Some("test-model"));
        assert_eq!(attempts[1].request, second);
        assert_eq!(attempts[1].status, AttemptStatus::Requested);

        let unfinished = store.unfinished_attempts().await?;
        assert_eq!(
            unfinished.iter().map(|a| &a.request).collect::<Vec<_>>(),
            vec![&second],
            "the unfinished attempt must be found again after a restart, to be sent again"
        );
        assert!(
            !store
                .finish_attempt(&succeeded(&first, t0), Some(TaskStatus::Done), t0)
                .await?,
            "a result redelivered after a restart must have no effect"
        );
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_handles_on_one_file_can_both_write() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("state.sqlite");
        // Opened at the same time, as two processes starting together would.
        let (a, b) = tokio::join!(SqliteStateStore::open(&path), SqliteStateStore::open(&path));
        let (a, b) = (a?, b?);

        let id = TaskId::new();
        let t0 = now();
        assert_eq!(
            a.insert_task(id, "shared", t0).await?,
            NewTaskOutcome::Created
        );
        assert_eq!(
            b.insert_task(id, "shared", t0).await?,
            NewTaskOutcome::AlreadyExists,
            "the second handle must see the first one's task"
        );

        let test = StepId::v1(Stage::Test);
        for n in 1..=20 {
            let req = request(id, test, n, t0);
            let (from_a, from_b) = {
                let (a, b, req_a, req_b) = (a.clone(), b.clone(), req.clone(), req.clone());
                let task_a = tokio::spawn(async move { a.reserve_attempt(&req_a).await });
                let task_b = tokio::spawn(async move { b.reserve_attempt(&req_b).await });
                (task_a.await??, task_b.await??)
            };
            assert!(
                from_a != from_b,
                "exactly one handle must reserve attempt {n}, got {from_a} and {from_b}"
            );

            let result = succeeded(&req, t0);
            let (a2, b2, result_a, result_b) = (a.clone(), b.clone(), result.clone(), result);
            let finish_a = tokio::spawn(async move {
                a2.finish_attempt(&result_a, Some(TaskStatus::Running), t0)
                    .await
            });
            let finish_b = tokio::spawn(async move {
                b2.finish_attempt(&result_b, Some(TaskStatus::Running), t0)
                    .await
            });
            let (finished_a, finished_b) = (finish_a.await??, finish_b.await??);
            assert!(
                finished_a != finished_b,
                "exactly one handle must record the result of attempt {n}, got {finished_a} and \
                 {finished_b}"
            );
        }
        assert_eq!(b.attempts(id).await?.len(), 20);
        assert_eq!(a.last_attempt(id, test).await?, Some(Attempt::new(20)?));
        assert!(
            a.unfinished_attempts()
                .await?
                .iter()
                .all(|r| r.task_id() != id),
            "every attempt was finished by one of the handles"
        );
        Ok(())
    }

    /// Many tasks write at once while others read: every write commits, each is readable as
    /// soon as it is acknowledged, and readers running meanwhile never see the two changes of
    /// one `finish_attempt` (the attempt and its task) apart.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_all_commit_and_are_readable_once_acknowledged() -> TestResult {
        const WRITERS: usize = 200;
        const READERS: usize = 4;
        let dir = tempfile::tempdir()?;
        let store = SqliteStateStore::open(dir.path().join("state.sqlite")).await?;
        let t0 = now();
        let design = StepId::v1(Stage::Design);
        let ids: Arc<Vec<TaskId>> = Arc::new((0..WRITERS).map(|_| TaskId::new()).collect());

        let writing = Arc::new(AtomicBool::new(true));
        let started = Arc::new(Barrier::new(READERS + 1));
        let mut readers = JoinSet::new();
        for _ in 0..READERS {
            let (store, ids) = (store.clone(), Arc::clone(&ids));
            let (writing, started) = (Arc::clone(&writing), Arc::clone(&started));
            readers.spawn(async move {
                started.wait().await;
                while writing.load(Ordering::Acquire) {
                    for id in ids.iter() {
                        check_whole(&store, *id, design).await?;
                    }
                }
                Ok::<(), Box<dyn Error + Send + Sync>>(())
            });
        }
        // The readers are running before the first write.
        started.wait().await;

        let mut writers = JoinSet::new();
        for id in ids.iter().copied() {
            let store = store.clone();
            writers.spawn(async move {
                let request = request(id, design, 1, t0);
                assert_eq!(
                    store.insert_task(id, "concurrent", t0).await?,
                    NewTaskOutcome::Created
                );
                assert!(store.reserve_attempt(&request).await?);
                let result = succeeded(&request, t0);
                assert!(
                    store
                        .finish_attempt(&result, Some(TaskStatus::Running), t0)
                        .await?
                );
                // Acknowledged means committed: any read from now on sees it.
                let task = store
                    .task(id)
                    .await?
                    .ok_or("an acknowledged task must be readable")?;
                assert_eq!(task.status, TaskStatus::Running);
                Ok::<(), Box<dyn Error + Send + Sync>>(())
            });
        }
        while let Some(written) = writers.join_next().await {
            written?.map_err(|e| e as Box<dyn Error>)?;
        }
        writing.store(false, Ordering::Release);
        while let Some(read) = readers.join_next().await {
            read?.map_err(|e| e as Box<dyn Error>)?;
        }

        let stored = store.tasks(WRITERS * 2).await?;
        assert_eq!(stored.len(), WRITERS, "every write must have committed");
        assert!(stored.iter().all(|t| t.status == TaskStatus::Running));
        for id in ids.iter() {
            let attempts = store.attempts(*id).await?;
            assert_eq!(attempts.len(), 1, "task {id}");
            assert_eq!(attempts[0].status, AttemptStatus::Succeeded, "task {id}");
        }
        assert!(store.unfinished_attempts().await?.is_empty());
        Ok(())
    }

    /// Reads one task's attempt and task in both orders: `finish_attempt` changes both at once,
    /// so a reader that sees one change must see the other in any later read.
    async fn check_whole(
        store: &SqliteStateStore,
        id: TaskId,
        design: StepId,
    ) -> Result<(), Box<dyn Error + Send + Sync>> {
        let running =
            |task: Option<TaskRecord>| task.is_some_and(|t| t.status == TaskStatus::Running);
        let finished = |attempt: Option<AttemptRecord>| {
            attempt.is_some_and(|a| a.status == AttemptStatus::Succeeded)
        };
        if finished(store.attempt(id, design, Attempt::FIRST).await?) {
            assert!(
                running(store.task(id).await?),
                "task {id}: its attempt finished, so it must be running"
            );
        }
        if running(store.task(id).await?) {
            assert!(
                finished(store.attempt(id, design, Attempt::FIRST).await?),
                "task {id}: it is running, so its attempt must have finished"
            );
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_corrupt_row_is_an_error_naming_the_file() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("state.sqlite");
        let store = SqliteStateStore::open(&path).await?;
        let id = TaskId::new();
        store.insert_task(id, "to be damaged", now()).await?;

        // Something other than the store damages the row.
        let other = rusqlite::Connection::open(&path)?;
        other.busy_timeout(Duration::from_secs(5))?;
        other.execute(
            "UPDATE tasks SET status = 'exploded' WHERE task_id = ?1",
            [id.to_string()],
        )?;
        drop(other);

        match store.task(id).await {
            Err(StoreError::Corrupt {
                path: named,
                reason,
            }) => {
                assert_eq!(named, path, "the error must name the database file");
                assert!(
                    reason.contains("exploded"),
                    "the reason must show the bad value: {reason}"
                );
            }
            other => panic!("a corrupt row must be a Corrupt error, got {other:?}"),
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("state.sqlite");
        drop(SqliteStateStore::open(&path).await?);

        let other = rusqlite::Connection::open(&path)?;
        other.busy_timeout(Duration::from_secs(5))?;
        other.execute("UPDATE schema_version SET version = 2", [])?;
        drop(other);

        match SqliteStateStore::open(&path).await {
            Err(StoreError::Corrupt { reason, .. }) => {
                assert!(
                    reason.contains("version 2"),
                    "the reason must name the version: {reason}"
                );
            }
            other => panic!("a database of a newer schema must be refused, got {other:?}"),
        }
        Ok(())
    }

    fn now() -> DateTime<Utc> {
        Utc::now().trunc_subsecs(3)
    }

    fn request(
        task_id: TaskId,
        step_id: StepId,
        n: u32,
        requested_at: DateTime<Utc>,
    ) -> StepRequest {
        StepRequest {
            task_id,
            step_id,
            attempt: Attempt::new(n).expect("attempt numbers in these tests start at 1"),
            try_number: 1,
            mode: StepMode::Run,
            round: 1,
            reason: None,
            not_before: None,
            requested_at,
        }
    }

    fn succeeded(request: &StepRequest, started_at: DateTime<Utc>) -> StepResult {
        let outcome = StepOutcome::Succeeded {
            output: serde_json::json!({ "design_summary": "a summary" }),
            model: "test-model".to_owned(),
            usage: Default::default(),
        };
        StepResult::of(request, outcome, started_at, 42)
    }
}
