//! The per-task git workspace, `DATA_DIR/<task_id>/workspace/`: every implement and test
//! step's files become one commit on a linear history, so that the change can be diffed,
//! tested in a sandbox, published and checked out again.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::ids::TaskId;
use crate::output::FileContent;
use crate::wire::Repository;

mod changes;
mod from_repository;
pub(crate) mod git;
mod paths;

pub use changes::ChangedFile;
use git::Git;
pub use paths::check_files;
use paths::io_error;

/// Size limits on the files a model may write into a workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkspaceLimits {
    /// The most files one step may write.
    pub max_files: usize,
    /// The largest file, in bytes.
    pub max_file_bytes: u64,
    /// The most bytes one step may write over all its files.
    pub max_total_bytes: u64,
    /// The longest path, in bytes.
    pub max_path_bytes: usize,
}

impl Default for WorkspaceLimits {
    fn default() -> Self {
        Self {
            max_files: 200,
            max_file_bytes: 1024 * 1024,
            max_total_bytes: 8 * 1024 * 1024,
            max_path_bytes: 200,
        }
    }
}

/// Why a workspace operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkspaceError {
    /// A file path from the model is not acceptable.
    #[error("refused path {path:?}: {problem}")]
    Path {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The files exceed a size limit.
    #[error("{0}")]
    Limit(String),
    /// A git command failed.
    #[error("git {command} failed: {message}")]
    Git {
        /// The git subcommand.
        command: String,
        /// What git printed.
        message: String,
    },
    /// A file could not be read or written.
    #[error("could not {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A git commit id (40 hexadecimal digits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CommitId(String);

impl CommitId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CommitId {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        if value.len() == 40 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(value.to_ascii_lowercase()))
        } else {
            Err(format!("{value:?} is not a commit id"))
        }
    }
}

impl From<CommitId> for String {
    fn from(id: CommitId) -> Self {
        id.0
    }
}

impl schemars::JsonSchema for CommitId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "CommitId".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A git commit id: 40 hexadecimal digits.",
            "type": "string",
            "pattern": "^[0-9a-fA-F]{40}$"
        })
    }
}

impl fmt::Display for CommitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A commit made in a workspace, with its parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// The new commit.
    pub id: CommitId,
    /// The commit before it.
    pub parent: CommitId,
}

/// Clones `repository` into `dest` (a new directory) and checks out `rev` detached.
///
/// `rev` is a branch of `repository` (such as `agent/<task_id>`) or a commit id; anything
/// else, an option-like `-x` included, is refused. `dest` must not exist yet; it is removed
/// again when the checkout fails. Returns the commit that was checked out.
pub async fn clone_at(
    repository: &Path,
    rev: &str,
    dest: &Path,
) -> Result<CommitId, WorkspaceError> {
    if !is_plain_rev(rev) {
        return Err(WorkspaceError::Git {
            command: "checkout".into(),
            message: format!("refused revision {rev:?}: give a branch name or a commit id"),
        });
    }
    match tokio::fs::symlink_metadata(dest).await {
        Ok(_) => {
            return Err(io_error(
                "clone into",
                dest,
                std::io::Error::new(std::io::ErrorKind::AlreadyExists, "it already exists"),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("inspect", dest, e)),
    }
    let source = absolute(repository)?;
    let dest = absolute(dest)?;
    Git::new("clone")
        .args(["--quiet", "--no-hardlinks", "--no-checkout", "--"])
        .arg(&source)
        .arg(&dest)
        .output()
        .await?;
    match checkout_detached(&source, &dest, rev).await {
        Ok(commit) => {
            tracing::info!(
                repository = %source.display(),
                rev = %rev,
                dest = %dest.display(),
                commit = %commit,
                "checked out"
            );
            Ok(commit)
        }
        Err(e) => {
            let _ = tokio::fs::remove_dir_all(&dest).await;
            Err(e)
        }
    }
}

/// Checks out `rev` of the clone `dest` (of `source`, named in errors) detached, and returns
/// its commit: a branch of the source (a remote-tracking branch after the clone), a tag, a
/// commit id, or `HEAD`.
async fn checkout_detached(
    source: &Path,
    dest: &Path,
    rev: &str,
) -> Result<CommitId, WorkspaceError> {
    // After a clone the source's branches are remote-tracking branches of `origin`.
    let candidates = if is_hex_id(rev) {
        vec![rev.to_owned()]
    } else {
        vec![
            format!("refs/remotes/origin/{rev}"),
            format!("refs/tags/{rev}"),
            rev.to_owned(),
        ]
    };
    for candidate in candidates {
        let spec = format!("{candidate}^{{commit}}");
        let exists = Git::in_work_tree(dest, "rev-parse")
            .args(["--verify", "--quiet", &spec])
            .succeeds()
            .await?;
        if !exists {
            continue;
        }
        let commit = Git::in_work_tree(dest, "rev-parse")
            .args(["--verify", &spec])
            .commit_id()
            .await?;
        Git::in_work_tree(dest, "checkout")
            .args(["--quiet", "--detach", commit.as_str()])
            .output()
            .await?;
        return Ok(commit);
    }
    Err(WorkspaceError::Git {
        command: "checkout".into(),
        message: format!("{} has no branch or commit {rev:?}", source.display()),
    })
}

/// A branch name or commit id that git cannot mistake for an option or a revision expression.
pub(crate) fn is_plain_rev(rev: &str) -> bool {
    !rev.is_empty()
        && rev.len() <= 255
        && rev != "@"
        && !rev.starts_with(['-', '/', '.'])
        && !rev.ends_with(['/', '.'])
        && !rev.ends_with(".lock")
        && !rev.contains("..")
        && !rev.contains("//")
        && !rev.contains("/.")
        && !rev.contains("@{")
        && rev
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '+'))
}

