//! `replay --local` reruns exactly one step, writes a new attempt and refuses what cannot run;
//! through a running host, a replay may be a variant: another model or provider, an edited
//! prompt or upstream output, the later stages run again from it.

mod common;

use common::openai::ChatServer;
use common::{HELLO, Sandbox, read_json};

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

#[test]
fn replay_variants_on_a_host_run_with_another_model_provider_prompt_and_input() {
    let (runtime, default) = ChatServer::start_on_own_runtime();
    let second = runtime.block_on(ChatServer::start());
    let sandbox = Sandbox::new();
    let mut env = default.env("model-a");
    env.extend([
        ("EXECUTE_CODE", "false".to_owned()),
        ("LLM_PRICES", "model-a=1/4,model-x=10/40".to_owned()),
        ("LLM_PROVIDERS", format!("second={}", second.base_url())),
        ("LLM_PROVIDER_SECOND_API_KEY", "sk-SECRET-second".to_owned()),
    ]);
    let host = sandbox.start_host_with(env);
    assert!(
        host.banner.contains("providers: offline, second"),
        "{}",
        host.banner
    );
    assert!(!host.banner.contains("SECRET"), "{}", host.banner);
    let url = host.url.clone();
    let send = sandbox.run(&["send", "--text", HELLO, "--url", &url]);
    assert!(send.status.success(), "{send}");
    let task_id = send.task_id();

    // Another model on the default server: priced as that model, recorded as the variant.
    let replay = sandbox.run(&[
        "replay",
        "--url",
        &url,
        "--task-id",
        &task_id,
        "--step",
        "design@v1",
        "--model",
        "model-x",
    ]);
    assert!(replay.status.success(), "{replay}");
    assert!(replay.stdout.contains("replayed design@v1"), "{replay}");
    assert!(
        replay.stdout.contains("  model model-x, spent "),
        "{replay}"
    );
    assert!(
        replay.stdout.contains("  variant: model model-x"),
        "{replay}"
    );
    assert!(
        default
            .requests()
            .iter()
            .any(|request| request["model"] == "model-x"),
        "the default server was asked for model-x"
    );
    let show = sandbox.run(&["show", &task_id, "--json", "--url", &url]);
    let document: serde_json::Value = serde_json::from_str(&show.stdout).expect("JSON");
    let design = &document["steps"][0];
    assert_eq!(design["artifact"]["model"], "model-x");
    assert_eq!(design["artifact"]["variant"]["model"], "model-x");
    assert_eq!(design["attempts"][1]["variant"]["model"], "model-x");
    let call = &design["attempts"][1]["calls"][0];
    let tokens = |name: &str| call[name].as_f64().unwrap_or_default();
    let expected = (tokens("prompt_tokens") * 10.0 + tokens("completion_tokens") * 40.0) / 1e6;
    let cost = design["attempts"][1]["spend"]["cost_usd"]
        .as_f64()
        .unwrap_or_default();
    assert!(
        expected > 0.0 && (cost - expected).abs() < 1e-12,
        "priced as model-x: {cost} vs {expected}"
    );
    let total = document["task"]["spend"]["cost_usd"]
        .as_f64()
        .unwrap_or_default();
    assert!(
        total > cost,
        "the task's total counts every attempt: {total}"
    );
    let diff = common::http::get(
        &url,
        &format!("/api/task/{task_id}/diff/design@v1?from=1&to=2"),
    );
    assert_eq!(diff.status, 200, "{}", diff.body);
    let diff = diff.json();
    assert_eq!(diff["from_side"]["model"], "model-a");
    assert_eq!(diff["to_side"]["model"], "model-x");
    assert_eq!(diff["to_side"]["variant"]["model"], "model-x");

    // Another provider, an edited prompt and an edited design, and the later stages again.
    std::fs::write(
        sandbox.path().join("prompt.txt"),
        "Print HELLO EARTHLING in capitals",
    )
    .expect("prompt written");
    std::fs::write(
        sandbox.path().join("design.json"),
        r#"{"design_summary": "One file that shouts", "files_touched": ["shout.py"]}"#,
    )
    .expect("design written");
    let before = second.requests().len();
    let variant = sandbox.run(&[
        "replay",
        "--url",
        &url,
        "--task-id",
        &task_id,
        "--step",
        "implement@v1",
        "--provider",
        "second",
        "--model",
        "model-b",
        "--prompt-file",
        "prompt.txt",
        "--input",
        "design@v1=design.json",
        "--continue",
    ]);
    assert!(variant.status.success(), "{variant}");
    assert!(
        variant.stdout.contains("replayed implement@v1"),
        "{variant}"
    );
    assert!(
        variant.stdout.contains("] done "),
        "the continued run ended:\n{variant}"
    );
    assert!(
        variant.stdout.contains(
            "variant: model model-b, provider second, edited prompt, edited design@v1, later stages run again"
        ),
        "{variant}"
    );
    let asked = second.requests();
    assert!(asked.len() > before, "the second provider was called");
    let user = asked[before]["messages"][1]["content"]
        .as_str()
        .unwrap_or_default();
    assert!(
        user.contains("One file that shouts") && user.contains("HELLO EARTHLING in capitals"),
        "the edited design and prompt reached the model: {user}"
    );
    let show = sandbox.run(&["show", &task_id, "--json", "--url", &url]);
    let document: serde_json::Value = serde_json::from_str(&show.stdout).expect("JSON");
    let implement = &document["steps"][1]["attempts"][1];
    assert_eq!(implement["variant"]["provider"], "second");
    assert_eq!(
        implement["variant"]["inputs"]["design@v1"]["design_summary"],
        "One file that shouts"
    );
    assert_eq!(implement["calls"][0]["provider"], "second");
    let review_attempts = document["steps"][3]["attempts"].as_array().map(Vec::len);
    assert_eq!(review_attempts, Some(2), "review ran again");

    // What cannot run is refused with the reason, before anything runs.
    for (args, expected) in [
        (
            &["--provider", "nowhere"][..],
            "unknown provider \"nowhere\"",
        ),
        (
            &["--input", "review@v1=design.json"][..],
            "is not an upstream step",
        ),
        (
            &["--input", "design@v1=missing.json"][..],
            "cannot read the input file",
        ),
    ] {
        let mut all = vec![
            "replay",
            "--url",
            &url,
            "--task-id",
            &task_id,
            "--step",
            "implement@v1",
        ];
        all.extend_from_slice(args);
        let refused = sandbox.run(&all);
        assert_eq!(refused.code(), Some(1), "{args:?}: {refused}");
        assert!(refused.stderr.contains(expected), "{args:?}: {refused}");
    }

    let stopped = host.terminate();
    assert!(
        stopped.status.is_some_and(|s| s.success()),
        "{}",
        stopped.stderr
    );
    assert!(
        !stopped.stderr.contains("SECRET"),
        "the provider's key is never logged"
    );
}
