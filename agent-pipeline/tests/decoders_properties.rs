//! Property tests of every decoder of the wire and of the ids: whatever the input, a decoder
//! answers with a valid value or an error that says what is wrong, and never panics; and what
//! is encoded decodes to the same value.
//!
//! Each property runs 256 cases unless `PROPTEST_CASES` says otherwise.

use std::collections::BTreeMap;
use std::str::FromStr;

use agent_pipeline::budget::{Budget, TaskBudget};
use agent_pipeline::execution::CommitId;
use agent_pipeline::llm::{LlmCall, LlmSettings, ServerLimits, Spend, Usage, parse_duration};
use agent_pipeline::wire::{
    self, CiWatch, ControlAction, DeadLetter, NewTask, ReplayStep, ReportEvent, ReportStatus,
    Repository, StepMode, StepOutcome, StepRequest, StepResult, StopReason, TaskCommand,
    TaskControl, Variant,
};
use agent_pipeline::{Attempt, Stage, StepId, TaskId};
use chrono::{DateTime, Utc};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// 256 cases per property, or `PROPTEST_CASES`.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        // A failure prints its minimal input; nothing is written into the source tree.
        failure_persistence: None,
        ..ProptestConfig::with_cases(cases)
    }
}

/// The field names of every wire message, so that generated objects often hit real fields.
const FIELDS: &[&str] = &[
    "task_id",
    "prompt",
    "budget",
    "require_approval",
    "action",
    "step_id",
    "reason",
    "model",
    "provider",
    "inputs",
    "continue_downstream",
    "by",
    "comment",
    "max_tokens",
    "max_cost_usd",
    "max_wall_time_secs",
    "max_rounds",
    "attempt",
    "try_number",
    "mode",
    "round",
    "not_before",
    "requested_at",
    "variant",
    "pinned",
    "limits",
    "started_at",
    "spent",
    "status",
    "output",
    "usage",
    "error",
    "retryable",
    "cause",
    "detail",
    "duration_ms",
    "calls",
    "stage",
    "summary",
    "timestamp",
    "cost_usd",
    "task_spend",
    "source_topic",
    "key",
    "payload",
    "failed_at",
    "branch",
    "commit",
    "source_commit",
    "url",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "unpriced_tokens",
    "unpriced_calls",
];

/// Strings that mean something to some decoder, so that generated messages are often valid.
const MEANINGFUL: &[&str] = &[
    "3f0c8a52-6a3e-4c1e-9d1e-5b8f2f6f4a10",
    "3F0C8A52-6A3E-4C1E-9D1E-5B8F2F6F4A10",
    "design@v1",
    "implement@v1",
    "test@v1",
    "review@v2",
    "deploy@v1",
    "design@v0",
    "replay_step",
    "approve",
    "reject",
    "cancel",
    "run",
    "replay",
    "succeeded",
    "failed",
    "stopped",
    "budget_exceeded",
    "cancelled",
    "stage_done",
    "done",
    "2026-01-01T00:00:00Z",
    "2026-13-01T00:00:00Z",
    "0123456789abcdef0123456789abcdef01234567",
    "",
    " ",
    "../../etc/passwd",
    "\u{202e}",
];

/// A JSON number that survives a trip through serde_json's text exactly.
fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (any::<i32>(), 0..4_i32)
            .prop_map(|(n, places)| Value::from(f64::from(n) / 10_f64.powi(places))),
    ]
}

/// A string leaf: usually a meaningful one, else anything.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(MEANINGFUL).prop_map(str::to_owned),
        2 => any::<String>(),
    ]
}

/// An object key: usually a real field name.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(FIELDS).prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

/// Any JSON value, up to a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A JSON object with real field names (the shape of every message), its values any JSON.
fn message() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::collection::btree_map(key(), json(), 0..10)
            .prop_map(|map| Value::Object(map.into_iter().collect())),
        1 => json(),
    ]
}

