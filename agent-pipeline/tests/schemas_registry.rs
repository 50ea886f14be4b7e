//! The schema registry against serde: a real value of every registered type, with every
//! optional field set and with none, serialised as the pipeline writes it, is valid against
//! its own schema; broken values are not. So schemas and serialisation cannot drift apart.

use std::collections::BTreeMap;

use agent_pipeline::budget::{Budget, TaskBudget};
use agent_pipeline::bus::Topics;
use agent_pipeline::execution::CommitId;
use agent_pipeline::execution::sandbox::RunOutput;
use agent_pipeline::llm::{LlmCall, Spend, Usage};
use agent_pipeline::output::{
    CountedRun, Design, FileContent, Implementation, RepositoryTests, Review, TestPlan, TestReport,
};
use agent_pipeline::schemas::{self, SchemaEntry};
use agent_pipeline::wire::{
    CiWatch, ControlAction, DeadLetter, NewTask, ReplayStep, ReportEvent, ReportStatus, Repository,
    StepMode, StepOutcome, StepRequest, StepResult, StopReason, TaskControl, Variant,
};
use agent_pipeline::{Attempt, Stage, StepId, TaskId};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn value(message: &impl Serialize) -> Value {
    serde_json::to_value(message).unwrap_or_else(|e| panic!("serialisable: {e}"))
}

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-25T11:00:00.123456Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn commit() -> CommitId {
    CommitId::try_from("0123456789abcdef0123456789abcdef01234567".to_owned())
        .unwrap_or_else(|e| panic!("{e}"))
}

fn attempt(n: u32) -> Attempt {
    Attempt::new(n).unwrap_or_else(|e| panic!("{e}"))
}

fn usage() -> Usage {
    Usage {
        prompt_tokens: 120,
        completion_tokens: 30,
        total_tokens: 150,
    }
}

fn calls() -> Vec<LlmCall> {
    vec![
        LlmCall {
            model: "gpt-4o".into(),
            provider: Some("azure".into()),
            prompt_tokens: 120,
            completion_tokens: 30,
            cost_usd: Some(0.0012),
            duration_ms: 900,
            error: None,
        },
        LlmCall {
            model: "gpt-4o".into(),
            provider: None,
            prompt_tokens: 0,
            completion_tokens: 0,
            cost_usd: None,
            duration_ms: 30_000,
            error: Some("timed out".into()),
        },
    ]
}

fn task_budget() -> TaskBudget {
    TaskBudget {
        limits: Budget {
            max_tokens: Some(10_000),
            max_cost_usd: Some(0.5),
            max_wall_time_secs: Some(600),
            max_rounds: Some(3),
        },
        started_at: now(),
        spent: Spend::of(&calls()),
    }
}

fn variant() -> Variant {
    let mut inputs = BTreeMap::new();
    let mut edited = Map::new();
    edited.insert("design_summary".into(), json!("edited"));
    inputs.insert(StepId::v1(Stage::Design), edited);
    let mut pinned = BTreeMap::new();
    pinned.insert(StepId::v1(Stage::Implement), attempt(2));
    Variant {
        model: Some("gpt-4o-mini".into()),
        provider: Some("local".into()),
        prompt: Some("Write hello.py, in French".into()),
        inputs,
        pinned,
        continue_downstream: true,
    }
}

fn full_request(task_id: TaskId) -> StepRequest {
    StepRequest {
        task_id,
        step_id: StepId::v1(Stage::Test),
        attempt: attempt(3),
        try_number: 2,
        mode: StepMode::Replay,
        round: 2,
        reason: Some("the gates failed".into()),
        not_before: Some(now()),
        requested_at: now(),
        budget: Some(task_budget()),
        require_approval: true,
        variant: Some(variant()),
    }
}

/// A request with only what every request has: the first request of a new task.
fn minimal_request(task_id: TaskId) -> StepRequest {
    agent_pipeline::machine::first_request(task_id, now())
}

fn run() -> RunOutput {
    RunOutput {
        sandbox: "bubblewrap".into(),
        command: "python3 -m unittest -v".into(),
        exit_code: Some(0),
        timed_out: false,
        duration_ms: 312,
        output: "Ran 1 test\n\nOK\n".into(),
        output_omitted_bytes: 0,
    }
}

