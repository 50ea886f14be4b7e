//! `DATABASE_URL=postgres://…` keeps the state of tasks and attempts in PostgreSQL: a task sent
//! by one process is listed by another, and no `state.sqlite` is created.

mod common;

use agent_pipeline::testing::TestDatabase;
use common::Sandbox;

#[tokio::test]
async fn the_state_lives_in_the_database_of_database_url() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let sandbox = Sandbox::new();
    let url = database.url().to_owned();
    let run = |args: &[&str]| {
        let mut command = sandbox.command(args);
        command
            .env("DATABASE_URL", &url)
            .env("EXECUTE_CODE", "false");
        common::run(command)
    };

    let sent = run(&["send", "--local", "--text", "Write a haiku", "--wait"]);
    assert!(sent.status.success(), "send failed:\n{sent}");
    let task_id = sent.task_id();
    assert!(sent.stdout.contains("] done "), "{sent}");

    let listed = run(&["tasks", "--local"]);
    assert!(listed.status.success(), "{listed}");
    assert!(
        listed.stdout.contains(&task_id) && listed.stdout.contains("done"),
        "another process finds the task in PostgreSQL:\n{listed}"
    );
    assert!(
        !sandbox.data_dir().join("state.sqlite").exists(),
        "with DATABASE_URL set, no SQLite file is created"
    );
    assert!(
        sandbox
            .data_dir()
            .join(&task_id)
            .join("design@v1.json")
            .exists(),
        "artifacts stay in DATA_DIR"
    );

    // The same data directory without DATABASE_URL has no state of its own yet.
    let elsewhere = common::run(sandbox.command(&["tasks", "--local"]));
    assert!(
        !elsewhere.stdout.contains(&task_id),
        "the SQLite default does not see PostgreSQL's tasks:\n{elsewhere}"
    );
    database.drop_database().await;
}

#[test]
fn a_database_url_of_another_kind_is_refused_by_name() {
    let sandbox = Sandbox::new();
    let mut command = sandbox.command(&["tasks", "--local"]);
    command.env("DATABASE_URL", "mysql://user:secret@db/agent");
    let output = common::run(command);
    assert!(!output.status.success(), "{output}");
    assert!(output.stderr.contains("DATABASE_URL"), "{output}");
    assert!(!output.stderr.contains("secret"), "{output}");
}

/// `ARTIFACT_STORE=database`: the documents live in PostgreSQL, the data directory holds no
/// task directory, and the CLI and the host's UI and API read them from there.
#[tokio::test]
async fn artifacts_live_in_the_database_with_artifact_store_database() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let sandbox = Sandbox::new();
    let url = database.url().to_owned();
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("ARTIFACT_STORE", "database"),
        ("EXECUTE_CODE", "false"),
    ];
    let run = |args: &[&str]| {
        let mut command = sandbox.command(args);
        command.envs(env);
        common::run(command)
    };

    let sent = run(&["send", "--local", "--text", "Write a haiku", "--wait"]);
    assert!(sent.status.success(), "send failed:\n{sent}");
    let task_id = sent.task_id();
    assert!(
        sent.stdout.contains("artifacts: postgres://")
            && sent.stdout.contains(&format!("#{task_id}")),
        "send names the database as where the artifacts are:\n{sent}"
    );
    assert!(
        !sandbox.data_dir().join(&task_id).exists(),
        "no task directory in DATA_DIR"
    );

    let shown = run(&["show", &task_id, "--local", "--json"]);
    assert!(shown.status.success(), "{shown}");
    let details: serde_json::Value = serde_json::from_str(&shown.stdout).expect("JSON");
    let design = &details["steps"][0];
    assert!(
        design["artifact"]["design_summary"].is_string(),
        "the design artifact is read from the database:\n{shown}"
    );
    assert_eq!(
        design["file"]
            .as_str()
            .map(|f| f.ends_with(&format!("#{task_id}/design@v1.json"))),
        Some(true),
        "{shown}"
    );

    // The host serves the same documents from the database.
    let host = sandbox.start_host(&env);
    assert!(
        host.banner.contains("artifacts: postgres://"),
        "the banner says where the artifacts are:\n{}",
        host.banner
    );
    let page = sandbox.run(&["show", &task_id, "--url", &host.url, "--json"]);
    assert!(page.status.success(), "{page}");
    let served: serde_json::Value = serde_json::from_str(&page.stdout).expect("JSON");
    assert_eq!(served["steps"], details["steps"], "{page}");
    let replayed = sandbox.run(&[
        "replay",
        "--task-id",
        &task_id,
        "--step",
        "design@v1",
        "--url",
        &host.url,
    ]);
    assert!(replayed.status.success(), "{replayed}");
    let after = run(&["show", &task_id, "--local", "--json"]);
    let after: serde_json::Value = serde_json::from_str(&after.stdout).expect("JSON");
    let attempts = after["steps"][0]["attempts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(attempts.len(), 2, "{after}");
    assert!(
        attempts.iter().all(|a| a["file"]
            .as_str()
            .is_some_and(|f| f.starts_with("postgres://"))),
        "each attempt has its own document in the database: {after}"
    );
    host.interrupt();
    assert!(!sandbox.data_dir().join(&task_id).exists());
    database.drop_database().await;
}

