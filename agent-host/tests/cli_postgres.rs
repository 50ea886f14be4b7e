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
