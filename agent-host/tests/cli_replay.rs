//! `replay --local` reruns exactly one step, writes a new attempt and refuses what cannot run.

mod common;

use common::{Sandbox, read_json};

#[test]
fn replay_writes_a_new_attempt_and_leaves_later_stages_alone() {
    let sandbox = Sandbox::new();
    let (task_id, _) = sandbox.send_hello();
    let task_dir = sandbox.data_dir().join(&task_id);
    let test_file = task_dir.join("test@v1.json");
    let test_before = std::fs::read(&test_file).expect("test@v1.json exists");
    let test_mtime = std::fs::metadata(&test_file)
        .and_then(|m| m.modified())
        .expect("an mtime");

    let output = sandbox.run(&[
        "replay",
        "--local",
        "--task-id",
        &task_id,
        "--step",
        "implement@v1",
        "--reason",
        "try again",
    ]);
    assert!(output.status.success(), "{output}");
    assert!(
        output.stdout.contains("replayed implement@v1"),
        "the outcome is printed:\n{output}"
    );
    assert!(
        output.stdout.contains("implement@v1.attempt2.json"),
        "the new attempt's file is printed:\n{output}"
    );

    assert!(task_dir.join("implement@v1.attempt1.json").exists());
    let attempt2 = read_json(&task_dir.join("implement@v1.attempt2.json"));
    assert_eq!(attempt2["attempt"], 2);
    let canonical = read_json(&task_dir.join("implement@v1.json"));
    assert_eq!(canonical["attempt"], 2, "the canonical file is the replay");
    assert_eq!(canonical["replay_reason"], "try again");

    assert_eq!(
        std::fs::read(&test_file).expect("test@v1.json exists"),
        test_before,
        "test@v1.json was not rewritten"
    );
    assert_eq!(
        std::fs::metadata(&test_file)
            .and_then(|m| m.modified())
            .expect("an mtime"),
        test_mtime
    );
    assert!(!task_dir.join("test@v1.attempt2.json").exists());

    let show = sandbox.run(&["show", &task_id, "--local"]);
    assert!(
        show.stdout.contains("attempt 2 (replay): succeeded"),
        "{show}"
    );
}

#[test]
fn replay_of_an_unknown_task_fails_saying_it_does_not_exist() {
    let sandbox = Sandbox::new();
    sandbox.send_hello();
    let unknown = uuid::Uuid::new_v4().to_string();
    let output = sandbox.run(&[
        "replay",
        "--local",
        "--task-id",
        &unknown,
        "--step",
        "implement@v1",
    ]);
    assert_eq!(output.code(), Some(1), "{output}");
    assert!(
        output
            .stderr
            .contains(&format!("task {unknown} does not exist")),
        "{output}"
    );
}

#[test]
fn replay_of_an_unknown_stage_or_a_malformed_id_fails_clearly() {
    let sandbox = Sandbox::new();
    let (task_id, _) = sandbox.send_hello();
    let output = sandbox.run(&[
        "replay",
        "--local",
        "--task-id",
        &task_id,
        "--step",
        "deploy@v1",
    ]);
    assert_eq!(output.code(), Some(1), "{output}");
    assert!(
        output.stderr.contains("unknown stage \"deploy\""),
        "{output}"
    );

    let version = sandbox.run(&[
        "replay",
        "--local",
        "--task-id",
        &task_id,
        "--step",
        "design@v2",
    ]);
    assert_eq!(version.code(), Some(1), "{version}");
    assert!(
        version.stderr.contains("unknown step design@v2"),
        "{version}"
    );

    let malformed = sandbox.run(&[
        "replay",
        "--local",
        "--task-id",
        "nope",
        "--step",
        "design@v1",
    ]);
    assert_eq!(malformed.code(), Some(1), "{malformed}");
    assert!(malformed.stderr.contains("is not a UUID"), "{malformed}");
}
