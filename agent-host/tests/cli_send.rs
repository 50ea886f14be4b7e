//! `send --local` runs a task end to end on the embedded default in its own process;
//! `tasks --local` and `show --local` then find it in `DATA_DIR`.

mod common;

use common::{HELLO, Sandbox, read_json};

#[test]
fn send_wait_runs_every_stage_and_the_task_can_be_listed_and_shown() {
    let sandbox = Sandbox::new();
    let (task_id, output) = sandbox.send_hello();

    let stdout = &output.stdout;
    for expected in [
        "] received — ",
        "] stage_done design@v1 — Design completed",
        "] stage_done implement@v1 — ",
        "] stage_done test@v1 — ",
        "] stage_done test@v1 — Test completed: 1 run, 1 passed, 0 failed (`python3 -m unittest -v`, exit code 0)",
        "] stage_done review@v1 — ",
        "] gates — Gates passed (round 1): tests, review, secrets",
        "] pr — Change published as agent/",
        "] done ",
        "] ci — CI passed on agent/",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?}:\n{output}");
    }
    let task_dir = sandbox.data_dir().join(&task_id);
    assert!(
        stdout.contains(&format!(
            "artifacts: {}",
            std::path::Path::new("./data").join(&task_id).display()
        )),
        "the artifacts' place is printed:\n{output}"
    );

    for step in ["design@v1", "implement@v1", "test@v1", "review@v1"] {
        let artifact = read_json(&task_dir.join(format!("{step}.json")));
        assert_eq!(artifact["model"], "offline", "{step}");
        assert_eq!(artifact["step"], step);
        assert_eq!(artifact["task_id"], task_id.as_str());
    }

    let reports = std::fs::read_to_string(sandbox.data_dir().join("reports.jsonl"))
        .expect("reports.jsonl exists");
    let statuses: Vec<String> = reports
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("a JSON line"))
        .filter(|event| event["task_id"] == task_id.as_str())
        .map(|event| event["status"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        statuses,
        [
            "received",
            "stage_done",
            "stage_done",
            "stage_done",
            "stage_done",
            "gates",
            "pr",
            "done",
            "ci"
        ],
        "reports.jsonl holds every event of the task"
    );

    let tasks = sandbox.run(&["tasks", "--local"]);
    assert!(tasks.status.success(), "{tasks}");
    let row = tasks
        .stdout
        .lines()
        .find(|line| line.starts_with(&task_id))
        .unwrap_or_else(|| panic!("the task is listed:\n{tasks}"));
    assert!(row.contains(" done "), "{row}");
    assert!(row.contains("review@v1"), "{row}");

    let json = sandbox.run(&["tasks", "--json", "--local"]);
    let first: serde_json::Value =
        serde_json::from_str(json.stdout.lines().next().unwrap_or_default()).expect("a JSON line");
    assert_eq!(first["task_id"], task_id.as_str());
    assert_eq!(first["status"], "done");
    assert_eq!(first["attempts"], 4);

    let show = sandbox.run(&["show", &task_id, "--local"]);
    assert!(show.status.success(), "{show}");
    assert!(show.stdout.contains(HELLO), "the prompt is shown:\n{show}");
    assert!(show.stdout.contains("status   done"), "{show}");
    assert!(
        show.stdout
            .contains("\"design_summary\": \"[offline model]"),
        "the design summary is shown:\n{show}"
    );
    assert!(
        show.stdout.contains("design@v1.json"),
        "with its file:\n{show}"
    );

    let show_json = sandbox.run(&["show", &task_id, "--json", "--local"]);
    let document: serde_json::Value =
        serde_json::from_str(&show_json.stdout).expect("show --json prints JSON");
    assert_eq!(document["task"]["status"], "done");
    assert_eq!(document["steps"][3]["artifact"]["approved"], true);
}

#[test]
fn send_without_wait_prints_the_id_and_the_last_event_only() {
    let sandbox = Sandbox::new();
    let output = sandbox.run(&["send", "--local", "--text", HELLO]);
    assert!(output.status.success(), "{output}");
    let task_id = output.task_id();
    assert!(!output.stdout.contains("stage_done"), "{output}");
    assert!(output.stdout.contains("] done review@v1 — "), "{output}");
    assert!(
        sandbox
            .data_dir()
            .join(task_id)
            .join("review@v1.json")
            .exists()
    );
}

#[test]
fn showing_an_unknown_task_is_a_clear_error() {
    let sandbox = Sandbox::new();
    sandbox.send_hello();
    let unknown = "3f0c8a52-6a3e-4c1e-9d1e-5b8f2f6f4a10";
    let output = sandbox.run(&["show", unknown, "--local"]);
    assert_eq!(output.code(), Some(1), "{output}");
    assert!(
        output
            .stderr
            .contains(&format!("task {unknown} does not exist")),
        "{output}"
    );
    let malformed = sandbox.run(&["show", "../etc", "--local"]);
    assert_eq!(malformed.code(), Some(1), "{malformed}");
    assert!(malformed.stderr.contains("not a UUID"), "{malformed}");
}

#[test]
fn an_empty_data_dir_has_no_tasks_and_no_dead_letters() {
    let sandbox = Sandbox::new();
    let tasks = sandbox.run(&["tasks", "--local"]);
    assert!(tasks.status.success(), "{tasks}");
    assert!(tasks.stdout.contains("no tasks yet"), "{tasks}");
    let dlq = sandbox.run(&["dlq"]);
    assert!(dlq.status.success(), "{dlq}");
    assert!(
        dlq.stdout.contains("the dead-letter queue is empty"),
        "{dlq}"
    );
    assert!(
        !sandbox.data_dir().exists(),
        "looking creates nothing in DATA_DIR"
    );
}

/// With code execution off nothing is published, so no CI check follows `done`: `send --wait`
/// ends at `done` instead of waiting for a `ci` report that never comes (it used to wait the
/// check's whole time limit, longer than `run`'s timeout here).
#[test]
fn send_wait_ends_at_done_when_nothing_was_published() {
    let sandbox = Sandbox::new();
    let mut command = sandbox.command(&["send", "--local", "--text", HELLO, "--wait"]);
    command.env("EXECUTE_CODE", "false");
    let output = common::run(command);
    assert!(output.status.success(), "{output}");
    assert!(output.stdout.contains("] done "), "{output}");
    assert!(!output.stdout.contains("] pr "), "{output}");
    assert!(
        !output.stderr.contains("no ci report"),
        "nothing to wait for:\n{output}"
    );
}
