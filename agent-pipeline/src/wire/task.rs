//! Messages on the task topic: new tasks and replay commands.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::MalformedMessage;
use crate::ids::{StepId, TaskId};

/// A new task: `{ "task_id": "…", "prompt": "…" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTask {
    /// The task's id (a UUID).
    pub task_id: TaskId,
    /// What to build, in plain language.
    pub prompt: String,
}

/// A replay of one step: `{ "action": "replay_step", "task_id": "…", "step_id": "implement@v1" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayStep {
    /// Always `replay_step`.
    pub action: String,
    /// The task whose step is replayed.
    pub task_id: TaskId,
    /// The step to run again.
    pub step_id: StepId,
    /// Why, for the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
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
        }
    }
}

/// Anything the task topic carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskCommand {
    /// Start a new task.
    New(NewTask),
    /// Replay one step of an existing task.
    Replay(ReplayStep),
}

impl TaskCommand {
    /// The task this command is about.
    pub fn task_id(&self) -> TaskId {
        match self {
            TaskCommand::New(task) => task.task_id,
            TaskCommand::Replay(replay) => replay.task_id,
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
                Ok(TaskCommand::New(task))
            }
            Some(Value::String(action)) if action == ReplayStep::ACTION => {
                let replay: ReplayStep = serde_json::from_value(value.clone()).map_err(invalid)?;
                Ok(TaskCommand::Replay(replay))
            }
            Some(other) => Err(MalformedMessage::new(format!(
                "unknown action {other} (expected \"replay_step\")"
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
    fn replay_commands_decode_with_extra_fields() {
        let payload = br#"{"action":"replay_step","task_id":"3f0c8a52-6a3e-4c1e-9d1e-5b8f2f6f4a10","step_id":"implement@v1","reason":"flaky","from":"ui"}"#;
        let Ok(TaskCommand::Replay(replay)) = TaskCommand::decode(payload) else {
            panic!("replay expected");
        };
        assert_eq!(replay.step_id.to_string(), "implement@v1");
        assert_eq!(replay.reason.as_deref(), Some("flaky"));
    }
}
