//! Publishing to a git repository on this machine.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{Change, PublishError, Published, Publisher, branch_name};
use crate::execution::WorkspaceError;
use crate::execution::workspace::git::Git;

/// Publishes branches to a git repository on this machine (by default a bare repository
/// `DATA_DIR/published.git`, created when missing).
///
/// Each change is force-pushed from the task's workspace to `refs/heads/agent/<task_id>`, so
/// publishing the same commit again, or a newer one, just moves the branch. No hooks run, on
/// either side.
#[derive(Debug, Clone)]
pub struct LocalGitPublisher {
    repository: PathBuf,
}

impl LocalGitPublisher {
    /// A publisher to the repository at `repository`.
    pub fn new(repository: impl Into<PathBuf>) -> Self {
        Self {
            repository: repository.into(),
        }
    }

    /// Creates the repository as a bare one when nothing exists at its path yet.
    ///
    /// It is made beside its path and renamed into place, so that publishers creating it at
    /// the same moment (handlers of one process, or several processes) never see a half-made
    /// repository: one rename wins, the others find the repository there and drop theirs.
    async fn ensure_repository(&self, repository: &Path) -> Result<(), WorkspaceError> {
        match tokio::fs::symlink_metadata(repository).await {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(WorkspaceError::Io {
                    action: "inspect",
                    path: repository.to_path_buf(),
                    source,
                });
            }
        }
        let name = repository
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let fresh =
            repository.with_file_name(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
        Git::new("init")
            .args(["--bare", "--quiet", "--template=", "--"])
            .arg(&fresh)
            .output()
            .await?;
        match tokio::fs::rename(&fresh, repository).await {
            Ok(()) => {
                tracing::info!(repository = %repository.display(), "created the publishing repository");
                Ok(())
            }
            Err(source) => {
                let _ = tokio::fs::remove_dir_all(&fresh).await;
                if tokio::fs::symlink_metadata(repository).await.is_ok() {
                    Ok(())
                } else {
                    Err(WorkspaceError::Io {
                        action: "create",
                        path: repository.to_path_buf(),
                        source,
                    })
                }
            }
        }
    }
}

#[async_trait]
impl Publisher for LocalGitPublisher {
    fn name(&self) -> &str {
        "git"
    }

    async fn publish(&self, change: &Change<'_>) -> Result<Published, PublishError> {
        // An absolute path, so that git never reads `name:path` as a remote host.
        let repository =
            std::path::absolute(&self.repository).map_err(|source| WorkspaceError::Io {
                action: "resolve",
                path: self.repository.clone(),
                source,
            })?;
        self.ensure_repository(&repository).await?;
        let branch = branch_name(change.task_id);
        let reference = format!("refs/heads/{branch}");
        Git::in_work_tree(change.workspace.dir(), "push")
            .args(["--force", "--quiet", "--no-verify", "--"])
            .arg(&repository)
            .arg(format!("{}:{reference}", change.commit))
            .output()
            .await?;
        let published = Git::in_git_dir(&repository, "rev-parse")
            .args(["--verify", &format!("{reference}^{{commit}}")])
            .commit_id()
            .await?;
        if published != *change.commit {
            // Another publisher moved the branch between the push and the check.
            return Err(WorkspaceError::Git {
                command: "push".into(),
                message: format!(
                    "{branch} points to {published} after pushing {}",
                    change.commit
                ),
            }
            .into());
        }
        tracing::info!(
            task_id = %change.task_id,
            branch = %branch,
            commit = %published,
            repository = %repository.display(),
            "published"
        );
        Ok(Published {
            branch,
            commit: published.to_string(),
            repository: repository.display().to_string(),
            url: None,
        })
    }

    fn local_repository(&self) -> Option<&Path> {
        Some(&self.repository)
    }
}
