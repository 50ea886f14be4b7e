//! Malformed and hostile messages end in the dead-letter queue with a reason, and nothing is
//! written outside DATA_DIR.

mod common;

use std::path::Path;

use agent_pipeline::wire::DeadLetter;
use common::{TestResult, dead_letters, start};

/// Every file under `dir`, relative to it.
fn tree(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path.clone());
            }
            found.push(
                path.strip_prefix(dir)
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            );
        }
    }
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_hostile_messages_are_dead_lettered_with_a_reason() -> TestResult {
    let mut harness = start().await?;
    let pipeline = harness.pipeline.clone();
    let valid = agent_pipeline::TaskId::new();
    let task_messages: [(&str, String, &str); 9] = [
        ("k1", "{this is not json".into(), "not valid JSON"),
        (
            "k2",
            r#"{"prompt":"no id"}"#.into(),
            "missing field `task_id`",
        ),
        (
            "k3",
            r#"{"task_id":"12345","prompt":"x"}"#.into(),
            "not a UUID",
        ),
        (
            "../../escape",
            r#"{"task_id":"../../escape","prompt":"x"}"#.into(),
            "not a UUID",
        ),
        (
            "k5",
            r#"{"task_id":"/etc/passwd","prompt":"x"}"#.into(),
            "not a UUID",
        ),
        (
            "k6",
            format!(r#"{{"action":"replay_step","task_id":"{valid}","step_id":"deploy@v1"}}"#),
            "unknown stage",
        ),
        (
            "k7",
            format!(r#"{{"action":"replay_step","task_id":"{valid}","step_id":"../design@v1"}}"#),
            "unknown stage",
        ),
        (
            "k8",
            format!(r#"{{"action":"replay_step","task_id":"{valid}","step_id":"design@v1"}}"#),
            "no task",
        ),
        (
            "k9",
            r#"{"action":"drop_tables","task_id":"x"}"#.into(),
            "unknown action",
        ),
    ];
    for (key, payload, _) in &task_messages {
        pipeline
            .publish_raw_task_message(key, payload.clone().into_bytes())
            .await?;
    }
    // Hostile messages straight onto the internal topics, too.
    let hostile_request = r#"{"task_id":"../../escape","step_id":"design@v1","attempt":1,"requested_at":"2026-01-01T00:00:00Z"}"#;
    pipeline
        .bus()
        .publish(
            &pipeline.topics().step_requests,
            "h1",
            hostile_request.as_bytes().to_vec(),
        )
        .await?;
    let hostile_result = format!(
        r#"{{"task_id":"{valid}","step_id":"design@v1/../../x","attempt":1,"status":"succeeded","output":{{}},"model":"m","usage":{{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}},"started_at":"2026-01-01T00:00:00Z","duration_ms":1}}"#
    );
    pipeline
        .bus()
        .publish(
            &pipeline.topics().step_results,
            "h2",
            hostile_result.into_bytes(),
        )
        .await?;
    let unknown_task_result = hostile_request_result(valid);
    pipeline
        .bus()
        .publish(
            &pipeline.topics().step_results,
            "h3",
            unknown_task_result.into_bytes(),
        )
        .await?;
    pipeline
        .bus()
        .publish(&pipeline.topics().reports, "h4", b"not a report".to_vec())
        .await?;

    let letters: Vec<DeadLetter> = dead_letters(&pipeline, task_messages.len() + 4).await?;
    for (key, payload, reason) in &task_messages {
        let letter = letters
            .iter()
            .find(|l| l.key.as_deref() == Some(*key))
            .ok_or(format!("no dead letter for {key}"))?;
        assert!(
            letter.reason.contains(reason),
            "{key}: {:?} should say {reason:?}",
            letter.reason
        );
        assert_eq!(&letter.payload, payload, "{key}: the raw payload is kept");
        assert_eq!(letter.source_topic, pipeline.topics().tasks);
    }
    let reason_of = |key: &str| {
        letters
            .iter()
            .find(|l| l.key.as_deref() == Some(key))
            .map(|l| l.reason.clone())
            .unwrap_or_default()
    };
    assert!(
        reason_of("h1").contains("not a UUID"),
        "{}",
        reason_of("h1")
    );
    assert!(
        reason_of("h2").contains("malformed step id"),
        "{}",
        reason_of("h2")
    );
    assert!(
        reason_of("h3").contains("unknown task"),
        "{}",
        reason_of("h3")
    );
    assert!(
        reason_of("h4").contains("JSON object"),
        "{}",
        reason_of("h4")
    );

    // Nothing beside DATA_DIR, and no task directory inside it.
    harness.stop().await;
    let beside: Vec<String> = tree(harness.temp.path())
        .into_iter()
        .filter(|p| !p.starts_with("data"))
        .collect();
    assert!(beside.is_empty(), "written outside DATA_DIR: {beside:?}");
    let inside = tree(&harness.data_dir());
    let unexpected: Vec<&String> = inside
        .iter()
        .filter(|p| {
            !(p.starts_with("state.sqlite") || *p == "reports.jsonl" || *p == "dead_letters.jsonl")
        })
        .collect();
    assert!(unexpected.is_empty(), "unexpected files: {unexpected:?}");
    Ok(())
}

/// A well-formed result for a task the pipeline never received.
fn hostile_request_result(task_id: agent_pipeline::TaskId) -> String {
    format!(
        r#"{{"task_id":"{task_id}","step_id":"design@v1","attempt":1,"status":"succeeded","output":{{"design_summary":"x","files_touched":[]}},"model":"m","usage":{{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}},"started_at":"2026-01-01T00:00:00Z","duration_ms":1}}"#
    )
}