fn is_hex_id(text: &str) -> bool {
    text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

fn absolute(path: &Path) -> Result<PathBuf, WorkspaceError> {
    std::path::absolute(path).map_err(|e| io_error("resolve", path, e))
}

/// Runs blocking file-system work off the async threads.
async fn blocking<T, F>(dir: &Path, work: F) -> Result<T, WorkspaceError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, WorkspaceError> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) => Err(io_error(
            "update",
            dir,
            std::io::Error::other(format!("the file-system task failed: {e}")),
        )),
    }
}

/// One file of a commit's tree, as `git ls-tree` lists it.
#[derive(Debug, Clone)]
struct TreeEntry {
    mode: String,
    id: String,
    path: String,
}

/// The paths of the executable files (git's mode `100755`) among `entries`.
fn executables(entries: &[TreeEntry]) -> HashSet<String> {
    entries
        .iter()
        .filter(|entry| entry.mode == "100755")
        .map(|entry| entry.path.clone())
        .collect()
}

/// A task's git workspace, `DATA_DIR/<task_id>/workspace/`.
///
/// The workspace is an ordinary git repository whose history is linear: an empty root commit
/// made when it is created, then one commit per [`commit_files`](Self::commit_files) call.
/// Each commit holds exactly the files given (plus, when asked, a base commit's files), with
/// their bytes unchanged; the work tree is brought to match (only the files that differ are
/// rewritten) so that a sandbox can run it.
/// Git runs with a fixed configuration: no hooks, no signing, no user or system settings.
///
/// One workspace is meant to be used by one step at a time.
///
/// ```
/// use agent_pipeline::TaskId;
/// use agent_pipeline::execution::{TaskWorkspace, WorkspaceLimits};
/// use agent_pipeline::output::FileContent;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let data_dir = tempfile::tempdir()?;
/// let workspace = TaskWorkspace::open(data_dir.path(), TaskId::new()).await?;
/// let files = [FileContent {
///     path: "src/lib.rs".into(),
///     content: "pub fn answer() -> u32 { 42 }\n".into(),
/// }];
/// let commit = workspace
///     .commit_files(None, &files, "implement: answer", &WorkspaceLimits::default())
///     .await?;
/// assert_eq!(commit.parent, workspace.root().await?);
/// assert_eq!(workspace.head().await?, commit.id);
///
/// let stored = workspace.files_at(&commit.id).await?;
/// assert_eq!(stored, vec![("src/lib.rs".to_string(), files[0].content.clone().into_bytes())]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TaskWorkspace {
    dir: PathBuf,
}

impl TaskWorkspace {
    /// Opens the workspace of `task_id` under `data_dir`, creating it (with an empty root
    /// commit) when it does not exist.
    ///
    /// Opening an existing workspace again is harmless. `DATA_DIR/<task_id>`, its `workspace`
    /// and the repository's `.git` must be real directories: a symbolic link is refused, so
    /// that nothing is ever written outside the data directory.
    pub async fn open(data_dir: &Path, task_id: TaskId) -> Result<Self, WorkspaceError> {
        Self::open_with(data_dir, task_id, None).await
    }

