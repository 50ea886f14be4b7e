//! What differs between two commits of a workspace, file by file, read from git's objects
//! (never from the work tree, which may hold a test run's leftovers).

use std::collections::HashMap;

use super::{CommitId, TaskWorkspace, WorkspaceError};

/// A file that differs between two commits: its content in the second, or `None` when the
/// second no longer has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedFile {
    /// The file's path in the repository, with `/` separators.
    pub path: String,
    /// The file's bytes in the second commit; `None`: deleted.
    pub content: Option<Vec<u8>>,
}

impl TaskWorkspace {
    /// The files added, changed (content or mode) or deleted from `from` to `to`, in path
    /// order, with their content in `to`.
    ///
    /// # Errors
    ///
    /// [`WorkspaceError::Git`] when a commit cannot be read.
    pub async fn changed_files(
        &self,
        from: &CommitId,
        to: &CommitId,
    ) -> Result<Vec<ChangedFile>, WorkspaceError> {
        let before: HashMap<String, (String, String)> = self
            .tree_entries(from)
            .await?
            .into_iter()
            .map(|entry| (entry.path, (entry.mode, entry.id)))
            .collect();
        let after = self.tree_entries(to).await?;
        let changed: Vec<_> = after
            .iter()
            .filter(|entry| {
                before.get(&entry.path) != Some(&(entry.mode.clone(), entry.id.clone()))
            })
            .collect();
        let ids: Vec<&str> = changed.iter().map(|entry| entry.id.as_str()).collect();
        let contents = self.read_blobs(&ids).await?;
        let mut files: Vec<ChangedFile> = changed
            .iter()
            .zip(contents)
            .map(|(entry, content)| ChangedFile {
                path: entry.path.clone(),
                content: Some(content),
            })
            .collect();
        let kept: std::collections::HashSet<&str> =
            after.iter().map(|entry| entry.path.as_str()).collect();
        files.extend(
            before
                .keys()
                .filter(|path| !kept.contains(path.as_str()))
                .map(|path| ChangedFile {
                    path: path.clone(),
                    content: None,
                }),
        );
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }
}