/// A valid message with a few fields taken out or set to any JSON, so that decoders meet
/// messages that are almost right.
fn mutated<T: serde::Serialize + std::fmt::Debug>(
    valid: impl Strategy<Value = T>,
) -> impl Strategy<Value = Value> {
    let edit = (
        any::<prop::sample::Index>(),
        key(),
        prop::option::of(json()),
    );
    (valid, prop::collection::vec(edit, 1..4)).prop_map(|(valid, edits)| {
        let mut value = serde_json::to_value(&valid).unwrap_or_default();
        if let Value::Object(object) = &mut value {
            for (at, key, replacement) in edits {
                match replacement {
                    Some(replacement) => {
                        object.insert(key, replacement);
                    }
                    None if !object.is_empty() => {
                        let name = object.keys().nth(at.index(object.len())).cloned();
                        if let Some(name) = name {
                            object.remove(&name);
                        }
                    }
                    None => {}
                }
            }
        }
        value
    })
}

/// Any bytes: mostly noise, sometimes the start of a JSON object.
fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        (
            message(),
            prop::collection::vec(any::<u8>(), 0..8),
            any::<prop::sample::Index>()
        )
            .prop_map(|(value, noise, at)| {
                // A valid message cut short or with noise spliced in.
                let mut bytes = wire::encode(&value);
                let at = at.index(bytes.len() + 1);
                bytes.truncate(at);
                bytes.extend(noise);
                bytes
            }),
    ]
}

fn task_id() -> impl Strategy<Value = TaskId> {
    any::<u128>().prop_map(|n| TaskId::from(uuid::Uuid::from_u128(n)))
}

fn stage() -> impl Strategy<Value = Stage> {
    prop::sample::select(Stage::ALL.to_vec())
}

fn step_id() -> impl Strategy<Value = StepId> {
    (stage(), 1..=u32::MAX).prop_map(|(stage, version)| {
        StepId::from_str(&format!("{stage}@v{version}")).unwrap_or_else(|e| panic!("{e}"))
    })
}

fn attempt() -> impl Strategy<Value = Attempt> {
    (1..=u32::MAX).prop_map(|n| Attempt::new(n).unwrap_or(Attempt::FIRST))
}

/// A string with something in it other than white space.
fn non_blank() -> impl Strategy<Value = String> {
    (any::<String>(), "[a-zA-Z0-9]").prop_map(|(text, core)| format!("{text}{core}"))
}

/// US dollars with at most two decimals (exact through JSON text).
fn dollars() -> impl Strategy<Value = f64> {
    (0..10_000_000_u32).prop_map(|cents| f64::from(cents) / 100.0)
}

fn time() -> impl Strategy<Value = DateTime<Utc>> {
    (0..4_102_444_800_i64, 0..1_000_000_000_u32)
        .prop_map(|(secs, nanos)| DateTime::from_timestamp(secs, nanos).unwrap_or_default())
}

fn budget() -> impl Strategy<Value = Budget> {
    (
        prop::option::of(any::<u64>()),
        prop::option::of(dollars()),
        prop::option::of(any::<u64>()),
        prop::option::of(1..=u32::MAX),
    )
        .prop_map(
            |(max_tokens, max_cost_usd, max_wall_time_secs, max_rounds)| Budget {
                max_tokens,
                max_cost_usd,
                max_wall_time_secs,
                max_rounds,
            },
        )
}

fn usage() -> impl Strategy<Value = Usage> {
    (any::<u32>(), any::<u32>()).prop_map(|(prompt, completion)| Usage {
        prompt_tokens: prompt.into(),
        completion_tokens: completion.into(),
        total_tokens: u64::from(prompt) + u64::from(completion),
    })
}

fn task_budget() -> impl Strategy<Value = TaskBudget> {
    (
        budget(),
        time(),
        usage(),
        dollars(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(limits, started_at, usage, cost_usd, calls, unpriced)| TaskBudget {
                limits,
                started_at,
                spent: Spend {
                    usage,
                    cost_usd,
                    calls: calls.into(),
                    unpriced_calls: unpriced.into(),
                },
            },
        )
}

/// Edited outputs of upstream steps: objects of any JSON.
fn edited_output() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(key(), json(), 0..4).prop_map(|map| map.into_iter().collect())
}

fn variant() -> impl Strategy<Value = Variant> {
    (
        prop::option::of(non_blank()),
        prop::option::of(non_blank()),
        prop::option::of(non_blank()),
        prop::collection::btree_map(step_id(), edited_output(), 0..3),
        prop::collection::btree_map(step_id(), attempt(), 0..3),
        any::<bool>(),
    )
        .prop_map(
            |(model, provider, prompt, inputs, pinned, continue_downstream)| Variant {
                model,
                provider,
                prompt,
                inputs,
                pinned,
                continue_downstream,
            },
        )
}

