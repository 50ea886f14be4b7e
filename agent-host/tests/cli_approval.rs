//! Approval and cancellation from the command line: a task that waits for approval survives a
//! restart of the host and is published once `approve` says so; `reject` ends it in error
//! with the reason; `cancel` stops a task whose model is still thinking; and each decision
//! that does not apply is refused with the reason.

mod common;

use std::time::{Duration, Instant};

use common::http::{get, task_status, wait_for_status};
use common::openai::ChatServer;
use common::{HELLO, Sandbox, TIMEOUT};

/// Whether the bare repository of `sandbox` holds the branch of `task_id`.
fn published(sandbox: &Sandbox, task_id: &str) -> bool {
    let repository = sandbox.data_dir().join("published.git");
    std::process::Command::new("git")
        .arg("-C")
        .arg(&repository)
        .args(["rev-parse", "--verify", "--quiet"])
        .arg(format!("refs/heads/agent/{task_id}"))
        .output()
        .is_ok_and(|output| output.status.success())
}

#[test]
fn a_task_awaiting_approval_survives_a_restart_and_approve_publishes_it() {
    let sandbox = Sandbox::new();
    let host = sandbox.start_host(&[("REQUIRE_APPROVAL", "true")]);
    assert!(
        host.banner.contains("approval: required"),
        "the banner says that changes wait for approval:\n{}",
        host.banner
    );

    // `send` follows the task until it waits, says how to approve it, and succeeds.
    let send = sandbox.run(&["send", "--text", HELLO, "--url", &host.url]);
    assert_eq!(send.code(), Some(0), "{send}");
    let task_id = send.task_id();
    assert!(
        send.stdout.contains("] awaiting_approval review@v1 — "),
        "{send}"
    );
    assert!(
        send.stdout.contains(&format!(
            "waiting for approval: run `agent-host approve {task_id} --url {}`",
            host.url
        )),
        "{send}"
    );
    assert_eq!(
        task_status(&host.url, &task_id).as_deref(),
        Some("awaiting_approval")
    );
    let details = get(&host.url, &format!("/api/task/{task_id}")).json();
    assert_eq!(details["task"]["require_approval"], true);
    assert!(!published(&sandbox, &task_id), "nothing is published yet");

    // Every process stops; the decision outlives them.
    let stopped = host.terminate();
    assert!(
        stopped.status.is_some_and(|s| s.success()),
        "{}",
        stopped.stderr
    );
    let host = sandbox.start_host(&[("REQUIRE_APPROVAL", "true")]);
    assert_eq!(
        task_status(&host.url, &task_id).as_deref(),
        Some("awaiting_approval"),
        "the wait survived the restart"
    );

    let approve = sandbox.run(&[
        "approve",
        &task_id,
        "--url",
        &host.url,
        "--by",
        "ada",
        "--comment",
        "looks right",
    ]);
    assert_eq!(approve.code(), Some(0), "{approve}");
    assert!(
        approve
            .stdout
            .contains("] approved review@v1 — Change approved by ada: looks right"),
        "{approve}"
    );
    assert!(approve.stdout.contains("] pr "), "{approve}");
    assert!(
        approve.stdout.contains(&format!(
            "task {task_id} approved: its change is published and the task is done"
        )),
        "{approve}"
    );
    assert!(published(&sandbox, &task_id), "the branch is published");
    let show = sandbox.run(&["show", &task_id, "--json", "--url", &host.url]);
    let document: serde_json::Value = serde_json::from_str(&show.stdout).expect("JSON");
    assert_eq!(document["task"]["status"], "done");

    // A decision that does not apply any more is refused, saying why.
    let again = sandbox.run(&["approve", &task_id, "--url", &host.url]);
    assert_eq!(again.code(), Some(1), "{again}");
    assert!(
        again
            .stderr
            .contains(&format!("cannot approve task {task_id}: it is done")),
        "{again}"
    );
    let cancel = sandbox.run(&["cancel", &task_id, "--url", &host.url]);
    assert_eq!(cancel.code(), Some(1), "{cancel}");
    assert!(
        cancel
            .stderr
            .contains("only a task that has not ended can be cancelled"),
        "{cancel}"
    );
    let unknown = uuid::Uuid::new_v4().to_string();
    let missing = sandbox.run(&["approve", &unknown, "--url", &host.url]);
    assert_eq!(missing.code(), Some(1), "{missing}");
    assert!(
        missing
            .stderr
            .contains(&format!("task {unknown} does not exist")),
        "{missing}"
    );

    let stopped = host.terminate();
    assert!(
        stopped.status.is_some_and(|s| s.success()),
        "{}",
        stopped.stderr
    );
}

