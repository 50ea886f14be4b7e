//! Messages on the task topic: new tasks and replay commands.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{MalformedMessage, Repository};
use crate::budget::Budget;
use crate::ids::{StepId, TaskId};

/// A new task: `{ "task_id": "…", "prompt": "…" }`, optionally with its own budget and
/// approval requirement.
///
/// ```
/// use agent_pipeline::budget::Budget;
/// use agent_pipeline::wire::NewTask;
/// let task = NewTask::new("Write hello.py")
///     .with_budget(Budget { max_cost_usd: Some(0.25), ..Budget::default() })
///     .with_approval(true);
/// let json = serde_json::to_value(&task)?;
/// assert_eq!(json["budget"]["max_cost_usd"], 0.25);
/// assert_eq!(json["require_approval"], true);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
// The task topic tells a new task from a command by the absence of `action`.
#[schemars(extend("not" = { "required": ["action"] }))]
pub struct NewTask {
    /// The task's id (a UUID).
    pub task_id: TaskId,
    /// What to build, in plain language.
    pub prompt: String,
    /// Limits of this task, over the pipeline's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// Whether the task waits for approval before publishing (`None`: the pipeline's
    /// default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_approval: Option<bool>,
    /// The existing repository the task changes; `None`: the task starts from an empty
    /// workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<Repository>,
}

impl NewTask {
    /// A task with a new id and the pipeline's defaults.
    pub fn new(prompt: impl Into<String>) -> Self {
        Self {
            task_id: TaskId::new(),
            prompt: prompt.into(),
            budget: None,
            require_approval: None,
            repository: None,
        }
    }

    /// The same task, changing `repository` instead of starting from an empty workspace.
    pub fn on_repository(mut self, repository: Repository) -> Self {
        self.repository = Some(repository);
        self
    }

    /// The same task with its own limits.
    pub fn with_budget(mut self, budget: Budget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The same task, waiting (or not) for approval before publishing.
    pub fn with_approval(mut self, required: bool) -> Self {
        self.require_approval = Some(required);
        self
    }
}

/// A replay of one step: `{ "action": "replay_step", "task_id": "…", "step_id": "implement@v1" }`,
/// optionally with another model or provider, an edited prompt or edited upstream outputs, and
/// the later stages run again from the new attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReplayStep {
    /// Always `replay_step`.
    #[schemars(extend("const" = "replay_step"))]
    pub action: String,
    /// The task whose step is replayed.
    pub task_id: TaskId,
    /// The step to run again.
    pub step_id: StepId,
    /// Why, for the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Another model than the configured one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Another provider than the default one, by its registered name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// An edited task prompt for this attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Edited outputs of upstream steps (by step id), used instead of their artifacts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<StepId, Map<String, Value>>,
    /// Whether the later stages run again from the new attempt once it succeeds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub continue_downstream: bool,
}

/// What a person decides about a task: approve or reject its change, or cancel it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ControlAction {
    /// Publish the change of a task awaiting approval.
    Approve,
    /// Do not publish it: the task ends `error`, reason `rejected`.
    Reject,
    /// Stop a task that has not ended: the task ends `error`, reason `cancelled`.
    Cancel,
}

impl ControlAction {
    /// The action as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ControlAction::Approve => "approve",
            ControlAction::Reject => "reject",
            ControlAction::Cancel => "cancel",
        }
    }
}

/// `{ "action": "approve" | "reject" | "cancel", "task_id": "…", "by": "…", "comment": "…" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TaskControl {
    /// What to do.
    pub action: ControlAction,
    /// The task.
    pub task_id: TaskId,
    /// Who decided, for the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Why, for the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

impl TaskControl {
    /// `action` on `task_id`, by nobody in particular.
    pub fn new(action: ControlAction, task_id: TaskId) -> Self {
        Self {
            action,
            task_id,
            by: None,
            comment: None,
        }
    }
}

impl ReplayStep {
    /// The action name of a replay command.
    pub const ACTION: &'static str = "replay_step";

