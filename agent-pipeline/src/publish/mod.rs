//! Publishing a task's change: a branch `agent/<task_id>` in a git repository (the default,
//! a bare repository under `DATA_DIR`), or a branch and pull request on GitHub.

use std::fmt;
use std::path::Path;

use async_trait::async_trait;

use crate::execution::{CommitId, TaskWorkspace, WorkspaceError};
use crate::ids::TaskId;

mod local_git;
pub use local_git::LocalGitPublisher;

#[cfg(feature = "github")]
mod github;
#[cfg(feature = "github")]
pub use github::{GitHubPublisher, GitHubSettings};

/// The branch a task's change is published on: `agent/<task_id>`.
pub fn branch_name(task_id: TaskId) -> String {
    format!("agent/{task_id}")
}

/// A change ready to publish: a commit of the task's workspace.
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    /// The task.
    pub task_id: TaskId,
    /// The task's workspace, which holds the commit.
    pub workspace: &'a TaskWorkspace,
    /// The workspace commit to publish (implementation and tests).
    pub commit: &'a CommitId,
    /// One line that names the change (the pull request's title).
    pub title: &'a str,
    /// What the change is, with its design, test results and review (the pull request's body).
    pub body: &'a str,
}

/// Where a change was published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The branch, `agent/<task_id>`.
    pub branch: String,
    /// The commit the branch points to in the target repository.
    pub commit: String,
    /// The repository: a path or a URL.
    pub repository: String,
    /// The pull request's web address, when the publisher opens one.
    pub url: Option<String>,
}

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// A git command failed.
    #[error(transparent)]
    Git(#[from] WorkspaceError),
    /// The server answered with an error status.
    #[error("{service} answered {status}: {message}")]
    Http {
        /// Which service (e.g. `GitHub`).
        service: &'static str,
        /// The HTTP status code.
        status: u16,
        /// What the server said.
        message: String,
    },
    /// The request did not reach the server or its answer could not be read.
    #[error("{0}")]
    Transport(String),
    /// The publisher is not configured correctly.
    #[error("{0}")]
    Config(String),
}

impl PublishError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            PublishError::Http { status, .. } => *status == 429 || *status >= 500,
            PublishError::Transport(_) => true,
            PublishError::Git(_) | PublishError::Config(_) => false,
        }
    }
}

/// Publishes a task's change somewhere people can look at it.
///
/// The orchestrator calls it once the gates pass. Publishing the same change twice must be
/// harmless (the branch is moved to the same commit again).
#[async_trait]
pub trait Publisher: Send + Sync + fmt::Debug + 'static {
    /// A short name for logs and reports (`git`, `github`).
    fn name(&self) -> &str;

    /// Publishes the change as branch [`branch_name`]`(change.task_id)`.
    async fn publish(&self, change: &Change<'_>) -> Result<Published, PublishError>;

    /// The local repository the branches are pushed to, when there is one: the ci-monitor
    /// checks a published branch out of it. Without one it checks out the workspace commit.
    fn local_repository(&self) -> Option<&Path> {
        None
    }
}
