//! Budgets from the command line: `send --max-tokens`, `--max-cost` and `--max-wall-time`
//! stop a task that reaches them, which ends in error with the reason `budget_exceeded`
//! (exit code 1); what the task spent is printed and kept; bad limits are refused naming the
//! flag or the variable.

mod common;

use common::openai::ChatServer;
use common::{HELLO, Sandbox};

/// The variables of a host or command whose model is `model-a` on `server`, priced at
/// `prices` (`LLM_PRICES`), without code execution (the tests are about the model's calls).
fn priced(server: &ChatServer, prices: &str) -> Vec<(&'static str, String)> {
    let mut env = server.env("model-a");
    env.push(("LLM_PRICES", prices.to_owned()));
    env.push(("EXECUTE_CODE", "false".to_owned()));
    env
}

#[test]
fn a_task_over_its_token_budget_on_a_host_ends_in_error_with_budget_exceeded() {
    let (_runtime, server) = ChatServer::start_on_own_runtime();
    let sandbox = Sandbox::new();
    let host = sandbox.start_host_with(priced(&server, "model-a=1/4"));
    let send = sandbox.run(&[
        "send",
        "--text",
        HELLO,
        "--max-tokens",
        "10",
        "--wait",
        "--url",
        &host.url,
    ]);
    assert_eq!(send.code(), Some(1), "{send}");
    let task_id = send.task_id();
    assert!(
        send.stderr
            .contains(&format!("task {task_id} ended in error (budget_exceeded)")),
        "{send}"
    );
    assert!(send.stdout.contains("] stage_done design@v1"), "{send}");
    assert!(
        !send.stdout.contains("stage_done implement@v1"),
        "nothing runs past the limit:\n{send}"
    );
    assert!(send.stdout.contains("spent: "), "{send}");

    let show = sandbox.run(&["show", &task_id, "--json", "--url", &host.url]);
    let document: serde_json::Value = serde_json::from_str(&show.stdout).expect("JSON");
    assert_eq!(document["task"]["status"], "error");
    assert_eq!(document["task"]["budget"]["max_tokens"], 10);
    let tokens = document["task"]["spend"]["total_tokens"].as_u64();
    assert!(tokens.is_some_and(|t| t >= 10), "{document}");
    let text = sandbox.run(&["show", &task_id, "--url", &host.url]);
    assert!(text.stdout.contains("budget   10 tokens"), "{text}");

    let stopped = host.terminate();
    assert!(
        stopped.status.is_some_and(|s| s.success()),
        "{}",
        stopped.stderr
    );
}

#[test]
fn a_task_over_its_cost_budget_in_this_process_ends_in_error_and_says_what_it_spent() {
    let (_runtime, server) = ChatServer::start_on_own_runtime();
    let sandbox = Sandbox::new();
    // A thousand dollars per million tokens: the first step alone costs over a cent.
    let send = sandbox.run_with(
        &["send", "--local", "--text", HELLO, "--max-cost", "0.01"],
        priced(&server, "model-a=1000/1000"),
    );
    assert_eq!(send.code(), Some(1), "{send}");
    let task_id = send.task_id();
    assert!(send.stderr.contains("(budget_exceeded)"), "{send}");
    let spent = send
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("spent: "))
        .unwrap_or_else(|| panic!("no spent line:\n{send}"));
    assert!(
        spent.contains(" call(s), $") && !spent.ends_with(" $0"),
        "a cost in dollars: {spent}"
    );

    let tasks = sandbox.run(&["tasks", "--local", "--json"]);
    let task: serde_json::Value =
        serde_json::from_str(tasks.stdout.lines().next().unwrap_or_default()).expect("JSON");
    assert_eq!(task["task_id"], task_id.as_str());
    assert_eq!(task["status"], "error");
    let cost = task["spend"]["cost_usd"].as_f64().unwrap_or_default();
    assert!(cost >= 0.01, "the whole cost is kept: {task}");
}

#[test]
fn a_task_past_its_wall_time_is_stopped_while_its_model_is_still_answering() {
    let (_runtime, server) = ChatServer::start_on_own_runtime();
    server.hold();
    let sandbox = Sandbox::new();
    let started = std::time::Instant::now();
    let send = sandbox.run_with(
        &["send", "--local", "--text", HELLO, "--max-wall-time", "2s"],
        priced(&server, "model-a=1/4"),
    );
    server.release();
    assert_eq!(send.code(), Some(1), "{send}");
    assert!(send.stderr.contains("(budget_exceeded)"), "{send}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "the step was stopped at the deadline, not at the step timeout"
    );
}

#[test]
fn limits_that_mean_nothing_are_refused_before_anything_runs() {
    let sandbox = Sandbox::new();
    for (flag, value) in [
        ("--max-cost", "-1"),
        ("--max-tokens", "0"),
        ("--max-wall-time", "a while"),
        ("--max-rounds", "0"),
    ] {
        let output = sandbox.run(&["send", "--local", "--text", HELLO, flag, value]);
        assert_eq!(output.code(), Some(2), "{flag} {value}: {output}");
        assert!(output.stderr.contains(flag), "{flag} {value}: {output}");
    }
    for (variable, value) in [
        ("TASK_MAX_COST_USD", "cheap"),
        ("TASK_MAX_WALL_TIME", "soon"),
        ("REQUIRE_APPROVAL", "perhaps"),
    ] {
        let output = sandbox.run_with(&["send", "--local", "--text", HELLO], [(variable, value)]);
        assert_eq!(output.code(), Some(1), "{variable}={value}: {output}");
        assert!(output.stderr.contains(variable), "{variable}: {output}");
    }
    assert!(!sandbox.data_dir().exists(), "nothing ran");
}
