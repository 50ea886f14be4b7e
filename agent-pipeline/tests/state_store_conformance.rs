//! Every `StateStore` passes the conformance suite; the SQLite and PostgreSQL stores also keep
//! their data across reopening, can be shared by several handles (processes) at once, name
//! their database in errors about damaged rows and refuse a newer schema: the same cases run
//! against a file and against a real PostgreSQL server (`TEST_DATABASE_URL`).

use agent_pipeline::conformance::state_store;
use agent_pipeline::store::MemoryStateStore;

#[tokio::test]
async fn memory_store_conforms() {
    state_store(&MemoryStateStore::new()).await;
}

/// The cases every SQL store passes, whichever database is behind it.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod cases {
    use std::error::Error;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use agent_pipeline::store::{
        AttemptRecord, AttemptStatus, NewTaskOutcome, StateStore, StoreError, TaskRecord,
        TaskStatus,
    };
    use agent_pipeline::wire::{StepMode, StepOutcome, StepRequest, StepResult};
    use agent_pipeline::{Attempt, Stage, StepId, TaskId};
    use chrono::{DateTime, SubsecRound, Utc};
    use tokio::sync::Barrier;
    use tokio::task::JoinSet;

    pub(crate) type TestResult = Result<(), Box<dyn Error>>;
    pub(crate) type Store = Arc<dyn StateStore>;

    /// Opens a new handle on one database, as another process would.
    #[async_trait::async_trait]
    pub(crate) trait Opener: Sync {
        async fn open(&self) -> Result<Store, StoreError>;
    }

    /// What one handle wrote, a handle opened after it was closed finds.
    pub(crate) async fn data_survives_closing_and_reopening(opener: &dyn Opener) -> TestResult {
        let id = TaskId::new();
        let t0 = now();
        let design = StepId::v1(Stage::Design);
        let implement = StepId::v1(Stage::Implement);
        let first = request(id, design, 1, t0);
        let second = request(id, implement, 1, t0);
        {
            let store = opener.open().await?;
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

        let store = opener.open().await?;
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

    /// Two handles on one database, opened at the same time as two processes starting
    /// together would: each sees the other's writes, and of two concurrent reservations or
    /// results of one attempt exactly one takes effect.
    pub(crate) async fn two_handles_can_both_write(opener: &dyn Opener) -> TestResult {
        let (a, b) = tokio::join!(opener.open(), opener.open());
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
    pub(crate) async fn concurrent_writes_all_commit_and_are_readable_once_acknowledged(
        opener: &dyn Opener,
    ) -> TestResult {
        const WRITERS: usize = 200;
        const READERS: usize = 4;
        let store = opener.open().await?;
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
        store: &Store,
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

    /// A row damaged by something other than the store reads as `Corrupt`, naming the
    /// database and the bad value; `damage` sets the status of the task it is given to
    /// 'exploded'.
    pub(crate) async fn a_damaged_row_is_corrupt<F, D>(
        opener: &dyn Opener,
        damage: D,
        location: &std::path::Path,
    ) -> TestResult
    where
        D: FnOnce(TaskId) -> F,
        F: std::future::Future<Output = TestResult>,
    {
        let store = opener.open().await?;
        let id = TaskId::new();
        store.insert_task(id, "to be damaged", now()).await?;
        damage(id).await?;
        match store.task(id).await {
            Err(StoreError::Corrupt {
                path: named,
                reason,
            }) => {
                assert_eq!(named, location, "the error must name the database");
                assert!(
                    reason.contains("exploded"),
                    "the reason must show the bad value: {reason}"
                );
            }
            other => panic!("a corrupt row must be a Corrupt error, got {other:?}"),
        }
        Ok(())
    }

    pub(crate) fn now() -> DateTime<Utc> {
        Utc::now().trunc_subsecs(3)
    }

    pub(crate) fn request(
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
            budget: None,
            require_approval: false,
            variant: None,
        }
    }

    pub(crate) fn succeeded(request: &StepRequest, started_at: DateTime<Utc>) -> StepResult {
        let outcome = StepOutcome::Succeeded {
            output: serde_json::json!({ "design_summary": "a summary" }),
            model: "test-model".to_owned(),
            usage: Default::default(),
        };
        StepResult::of(request, outcome, Vec::new(), started_at, 42)
    }
}

/// The SQLite store, in memory and in files.
#[cfg(feature = "sqlite")]
mod sqlite {
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::Duration;

    use agent_pipeline::TaskId;
    use agent_pipeline::conformance::state_store;
    use agent_pipeline::store::{SqliteStateStore, StateStore, StoreError};

    use crate::cases::{self, Opener, Store, TestResult, now};

    /// Handles on one database file.
    struct File(PathBuf);

    #[async_trait::async_trait]
    impl Opener for File {
        async fn open(&self) -> Result<Store, StoreError> {
            Ok(Arc::new(SqliteStateStore::open(&self.0).await?))
        }
    }

    /// A file in a directory that does not exist yet (opening creates it).
    fn new_file(dir: &tempfile::TempDir) -> File {
        File(dir.path().join("data").join("state.sqlite"))
    }

    #[tokio::test]
    async fn sqlite_in_memory_store_conforms() -> TestResult {
        state_store(&SqliteStateStore::in_memory().await?).await;
        Ok(())
    }

    #[tokio::test]
    async fn sqlite_file_store_conforms_also_when_run_twice() -> TestResult {
        let dir = tempfile::tempdir()?;
        let store = new_file(&dir).open().await?;
        state_store(store.as_ref()).await;
        // A second run finds the first run's data, as a store shared with other tests would.
        state_store(store.as_ref()).await;
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
        cases::data_survives_closing_and_reopening(&new_file(&dir)).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_handles_on_one_file_can_both_write() -> TestResult {
        let dir = tempfile::tempdir()?;
        cases::two_handles_can_both_write(&new_file(&dir)).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_all_commit_and_are_readable_once_acknowledged() -> TestResult {
        let dir = tempfile::tempdir()?;
        cases::concurrent_writes_all_commit_and_are_readable_once_acknowledged(&new_file(&dir))
            .await
    }

    #[tokio::test]
    async fn a_corrupt_row_is_an_error_naming_the_file() -> TestResult {
        let dir = tempfile::tempdir()?;
        let file = new_file(&dir);
        let path = file.0.clone();
        // Something other than the store damages the row.
        let damage = |id: TaskId| async move {
            let other = rusqlite::Connection::open(&path)?;
            other.busy_timeout(Duration::from_secs(5))?;
            other.execute(
                "UPDATE tasks SET status = 'exploded' WHERE task_id = ?1",
                [id.to_string()],
            )?;
            Ok(())
        };
        cases::a_damaged_row_is_corrupt(&file, damage, &file.0).await
    }

    /// The schema as the first version of the store created it, with a task and two attempts
    /// written then (one finished, one requested).
    const VERSION_1: &str = "
        CREATE TABLE schema_version (version INTEGER NOT NULL);
        INSERT INTO schema_version (version) VALUES (1);
        CREATE TABLE tasks (
            task_id TEXT PRIMARY KEY, prompt TEXT NOT NULL, status TEXT NOT NULL,
            current_step TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL
        );
        CREATE INDEX tasks_by_created_at ON tasks (created_at);
        CREATE TABLE attempts (
            task_id TEXT NOT NULL, step_id TEXT NOT NULL, attempt INTEGER NOT NULL,
            stage_order INTEGER NOT NULL, status TEXT NOT NULL, request TEXT NOT NULL,
            error TEXT, model TEXT, requested_at TEXT NOT NULL, finished_at TEXT,
            duration_ms BIGINT, PRIMARY KEY (task_id, step_id, attempt)
        );
        CREATE INDEX attempts_unfinished ON attempts (requested_at) WHERE status = 'requested';
        CREATE TABLE consumer_offsets (
            group_name TEXT NOT NULL, topic TEXT NOT NULL, partition_id INTEGER NOT NULL,
            next_offset BIGINT NOT NULL, committed_at TEXT NOT NULL,
            PRIMARY KEY (group_name, topic, partition_id)
        );
        CREATE TABLE outbox (
            task_id TEXT NOT NULL, step_id TEXT NOT NULL, attempt INTEGER NOT NULL,
            seq INTEGER NOT NULL, topic TEXT NOT NULL, message_key TEXT NOT NULL,
            payload BLOB NOT NULL, PRIMARY KEY (task_id, step_id, attempt, seq)
        );
        CREATE TABLE leases (
            resource TEXT PRIMARY KEY, holder TEXT NOT NULL, epoch BIGINT NOT NULL,
            expires_at TEXT NOT NULL
        );
    ";

    /// A database written before LLM calls were kept opens, reads as having spent nothing,
    /// and keeps calls and spend from then on.
    #[tokio::test]
    async fn a_version_1_database_is_migrated() -> TestResult {
        use agent_pipeline::llm::{LlmCall, Spend};
        use agent_pipeline::store::{AttemptStatus, TaskStatus};
        use agent_pipeline::wire::{StepOutcome, StepResult};
        use agent_pipeline::{Attempt, Stage, StepId};

        let dir = tempfile::tempdir()?;
        let path = dir.path().join("state.sqlite");
        let id = TaskId::new();
        let design = StepId::v1(Stage::Design);
        let t0 = now();
        let finished = cases::request(id, design, 1, t0);
        let open = cases::request(id, design, 2, t0);
        {
            let old = rusqlite::Connection::open(&path)?;
            old.execute_batch(VERSION_1)?;
            let at = t0.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            old.execute(
                "INSERT INTO tasks VALUES (?1, 'from before', 'running', ?2, ?3, ?3)",
                rusqlite::params![id.to_string(), design.to_string(), at],
            )?;
            for (request, status) in [(&finished, "succeeded"), (&open, "requested")] {
                old.execute(
                    "INSERT INTO attempts VALUES (?1, ?2, ?3, 0, ?4, ?5, NULL,
                         CASE WHEN ?4 = 'succeeded' THEN 'old-model' END, ?6,
                         CASE WHEN ?4 = 'succeeded' THEN ?6 END, 12)",
                    rusqlite::params![
                        id.to_string(),
                        design.to_string(),
                        i64::from(request.attempt.get()),
                        status,
                        serde_json::to_string(request)?,
                        at
                    ],
                )?;
            }
        }

        let store = SqliteStateStore::open(&path).await?;
        let task = store.task(id).await?.ok_or("the old task must be read")?;
        assert_eq!(
            (task.prompt.as_str(), task.status, task.spend),
            ("from before", TaskStatus::Running, Spend::default()),
            "an old task reads as it was, having spent nothing"
        );
        let attempts = store.attempts(id).await?;
        assert_eq!(
            attempts
                .iter()
                .map(|a| (a.status, a.model.as_deref(), a.calls.len()))
                .collect::<Vec<_>>(),
            [
                (AttemptStatus::Succeeded, Some("old-model"), 0),
                (AttemptStatus::Requested, None, 0)
            ],
            "old attempts read as they were, without calls"
        );

        let calls = vec![LlmCall {
            model: "test-model".to_owned(),
            provider: None,
            prompt_tokens: 300,
            completion_tokens: 40,
            cost_usd: Some(0.125),
            duration_ms: 800,
            error: None,
        }];
        let outcome = StepOutcome::Succeeded {
            output: serde_json::json!({ "design_summary": "a summary" }),
            model: "test-model".to_owned(),
            usage: calls[0].usage(),
        };
        let result = StepResult::of(&open, outcome, calls.clone(), t0, 800);
        assert!(
            store
                .finish_attempt(&result, Some(TaskStatus::Done), t0)
                .await?
        );
        drop(store);

        // Opening a migrated file again migrates nothing more.
        let store = SqliteStateStore::open(&path).await?;
        let attempt = store
            .attempt(id, design, Attempt::new(2)?)
            .await?
            .ok_or("the attempt finished after the migration must be read")?;
        assert_eq!(attempt.calls, calls);
        let task = store.task(id).await?.ok_or("the task must still be read")?;
        assert_eq!(
            (task.status, task.spend),
            (TaskStatus::Done, Spend::of(&calls))
        );
        let version: i64 = rusqlite::Connection::open(&path)?.query_row(
            "SELECT version FROM schema_version",
            [],
            |row| row.get(0),
        )?;
        assert_eq!(version, 2, "the file is at the current version");
        Ok(())
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("state.sqlite");
        drop(SqliteStateStore::open(&path).await?);

        let other = rusqlite::Connection::open(&path)?;
        other.busy_timeout(Duration::from_secs(5))?;
        other.execute("UPDATE schema_version SET version = 99", [])?;
        drop(other);

        match SqliteStateStore::open(&path).await {
            Err(StoreError::Corrupt { reason, .. }) => {
                assert!(
                    reason.contains("version 99"),
                    "the reason must name the version: {reason}"
                );
            }
            other => panic!("a database of a newer schema must be refused, got {other:?}"),
        }
        Ok(())
    }
}

/// The PostgreSQL store, on the server of `TEST_DATABASE_URL` (a database of its own per test).
#[cfg(feature = "postgres")]
mod postgres {
    use std::path::PathBuf;
    use std::sync::Arc;

    use agent_pipeline::TaskId;
    use agent_pipeline::conformance::state_store;
    use agent_pipeline::store::{PostgresStateStore, StoreError};
    use agent_pipeline::testing::TestDatabase;
    use sqlx::Connection;

    use crate::cases::{self, Opener, Store, TestResult};

    /// Handles (connection pools) on one database.
    struct Database<'a>(&'a TestDatabase);

    #[async_trait::async_trait]
    impl Opener for Database<'_> {
        async fn open(&self) -> Result<Store, StoreError> {
            Ok(Arc::new(PostgresStateStore::connect(self.0.url()).await?))
        }
    }

    /// Runs `case` on a new database, dropped afterwards when the case passed.
    async fn on_new_database(case: impl AsyncFnOnce(&TestDatabase) -> TestResult) -> TestResult {
        let Some(database) = TestDatabase::create().await else {
            return Ok(());
        };
        case(&database).await?;
        database.drop_database().await;
        Ok(())
    }

    /// Runs `sql` on the database, as another program would.
    async fn execute(database: &TestDatabase, sql: &'static str, bind: String) -> TestResult {
        let mut other = sqlx::PgConnection::connect(database.url()).await?;
        sqlx::query(sql).bind(bind).execute(&mut other).await?;
        other.close().await?;
        Ok(())
    }

    #[tokio::test]
    async fn postgres_store_conforms_also_when_run_twice() -> TestResult {
        on_new_database(async |database| {
            let store = Database(database).open().await?;
            state_store(store.as_ref()).await;
            state_store(store.as_ref()).await;
            Ok(())
        })
        .await
    }

    #[tokio::test]
    async fn postgres_data_survives_closing_and_reopening() -> TestResult {
        on_new_database(async |database| {
            cases::data_survives_closing_and_reopening(&Database(database)).await
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_pools_on_one_database_can_both_write() -> TestResult {
        on_new_database(async |database| {
            cases::two_handles_can_both_write(&Database(database)).await
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_concurrent_writes_all_commit_and_are_readable_once_acknowledged() -> TestResult
    {
        on_new_database(async |database| {
            cases::concurrent_writes_all_commit_and_are_readable_once_acknowledged(&Database(
                database,
            ))
            .await
        })
        .await
    }

    #[tokio::test]
    async fn a_corrupt_row_is_an_error_naming_the_database() -> TestResult {
        on_new_database(async |database| {
            let damage = |id: TaskId| {
                execute(
                    database,
                    "UPDATE tasks SET status = 'exploded' WHERE task_id = $1",
                    id.to_string(),
                )
            };
            let options: sqlx::postgres::PgConnectOptions = database.url().parse()?;
            let location = PathBuf::from(format!(
                "postgres://{}:{}/{}",
                options.get_host(),
                options.get_port(),
                options.get_database().unwrap_or_default()
            ));
            cases::a_damaged_row_is_corrupt(&Database(database), damage, &location).await
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn processes_starting_together_migrate_once() -> TestResult {
        on_new_database(async |database| {
            let opener = Database(database);
            // Four at once on an empty database, as four processes starting together.
            let opened =
                futures_join4(opener.open(), opener.open(), opener.open(), opener.open()).await;
            for store in opened {
                store?;
            }
            let mut other = sqlx::PgConnection::connect(database.url()).await?;
            let versions: Vec<i64> = sqlx::query_scalar(
                "SELECT version FROM agent_pipeline_migrations ORDER BY version",
            )
            .fetch_all(&mut other)
            .await?;
            let expected: Vec<i64> = (1..=PostgresStateStore::schema_version()).collect();
            assert_eq!(versions, expected, "every migration recorded exactly once");
            other.close().await?;
            Ok(())
        })
        .await
    }

    #[tokio::test]
    async fn a_newer_postgres_schema_is_refused() -> TestResult {
        on_new_database(async |database| {
            Database(database).open().await?;
            let newer = PostgresStateStore::schema_version() + 1;
            execute(
                database,
                "INSERT INTO agent_pipeline_migrations (version, name) VALUES ($1::bigint, 'future')",
                newer.to_string(),
            )
            .await?;
            match Database(database).open().await {
                Err(StoreError::Database(reason)) => assert!(
                    reason.contains(&format!("version {newer}")),
                    "the reason must name the version: {reason}"
                ),
                other => panic!("a database of a newer schema must be refused, got {other:?}"),
            }
            Ok(())
        })
        .await
    }

    /// Rows written before the migration that added `attempts.calls` hold NULL there: they
    /// read as attempts without calls.
    #[tokio::test]
    async fn attempts_without_stored_calls_read_as_having_none() -> TestResult {
        use agent_pipeline::wire::StepResult;
        use agent_pipeline::{Attempt, Stage, StepId};

        on_new_database(async |database| {
            let store = Database(database).open().await?;
            let id = TaskId::new();
            let design = StepId::v1(Stage::Design);
            let t0 = cases::now();
            store.insert_task(id, "older rows", t0).await?;
            let request = cases::request(id, design, 1, t0);
            let call = agent_pipeline::llm::LlmCall {
                model: "test-model".to_owned(),
                provider: None,
                prompt_tokens: 10,
                completion_tokens: 2,
                cost_usd: None,
                duration_ms: 5,
                error: None,
            };
            let result = StepResult {
                calls: vec![call],
                ..cases::succeeded(&request, t0)
            };
            assert!(store.finish_attempt(&result, None, t0).await?);
            execute(
                database,
                "UPDATE attempts SET calls = NULL WHERE task_id = $1",
                id.to_string(),
            )
            .await?;
            let attempt = store
                .attempt(id, design, Attempt::FIRST)
                .await?
                .ok_or("the attempt must be read")?;
            assert!(attempt.calls.is_empty(), "{:?}", attempt.calls);
            Ok(())
        })
        .await
    }

    #[tokio::test]
    async fn a_bad_url_is_refused_without_repeating_it() {
        match PostgresStateStore::connect("postgres://agent:s3cret@db:notaport/x").await {
            Err(error) => {
                let text = error.to_string();
                assert!(text.contains("DATABASE_URL"), "{text}");
                assert!(
                    !text.contains("s3cret"),
                    "the password must not be shown: {text}"
                );
            }
            Ok(store) => panic!("a URL with a bad port must be refused, got {store:?}"),
        }
    }

    async fn futures_join4<T>(
        a: impl std::future::Future<Output = T>,
        b: impl std::future::Future<Output = T>,
        c: impl std::future::Future<Output = T>,
        d: impl std::future::Future<Output = T>,
    ) -> [T; 4] {
        let (a, b, c, d) = tokio::join!(a, b, c, d);
        [a, b, c, d]
    }
}
