//! The conformance suite of [`ArtifactStore`].

use std::sync::Arc;

use chrono::{SubsecRound, Utc};
use serde_json::{Value, json};

use crate::budget::Budget;
use crate::ids::{Attempt, Stage, StepId, TaskId};
use crate::llm::{LlmCall, Usage};
use crate::store::{Artifact, ArtifactStore, StoreError, StoreResult, TaskFile};
use crate::wire::Variant;

/// Checks that `store` behaves as an [`ArtifactStore`] must, and panics with a message naming
/// the first behaviour that is missing.
///
/// Every task it writes has a fresh random id, so it may run against a store that already
/// holds data, and several times against the same store.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let store = std::sync::Arc::new(agent_pipeline::store::FileArtifactStore::new(dir.path()));
/// agent_pipeline::conformance::artifact_store(store).await;
/// # Ok(())
/// # }
/// ```
pub async fn artifact_store(store: Arc<dyn ArtifactStore>) {
    a_new_task_has_nothing(store.as_ref()).await;
    the_task_document_is_kept(store.as_ref()).await;
    every_attempt_of_a_step_is_kept(store.as_ref()).await;
    a_redelivered_attempt_replaces_its_own_documents(store.as_ref()).await;
    records_are_kept_beside_the_artifacts(store.as_ref()).await;
    names_that_are_not_plain_documents_are_refused(store.as_ref()).await;
    documents_and_tasks_are_deleted(store.as_ref()).await;
    concurrent_attempts_of_a_step_are_all_kept(store).await;
}

async fn a_new_task_has_nothing(store: &dyn ArtifactStore) {
    let id = TaskId::new();
    assert_eq!(ok(store.read_task(id).await, "read_task"), None);
    assert!(ok(store.documents(id).await, "documents").is_empty());
    assert_eq!(
        ok(store.read_artifact(id, design()).await, "read_artifact"),
        None
    );
    assert_eq!(
        ok(
            store.read_attempt(id, design(), attempt(1)).await,
            "read_attempt"
        ),
        None
    );
    assert_eq!(
        ok(store.read_document(id, "ci.json").await, "read_document"),
        None
    );
    assert!(
        store.task_location(id).contains(&id.to_string()),
        "task_location must name the task: {}",
        store.task_location(id)
    );
    assert!(
        store.location(id, "ci.json").contains("ci.json"),
        "location must name the document: {}",
        store.location(id, "ci.json")
    );
}

async fn the_task_document_is_kept(store: &dyn ArtifactStore) {
    let task = TaskFile {
        task_id: TaskId::new(),
        prompt: "Write a haiku\nabout \"quotes\" and ünïcode".into(),
        created_at: Utc::now().trunc_subsecs(3),
        // Limits and the approval flag set, so that a store dropping them is seen.
        budget: Some(Budget {
            max_tokens: Some(40_000),
            max_cost_usd: Some(0.25),
            max_wall_time_secs: None,
            max_rounds: Some(2),
        }),
        require_approval: true,
        repository: None,
    };
    let location = ok(store.write_task(&task).await, "write_task");
    assert_eq!(location, store.location(task.task_id, "task.json"));
    assert_eq!(
        ok(store.read_task(task.task_id).await, "read_task"),
        Some(task.clone())
    );
    assert_eq!(
        ok(store.documents(task.task_id).await, "documents"),
        ["task.json"]
    );
}