    /// A replay command for `step_id` of `task_id`.
    pub fn new(task_id: TaskId, step_id: StepId, reason: Option<String>) -> Self {
        Self {
            action: Self::ACTION.to_owned(),
            task_id,
            step_id,
            reason,
            model: None,
            provider: None,
            prompt: None,
            inputs: BTreeMap::new(),
            continue_downstream: false,
        }
    }

    /// Why the replay cannot be what it asks, if it cannot: an empty edited prompt, an edited
    /// input that is not upstream of the step, an empty model or provider name.
    pub fn check(&self) -> Result<(), String> {
        if self.prompt.as_deref().is_some_and(|p| p.trim().is_empty()) {
            return Err("empty edited prompt".to_owned());
        }
        for (name, value) in [("model", &self.model), ("provider", &self.provider)] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(format!("empty {name}"));
            }
        }
        let upstream = self.step_id.stage().earlier();
        if let Some(step) = self
            .inputs
            .keys()
            .find(|step| !upstream.contains(&step.stage()) || **step != StepId::v1(step.stage()))
        {
            return Err(format!(
                "{step} is not an upstream step of {}",
                self.step_id
            ));
        }
        Ok(())
    }
}

/// Anything the task topic carries.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskCommand {
    /// Start a new task.
    New(NewTask),
    /// Replay one step of an existing task.
    Replay(ReplayStep),
    /// Approve, reject or cancel a task.
    Control(TaskControl),
}

impl TaskCommand {
    /// The task this command is about.
    pub fn task_id(&self) -> TaskId {
        match self {
            TaskCommand::New(task) => task.task_id,
            TaskCommand::Replay(replay) => replay.task_id,
            TaskCommand::Control(control) => control.task_id,
        }
    }

