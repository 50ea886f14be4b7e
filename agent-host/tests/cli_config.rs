//! Configuration from `config.local.json`, `--config` and `--data-dir`, and secrets that must
//! never show up in output or files.

mod common;

use common::{HELLO, Sandbox, files_under};

#[test]
fn data_dir_from_config_local_json_is_honoured() {
    let sandbox = Sandbox::new();
    std::fs::write(
        sandbox.path().join("config.local.json"),
        r#"{ "DATA_DIR": "sub/store", "REPORT_TOPIC": "my_reports" }"#,
    )
    .expect("config written");
    let (task_id, output) = sandbox.send_hello();
    let task_dir = sandbox.path().join("sub/store").join(&task_id);
    assert!(task_dir.join("review@v1.json").exists(), "{output}");
    assert!(sandbox.path().join("sub/store/reports.jsonl").exists());
    assert!(!sandbox.data_dir().exists(), "nothing lands in ./data");

    let tasks = sandbox.run(&["tasks", "--local"]);
    assert!(
        tasks.stdout.contains(&task_id),
        "`tasks` reads the same place:\n{tasks}"
    );
}

#[test]
fn flags_beat_the_config_file_and_explicit_config_files_must_exist() {
    let sandbox = Sandbox::new();
    std::fs::write(
        sandbox.path().join("other.json"),
        r#"{ "DATA_DIR": "from-file" }"#,
    )
    .expect("config written");
    let output = sandbox.run(&[
        "send",
        "--local",
        "--text",
        HELLO,
        "--config",
        "other.json",
        "--data-dir",
        "from-flag",
    ]);
    assert!(output.status.success(), "{output}");
    let task_id = output.task_id();
    assert!(sandbox.path().join("from-flag").join(&task_id).exists());
    assert!(!sandbox.path().join("from-file").exists());

    let missing = sandbox.run(&["tasks", "--local", "--config", "missing.json"]);
    assert_eq!(missing.code(), Some(1), "{missing}");
    assert!(missing.stderr.contains("missing.json"), "{missing}");
}

#[test]
fn an_unknown_key_in_the_config_file_is_a_clear_error() {
    let sandbox = Sandbox::new();
    std::fs::write(
        sandbox.path().join("config.local.json"),
        r#"{ "OPENAI_MODLE": "gpt-4o" }"#,
    )
    .expect("config written");
    let output = sandbox.run(&["tasks", "--local"]);
    assert_eq!(output.code(), Some(1), "{output}");
    assert!(
        output.stderr.contains("unknown key \"OPENAI_MODLE\""),
        "{output}"
    );

    std::fs::write(
        sandbox.path().join("config.local.json"),
        r#"{ "DATA_DIR": 3 }"#,
    )
    .expect("config written");
    let output = sandbox.run(&["tasks", "--local"]);
    assert_eq!(output.code(), Some(1), "{output}");
    assert!(
        output.stderr.contains("\"DATA_DIR\" must be a string"),
        "{output}"
    );
}

#[test]
fn an_unreachable_llm_ends_in_error_without_leaking_the_api_key() {
    let sandbox = Sandbox::new();
    let mut command = sandbox.command(&["send", "--local", "--text", HELLO, "--wait"]);
    command
        .env("OPENAI_API_KEY", "sk-test-SECRET123")
        // Nothing listens on the discard port.
        .env("OPENAI_BASE_URL", "http://127.0.0.1:9")
        // One HTTP request per call and one try per step, so that the test is fast.
        .env("AGENT_HOST_MAX_ATTEMPTS", "1")
        // The most the host logs about its configuration.
        .env("RUST_LOG", "debug");
    let output = common::run(command);
    assert_eq!(output.code(), Some(1), "{output}");
    assert!(output.stdout.contains("] error design@v1 — "), "{output}");
    assert!(
        output.stderr.contains("could not reach the LLM server"),
        "{output}"
    );
    assert!(!output.stdout.contains("SECRET123"), "stdout leaks the key");
    assert!(!output.stderr.contains("SECRET123"), "stderr leaks the key");
    let files = files_under(&sandbox.data_dir());
    assert!(!files.is_empty());
    for file in files {
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains("SECRET123"),
            "{} leaks the key",
            file.display()
        );
    }

    let tasks = sandbox.run(&["tasks", "--local"]);
    assert!(tasks.stdout.contains(" error "), "{tasks}");
    let dlq = sandbox.run(&["dlq"]);
    assert!(dlq.stdout.contains("from step_results"), "{dlq}");
    assert!(
        dlq.stdout.contains("could not reach the LLM server"),
        "{dlq}"
    );
}