fn step_request() -> impl Strategy<Value = StepRequest> {
    (
        (task_id(), step_id(), attempt(), any::<u32>(), any::<bool>()),
        (any::<u32>(), prop::option::of(any::<String>())),
        (prop::option::of(time()), time()),
        (prop::option::of(task_budget()), any::<bool>()),
        prop::option::of(variant()),
    )
        .prop_map(
            |(
                (task_id, step_id, attempt, try_number, replay),
                (round, reason),
                (not_before, requested_at),
                (budget, require_approval),
                variant,
            )| StepRequest {
                task_id,
                step_id,
                attempt,
                try_number,
                mode: if replay {
                    StepMode::Replay
                } else {
                    StepMode::Run
                },
                round,
                reason,
                not_before,
                requested_at,
                budget,
                require_approval,
                variant,
            },
        )
}

fn outcome() -> impl Strategy<Value = StepOutcome> {
    prop_oneof![
        (edited_output(), any::<String>(), usage()).prop_map(|(output, model, usage)| {
            StepOutcome::Succeeded {
                output: Value::Object(output),
                model,
                usage,
            }
        }),
        (any::<String>(), any::<bool>())
            .prop_map(|(error, retryable)| StepOutcome::Failed { error, retryable }),
        (any::<bool>(), any::<String>()).prop_map(|(budget, detail)| StepOutcome::Stopped {
            cause: if budget {
                StopReason::BudgetExceeded
            } else {
                StopReason::Cancelled
            },
            detail,
        }),
    ]
}

fn llm_call() -> impl Strategy<Value = LlmCall> {
    (
        any::<String>(),
        prop::option::of(any::<String>()),
        (any::<u64>(), any::<u64>()),
        prop::option::of(dollars()),
        any::<u64>(),
        prop::option::of(any::<String>()),
    )
        .prop_map(
            |(
                model,
                provider,
                (prompt_tokens, completion_tokens),
                cost_usd,
                duration_ms,
                error,
            )| {
                LlmCall {
                    model,
                    provider,
                    prompt_tokens,
                    completion_tokens,
                    cost_usd,
                    duration_ms,
                    error,
                }
            },
        )
}

fn step_result() -> impl Strategy<Value = StepResult> {
    (
        step_request(),
        outcome(),
        prop::collection::vec(llm_call(), 0..3),
        time(),
        any::<u64>(),
    )
        .prop_map(|(request, outcome, calls, started_at, duration_ms)| {
            StepResult::of(&request, outcome, calls, started_at, duration_ms)
        })
}

/// The statuses this version knows, by their wire names.
const STATUSES: &[&str] = &[
    "received",
    "stage_done",
    "done",
    "error",
    "replayed",
    "pr",
    "ci",
    "retry",
    "dlq",
    "gates",
    "awaiting_approval",
    "approved",
];

fn report_event() -> impl Strategy<Value = ReportEvent> {
    let status = prop_oneof![
        prop::sample::select(STATUSES).prop_map(|name| {
            wire::decode::<ReportStatus>(&wire::encode(&name)).unwrap_or(ReportStatus::Done)
        }),
        // Unknown statuses are kept as written; a prefix keeps them apart from known ones.
        any::<String>().prop_map(|name| ReportStatus::Other(format!("later-{name}"))),
    ];
    (
        (task_id(), status, any::<String>(), time()),
        prop::option::of((step_id(), attempt())),
        (
            prop::option::of(any::<u64>()),
            prop::option::of(any::<String>()),
            prop::option::of(usage()),
            prop::option::of(dollars()),
            prop::option::of(any::<String>()),
        ),
        // Detail names apart from the event's own fields, as the writers choose them.
        prop::collection::btree_map("detail_[a-z_]{0,8}", json(), 0..4),
    )
        .prop_map(
            |(
                (task_id, status, summary, timestamp),
                step,
                (duration_ms, model, usage, cost_usd, reason),
                details,
            )| {
                let mut event = ReportEvent::new(task_id, status, summary, timestamp);
                if let Some((step_id, attempt)) = step {
                    event = event.for_step(step_id, attempt);
                }
                event.duration_ms = duration_ms;
                event.model = model;
                event.usage = usage;
                event.cost_usd = cost_usd;
                event.reason = reason;
                for (name, value) in details {
                    event = event.with_detail(&name, value);
                }
                event
            },
        )
}