    /// Decodes a message of the task topic, saying exactly what is wrong when it can't.
    ///
    /// ```
    /// use agent_pipeline::wire::TaskCommand;
    /// let ok = TaskCommand::decode(br#"{"task_id":"3f0c8a52-6a3e-4c1e-9d1e-5b8f2f6f4a10","prompt":"hi"}"#);
    /// assert!(matches!(ok, Ok(TaskCommand::New(_))));
    /// let bad = TaskCommand::decode(br#"{"task_id":"../../etc","prompt":"hi"}"#).unwrap_err();
    /// assert!(bad.reason.contains("not a UUID"));
    /// ```
    pub fn decode(payload: &[u8]) -> Result<Self, MalformedMessage> {
        let value: Value = serde_json::from_slice(payload)
            .map_err(|e| MalformedMessage::new(format!("not valid JSON: {e}")))?;
        let Value::Object(object) = &value else {
            return Err(MalformedMessage::new("not a JSON object"));
        };
        let invalid =
            |e: serde_json::Error| MalformedMessage::new(format!("invalid task message: {e}"));
        match object.get("action") {
            None => {
                let task: NewTask = serde_json::from_value(value.clone()).map_err(invalid)?;
                if task.prompt.trim().is_empty() {
                    return Err(MalformedMessage::new("invalid task message: empty prompt"));
                }
                if let Some(budget) = &task.budget {
                    budget.check().map_err(|problem| {
                        MalformedMessage::new(format!("invalid task message: budget: {problem}"))
                    })?;
                }
                if let Some(repository) = &task.repository {
                    repository.check().map_err(|problem| {
                        MalformedMessage::new(format!("invalid task message: {problem}"))
                    })?;
                }
                Ok(TaskCommand::New(task))
            }
            Some(Value::String(action)) if action == ReplayStep::ACTION => {
                let replay: ReplayStep = serde_json::from_value(value.clone()).map_err(invalid)?;
                replay.check().map_err(|problem| {
                    MalformedMessage::new(format!("invalid replay: {problem}"))
                })?;
                Ok(TaskCommand::Replay(replay))
            }
            Some(Value::String(action))
                if ["approve", "reject", "cancel"].contains(&action.as_str()) =>
            {
                let control: TaskControl =
                    serde_json::from_value(value.clone()).map_err(invalid)?;
                Ok(TaskCommand::Control(control))
            }
            Some(other) => Err(MalformedMessage::new(format!(
                "unknown action {other} (expected \"replay_step\", \"approve\", \"reject\" or \"cancel\")"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_malformed_task_message_has_a_reason() {
        let cases: [(&[u8], &str); 8] = [
            (b"{not json", "not valid JSON"),
            (b"[1,2]", "not a JSON object"),
            (br#"{"prompt":"x"}"#, "missing field `task_id`"),
            (br#"{"task_id":"3f0c8a52-6a3e-4c1e-9d1e-5b8f2f6f4a10"}"#, "missing field `prompt`"),
            (br#"{"task_id":"../x","prompt":"x"}"#, "not a UUID"),
            (br#"{"task_id":"3f0c8a52-6a3e-4c1e-9d1e-5b8f2f6f4a10","prompt":"  "}"#, "empty prompt"),
            (
                br#"{"action":"replay_step","task_id":"3f0c8a52-6a3e-4c1e-9d1e-5b8f2f6f4a10","step_id":"deploy@v1"}"#,
                "unknown stage",
            ),
            (br#"{"action":"delete","task_id":"x"}"#, "unknown action"),
        ];
        for (payload, expected) in cases {
            let error = TaskCommand::decode(payload).err();
            let reason = error.map(|e| e.reason).unwrap_or_default();
            assert!(
                reason.contains(expected),
                "{reason:?} should mention {expected:?}"
            );
        }
    }

    #[test]
    fn decisions_and_variants_decode_and_bad_ones_are_refused() {
        let id = "3f0c8a52-6a3e-4c1e-9d1e-5b8f2f6f4a10";
        let approve = format!(r#"{{"action":"approve","task_id":"{id}","by":"ada"}}"#);
        let Ok(TaskCommand::Control(control)) = TaskCommand::decode(approve.as_bytes()) else {
            panic!("approval expected");
        };
        assert_eq!(control.action, ControlAction::Approve);
        assert_eq!(control.by.as_deref(), Some("ada"));
        let variant = format!(
            r#"{{"action":"replay_step","task_id":"{id}","step_id":"test@v1","model":"gpt-4o","inputs":{{"implement@v1":{{"diff_summary":"x","code_snippets":[]}}}},"continue_downstream":true}}"#
        );
        let Ok(TaskCommand::Replay(replay)) = TaskCommand::decode(variant.as_bytes()) else {
            panic!("replay expected");
        };
        assert_eq!(replay.model.as_deref(), Some("gpt-4o"));
        assert!(replay.continue_downstream);
        assert_eq!(replay.inputs.len(), 1);
        let refused = [
            (
                format!(
                    r#"{{"action":"replay_step","task_id":"{id}","step_id":"design@v1","inputs":{{"review@v1":{{}}}}}}"#
                ),
                "review@v1 is not an upstream step of design@v1",
            ),
            (
                format!(
                    r#"{{"action":"replay_step","task_id":"{id}","step_id":"design@v1","prompt":" "}}"#
                ),
                "empty edited prompt",
            ),
            (
                format!(r#"{{"task_id":"{id}","prompt":"x","budget":{{"max_cost_usd":-1}}}}"#),
                "budget: max_cost_usd",
            ),
            (
                r#"{"action":"cancel"}"#.to_owned(),
                "missing field `task_id`",
            ),
        ];
        for (payload, expected) in refused {
            let reason = TaskCommand::decode(payload.as_bytes())
                .err()
                .map(|e| e.reason)
                .unwrap_or_default();
            assert!(
                reason.contains(expected),
                "{reason:?} should mention {expected:?}"
            );
        }
    }

    #[test]
    fn replay_commands_decode_with_extra_fields() {
        let payload = br#"{"action":"replay_step","task_id":"3f0c8a52-6a3e-4c1e-9d1e-5b8f2f6f4a10","step_id":"implement@v1","reason":"flaky","from":"ui"}"#;
        let Ok(TaskCommand::Replay(replay)) = TaskCommand::decode(payload) else {
            panic!("replay expected");
        };
        assert_eq!(replay.step_id.to_string(), "implement@v1");
        assert_eq!(replay.reason.as_deref(), Some("flaky"));
    }
}
