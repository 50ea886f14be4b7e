//! Everything that crosses a process boundary: the messages on the bus (contracts.md).
//!
//! Only these types are serialisable on purpose: each is a promise to other programs. Fields
//! may be added (readers ignore what they don't know); a breaking change gets a new step
//! version (`design@v2`) or a new topic.

mod ci;
mod dead_letter;
mod report;
mod repository;
mod step;
mod task;

pub use ci::CiWatch;
pub use dead_letter::DeadLetter;
pub use report::{ReportEvent, ReportStatus};
pub use repository::Repository;
pub use step::{StepMode, StepOutcome, StepRequest, StepResult, StopReason, Variant};
pub use task::{ControlAction, NewTask, ReplayStep, TaskCommand, TaskControl};

/// A message that could not be understood, with the reason in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct MalformedMessage {
    /// What is wrong with it.
    pub reason: String,
}

impl MalformedMessage {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }
}

/// Decodes one JSON message of type `T`.
pub fn decode<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, MalformedMessage> {
    serde_json::from_slice(payload)
        .map_err(|e| MalformedMessage::new(format!("invalid message: {e}")))
}

/// Encodes one message as JSON.
pub fn encode<T: serde::Serialize>(message: &T) -> Vec<u8> {
    // Serialising these plain data types cannot fail: they hold no maps with non-string keys.
    serde_json::to_vec(message).unwrap_or_default()
}