    /// Opens the workspace of `task_id` under `data_dir` like [`open`](Self::open); when it
    /// does not exist yet and `repository` is given, it is created as a clone of that
    /// repository with its base ref checked out, which is then the workspace's
    /// [`base`](Self::base) (see [`Repository`]). The clone is made beside the workspace and
    /// moved into place once complete, so an interrupted clone is started again.
    pub async fn open_with(
        data_dir: &Path,
        task_id: TaskId,
        repository: Option<&Repository>,
    ) -> Result<Self, WorkspaceError> {
        let data_dir = absolute(data_dir)?;
        tokio::fs::create_dir_all(&data_dir)
            .await
            .map_err(|e| io_error("create directory", &data_dir, e))?;
        let task_dir = data_dir.join(task_id.to_string());
        let dir = task_dir.join("workspace");
        let git_dir = dir.join(".git");
        let has_repository = {
            let (task_dir, dir, git_dir) = (task_dir.clone(), dir.clone(), git_dir.clone());
            blocking(&data_dir, move || {
                paths::ensure_real_dir(&task_dir)?;
                paths::ensure_real_dir(&dir)?;
                match std::fs::symlink_metadata(&git_dir) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                    Err(e) => Err(io_error("inspect", &git_dir, e)),
                    Ok(_) => paths::check_real_dir(&git_dir).map(|()| true),
                }
            })
            .await?
        };
        match (has_repository, repository) {
            (true, _) => {}
            (false, None) => {
                Git::new("init")
                    .args(["--quiet", "--template=", "--"])
                    .arg(&dir)
                    .output()
                    .await?;
                tracing::info!(task_id = %task_id, dir = %dir.display(), "workspace created");
            }
            (false, Some(repository)) => {
                let base = from_repository::clone_base(&task_dir, &dir, repository).await?;
                tracing::info!(
                    task_id = %task_id,
                    dir = %dir.display(),
                    repository = %repository.redacted_url(),
                    base = %base,
                    "workspace cloned"
                );
            }
        }
        {
            let git_dir = git_dir.clone();
            blocking(&dir, move || paths::check_real_dir(&git_dir)).await?;
        }
        let workspace = Self { dir };
        if !workspace.has_head().await? {
            workspace.commit_root(task_id).await?;
        }
        Ok(workspace)
    }

    /// The workspace's directory (its work tree).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Replaces the work tree with `base`'s files (none when `base` is `None`) plus `files`,
    /// and commits the result on top of the current head with `message`.
    ///
    /// `files` are checked with [`check_files`] first; nothing changes when they are refused.
    /// A file of `files` replaces the base's file at the same path, and also a base file or
    /// directory it clashes with (`a` against `a/b`). Whatever else was in the work tree
    /// before (a test run's leftovers, symbolic links included) is removed without following
    /// links; only `.git` stays. A file that already holds the right bytes is not rewritten,
    /// so that a change to a large repository costs what it changes. The files are committed
    /// byte for byte (no line-ending conversion or filters), even when a `.gitignore` would
    /// ignore them.
    pub async fn commit_files(
        &self,
        base: Option<&CommitId>,
        files: &[FileContent],
        message: &str,
        limits: &WorkspaceLimits,
    ) -> Result<Commit, WorkspaceError> {
        self.commit_change(base, files, &[], message, limits).await
    }

    /// [`commit_files`](Self::commit_files), leaving out the base's files named in `deleted`.
    ///
    /// Each deleted path must be a file of `base` and not one of `files`; otherwise nothing
    /// changes and the path is named in the error.
    pub async fn commit_change(
        &self,
        base: Option<&CommitId>,
        files: &[FileContent],
        deleted: &[String],
        message: &str,
        limits: &WorkspaceLimits,
    ) -> Result<Commit, WorkspaceError> {
        check_files(files, limits)?;
        let git_dir = self.dir.join(".git");
        let stale = blocking(&self.dir, move || paths::remove_stale_locks(&git_dir)).await?;
        if !stale.is_empty() {
            tracing::warn!(dir = %self.dir.display(), locks = ?stale, "removed the git locks of an interrupted commit");
        }
        let head = self.head().await?;

        // The base's files that the new files do not replace.
        let given: HashSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
        let given_dirs: HashSet<&str> = files
            .iter()
            .flat_map(|f| f.path.match_indices('/').map(|(end, _)| &f.path[..end]))
            .collect();
        for path in deleted {
            paths::check_path(path, limits)?;
            if given.contains(path.as_str()) {
                return Err(WorkspaceError::Path {
                    path: path.clone(),
                    problem: "is both written and deleted; do one or the other".into(),
                });
            }
        }
        let base_entries = match base {
            None => Vec::new(),
            Some(base) => self.tree_entries(base).await?,
        };
        if let Some(missing) = deleted
            .iter()
            .find(|path| !base_entries.iter().any(|entry| &entry.path == *path))
        {
            return Err(WorkspaceError::Path {
                path: missing.clone(),
                problem: "is deleted but is not a file of the base; delete only existing files"
                    .into(),
            });
        }
        let deleted: HashSet<&str> = deleted.iter().map(String::as_str).collect();
        let kept: Vec<TreeEntry> = match base {
            None => Vec::new(),
            Some(_) => base_entries
                .into_iter()
                .filter(|entry| !deleted.contains(entry.path.as_str()))
                .filter(|entry| {
                    let regular = entry.mode == "100644" || entry.mode == "100755";
                    if !regular {
                        tracing::warn!(path = %entry.path, mode = %entry.mode, "skipping a base entry that is not a regular file");
                    }
                    regular
                        && !given.contains(entry.path.as_str())
                        && !given_dirs.contains(entry.path.as_str())
                        && !entry
                            .path
                            .match_indices('/')
                            .any(|(end, _)| given.contains(&entry.path[..end]))
                })
                .collect(),
        };
        let kept_ids: Vec<&str> = kept.iter().map(|e| e.id.as_str()).collect();
        let kept_contents = self.read_blobs(&kept_ids).await?;

        // The work tree: exactly the commit's files.
        let mut tree: Vec<(String, Vec<u8>)> = kept
            .iter()
            .map(|e| e.path.clone())
            .zip(kept_contents)
            .collect();
        tree.extend(
            files
                .iter()
                .map(|f| (f.path.clone(), f.content.clone().into_bytes())),
        );
        let removed = self.replace_work_tree(tree, executables(&kept)).await?;

        // The objects, the index, the tree and the commit, with plumbing only: no filters,
        // no ignore rules, no hooks.
        let mut index_info = Vec::new();
        for entry in &kept {
            index_info.extend_from_slice(
                format!("{} {}\t{}\0", entry.mode, entry.id, entry.path).as_bytes(),
            );
        }
        if !files.is_empty() {
            let mut paths_input = String::new();
            for file in files {
                paths_input.push_str(&file.path);
                paths_input.push('\n');
            }
            let ids = self
                .git("hash-object")
                .args(["-w", "--no-filters", "--stdin-paths"])
                .stdin(paths_input.into_bytes())
                .text()
                .await?;
            let ids: Vec<&str> = ids.lines().collect();
            if ids.len() != files.len() || !ids.iter().all(|id| is_hex_id(id)) {
                return Err(WorkspaceError::Git {
                    command: "hash-object".into(),
                    message: format!(
                        "unexpected output: {} ids for {} files",
                        ids.len(),
                        files.len()
                    ),
                });
            }
            for (file, id) in files.iter().zip(ids) {
                index_info.extend_from_slice(format!("100644 {id}\t{}\0", file.path).as_bytes());
            }
        }
        self.git("read-tree").arg("--empty").output().await?;
        self.git("update-index")
            .args(["--add", "-z", "--index-info"])
            .stdin(index_info)
            .output()
            .await?;
        let tree_id = self.git("write-tree").text().await?;
        let id = self
            .git("commit-tree")
            .args([tree_id.as_str(), "-p", head.as_str()])
            .stdin(message.as_bytes().to_vec())
            .commit_id()
            .await?;
        // Moves HEAD only if it is still `head`: the history stays linear.
        self.git("update-ref")
            .args([
                "-m",
                "agent-pipeline: commit files",
                "HEAD",
                id.as_str(),
                head.as_str(),
            ])
            .output()
            .await?;
        tracing::info!(
            dir = %self.dir.display(),
            commit = %id,
            parent = %head,
            base = ?base.map(CommitId::as_str),
            files = files.len(),
            base_files = kept.len(),
            removed_entries = removed,
            "workspace commit"
        );
        Ok(Commit { id, parent: head })
    }

    /// Makes the work tree hold exactly `commit`'s files (without committing), e.g. to run the
    /// tests of the base; returns how many entries were removed (leftovers, and files that
    /// were not `commit`'s). Files that already hold `commit`'s bytes are left alone.
    pub async fn check_out(&self, commit: &CommitId) -> Result<usize, WorkspaceError> {
        let entries = self.tree_entries(commit).await?;
        let executable = executables(&entries);
        let files = self.contents(entries).await?;
        self.replace_work_tree(files, executable).await
    }

    /// Makes the work tree hold exactly `tree` (all but `.git`, without following links),
    /// rewriting only the files that differ; returns how many entries were removed.
    async fn replace_work_tree(
        &self,
        tree: Vec<(String, Vec<u8>)>,
        executable: HashSet<String>,
    ) -> Result<usize, WorkspaceError> {
        let dir = self.dir.clone();
        let synced = blocking(&self.dir, move || {
            if let Some(task_dir) = dir.parent() {
                paths::check_real_dir(task_dir)?;
            }
            paths::check_real_dir(&dir)?;
            paths::check_real_dir(&dir.join(".git"))?;
            paths::sync_work_tree(&dir, &tree, &executable)
        })
        .await?;
        tracing::debug!(
            dir = %self.dir.display(),
            removed = synced.removed,
            written = synced.written,
            kept = synced.kept,
            "work tree updated"
        );
        Ok(synced.removed)
    }

    /// The commit the task's change starts from: the base ref of the repository the
    /// workspace was cloned from, or else the [`root`](Self::root) commit.
    pub async fn base(&self) -> Result<CommitId, WorkspaceError> {
        let spec = format!("{}^{{commit}}", from_repository::BASE_REF);
        let known = self
            .git("rev-parse")
            .args(["--verify", "--quiet", &spec])
            .succeeds()
            .await?;
        if !known {
            return self.root().await;
        }
        self.git("rev-parse")
            .args(["--verify", &spec])
            .commit_id()
            .await
    }

    /// The root commit (empty tree) made when the workspace was created, or the repository's
    /// first commit in a workspace cloned from one.
    pub async fn root(&self) -> Result<CommitId, WorkspaceError> {
        let roots = self
            .git("rev-list")
            .args(["--max-parents=0", "HEAD"])
            .text()
            .await?;
        // The history is linear, so there is one root; `rev-list` prints the oldest last.
        git::parse_commit_id("rev-list", roots.lines().last().unwrap_or_default())
    }

    /// The current head commit.
    pub async fn head(&self) -> Result<CommitId, WorkspaceError> {
        self.git("rev-parse")
            .args(["--verify", "HEAD^{commit}"])
            .commit_id()
            .await
    }

    /// `git diff from to` as text.
    ///
    /// Plain unified diff: no color, no external diff or text conversion drivers.
    pub async fn diff(&self, from: &CommitId, to: &CommitId) -> Result<String, WorkspaceError> {
        let output = self
            .git("diff")
            .args([
                "--no-color",
                "--no-ext-diff",
                "--no-textconv",
                from.as_str(),
                to.as_str(),
                "--",
            ])
            .output()
            .await?;
        Ok(String::from_utf8_lossy(&output).into_owned())
    }

    /// The paths of `commit`'s files, sorted.
    pub async fn paths_at(&self, commit: &CommitId) -> Result<Vec<String>, WorkspaceError> {
        let mut paths: Vec<String> = self
            .tree_entries(commit)
            .await?
            .into_iter()
            .map(|entry| entry.path)
            .collect();
        paths.sort();
        Ok(paths)
    }

    /// Every file of `commit`, path and content, sorted by path.
    pub async fn files_at(
        &self,
        commit: &CommitId,
    ) -> Result<Vec<(String, Vec<u8>)>, WorkspaceError> {
        let entries = self.tree_entries(commit).await?;
        self.contents(entries).await
    }

    /// The paths of `commit`'s executable files (git's mode `100755`).
    ///
    /// # Errors
    ///
    /// [`WorkspaceError::Git`] when the commit cannot be read.
    pub async fn executables_at(
        &self,
        commit: &CommitId,
    ) -> Result<HashSet<String>, WorkspaceError> {
        Ok(executables(&self.tree_entries(commit).await?))
    }

    /// The path and content of each of `entries`, sorted by path.
    async fn contents(
        &self,
        entries: Vec<TreeEntry>,
    ) -> Result<Vec<(String, Vec<u8>)>, WorkspaceError> {
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        let contents = self.read_blobs(&ids).await?;
        let mut files: Vec<(String, Vec<u8>)> =
            entries.into_iter().map(|e| e.path).zip(contents).collect();
        files.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(files)
    }

    /// Reads a file that a run left in the work tree (a test report, say), when `path` is
    /// acceptable, names a regular file of at most `max_bytes` and is reached without any
    /// symbolic link: the run was sandboxed code, and a link it planted must not be followed.
    pub async fn read_run_file(&self, path: &str, max_bytes: u64) -> Option<String> {
        paths::check_path(path, &WorkspaceLimits::default()).ok()?;
        let mut current = self.dir.clone();
        for part in path.split('/') {
            current.push(part);
            let meta = tokio::fs::symlink_metadata(&current).await.ok()?;
            if meta.file_type().is_symlink() {
                return None;
            }
        }
        let meta = tokio::fs::symlink_metadata(&current).await.ok()?;
        if !meta.is_file() || meta.len() > max_bytes {
            return None;
        }
        tokio::fs::read_to_string(&current).await.ok()
    }

    fn git(&self, subcommand: &str) -> Git {
        Git::in_work_tree(&self.dir, subcommand)
    }

    async fn has_head(&self) -> Result<bool, WorkspaceError> {
        self.git("rev-parse")
            .args(["--verify", "--quiet", "HEAD^{commit}"])
            .succeeds()
            .await
    }

    /// Makes the empty root commit, unless another opener made one first.
    async fn commit_root(&self, task_id: TaskId) -> Result<(), WorkspaceError> {
        let empty_tree = self.git("mktree").stdin(Vec::new()).text().await?;
        let root = self
            .git("commit-tree")
            .arg(&empty_tree)
            .stdin(format!("workspace created for task {task_id}\n").into_bytes())
            .commit_id()
            .await?;
        // An empty old value: only when HEAD does not exist yet.
        let created = self
            .git("update-ref")
            .args([
                "-m",
                "agent-pipeline: workspace created",
                "HEAD",
                root.as_str(),
                "",
            ])
            .output()
            .await;
        match created {
            Ok(_) => {
                tracing::debug!(task_id = %task_id, commit = %root, "workspace root commit");
                Ok(())
            }
            Err(_) if self.has_head().await? => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The blobs of `commit`'s tree (submodule entries are skipped).
    async fn tree_entries(&self, commit: &CommitId) -> Result<Vec<TreeEntry>, WorkspaceError> {
        let output = self
            .git("ls-tree")
            .args(["-r", "-z", "--full-tree", commit.as_str()])
            .output()
            .await?;
        let mut entries = Vec::new();
        for record in output.split(|b| *b == 0).filter(|r| !r.is_empty()) {
            let record = String::from_utf8_lossy(record);
            let parsed = record.split_once('\t').and_then(|(meta, path)| {
                let mut meta = meta.split(' ');
                Some((meta.next()?, meta.next()?, meta.next()?, path))
            });
            let Some((mode, kind, id, path)) = parsed else {
                return Err(WorkspaceError::Git {
                    command: "ls-tree".into(),
                    message: format!("unexpected output: {record:?}"),
                });
            };
            if kind == "blob" {
                entries.push(TreeEntry {
                    mode: mode.to_owned(),
                    id: id.to_owned(),
                    path: path.to_owned(),
                });
            }
        }
        Ok(entries)
    }

    /// The contents of the blobs `ids`, in order, with one `git cat-file --batch`.
    async fn read_blobs(&self, ids: &[&str]) -> Result<Vec<Vec<u8>>, WorkspaceError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut input = ids.join("\n");
        input.push('\n');
        let output = self
            .git("cat-file")
            .arg("--batch")
            .stdin(input.into_bytes())
            .output()
            .await?;
        let unexpected = |what: String| WorkspaceError::Git {
            command: "cat-file".into(),
            message: format!("unexpected output: {what}"),
        };
        let mut contents = Vec::with_capacity(ids.len());
        let mut rest = output.as_slice();
        for id in ids {
            let Some(newline) = rest.iter().position(|b| *b == b'\n') else {
                return Err(unexpected(format!("no header for {id}")));
            };
            let header = String::from_utf8_lossy(&rest[..newline]).into_owned();
            let size = match header.split(' ').collect::<Vec<_>>().as_slice() {
                [_, "blob", size] => size.parse::<usize>().ok(),
                _ => None,
            };
            let Some(size) = size else {
                return Err(unexpected(format!("{header:?} for {id}")));
            };
            let start = newline + 1;
            let Some(content) = rest.get(start..start + size) else {
                return Err(unexpected(format!("short content for {id}")));
            };
            contents.push(content.to_vec());
            rest = rest.get(start + size + 1..).unwrap_or_default();
        }
        Ok(contents)
    }
}
