//! The schema registry against a real run: every message a task puts on the topics (a new
//! task waiting for approval, the approval, a replay, the step requests and results, the
//! reports, a dead letter) and every artifact file and mirrored line it leaves under
//! `DATA_DIR` is valid against the schema the registry names for it.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use agent_pipeline::bus::FollowFrom;
use agent_pipeline::schemas;
use agent_pipeline::wire::{ControlAction, NewTask, ReportStatus, TaskControl};
use agent_pipeline::{Stage, StepId};
use common::{TestResult, events_until, start_with};
use serde_json::Value;

const HELLO: &str = "Write a tiny Python program that prints 'Hello Earthling'";

/// A message any program could publish, refused by the planner and dead-lettered.
const INVALID_TASK: &[u8] = br#"{"task_id":"not-a-uuid","prompt":"x"}"#;

/// How long a topic must stay quiet before it is taken as read to its end.
const QUIET: Duration = Duration::from_millis(300);

/// The schema name of a message on the task topic: the planner tells them by `action`.
fn task_schema(message: &Value) -> &'static str {
    match message.get("action").and_then(Value::as_str) {
        None => "new_task",
        Some("replay_step") => "replay_step",
        Some(_) => "task_control",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_and_file_of_a_real_run_is_valid_against_its_schema() -> TestResult {
    let mut harness = start_with(|b| b.require_approval(true)).await?;
    let pipeline = harness.pipeline.clone();
    let task_id = pipeline
        .enqueue(NewTask::new(HELLO).with_approval(true))
        .await?;
    events_until(&pipeline, task_id, |e| {
        e.status == ReportStatus::AwaitingApproval
    })
    .await?;
    pipeline
        .control(TaskControl::new(ControlAction::Approve, task_id))
        .await?;
    events_until(&pipeline, task_id, |e| e.status == ReportStatus::Done).await?;
    pipeline
        .replay(task_id, StepId::v1(Stage::Review), Some("again".into()))
        .await?;
    events_until(&pipeline, task_id, |e| e.status == ReportStatus::Replayed).await?;
    pipeline
        .publish_raw_task_message("k", INVALID_TASK.to_vec())
        .await?;
    common::dead_letters(&pipeline, 1).await?;
    harness.stop().await;

    let topics = pipeline.topics().clone();
    let registry = schemas::registry(&topics);
    let validators: BTreeMap<&str, jsonschema::Validator> = registry
        .iter()
        .map(|entry| {
            let validator = jsonschema::options()
                .should_validate_formats(true)
                .build(&entry.schema)
                .unwrap_or_else(|e| panic!("{}: {e}", entry.name));
            (entry.name, validator)
        })
        .collect();
    let mut checked: BTreeMap<&str, usize> = BTreeMap::new();
    let mut check = |name: &'static str, what: &str, message: &Value| {
        let validator = &validators[name];
        let problems: Vec<String> = validator
            .iter_errors(message)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(
            problems.is_empty(),
            "{what} as {name}: {problems:?}\n{message}"
        );
        *checked.entry(name).or_default() += 1;
    };

    // Every message on every topic, read from the oldest.
    let mut read_topics: Vec<&str> = Vec::new();
    for entry in &registry {
        let carrier = entry.topic.as_str();
        if [schemas::ARTIFACT, schemas::MODEL_OUTPUT].contains(&carrier)
            || read_topics.contains(&carrier)
        {
            continue;
        }
        read_topics.push(carrier);
        let subscription = pipeline
            .bus()
            .follow(&entry.topic, FollowFrom::Oldest)
            .await?;
        while let Ok(delivery) = tokio::time::timeout(QUIET, subscription.next()).await {
            let delivery = delivery?;
            subscription.ack(delivery.receipt).await?;
            if entry.topic == topics.tasks && delivery.payload == INVALID_TASK {
                continue;
            }
            let message: Value = serde_json::from_slice(&delivery.payload)?;
            let name = if entry.topic == topics.tasks {
                task_schema(&message)
            } else {
                entry.name
            };
            check(name, &format!("a message on {}", entry.topic), &message);
        }
    }

    // The artifact files of the task, and the mirrored topics.
    let task_dir = harness.task_dir(task_id);
    for (file, name) in [
        ("design@v1.json", "design"),
        ("implement@v1.json", "implementation"),
        ("test@v1.json", "test_report"),
        ("review@v1.json", "review"),
        ("review@v1.attempt1.json", "review"),
        ("review@v1.attempt2.json", "review"),
    ] {
        let text = std::fs::read_to_string(task_dir.join(file))?;
        check(name, file, &serde_json::from_str(&text)?);
    }
    for (file, name) in [
        ("reports.jsonl", "report_event"),
        ("dead_letters.jsonl", "dead_letter"),
    ] {
        let text = std::fs::read_to_string(harness.data_dir().join(file))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            check(name, file, &serde_json::from_str(line)?);
        }
    }

    for name in [
        "new_task",
        "task_control",
        "replay_step",
        "step_request",
        "step_result",
        "report_event",
        "dead_letter",
        "design",
        "implementation",
        "test_report",
        "review",
    ] {
        assert!(
            checked.get(name).is_some_and(|n| *n > 0),
            "no {name} seen: {checked:?}"
        );
    }
    Ok(())
}