fn dead_letter() -> impl Strategy<Value = DeadLetter> {
    (
        (
            any::<String>(),
            any::<String>(),
            prop::option::of(any::<String>()),
        ),
        any::<String>(),
        (
            prop::option::of(any::<String>()),
            prop::option::of(any::<String>()),
            prop::option::of(any::<u32>()),
        ),
        time(),
    )
        .prop_map(
            |((reason, source_topic, key), payload, (task_id, step_id, attempt), failed_at)| {
                DeadLetter {
                    reason,
                    source_topic,
                    key,
                    payload,
                    task_id,
                    step_id,
                    attempt,
                    failed_at,
                }
            },
        )
}

fn ci_watch() -> impl Strategy<Value = CiWatch> {
    (
        task_id(),
        any::<String>(),
        any::<String>(),
        "[0-9a-f]{40}",
        prop::option::of(any::<String>()),
        time(),
    )
        .prop_map(
            |(task_id, branch, commit, source, url, requested_at)| CiWatch {
                task_id,
                branch,
                commit,
                source_commit: CommitId::try_from(source)
                    .unwrap_or_else(|problem| panic!("{problem}")),
                url,
                requested_at,
            },
        )
}

fn new_task() -> impl Strategy<Value = NewTask> {
    (
        task_id(),
        non_blank(),
        prop::option::of(budget()),
        prop::option::of(any::<bool>()),
        prop::option::of(repository()),
    )
        .prop_map(
            |(task_id, prompt, budget, require_approval, repository)| NewTask {
                task_id,
                prompt,
                budget,
                require_approval,
                repository,
            },
        )
}

/// Repositories that a task message may name: paths and URLs of the known transports, with
/// or without a base ref and a test command.
fn repository() -> impl Strategy<Value = Repository> {
    (
        prop_oneof![
            "(/[a-z0-9_]{1,8}){1,3}",
            "https://example\\.com/[a-z]{1,8}\\.git",
            "git@example\\.com:[a-z]{1,8}/[a-z]{1,8}\\.git",
        ],
        prop::option::of("[a-z][a-z0-9_]{0,10}(/[a-z0-9]{1,5})?"),
        prop::option::of(non_blank()),
        any::<bool>(),
    )
        .prop_map(|(url, base_ref, test_command, push)| Repository {
            url,
            base_ref,
            test_command,
            push,
        })
}

fn replay_step() -> impl Strategy<Value = ReplayStep> {
    (
        (task_id(), step_id(), prop::option::of(any::<String>())),
        (
            prop::option::of(non_blank()),
            prop::option::of(non_blank()),
            prop::option::of(non_blank()),
        ),
        prop::collection::vec(edited_output(), 0..4),
        any::<bool>(),
    )
        .prop_map(
            |((task_id, step_id, reason), (model, provider, prompt), outputs, downstream)| {
                let mut replay = ReplayStep::new(task_id, step_id, reason);
                replay.model = model;
                replay.provider = provider;
                replay.prompt = prompt;
                // Only the steps upstream of the replayed one may be edited.
                replay.inputs = step_id
                    .stage()
                    .earlier()
                    .iter()
                    .zip(outputs)
                    .map(|(stage, output)| (StepId::v1(*stage), output))
                    .collect::<BTreeMap<_, _>>();
                replay.continue_downstream = downstream;
                replay
            },
        )
}

fn task_control() -> impl Strategy<Value = TaskControl> {
    (
        prop::sample::select(vec![
            ControlAction::Approve,
            ControlAction::Reject,
            ControlAction::Cancel,
        ]),
        task_id(),
        prop::option::of(any::<String>()),
        prop::option::of(any::<String>()),
    )
        .prop_map(|(action, task_id, by, comment)| TaskControl {
            action,
            task_id,
            by,
            comment,
        })
}

fn task_command() -> impl Strategy<Value = TaskCommand> {
    prop_oneof![
        new_task().prop_map(TaskCommand::New),
        replay_step().prop_map(TaskCommand::Replay),
        task_control().prop_map(TaskCommand::Control),
    ]
}

/// The bytes of a command as a client sends them.
fn encode_command(command: &TaskCommand) -> Vec<u8> {
    match command {
        TaskCommand::New(task) => wire::encode(task),
        TaskCommand::Replay(replay) => wire::encode(replay),
        TaskCommand::Control(control) => wire::encode(control),
    }
}

