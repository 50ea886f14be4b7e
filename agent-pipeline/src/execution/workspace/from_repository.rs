//! A workspace that starts as a clone of an existing repository at its base ref.

use std::path::Path;
use std::time::Duration;

use super::git::Git;
use super::paths::io_error;
use super::{CommitId, TaskWorkspace, WorkspaceError, checkout_detached, is_plain_rev};
use crate::wire::Repository;

/// The ref that holds the commit a cloned workspace started from.
pub(super) const BASE_REF: &str = "refs/agent/base";

/// How long a clone or a push may take before it is given up (a remote that hangs, say).
const REMOTE_TIMEOUT: Duration = Duration::from_secs(600);

/// The directory beside the workspace where a clone is made before it is moved into place.
const CLONE_DIR: &str = ".workspace.clone";

/// Clones `repository` into `dir` (an empty directory in `task_dir`) with its base ref
/// checked out detached and recorded as [`BASE_REF`]; returns that commit.
///
/// The clone is made in [`CLONE_DIR`] first and renamed over `dir` when it is complete, so
/// that an interrupted clone never passes for a workspace.
pub(super) async fn clone_base(
    task_dir: &Path,
    dir: &Path,
    repository: &Repository,
) -> Result<CommitId, WorkspaceError> {
    repository.check().map_err(|problem| WorkspaceError::Git {
        command: "clone".into(),
        message: problem,
    })?;
    let temp = task_dir.join(CLONE_DIR);
    remove_if_there(&temp).await?;
    let clone = Git::new("clone")
        .args(["--quiet", "--no-hardlinks", "--no-checkout", "--"])
        .arg(&repository.url)
        .arg(&temp);
    with_repository(repository, "cloning", clone).await?;
    let redacted = repository.redacted_url();
    let rev = repository.base_ref.as_deref().unwrap_or("HEAD");
    let base = checkout_detached(Path::new(&redacted), &temp, rev).await?;
    Git::in_work_tree(&temp, "update-ref")
        .args([
            "-m",
            "agent-pipeline: the task's base",
            BASE_REF,
            base.as_str(),
        ])
        .output()
        .await?;
    tokio::fs::remove_dir(dir)
        .await
        .map_err(|e| io_error("replace", dir, e))?;
    tokio::fs::rename(&temp, dir)
        .await
        .map_err(|e| io_error("move the clone to", dir, e))?;
    Ok(base)
}

impl TaskWorkspace {
    /// Pushes `commit` to the repository the workspace was cloned from, as the branch
    /// `branch` (forced: a task's branch is its own, and a replay moves it), without hooks on
    /// this side. Given up after 10 minutes; a password in the URL never shows in the error.
    ///
    /// # Errors
    ///
    /// [`WorkspaceError::Git`] when the repository cannot be reached or refuses the push
    /// (no write access, a hook or a protected branch on its side), or when `branch` is not a
    /// plain branch name.
    pub async fn push_to_repository(
        &self,
        repository: &Repository,
        commit: &CommitId,
        branch: &str,
    ) -> Result<(), WorkspaceError> {
        repository.check().map_err(|problem| WorkspaceError::Git {
            command: "push".into(),
            message: problem,
        })?;
        if !is_plain_rev(branch) {
            return Err(WorkspaceError::Git {
                command: "push".into(),
                message: format!("{branch:?} is not a branch name"),
            });
        }
        let push = Git::in_work_tree(self.dir(), "push")
            .args(["--force", "--quiet", "--no-verify", "--"])
            .arg(&repository.url)
            .arg(format!("{commit}:refs/heads/{branch}"));
        with_repository(repository, "pushing to", push).await?;
        tracing::info!(repository = %repository.redacted_url(), %branch, %commit, "pushed to the task's repository");
        Ok(())
    }
}

/// Runs `git`, which talks to `repository`, for at most [`REMOTE_TIMEOUT`], with the
/// repository's password left out of any error.
async fn with_repository(
    repository: &Repository,
    doing: &str,
    git: Git,
) -> Result<(), WorkspaceError> {
    let redacted = repository.redacted_url();
    match tokio::time::timeout(REMOTE_TIMEOUT, git.output()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(WorkspaceError::Git { command, message })) => Err(WorkspaceError::Git {
            command,
            // git names the url in its messages, password and all.
            message: message.replace(&repository.url, &redacted),
        }),
        Ok(Err(error)) => Err(error),
        Err(_elapsed) => Err(WorkspaceError::Git {
            command: doing.into(),
            message: format!(
                "{doing} {redacted} took more than {} s",
                REMOTE_TIMEOUT.as_secs()
            ),
        }),
    }
}

/// Removes what an interrupted clone left at `path`, without following a symbolic link.
async fn remove_if_there(path: &Path) -> Result<(), WorkspaceError> {
    match tokio::fs::symlink_metadata(path).await {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("inspect", path, e)),
        Ok(metadata) if metadata.is_dir() => tokio::fs::remove_dir_all(path)
            .await
            .map_err(|e| io_error("remove", path, e)),
        Ok(_) => tokio::fs::remove_file(path)
            .await
            .map_err(|e| io_error("remove", path, e)),
    }
}
