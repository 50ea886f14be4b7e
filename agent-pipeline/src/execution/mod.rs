//! Real execution of a task's code: the per-task git workspace, the sandbox that runs
//! generated tests, and the parsers that read real test counts from a run.

pub mod results;
mod run_summary;
pub mod sandbox;
mod test_command;
pub(crate) mod workspace;

pub use test_command::detect_test_command;
pub(crate) use workspace::is_plain_rev;
pub use workspace::{
    ChangedFile, Commit, CommitId, TaskWorkspace, WorkspaceError, WorkspaceLimits, check_files,
    clone_at,
};