#[test]
fn artifacts_in_the_database_need_postgresql() {
    let sandbox = Sandbox::new();
    let mut command = sandbox.command(&["tasks", "--local"]);
    command.env("ARTIFACT_STORE", "database");
    let output = common::run(command);
    assert!(!output.status.success(), "{output}");
    assert!(
        output.stderr.contains("ARTIFACT_STORE") && output.stderr.contains("DATABASE_URL"),
        "{output}"
    );
}

/// `migrate`: tasks of the embedded default (SQLite and files) move to PostgreSQL, documents
/// included, and the services find them there without the old files.
#[tokio::test]
async fn migrate_moves_the_embedded_default_to_postgresql() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let sandbox = Sandbox::new();
    let mut tasks = Vec::new();
    for prompt in ["Write a haiku", "Write a limerick"] {
        let mut command = sandbox.command(&["send", "--local", "--text", prompt, "--wait"]);
        command.env("EXECUTE_CODE", "false");
        let sent = common::run(command);
        assert!(sent.status.success(), "{sent}");
        tasks.push(sent.task_id());
    }

    let url = database.url().to_owned();
    let migrated = sandbox.run(&["migrate", "--to", &url, "--with-artifacts"]);
    assert!(migrated.status.success(), "{migrated}");
    assert!(
        migrated.stdout.contains("copied 2 task(s), 8 attempt(s)"),
        "{migrated}"
    );
    let again = sandbox.run(&["migrate", "--to", &url, "--with-artifacts"]);
    assert!(again.status.success(), "{again}");
    assert!(
        again.stdout.contains("copied 2 task(s), 0 attempt(s)"),
        "{again}"
    );

    // The old data directory goes; PostgreSQL has everything.
    for task_id in &tasks {
        std::fs::remove_dir_all(sandbox.data_dir().join(task_id)).expect("remove");
    }
    std::fs::remove_file(sandbox.data_dir().join("state.sqlite")).expect("remove");
    for task_id in &tasks {
        let mut command = sandbox.command(&["show", task_id, "--local", "--json"]);
        command
            .env("DATABASE_URL", &url)
            .env("ARTIFACT_STORE", "database");
        let shown = common::run(command);
        assert!(shown.status.success(), "{shown}");
        let details: serde_json::Value = serde_json::from_str(&shown.stdout).expect("JSON");
        assert_eq!(details["task"]["status"], "done", "{shown}");
        assert!(
            details["steps"][3]["artifact"]["approved"].is_boolean(),
            "the review artifact came along: {shown}"
        );
    }
    database.drop_database().await;
}