async fn every_attempt_of_a_step_is_kept(store: &dyn ArtifactStore) {
    let id = TaskId::new();
    let first = artifact(id, 1, "first");
    let location = ok(store.write_artifact(&first).await, "write_artifact");
    assert_eq!(location, store.location(id, "design@v1.json"));
    assert_eq!(
        ok(store.documents(id).await, "documents"),
        ["design@v1.json"],
        "a step's only attempt lives in the canonical document alone"
    );
    assert_eq!(
        summary(ok(
            store.read_attempt(id, design(), attempt(1)).await,
            "read_attempt"
        )),
        Some("first".into()),
        "the only attempt is read from the canonical document"
    );

    let second = artifact(id, 2, "second");
    ok(store.write_artifact(&second).await, "write_artifact");
    assert_eq!(
        ok(store.documents(id).await, "documents"),
        [
            "design@v1.attempt1.json",
            "design@v1.attempt2.json",
            "design@v1.json"
        ],
        "a second attempt keeps the first in its own document"
    );
    let canonical = ok(store.read_artifact(id, design()).await, "read_artifact");
    assert_eq!(canonical.as_ref().map(|a| a.attempt), Some(attempt(2)));
    assert_eq!(
        canonical,
        Some(second),
        "an artifact must read back as written"
    );
    for (n, expected) in [(1, "first"), (2, "second")] {
        assert_eq!(
            summary(ok(
                store.read_attempt(id, design(), attempt(n)).await,
                "read_attempt"
            )),
            Some(expected.into()),
            "attempt {n}"
        );
    }
    assert_eq!(
        ok(
            store.read_attempt(id, design(), attempt(3)).await,
            "read_attempt"
        ),
        None,
        "an attempt that never ran has no artifact"
    );

    let task = TaskFile {
        task_id: id,
        prompt: "p".into(),
        created_at: Utc::now().trunc_subsecs(3),
        budget: None,
        require_approval: false,
        repository: None,
    };
    ok(store.write_task(&task).await, "write_task");
    let implement = StepId::v1(Stage::Implement);
    let (read_task, artifacts) = ok(
        store
            .read_task_and_artifacts(id, &[design(), implement])
            .await,
        "read_task_and_artifacts",
    );
    assert_eq!(read_task, Some(task));
    assert_eq!(artifacts.len(), 2);
    assert_eq!(artifacts[0].as_ref().map(|a| a.attempt), Some(attempt(2)));
    assert_eq!(artifacts[1], None, "implement has no artifact");
}

async fn a_redelivered_attempt_replaces_its_own_documents(store: &dyn ArtifactStore) {
    let id = TaskId::new();
    ok(
        store.write_artifact(&artifact(id, 1, "once")).await,
        "write_artifact",
    );
    ok(
        store.write_artifact(&artifact(id, 1, "again")).await,
        "write_artifact",
    );
    assert_eq!(
        ok(store.documents(id).await, "documents"),
        ["design@v1.json"]
    );
    assert_eq!(
        summary(ok(store.read_artifact(id, design()).await, "read_artifact")),
        Some("again".into())
    );

    ok(
        store.write_artifact(&artifact(id, 2, "two")).await,
        "write_artifact",
    );
    ok(
        store.write_artifact(&artifact(id, 2, "two again")).await,
        "write_artifact",
    );
    assert_eq!(
        summary(ok(
            store.read_attempt(id, design(), attempt(1)).await,
            "read_attempt"
        )),
        Some("again".into()),
        "rewriting attempt 2 must not touch attempt 1's document"
    );
    assert_eq!(
        summary(ok(
            store.read_attempt(id, design(), attempt(2)).await,
            "read_attempt"
        )),
        Some("two again".into())
    );
}

async fn records_are_kept_beside_the_artifacts(store: &dyn ArtifactStore) {
    let id = TaskId::new();
    let record =
        json!({ "round": 1, "passed": false, "verdicts": [{ "gate": "tests", "passed": false }] });
    let location = ok(
        store.write_document(id, "gates.round1.json", &record).await,
        "write_document",
    );
    assert_eq!(location, store.location(id, "gates.round1.json"));
    assert_eq!(
        ok(
            store.read_document(id, "gates.round1.json").await,
            "read_document"
        ),
        Some(record)
    );
    let replaced = json!({ "passed": true });
    ok(
        store.write_record(id, "ci.json", &replaced).await,
        "write_record",
    );
    ok(
        store.write_record(id, "ci.json", &replaced).await,
        "write_record",
    );
    let read: Option<Value> = ok(store.read_record(id, "ci.json").await, "read_record");
    assert_eq!(read, Some(replaced));
    assert_eq!(
        ok(store.documents(id).await, "documents"),
        ["ci.json", "gates.round1.json"]
    );
}

async fn names_that_are_not_plain_documents_are_refused(store: &dyn ArtifactStore) {
    let id = TaskId::new();
    for name in [
        "../escape.json",
        "a/b.json",
        "..\\b.json",
        ".hidden.json",
        "notes.txt",
        "",
    ] {
        let written = store.write_document(id, name, &json!({})).await;
        assert!(
            matches!(written, Err(StoreError::InvalidName(_))),
            "write_document({name:?}) must be refused with InvalidName, got {written:?}"
        );
        let read = store.read_document(id, name).await;
        assert!(
            matches!(read, Err(StoreError::InvalidName(_))),
            "read_document({name:?}) must be refused with InvalidName, got {read:?}"
        );
    }
    assert!(
        ok(store.documents(id).await, "documents").is_empty(),
        "a refused name writes nothing"
    );
}

