//! The crate's error type.

use crate::bus::BusError;
use crate::ids::{IdError, StepId, TaskId};
use crate::llm::LlmError;
use crate::store::StoreError;

/// Everything that can go wrong in agent-pipeline.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An id did not parse.
    #[error(transparent)]
    Id(#[from] IdError),
    /// The bus failed.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The LLM failed.
    #[error(transparent)]
    Llm(#[from] LlmError),
    /// A store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No task with this id.
    #[error("no task {0}")]
    TaskNotFound(TaskId),
    /// A replay cannot run because an earlier stage's artifact is missing.
    #[error(
        "cannot replay {step} of task {task_id}: {missing} has no artifact yet (its inputs are missing)"
    )]
    ReplayInputsMissing {
        /// The task.
        task_id: TaskId,
        /// The step to replay.
        step: StepId,
        /// The earlier step without an artifact.
        missing: StepId,
    },
    /// A replay that asks for something this pipeline cannot do (an unknown provider, an
    /// edited input that is not upstream of the step, an empty edited prompt).
    #[error("invalid replay: {0}")]
    InvalidReplay(String),
    /// A decision (approve, reject, cancel) about a task that is not in a state it applies to.
    #[error("cannot {action} task {task_id}: it is {status}")]
    NotApplicable {
        /// The task.
        task_id: TaskId,
        /// `approve`, `reject` or `cancel`.
        action: &'static str,
        /// Where the task stands.
        status: crate::store::TaskStatus,
    },
    /// Limits that cannot be used (a negative cost, zero rounds).
    #[error("invalid budget: {0}")]
    InvalidBudget(String),
    /// A repository that cannot be cloned as given (a command-running transport, a base ref
    /// that is not a branch, tag or commit id).
    #[error("invalid repository: {0}")]
    InvalidRepository(String),
    /// The step is not one this pipeline runs (it runs the `v1` step of each stage).
    #[error("unknown step {0}: this pipeline runs {stage}@v1", stage = .0.stage())]
    UnknownStep(StepId),
    /// A dead letter that cannot be sent again: it came from a topic no service consumes
    /// (reports, the dead-letter topic itself) or from a topic this pipeline does not know.
    #[error("cannot re-drive a dead letter from topic {topic:?}: {why}")]
    NotRedrivable {
        /// The topic it came from.
        topic: String,
        /// Why it cannot go back.
        why: &'static str,
    },
    /// A task without a prompt.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// A task whose prompt is longer than the pipeline accepts
    /// ([`PipelineBuilder::max_prompt_chars`](crate::PipelineBuilder::max_prompt_chars)).
    #[error("the prompt has {chars} characters; at most {max} are accepted")]
    PromptTooLong {
        /// The prompt's length, in characters.
        chars: usize,
        /// The longest prompt accepted, in characters.
        max: usize,
    },
}

/// An error and its sources as one line, `error: cause: cause`, leaving out a source whose
/// message the text already holds (many errors repeat their cause in their own message).
///
/// ```
/// use agent_pipeline::store::StoreError;
/// let store = StoreError::Io {
///     action: "read",
///     path: "data/state.sqlite".into(),
///     source: std::io::Error::other("disk full"),
/// };
/// // The store's message already names its cause, so the cause is not repeated.
/// let error = agent_pipeline::Error::from(store);
/// assert_eq!(agent_pipeline::error_chain(&error), "read data/state.sqlite: disk full");
/// ```
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