/// Real values of every registered type, by schema name: every optional field set, and none.
fn samples() -> Vec<(&'static str, Value)> {
    let task_id = TaskId::new();
    let replay = ReplayStep {
        model: Some("gpt-4o".into()),
        provider: Some("local".into()),
        prompt: Some("edited".into()),
        inputs: variant().inputs,
        continue_downstream: true,
        ..ReplayStep::new(task_id, StepId::v1(Stage::Test), Some("flaky".into()))
    };
    let control = TaskControl {
        by: Some("ada".into()),
        comment: Some("ship it".into()),
        ..TaskControl::new(ControlAction::Approve, task_id)
    };
    let outcomes = [
        StepOutcome::Succeeded {
            output: value(&Design {
                design_summary: "One file.".into(),
                files_touched: vec!["hello.py".into()],
            }),
            model: "offline".into(),
            usage: usage(),
        },
        StepOutcome::Failed {
            error: "boom".into(),
            retryable: true,
        },
        StepOutcome::Stopped {
            cause: StopReason::BudgetExceeded,
            detail: "the task spent 10001 tokens of its budget of 10000".into(),
        },
    ];
    let mut full_report = ReportEvent::new(task_id, ReportStatus::Pr, "Published", now())
        .for_step(StepId::v1(Stage::Review), attempt(2))
        .with_detail("branch", format!("agent/{task_id}"))
        .with_detail("later_field", json!({"nested": [1, 2]}));
    full_report.duration_ms = Some(1200);
    full_report.model = Some("gpt-4o".into());
    full_report.usage = Some(usage());
    full_report.cost_usd = Some(0.0012);
    full_report.task_spend = Some(Spend::of(&calls()));
    full_report.reason = Some("budget_exceeded".into());
    let file = FileContent {
        path: "hello.py".into(),
        content: "print('Hello Earthling')\n".into(),
    };
    let test_report = TestReport {
        tests_added: 2,
        passed: 1,
        failed: 1,
        errors: 1,
        skipped: 0,
        counted_from: Some("junit".into()),
        summary: "Checks the greeting.".into(),
        test_files: vec!["test_hello.py".into()],
        commit: Some(commit()),
        run: run(),
        repository_tests: Some(RepositoryTests {
            command: "python3 -m unittest discover -v".into(),
            before: CountedRun {
                passed: 0,
                failed: 1,
                skipped: 0,
                counted_from: Some("unittest".into()),
                run: run(),
            },
            after: CountedRun {
                passed: 1,
                failed: 0,
                skipped: 0,
                counted_from: None,
                run: run(),
            },
            before_reused: true,
        }),
    };
    let killed = TestReport {
        counted_from: None,
        commit: None,
        repository_tests: None,
        run: RunOutput {
            exit_code: None,
            timed_out: true,
            ..run()
        },
        ..test_report.clone()
    };

    let mut samples = vec![
        ("new_task", value(&NewTask::new("Write hello.py"))),
        (
            "new_task",
            value(
                &NewTask::new("Write hello.py")
                    .with_budget(task_budget().limits)
                    .with_approval(true)
                    .on_repository(
                        Repository::new("https://example.com/shop.git")
                            .at("main")
                            .with_test_command("make test"),
                    ),
            ),
        ),
        (
            "replay_step",
            value(&ReplayStep::new(task_id, StepId::v1(Stage::Design), None)),
        ),
        ("replay_step", value(&replay)),
        (
            "task_control",
            value(&TaskControl::new(ControlAction::Cancel, task_id)),
        ),
        ("task_control", value(&control)),
        ("step_request", value(&full_request(task_id))),
        ("step_request", value(&minimal_request(task_id))),
        (
            "report_event",
            value(&ReportEvent::new(
                task_id,
                ReportStatus::Received,
                "Received",
                now(),
            )),
        ),
        ("report_event", value(&full_report)),
        (
            "report_event",
            value(&ReportEvent::new(
                task_id,
                ReportStatus::Other("paused".into()),
                "A status of a later version",
                now(),
            )),
        ),
        (
            "ci_watch",
            value(&CiWatch {
                task_id,
                branch: format!("agent/{task_id}"),
                commit: "89abcdef".into(),
                source_commit: commit(),
                url: Some("https://example.invalid/pull/1".into()),
                requested_at: now(),
            }),
        ),
        (
            "dead_letter",
            value(&DeadLetter {
                reason: "not valid JSON".into(),
                source_topic: "agent_tasks".into(),
                key: Some(task_id.to_string()),
                payload: "{not json".into(),
                task_id: Some(task_id.to_string()),
                step_id: Some("design@v1".into()),
                attempt: Some(3),
                failed_at: now(),
            }),
        ),
        (
            "dead_letter",
            value(&DeadLetter {
                reason: "not valid JSON".into(),
                source_topic: "agent_tasks".into(),
                key: None,
                payload: "{not json".into(),
                task_id: None,
                step_id: None,
                attempt: None,
                failed_at: now(),
            }),
        ),
        (
            "design",
            value(&Design {
                design_summary: "One file.".into(),
                files_touched: vec!["hello.py".into()],
            }),
        ),
        (
            "implementation",
            value(&Implementation {
                diff_summary: "Adds hello.py.".into(),
                code_snippets: vec!["print('Hello Earthling')".into()],
                files: vec![file.clone()],
                deleted_files: vec!["old.py".into()],
            }),
        ),
        (
            "test_plan",
            value(&TestPlan {
                summary: "Checks the greeting.".into(),
                test_files: vec![file.clone()],
                command: "python3 -m unittest -v".into(),
                junit_xml: Some("report.xml".into()),
            }),
        ),
        (
            "test_plan",
            value(&TestPlan {
                summary: "s".into(),
                test_files: vec![file],
                command: "pytest".into(),
                junit_xml: None,
            }),
        ),
        ("test_report", value(&test_report)),
        ("test_report", value(&killed)),
        (
            "review",
            value(&Review {
                approved: false,
                comments: vec!["Add a docstring.".into()],
            }),
        ),
    ];
    for outcome in outcomes {
        for request in [full_request(task_id), minimal_request(task_id)] {
            let result = StepResult::of(&request, outcome.clone(), calls(), now(), 42);
            samples.push(("step_result", value(&result)));
        }
    }
    samples
}