#[test]
fn reject_ends_a_waiting_task_in_error_with_the_reason_and_publishes_nothing() {
    let sandbox = Sandbox::new();
    // Approval asked by the task itself; nothing is executed, so that the test is quick.
    let host = sandbox.start_host(&[("EXECUTE_CODE", "false")]);
    let send = sandbox.run(&[
        "send",
        "--text",
        HELLO,
        "--require-approval",
        "--no-wait",
        "--url",
        &host.url,
    ]);
    assert!(send.status.success(), "{send}");
    let task_id = send.task_id();
    wait_for_status(&host.url, &task_id, "awaiting_approval");

    let reject = sandbox.run(&[
        "reject",
        &task_id,
        "--url",
        &host.url,
        "--comment",
        "not what we need",
    ]);
    assert_eq!(reject.code(), Some(0), "{reject}");
    assert!(
        reject
            .stdout
            .contains("] error review@v1 — error: change rejected: not what we need"),
        "{reject}"
    );
    assert!(
        reject
            .stdout
            .contains(&format!("task {task_id} rejected: nothing was published")),
        "{reject}"
    );
    assert_eq!(task_status(&host.url, &task_id).as_deref(), Some("error"));
    let reports = get(&host.url, &format!("/api/reports?task_id={task_id}")).json();
    let rejected = reports["events"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|event| event["status"] == "error" && event["reason"] == "rejected");
    assert!(rejected, "the error event says why: {reports}");
    assert!(!published(&sandbox, &task_id));

    let tasks = sandbox.run(&["tasks", "--url", &host.url]);
    let row = tasks
        .stdout
        .lines()
        .find(|line| line.starts_with(&task_id))
        .unwrap_or_else(|| panic!("the task is listed:\n{tasks}"));
    assert!(row.contains(" error "), "{row}");

    let stopped = host.terminate();
    assert!(
        stopped.status.is_some_and(|s| s.success()),
        "{}",
        stopped.stderr
    );
}

#[test]
fn cancel_stops_a_task_whose_model_is_still_answering() {
    let (_runtime, server) = ChatServer::start_on_own_runtime();
    // The model holds its first call: the task is running for as long as the test wants.
    server.hold();
    let sandbox = Sandbox::new();
    let mut env = server.env("model-a");
    env.push(("EXECUTE_CODE", "false".to_owned()));
    let host = sandbox.start_host_with(env);
    let send = sandbox.run(&["send", "--text", HELLO, "--no-wait", "--url", &host.url]);
    assert!(send.status.success(), "{send}");
    let task_id = send.task_id();
    let deadline = Instant::now() + TIMEOUT;
    while server.requests().is_empty() {
        assert!(Instant::now() < deadline, "the model was never called");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = task_status(&host.url, &task_id);
    assert!(
        matches!(status.as_deref(), Some("received" | "running")),
        "{status:?}"
    );

    let cancel = sandbox.run(&["cancel", &task_id, "--url", &host.url, "--by", "ops"]);
    assert_eq!(cancel.code(), Some(0), "{cancel}");
    assert!(
        cancel.stdout.contains("] error") && cancel.stdout.contains("— error: cancelled by ops"),
        "{cancel}"
    );
    assert!(
        cancel
            .stdout
            .contains(&format!("task {task_id} cancelled: nothing more runs")),
        "{cancel}"
    );
    assert_eq!(
        task_status(&host.url, &task_id).as_deref(),
        Some("cancelled")
    );
    // The held call is answered now; nothing more runs for the task.
    server.release();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        task_status(&host.url, &task_id).as_deref(),
        Some("cancelled"),
        "a late answer does not bring the task back"
    );
    assert_eq!(server.requests().len(), 1, "no later step was asked for");

    let stopped = host.terminate();
    assert!(
        stopped.status.is_some_and(|s| s.success()),
        "{}",
        stopped.stderr
    );
}

#[test]
fn in_this_process_a_waiting_task_is_approved_by_a_later_command() {
    let sandbox = Sandbox::new();
    let send = sandbox.run(&[
        "send",
        "--local",
        "--text",
        HELLO,
        "--require-approval",
        "--wait",
    ]);
    assert_eq!(send.code(), Some(0), "{send}");
    let task_id = send.task_id();
    assert!(
        send.stdout.contains(&format!(
            "waiting for approval: run `agent-host approve {task_id} --local`"
        )),
        "with --local nobody else could approve: the command ends there\n{send}"
    );
    let show = sandbox.run(&["show", &task_id, "--local"]);
    assert!(show.stdout.contains("status   awaiting_approval"), "{show}");
    assert!(
        show.stdout.contains("approval required before publishing"),
        "{show}"
    );
    assert!(!published(&sandbox, &task_id));

    let approve = sandbox.run(&["approve", &task_id, "--local"]);
    assert_eq!(approve.code(), Some(0), "{approve}");
    assert!(
        approve.stdout.contains("approved: its change is published"),
        "{approve}"
    );
    assert!(published(&sandbox, &task_id));
    let again = sandbox.run(&["reject", &task_id, "--local"]);
    assert_eq!(again.code(), Some(1), "{again}");
    assert!(
        again
            .stderr
            .contains(&format!("cannot reject task {task_id}: it is done")),
        "{again}"
    );
}
