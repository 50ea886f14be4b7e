//! `agent-host schemas`: the schema registry on the command line, with no broker, no database
//! and no configuration.

mod common;

use common::Sandbox;
use serde_json::Value;

/// Every name the registry must hold: each message on the topics and each stage output.
const NAMES: [&str; 13] = [
    "new_task",
    "replay_step",
    "task_control",
    "step_request",
    "step_result",
    "report_event",
    "ci_watch",
    "dead_letter",
    "design",
    "implementation",
    "test_plan",
    "test_report",
    "review",
];

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

#[test]
fn schemas_prints_every_schema_with_its_topic_and_version_without_a_broker() {
    let sandbox = Sandbox::new();
    // A Kafka bus that nobody runs and a database that does not exist: neither is touched.
    let output = sandbox.run_with(
        &["schemas"],
        [
            ("AGENT_BUS", "kafka"),
            ("REDPANDA_BROKERS", "127.0.0.1:9"),
            ("DATABASE_URL", "postgres://nobody@127.0.0.1:9/none"),
            ("STEP_RESULTS_TOPIC", "team_results"),
        ],
    );
    assert_eq!(output.code(), Some(0), "{output}");
    let registry = json(&output.stdout);
    let entries = registry.as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = entries.iter().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(names, NAMES, "{output}");
    for entry in &entries {
        let version = entry["version"].as_str().unwrap_or_default();
        assert_eq!(version.len(), 12, "{entry}");
        assert_eq!(
            entry["schema"]["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{entry}"
        );
    }
    let result = &entries[4];
    assert_eq!(result["topic"], "team_results", "the configured topic");
    assert_eq!(entries[8]["topic"], "artifact");
    assert_eq!(entries[8]["file"], "<task_id>/design@v<N>.json");
    assert!(!sandbox.data_dir().exists(), "nothing is written");

    // One schema alone is the plain JSON Schema, the same as in the whole list.
    let one = sandbox.run(&["schemas", "--name", "step_result"]);
    assert_eq!(one.code(), Some(0), "{one}");
    assert_eq!(json(&one.stdout), result["schema"]);
    assert_eq!(json(&one.stdout)["title"], "StepResult");

    // The table: one line per schema with its topic and version.
    let list = sandbox.run(&["schemas", "--list"]);
    assert_eq!(list.code(), Some(0), "{list}");
    let version = result["version"].as_str().unwrap_or_default();
    let line = list
        .stdout
        .lines()
        .find(|line| line.starts_with("step_result "))
        .unwrap_or_else(|| panic!("no step_result line:\n{list}"));
    let columns: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(columns, ["step_result", "step_results", version], "{list}");
    assert_eq!(list.stdout.lines().count(), 1 + NAMES.len(), "{list}");
}

#[test]
fn an_unknown_schema_name_is_an_error_that_lists_the_known_ones() {
    let sandbox = Sandbox::new();
    let output = sandbox.run(&["schemas", "--name", "step_results"]);
    assert_eq!(output.code(), Some(1), "{output}");
    assert!(output.stdout.is_empty(), "{output}");
    assert!(
        output.stderr.contains("unknown schema \"step_results\""),
        "{output}"
    );
    for name in NAMES {
        assert!(output.stderr.contains(name), "{name} is listed:\n{output}");
    }
}