async fn documents_and_tasks_are_deleted(store: &dyn ArtifactStore) {
    let id = TaskId::new();
    let other = TaskId::new();
    for n in 1..=3 {
        ok(
            store.write_artifact(&artifact(id, n, "x")).await,
            "write_artifact",
        );
    }
    ok(
        store.write_artifact(&artifact(other, 1, "kept")).await,
        "write_artifact",
    );
    let deleted = ok(
        store
            .delete_documents(
                id,
                &[
                    "design@v1.attempt1.json".to_owned(),
                    "design@v1.attempt2.json".to_owned(),
                    "never-written.json".to_owned(),
                ],
            )
            .await,
        "delete_documents",
    );
    assert_eq!(
        deleted, 2,
        "delete_documents counts the documents that existed"
    );
    assert_eq!(
        ok(store.documents(id).await, "documents"),
        ["design@v1.attempt3.json", "design@v1.json"]
    );
    ok(store.delete_task(id).await, "delete_task");
    assert!(ok(store.documents(id).await, "documents").is_empty());
    assert_eq!(
        ok(store.read_artifact(id, design()).await, "read_artifact"),
        None
    );
    ok(store.delete_task(id).await, "delete_task of a deleted task");
    assert_eq!(
        summary(ok(
            store.read_artifact(other, design()).await,
            "read_artifact"
        )),
        Some("kept".into()),
        "deleting a task leaves the others alone"
    );
}

async fn concurrent_attempts_of_a_step_are_all_kept(store: Arc<dyn ArtifactStore>) {
    // Nine attempts of a step written at once, in twenty tasks at once.
    let tasks: Vec<TaskId> = (0..20).map(|_| TaskId::new()).collect();
    let mut writers = tokio::task::JoinSet::new();
    for n in 1..=9 {
        for id in &tasks {
            let (store, id) = (store.clone(), *id);
            writers.spawn(async move {
                store
                    .write_artifact(&artifact(id, n, &format!("a{n}")))
                    .await
            });
        }
    }
    while let Some(written) = writers.join_next().await {
        let written = written.unwrap_or_else(|e| panic!("a writer panicked: {e}"));
        ok(written, "write_artifact");
    }
    for id in tasks {
        for n in 1..=9 {
            assert_eq!(
                summary(ok(
                    store.read_attempt(id, design(), attempt(n)).await,
                    "read_attempt"
                )),
                Some(format!("a{n}")),
                "attempt {n} of nine written at once must be kept"
            );
        }
    }
}

fn design() -> StepId {
    StepId::v1(Stage::Design)
}

fn attempt(n: u32) -> Attempt {
    Attempt::new(n).unwrap_or_else(|e| panic!("{e}"))
}

fn artifact(task_id: TaskId, n: u32, text: &str) -> Artifact {
    let Value::Object(output) = json!({ "design_summary": text, "files_touched": ["a.py"] }) else {
        unreachable!("a JSON object literal");
    };
    Artifact {
        output,
        task_id,
        step: design(),
        attempt: attempt(n),
        model: "offline".into(),
        usage: Usage::default(),
        cost_usd: 0.5,
        llm_calls: vec![LlmCall {
            model: "offline".into(),
            provider: None,
            prompt_tokens: 120,
            completion_tokens: 30,
            cost_usd: Some(0.5),
            duration_ms: 7,
            error: None,
        }],
        created_at: Utc::now().trunc_subsecs(3),
        duration_ms: 7,
        replay_reason: (n > 1).then(|| "once more".to_owned()),
        round: 1,
        feedback: None,
        variant: (n > 1).then(|| Variant {
            model: Some("another-model".into()),
            ..Variant::default()
        }),
    }
}

fn summary(artifact: Option<Artifact>) -> Option<String> {
    artifact.and_then(|a| a.output["design_summary"].as_str().map(str::to_owned))
}

/// The value of a store call, or a panic naming the call.
fn ok<T>(result: StoreResult<T>, call: &str) -> T {
    result.unwrap_or_else(|e| panic!("{call} failed: {e}"))
}
