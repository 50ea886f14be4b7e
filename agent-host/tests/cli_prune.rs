//! `agent-host prune`: the history of ended tasks goes, the tasks and their last artifacts
//! stay; and without a policy it says what is missing.

mod common;

use common::Sandbox;

#[test]
fn prune_drops_superseded_attempts_and_keeps_the_task() {
    let sandbox = Sandbox::new();
    let run = |args: &[&str]| {
        let mut command = sandbox.command(args);
        command.env("EXECUTE_CODE", "false");
        common::run(command)
    };
    let sent = run(&["send", "--local", "--text", "Write a haiku", "--wait"]);
    assert!(sent.status.success(), "{sent}");
    let task_id = sent.task_id();
    let replayed = run(&[
        "replay",
        "--task-id",
        &task_id,
        "--step",
        "design@v1",
        "--local",
    ]);
    assert!(replayed.status.success(), "{replayed}");
    let dir = sandbox.data_dir().join(&task_id);
    assert!(dir.join("design@v1.attempt1.json").exists());

    let pruned = run(&["prune", "--older-than-days", "0"]);
    assert!(pruned.status.success(), "{pruned}");
    assert!(
        pruned.stdout.contains("pruned 1 task(s)")
            && pruned.stdout.contains("2 attempt document(s)"),
        "{pruned}"
    );
    assert!(!dir.join("design@v1.attempt1.json").exists());
    assert!(!dir.join("design@v1.attempt2.json").exists());
    assert!(dir.join("design@v1.json").exists() && dir.join("task.json").exists());

    let shown = run(&["show", &task_id, "--local", "--json"]);
    let details: serde_json::Value = serde_json::from_str(&shown.stdout).expect("JSON");
    assert_eq!(details["task"]["status"], "done");
    let attempts = details["steps"][0]["attempts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        attempts.len(),
        1,
        "the last design attempt is kept: {shown}"
    );
    assert_eq!(attempts[0]["attempt"], 2);

    let again = run(&["prune", "--older-than-days", "0"]);
    assert!(again.stdout.contains("pruned 0 task(s)"), "{again}");
}

#[test]
fn prune_without_a_policy_says_what_to_set() {
    let sandbox = Sandbox::new();
    let output = sandbox.run(&["prune"]);
    assert!(!output.status.success(), "{output}");
    assert!(output.stderr.contains("RETENTION_DAYS"), "{output}");
    let bad = {
        let mut command = sandbox.command(&["prune"]);
        command.env("RETENTION_DAYS", "-3");
        common::run(command)
    };
    assert!(!bad.status.success(), "{bad}");
    assert!(bad.stderr.contains("RETENTION_DAYS"), "{bad}");
}

#[test]
fn a_host_with_a_policy_says_it_prunes() {
    let sandbox = Sandbox::new();
    let host = sandbox.start_host(&[
        ("RETENTION_DAYS", "0.5"),
        ("RETENTION_DELETE_TASKS", "true"),
        ("EXECUTE_CODE", "false"),
    ]);
    assert!(
        host.banner
            .contains("retention: hourly, tasks that ended over 0.5 day(s) ago are deleted"),
        "{}",
        host.banner
    );
    host.interrupt();
}