/// What a decoded command promises: it was checked, and it decodes again to itself.
fn check_command(command: &TaskCommand) -> Result<(), TestCaseError> {
    match command {
        TaskCommand::New(task) => {
            prop_assert!(!task.prompt.trim().is_empty(), "blank prompt accepted");
            if let Some(budget) = &task.budget {
                prop_assert_eq!(budget.check(), Ok(()));
            }
        }
        TaskCommand::Replay(replay) => {
            prop_assert_eq!(replay.check(), Ok(()));
            prop_assert_eq!(replay.action.as_str(), ReplayStep::ACTION);
        }
        TaskCommand::Control(_) => {}
    }
    let again = TaskCommand::decode(&encode_command(command));
    prop_assert_eq!(again.as_ref(), Ok(command));
    Ok(())
}

/// What a refused command promises: a reason that says which kind of problem it is.
fn check_refusal(payload: &[u8], reason: &str) -> Result<(), TestCaseError> {
    prop_assert!(!reason.trim().is_empty(), "empty reason");
    let expected = match serde_json::from_slice::<Value>(payload) {
        Err(_) => &["not valid JSON"][..],
        Ok(Value::Object(_)) => &[
            "invalid task message: ",
            "invalid replay: ",
            "unknown action",
        ][..],
        Ok(_) => &["not a JSON object"][..],
    };
    prop_assert!(
        expected.iter().any(|start| reason.starts_with(start)),
        "{reason:?} should start with one of {expected:?}"
    );
    Ok(())
}