fn validator(entry: &SchemaEntry) -> jsonschema::Validator {
    jsonschema::options()
        .should_validate_formats(true)
        .build(&entry.schema)
        .unwrap_or_else(|e| panic!("{}: not a valid JSON Schema: {e}", entry.name))
}

fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect()
}

#[test]
fn every_registered_type_serialises_to_values_valid_against_its_schema() {
    let registry = schemas::registry(&Topics::default());
    let samples = samples();
    for entry in &registry {
        let validator = validator(entry);
        let mine: Vec<&Value> = samples
            .iter()
            .filter(|(name, _)| *name == entry.name)
            .map(|(_, value)| value)
            .collect();
        assert!(!mine.is_empty(), "no sample of {}", entry.name);
        for instance in mine {
            let problems = errors(&validator, instance);
            assert!(
                problems.is_empty(),
                "{} {instance}: {problems:?}",
                entry.name
            );
        }
    }
    for (name, _) in &samples {
        assert!(
            registry.iter().any(|e| e.name == *name),
            "{name} is not registered"
        );
    }
}

/// The schemas are not vacuous: the mistakes a foreign producer could make are refused.
#[test]
fn broken_messages_are_invalid_against_their_schema() -> TestResult {
    let topics = Topics::default();
    let task_id = TaskId::new().to_string();
    let cases = [
        ("new_task", json!({"task_id": "../../etc", "prompt": "x"})),
        ("new_task", json!({"task_id": task_id})),
        (
            "new_task",
            json!({"action": "replay_step", "task_id": task_id, "prompt": "x"}),
        ),
        (
            "replay_step",
            json!({"action": "delete", "task_id": task_id, "step_id": "design@v1"}),
        ),
        (
            "replay_step",
            json!({"action": "replay_step", "task_id": task_id, "step_id": "deploy@v1"}),
        ),
        (
            "task_control",
            json!({"action": "pause", "task_id": task_id}),
        ),
        (
            "step_request",
            json!({"task_id": task_id, "step_id": "design@v1", "attempt": 0,
                   "requested_at": "2026-11-25T11:00:00Z"}),
        ),
        (
            "step_request",
            json!({"task_id": task_id, "step_id": "design@v1", "attempt": 1,
                   "requested_at": "yesterday"}),
        ),
        (
            "step_result",
            json!({"task_id": task_id, "step_id": "design@v1", "attempt": 1,
                   "status": "exploded", "started_at": "2026-11-25T11:00:00Z",
                   "duration_ms": 1}),
        ),
        (
            "step_result",
            json!({"task_id": task_id, "step_id": "design@v1", "attempt": 1,
                   "status": "failed", "retryable": true,
                   "started_at": "2026-11-25T11:00:00Z", "duration_ms": 1}),
        ),
        (
            "report_event",
            json!({"task_id": task_id, "status": 7, "summary": "x",
                   "timestamp": "2026-11-25T11:00:00Z"}),
        ),
        (
            "ci_watch",
            json!({"task_id": task_id, "branch": "b", "commit": "c", "source_commit": "xyz",
                   "requested_at": "2026-11-25T11:00:00Z"}),
        ),
        (
            "dead_letter",
            json!({"reason": "r", "source_topic": "t", "payload": "p"}),
        ),
        (
            "design",
            json!({"design_summary": "x", "files_touched": "hello.py"}),
        ),
        (
            "implementation",
            json!({"diff_summary": "x", "code_snippets": []}),
        ),
        (
            "test_plan",
            json!({"summary": "x", "test_files": [], "command": 1}),
        ),
        (
            "test_report",
            json!({"tests_added": -1, "passed": 0, "failed": 0, "run": {}}),
        ),
        ("review", json!({"approved": "yes", "comments": []})),
    ];
    for (name, instance) in cases {
        let entry = schemas::find(&topics, name)?;
        assert!(
            !validator(&entry).is_valid(&instance),
            "{name} accepts {instance}"
        );
    }
    Ok(())
}

