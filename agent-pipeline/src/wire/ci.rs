//! `ci_watch`: the orchestrator asks the ci-monitor to check a published change.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::execution::CommitId;
use crate::ids::TaskId;

/// "Watch the checks of this change": sent on `CI_WATCH_TOPIC` after a change is published.
///
/// It names the change; the check command is the ci-monitor's own setting (by default the
/// command that ran the task's tests), never taken from the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CiWatch {
    /// The task.
    pub task_id: TaskId,
    /// The published branch, `agent/<task_id>`.
    pub branch: String,
    /// The commit the branch points to in the target repository.
    pub commit: String,
    /// The workspace commit that was published (the same tree).
    pub source_commit: CommitId,
    /// The pull request's address, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// When the change was published.
    pub requested_at: DateTime<Utc>,
}