/// Task ids that are not UUIDs: a UUID with a hostile character put in or in place of one, a
/// UUID inside a path, other spellings of a UUID, and any text of another length.
fn not_a_uuid() -> impl Strategy<Value = String> {
    const HOSTILE: &[&str] = &[
        "/",
        "\\",
        ".",
        "../",
        "\0",
        " ",
        "\n",
        "g",
        "z",
        "-",
        "+",
        "%2e",
        "\u{202e}",
        "\u{200b}",
        "\u{feff}",
        "\u{ff10}",
        "\u{ff41}",
        "\u{ff0d}",
        "\u{0430}",
        "\u{2010}",
        "\u{00e9}",
        "\u{1f600}",
    ];
    let uuid = any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).hyphenated().to_string());
    prop_oneof![
        (
            uuid.clone(),
            prop::sample::select(HOSTILE),
            any::<prop::sample::Index>(),
            any::<bool>(),
        )
            .prop_filter_map("no change", |(id, bad, at, replace)| {
                let at = at.index(id.len());
                let kept = if replace { at + 1 } else { at };
                let spoiled = format!("{}{bad}{}", &id[..at], &id[kept..]);
                (spoiled != id).then_some(spoiled)
            }),
        (uuid.clone(), prop::sample::select(HOSTILE))
            .prop_map(|(id, bad)| format!("{bad}{id}{bad}")),
        uuid.clone().prop_map(|id| format!("../../{id}")),
        uuid.clone().prop_map(|id| format!("{id}/../../etc/passwd")),
        // The same digits in their fullwidth forms.
        uuid.clone().prop_map(|id| id
            .chars()
            .map(|c| match c {
                '0'..='9' => char::from_u32(0xff10 + (c as u32 - '0' as u32)).unwrap_or(c),
                'a'..='f' => char::from_u32(0xff41 + (c as u32 - 'a' as u32)).unwrap_or(c),
                other => other,
            })
            .collect()),
        uuid.clone().prop_map(|id| id.replace('-', "")),
        uuid.clone().prop_map(|id| format!("{{{id}}}")),
        uuid.prop_map(|id| format!("urn:uuid:{id}")),
        any::<String>().prop_filter("36 bytes", |text| text.len() != 36),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Any bytes on the task topic: a checked command or a reason of the right kind.
    #[test]
    fn task_commands_decode_any_bytes_to_a_command_or_a_reason(payload in bytes()) {
        match TaskCommand::decode(&payload) {
            Ok(command) => check_command(&command)?,
            Err(error) => check_refusal(&payload, &error.reason)?,
        }
    }

    /// Any JSON on the task topic: a checked command or a reason of the right kind.
    #[test]
    fn task_commands_decode_any_json_to_a_command_or_a_reason(
        value in prop_oneof![message(), task_command().prop_map(|c| serde_json::from_slice::<Value>(&encode_command(&c)).unwrap_or_default()).prop_flat_map(|v| mutated(Just(v)))],
    ) {
        let payload = wire::encode(&value);
        match TaskCommand::decode(&payload) {
            Ok(command) => check_command(&command)?,
            Err(error) => check_refusal(&payload, &error.reason)?,
        }
    }

    /// Every valid command decodes to itself.
    #[test]
    fn valid_task_commands_round_trip(command in task_command()) {
        prop_assert_eq!(TaskCommand::decode(&encode_command(&command)), Ok(command));
    }

    /// A task id that is not a UUID is refused, whatever the command.
    #[test]
    fn task_ids_that_are_not_uuids_are_refused(
        id in not_a_uuid(),
        command in task_command(),
    ) {
        let mut value: Value = serde_json::from_slice(&encode_command(&command))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        value["task_id"] = Value::String(id.clone());
        let refused = TaskCommand::decode(&wire::encode(&value));
        prop_assert!(
            refused.as_ref().is_err_and(|e| e.reason.contains("not a UUID")),
            "{id:?}: {refused:?}"
        );
        prop_assert!(id.parse::<TaskId>().is_err());
    }

    /// Negative costs and zero rounds are refused as a budget problem.
    #[test]
    fn bad_task_budgets_are_refused_with_a_budget_reason(
        task in new_task(),
        cost in prop_oneof![
            (1..u32::MAX).prop_map(|cents| -f64::from(cents) / 100.0),
            Just(-f64::MIN_POSITIVE),
            Just(-1e300),
        ],
        zero_rounds in any::<bool>(),
    ) {
        let budget = if zero_rounds {
            Budget { max_rounds: Some(0), ..task.budget.unwrap_or_default() }
        } else {
            Budget { max_cost_usd: Some(cost), ..task.budget.unwrap_or_default() }
        };
        let task = task.with_budget(budget);
        let refused = TaskCommand::decode(&wire::encode(&task));
        let expected = if zero_rounds { "budget: max_rounds" } else { "budget: max_cost_usd" };
        prop_assert!(
            refused.as_ref().is_err_and(|e| e.reason.contains(expected)),
            "{budget:?}: {refused:?}"
        );
    }

    /// Any limits, NaN and infinities included: accepted exactly when they can be used.
    #[test]
    fn budget_check_accepts_only_usable_limits(
        cost in prop::option::of(prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(-0.0),
        ]),
        rounds in prop::option::of(prop_oneof![Just(0_u32), any::<u32>()]),
        tokens in prop::option::of(any::<u64>()),
    ) {
        let budget = Budget {
            max_tokens: tokens,
            max_cost_usd: cost,
            max_wall_time_secs: None,
            max_rounds: rounds,
        };
        let bad_cost = cost.is_some_and(|usd| !usd.is_finite() || usd < 0.0);
        match budget.check() {
            Ok(()) => prop_assert!(!bad_cost && rounds != Some(0), "{budget:?} accepted"),
            Err(problem) if bad_cost => prop_assert!(problem.contains("max_cost_usd"), "{problem}"),
            Err(problem) => {
                prop_assert_eq!(rounds, Some(0));
                prop_assert!(problem.contains("max_rounds"), "{}", problem);
            }
        }
    }

    /// Step requests: any input decodes or says why; a valid request decodes to itself.
    #[test]
    fn step_requests_decode_or_say_why(
        payload in bytes(),
        value in prop_oneof![message(), mutated(step_request())],
        request in step_request()) {
        check_decoder::<StepRequest>(&payload, &value)?;
        prop_assert_eq!(wire::decode::<StepRequest>(&wire::encode(&request)), Ok(request));
    }

    /// Step results: any input decodes or says why; a valid result decodes to itself.
    #[test]
    fn step_results_decode_or_say_why(
        payload in bytes(),
        value in prop_oneof![message(), mutated(step_result())],
        result in step_result()) {
        check_decoder::<StepResult>(&payload, &value)?;
        prop_assert_eq!(wire::decode::<StepResult>(&wire::encode(&result)), Ok(result));
    }

    /// Report events: any input decodes or says why; a valid event decodes to itself.
    #[test]
    fn report_events_decode_or_say_why(
        payload in bytes(),
        value in prop_oneof![message(), mutated(report_event())],
        event in report_event()) {
        check_decoder::<ReportEvent>(&payload, &value)?;
        prop_assert_eq!(wire::decode::<ReportEvent>(&wire::encode(&event)), Ok(event));
    }

    /// Dead letters: any input decodes or says why; a valid one decodes to itself.
    #[test]
    fn dead_letters_decode_or_say_why(
        payload in bytes(),
        value in prop_oneof![message(), mutated(dead_letter())],
        letter in dead_letter()) {
        check_decoder::<DeadLetter>(&payload, &value)?;
        prop_assert_eq!(wire::decode::<DeadLetter>(&wire::encode(&letter)), Ok(letter));
    }

    /// CI watches: any input decodes or says why; a valid one decodes to itself.
    #[test]
    fn ci_watches_decode_or_say_why(
        payload in bytes(),
        value in prop_oneof![message(), mutated(ci_watch())],
        watch in ci_watch()) {
        check_decoder::<CiWatch>(&payload, &value)?;
        prop_assert_eq!(wire::decode::<CiWatch>(&wire::encode(&watch)), Ok(watch));
    }

    /// Step ids: any text parses only in the form `<stage>@v<N>`, and prints as it was written.
    #[test]
    fn step_ids_parse_only_their_documented_form(
        text in prop_oneof![
            any::<String>(),
            "(design|implement|test|review|Design|deploy|)[@ ]?v?[-+0-9]{0,12}[x/]?",
        ],
        valid in step_id(),
    ) {
        match text.parse::<StepId>() {
            Ok(step) => {
                prop_assert_eq!(step.to_string(), text.clone());
                let (stage, version) = text.split_once("@v").unwrap_or_default();
                prop_assert!(Stage::ALL.iter().any(|s| s.as_str() == stage));
                prop_assert!(!version.starts_with('0'));
                prop_assert_eq!(version.parse::<u32>().ok(), Some(step.version()));
            }
            Err(error) => prop_assert!(error.to_string().contains(&format!("{text:?}"))
                || error.to_string().starts_with("unknown stage"), "{error}"),
        }
        prop_assert_eq!(valid.to_string().parse::<StepId>(), Ok(valid));
        prop_assert_eq!(wire::decode::<StepId>(&wire::encode(&valid)), Ok(valid));
    }

    /// Task ids: any text parses only as a hyphenated UUID, and a task id prints as it parses.
    #[test]
    fn task_ids_parse_only_uuids(
        text in prop_oneof![any::<String>(), "[0-9a-fA-F-]{36}", not_a_uuid()],
        valid in task_id(),
    ) {
        match text.parse::<TaskId>() {
            Ok(id) => prop_assert_eq!(id.to_string(), text.to_ascii_lowercase()),
            Err(error) => prop_assert!(error.to_string().contains("is not a UUID"), "{error}"),
        }
        prop_assert_eq!(valid.to_string().parse::<TaskId>(), Ok(valid));
        prop_assert_eq!(wire::decode::<TaskId>(&wire::encode(&valid)), Ok(valid));
    }

    /// Attempts: from 1; through JSON, any number is an attempt or an error.
    #[test]
    fn attempts_start_at_one(n in any::<u32>(), value in number()) {
        match Attempt::new(n) {
            Ok(attempt) => {
                prop_assert!(n >= 1);
                prop_assert_eq!(attempt.get(), n);
                prop_assert_eq!(attempt.to_string(), n.to_string());
            }
            Err(error) => {
                prop_assert_eq!(n, 0);
                prop_assert!(error.to_string().contains("start at 1"));
            }
        }
        let decoded = wire::decode::<Attempt>(&wire::encode(&value));
        let expected = value.as_u64().and_then(|n| u32::try_from(n).ok()).filter(|n| *n >= 1);
        prop_assert_eq!(decoded.ok().map(Attempt::get), expected);
    }

    /// Stages: only the four names parse, and each prints as it parses.
    #[test]
    fn stages_parse_only_their_names(
        text in prop_oneof![any::<String>(), "(design|implement|test|review|Test|DESIGN| review)"],
        stage in stage(),
    ) {
        match text.parse::<Stage>() {
            Ok(parsed) => prop_assert_eq!(parsed.as_str(), text.as_str()),
            Err(error) => {
                prop_assert!(!Stage::ALL.iter().any(|s| s.as_str() == text));
                prop_assert!(error.to_string().contains("unknown stage"), "{error}");
            }
        }
        prop_assert_eq!(stage.to_string().parse::<Stage>(), Ok(stage));
    }

    /// Durations (`TASK_MAX_WALL_TIME`, the servers' rate-limit reset headers): any text is a
    /// duration or nothing, never a panic.
    #[test]
    fn durations_parse_or_are_refused(
        text in prop_oneof![
            any::<String>(),
            "[0-9]{0,25}(\\.[0-9]{0,4})?(e[-+]?[0-9]{1,3})?(h|m|s|ms|us|µs|ns|x)?([0-9]{1,22}(h|m|s))?",
        ],
    ) {
        if let Some(duration) = parse_duration(&text) {
            prop_assert!(!text.trim().is_empty());
            // A number alone counts in seconds.
            if let Ok(seconds) = text.trim().parse::<f64>() {
                prop_assert!((duration.as_secs_f64() - seconds).abs() <= seconds * 1e-9 + 1e-9);
            }
        }
    }

    /// A server's rate-limit headers: any values are read or left out, never a panic.
    #[test]
    fn rate_limit_headers_are_read_or_left_out(
        headers in prop::collection::btree_map(
            prop::sample::select(RATE_LIMIT_HEADERS),
            prop_oneof![
                any::<String>(),
                "-?[0-9]{0,25}(\\.[0-9]{0,4})?(e[-+]?[0-9]{1,3})?(h|m|s|ms)?",
                "(NaN|inf|-inf|1e400|Wed, 21 Oct 2015 07:28:00 GMT)",
            ],
            0..6,
        ),
        rate_limited in any::<bool>(),
    ) {
        let header = |name: &str| headers.get(name).map(String::as_str);
        let limits = ServerLimits::from_headers(tokio::time::Instant::now(), rate_limited, header);
        let count = |name: &str| header(name).and_then(|text| text.trim().parse::<u64>().ok());
        prop_assert_eq!(limits.remaining_requests, count("x-ratelimit-remaining-requests"));
        prop_assert_eq!(limits.remaining_tokens, count("x-ratelimit-remaining-tokens"));
        let reset = |name: &str| header(name).and_then(parse_duration);
        prop_assert_eq!(limits.reset_requests, reset("x-ratelimit-reset-requests"));
        prop_assert_eq!(limits.reset_tokens, reset("x-ratelimit-reset-tokens"));
        prop_assert_eq!(limits.rate_limited, rate_limited);
    }

    /// LLM settings: any value of any of their variables is read or refused naming it.
    #[test]
    fn llm_settings_refuse_bad_values_naming_the_variable(
        variable in prop::sample::select(LlmSettings::VARIABLES.iter().map(|(name, _)| *name).collect::<Vec<_>>()),
        value in prop_oneof![
            any::<String>(),
            "-?[0-9]{0,22}(\\.[0-9]{1,3})?",
            "(NaN|inf|-inf|1e400|0|-0|0.0)",
            "([a-z0-9.=/-]{0,12},?){0,3}",
        ],
    ) {
        let lookup = |name: &str| (name == variable).then(|| value.clone());
        if let Err(error) = LlmSettings::try_from_lookup(lookup) {
            prop_assert_eq!(error.variable, variable);
            prop_assert!(error.to_string().starts_with(variable));
            prop_assert!(!error.problem.trim().is_empty());
        }
    }
}

/// The headers [`ServerLimits::from_headers`] reads.
const RATE_LIMIT_HEADERS: &[&str] = &[
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
    "retry-after-ms",
    "retry-after",
];

/// What every plain decoder promises: a value that encodes and decodes to itself, or an
/// "invalid message" reason.
fn check_decoder<T>(payload: &[u8], value: &Value) -> Result<(), TestCaseError>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    for payload in [payload.to_vec(), wire::encode(value)] {
        match wire::decode::<T>(&payload) {
            Ok(decoded) => {
                prop_assert_eq!(wire::decode::<T>(&wire::encode(&decoded)), Ok(decoded));
            }
            Err(error) => {
                prop_assert!(
                    error.reason.starts_with("invalid message: ")
                        && error.reason.len() > "invalid message: ".len(),
                    "{:?}",
                    error.reason
                );
            }
        }
    }
    Ok(())
}
