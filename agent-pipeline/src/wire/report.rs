//! Human-readable status events on the report topic (and in `reports.jsonl`).

use std::fmt;

use chrono::{DateTime, Utc};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::ids::{Attempt, StepId, TaskId};
use crate::llm::{Spend, Usage};

/// What a report event says happened.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReportStatus {
    /// The planner accepted a new task.
    Received,
    /// A stage finished.
    StageDone,
    /// The whole task finished.
    Done,
    /// The task failed (or a command about it was refused).
    Error,
    /// One step was replayed.
    Replayed,
    /// A change was published.
    Pr,
    /// Checks of a published change.
    Ci,
    /// A step failed and will be tried again.
    Retry,
    /// A step or message went to the dead-letter queue.
    Dlq,
    /// The gates of a round were evaluated (passed or not).
    Gates,
    /// The task passed its gates and waits for a person to approve or reject its change.
    AwaitingApproval,
    /// A person approved the task's change; it is published next.
    Approved,
    /// A status this version does not know, kept as written.
    Other(String),
}

impl ReportStatus {
    /// The status as written on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            ReportStatus::Received => "received",
            ReportStatus::StageDone => "stage_done",
            ReportStatus::Done => "done",
            ReportStatus::Error => "error",
            ReportStatus::Replayed => "replayed",
            ReportStatus::Pr => "pr",
            ReportStatus::Ci => "ci",
            ReportStatus::Retry => "retry",
            ReportStatus::Dlq => "dlq",
            ReportStatus::Gates => "gates",
            ReportStatus::AwaitingApproval => "awaiting_approval",
            ReportStatus::Approved => "approved",
            ReportStatus::Other(other) => other,
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "received" => ReportStatus::Received,
            "stage_done" => ReportStatus::StageDone,
            "done" => ReportStatus::Done,
            "error" => ReportStatus::Error,
            "replayed" => ReportStatus::Replayed,
            "pr" => ReportStatus::Pr,
            "ci" => ReportStatus::Ci,
            "retry" => ReportStatus::Retry,
            "dlq" => ReportStatus::Dlq,
            "gates" => ReportStatus::Gates,
            "awaiting_approval" => ReportStatus::AwaitingApproval,
            "approved" => ReportStatus::Approved,
            other => ReportStatus::Other(other.to_owned()),
        }
    }

    /// Whether the task has reached its end (`done` or `error`).
    pub fn is_final(&self) -> bool {
        matches!(self, ReportStatus::Done | ReportStatus::Error)
    }
}

/// Any string: a reader keeps the statuses it does not know. The known ones are listed as
/// `examples`, so that the schema documents them without refusing later ones.
impl JsonSchema for ReportStatus {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ReportStatus".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "What happened; later versions may add statuses, which readers keep.",
            "type": "string",
            "examples": [
                "received", "stage_done", "done", "error", "replayed", "pr", "ci", "retry",
                "dlq", "gates", "awaiting_approval", "approved"
            ]
        })
    }
}

impl fmt::Display for ReportStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ReportStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ReportStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Ok(ReportStatus::parse(&text))
    }
}

/// One status event: `{ "task_id": "…", "status": "stage_done", "stage": "design@v1", "summary": "…" }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReportEvent {
    /// The task.
    pub task_id: TaskId,
    /// What happened.
    pub status: ReportStatus,
    /// The step it happened to, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<StepId>,
    /// One line for people.
    pub summary: String,
    /// When it happened.
    pub timestamp: DateTime<Utc>,
    /// The attempt of the step, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<Attempt>,
    /// How long the step took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The model that ran the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Tokens the step spent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// What the step's LLM calls cost in US dollars (calls without a price count as free).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// What the task has spent so far, over every LLM call of every attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_spend: Option<Spend>,
    /// Why the task ended in `error`, in one word, when it was stopped on purpose:
    /// `budget_exceeded`, `cancelled` or `rejected`; or when the planner refused a new task
    /// without recording it: `not_recorded` (its state store failed) or `prompt_too_long`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Everything else the event says, at the top level: the branch and commit of a `pr`,
    /// the outcome and output of a `ci`, the verdicts of `gates`, and the fields of later
    /// versions, which are kept as they are.
    #[serde(flatten)]
    pub details: Map<String, Value>,
}

impl ReportEvent {
    /// An event with only the required fields.
    pub fn new(
        task_id: TaskId,
        status: ReportStatus,
        summary: impl Into<String>,
        timestamp: DateTime<Utc>,
    ) -> Self {
        Self {
            task_id,
            status,
            stage: None,
            summary: summary.into(),
            timestamp,
            attempt: None,
            duration_ms: None,
            model: None,
            usage: None,
            cost_usd: None,
            task_spend: None,
            reason: None,
            details: Map::new(),
        }
    }

    /// The same event with one more detail field.
    pub fn with_detail(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.details.insert(name.to_owned(), value.into());
        self
    }

    /// The same event about step `stage`, attempt `attempt`.
    pub fn for_step(mut self, stage: StepId, attempt: Attempt) -> Self {
        self.stage = Some(stage);
        self.attempt = Some(attempt);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_events_match_the_contract_and_keep_unknown_statuses() {
        let task_id = TaskId::new();
        let event = ReportEvent::new(
            task_id,
            ReportStatus::StageDone,
            "Design completed",
            Utc::now(),
        )
        .for_step(StepId::v1(crate::Stage::Design), Attempt::FIRST);
        let value = serde_json::to_value(&event).unwrap_or_default();
        assert_eq!(value["status"], "stage_done");
        assert_eq!(value["stage"], "design@v1");
        assert_eq!(value["task_id"], task_id.to_string());

        let later = format!(
            r#"{{"task_id":"{task_id}","status":"paused","summary":"x","timestamp":"2026-01-01T00:00:00Z","cost_usd":0.1,"later_field":7}}"#
        );
        let parsed: Result<ReportEvent, _> = serde_json::from_str(&later);
        let parsed = parsed.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.status, ReportStatus::Other("paused".into()));
        assert_eq!(parsed.cost_usd, Some(0.1));
        assert_eq!(parsed.details["later_field"], 7, "unknown fields are kept");
        let again = serde_json::to_value(&parsed).unwrap_or_default();
        assert_eq!(again["later_field"], 7, "and written again");
    }
}
