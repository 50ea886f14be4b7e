//! Entries of the dead-letter topic.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A message or step that could not be handled, kept with the reason and the raw payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeadLetter {
    /// Why it ended here.
    pub reason: String,
    /// The topic the message came from.
    pub source_topic: String,
    /// The message's key on that topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The raw message, as text (invalid UTF-8 replaced).
    pub payload: String,
    /// The task, when it is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// The step, when it is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_id: Option<String>,
    /// The last attempt, for exhausted steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// When it was dead-lettered.
    pub failed_at: DateTime<Utc>,
}
