//! Agents: what runs one stage. [`LlmAgent`] asks an [`Llm`] for a typed
//! output; the four factories give the pipeline's default agents.

mod llm_agent;
mod roles;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::ids::{Attempt, Stage, StepId, TaskId};
use crate::llm::{Llm, LlmError, Usage};

pub use llm_agent::LlmAgent;
pub use roles::{architect, implementer, reviewer, tester};

/// The output of an earlier stage, handed to later agents as context.
#[derive(Debug, Clone, PartialEq)]
pub struct PriorArtifact {
    /// The earlier step.
    pub step: StepId,
    /// Its output fields.
    pub output: Map<String, Value>,
}

/// Everything an agent sees when it runs one step.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentInput {
    /// The task.
    pub task_id: TaskId,
    /// The step to run.
    pub step: StepId,
    /// Which execution of the step this is.
    pub attempt: Attempt,
    /// The task's prompt.
    pub prompt: String,
    /// The outputs of the earlier stages, in pipeline order.
    pub prior: Vec<PriorArtifact>,
    /// Why the step runs again, when it does: a replay's reason, or what the gates of the
    /// last round found.
    pub reason: Option<String>,
    /// The change under review as a `git diff` (for the Review stage), when there is one.
    pub diff: Option<String>,
    /// The parts of the repository a task on an existing repository changes that matter to
    /// it, retrieved from the code memory, when there are any.
    pub code: Option<CodeContext>,
}

/// Code of the repository retrieved for a step: the text the agent reads and what it is made
/// of (recorded in the artifact as `retrieved`, so a reviewer sees what the model saw).
#[derive(Debug, Clone, PartialEq)]
pub struct CodeContext {
    /// The chunks, each under a heading with its path and lines.
    pub text: String,
    /// Each chunk's path, line range and scores.
    pub retrieved: Vec<crate::output::Retrieved>,
    /// The commit whose code the chunks are of: the base, or the task's last attempt
    /// (recorded in the artifact as `retrieved_from`).
    pub commit: String,
}

impl CodeContext {
    /// The artifact field that lists the chunks a step's agent saw: path, lines and scores.
    pub const RETRIEVED: &'static str = "retrieved";
    /// The artifact field that names the commit whose code those chunks are of.
    pub const RETRIEVED_FROM: &'static str = "retrieved_from";
}

/// What an agent produced.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentOutput {
    /// The stage output's fields, valid against the stage's type.
    pub output: Map<String, Value>,
    /// The model that produced it.
    pub model: String,
    /// Tokens spent over all calls.
    pub usage: Usage,
}

/// Why an agent failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The LLM call failed.
    #[error(transparent)]
    Llm(#[from] LlmError),
    /// Every answer was invalid, also after the validation errors were fed back.
    #[error("the model gave no valid {schema} after {calls} call(s); last problem: {problem}")]
    InvalidOutput {
        /// The schema's name.
        schema: &'static str,
        /// How many calls were made.
        calls: u32,
        /// What was wrong with the last answer.
        problem: String,
    },
    /// Anything else a custom agent reports.
    #[error("{message}")]
    Failed {
        /// What went wrong.
        message: String,
        /// Whether running again may succeed.
        retryable: bool,
    },
}

impl AgentError {
    /// Whether running the step again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            AgentError::Llm(error) => error.is_retryable(),
            AgentError::InvalidOutput { .. } => true,
            AgentError::Failed { retryable, .. } => *retryable,
        }
    }
}

/// Runs one stage of a task.
///
/// Implement it for a custom stage and plug it in with
/// [`PipelineBuilder::agent`](crate::PipelineBuilder::agent).
///
/// ```
/// use agent_pipeline::agent::{Agent, AgentError, AgentInput, AgentOutput};
/// use agent_pipeline::Stage;
///
/// /// A reviewer that approves everything, for a dry run.
/// #[derive(Debug)]
/// struct RubberStamp;
///
/// #[async_trait::async_trait]
/// impl Agent for RubberStamp {
///     fn stage(&self) -> Stage {
///         Stage::Review
///     }
///
///     async fn run(&self, _input: &AgentInput) -> Result<AgentOutput, AgentError> {
///         let output = serde_json::json!({ "approved": true, "comments": ["ok"] });
///         Ok(AgentOutput {
///             output: output.as_object().cloned().unwrap_or_default(),
///             model: "rubber-stamp".into(),
///             usage: Default::default(),
///         })
///     }
/// }
/// ```
#[async_trait]
pub trait Agent: Send + Sync + fmt::Debug + 'static {
    /// The stage this agent runs.
    fn stage(&self) -> Stage;

    /// Runs the step.
    async fn run(&self, input: &AgentInput) -> Result<AgentOutput, AgentError>;
}

/// One agent per stage.
#[derive(Debug, Clone)]
pub struct Agents {
    by_stage: [Arc<dyn Agent>; 4],
}

impl Agents {
    /// The four default agents over `llm`.
    pub fn with_llm(llm: Arc<dyn Llm>) -> Self {
        Self {
            by_stage: [
                Arc::new(architect(llm.clone())),
                Arc::new(implementer(llm.clone())),
                Arc::new(tester(llm.clone())),
                Arc::new(reviewer(llm)),
            ],
        }
    }

    /// Replaces the agent of `agent.stage()`.
    pub fn set(&mut self, agent: Arc<dyn Agent>) {
        let slot = agent.stage().index();
        self.by_stage[slot] = agent;
    }

    /// The agent of `stage`.
    pub fn get(&self, stage: Stage) -> &Arc<dyn Agent> {
        &self.by_stage[stage.index()]
    }
}