#[test]
fn every_message_and_stage_output_is_registered_once_with_its_topic() -> TestResult {
    let topics = Topics::default().with_prefix("t1_");
    let registry = schemas::registry(&topics);
    let carried: Vec<(&str, &str)> = registry
        .iter()
        .map(|e| (e.name, e.topic.as_str()))
        .collect();
    assert_eq!(
        carried,
        [
            ("new_task", "t1_agent_tasks"),
            ("replay_step", "t1_agent_tasks"),
            ("task_control", "t1_agent_tasks"),
            ("step_request", "t1_step_requests"),
            ("step_result", "t1_step_results"),
            ("report_event", "t1_agent_reports"),
            ("ci_watch", "t1_ci_watch"),
            ("dead_letter", "t1_agent_dlq"),
            ("design", "artifact"),
            ("implementation", "artifact"),
            ("test_plan", "model_output"),
            ("test_report", "artifact"),
            ("review", "artifact"),
        ]
    );
    let design = schemas::find(&topics, "design")?;
    assert_eq!(design.file, Some("<task_id>/design@v<N>.json"));
    let unknown = schemas::find(&topics, "step_results").err();
    let message = unknown.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("unknown schema \"step_results\"") && message.contains("step_result,"),
        "{message}"
    );
    Ok(())
}

/// The version is the content hash: equal schemas share it, and every schema has its own.
#[test]
fn versions_are_content_hashes_that_differ_between_schemas() {
    let registry = schemas::registry(&Topics::default());
    let again = schemas::registry(&Topics::default().with_prefix("other_"));
    let mut versions: Vec<&str> = registry.iter().map(|e| e.version.as_str()).collect();
    for (entry, same) in registry.iter().zip(&again) {
        assert_eq!(entry.version, same.version, "{}", entry.name);
        assert_eq!(entry.version, schemas::version_of(&entry.schema));
        assert_eq!(entry.version.len(), 12);
        assert!(entry.version.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    versions.sort_unstable();
    versions.dedup();
    assert_eq!(versions.len(), registry.len());
    let mut changed = registry[0].schema.clone();
    changed["properties"]["prompt"]["description"] = json!("another description");
    assert_ne!(schemas::version_of(&changed), registry[0].version);
}
