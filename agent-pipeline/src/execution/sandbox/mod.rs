//! The sandbox that runs generated code and tests.
//!
//! [`Bubblewrap`] is the sandbox: no network, a read-only system, only the workdir
//! writable. [`Unsandboxed`] runs without any isolation and exists only as an explicit
//! opt-in (`AGENT_SANDBOX=none`) for machines where bubblewrap cannot run.
//!
//! Both run [`SandboxRun::command`] by `/bin/sh -c` under the same limits:
//!
//! - memory: `RLIMIT_AS` (soft and hard) of [`SandboxLimits::memory_bytes`], set by a shell
//!   wrapper around the command, so an allocation past it fails (Python raises
//!   `MemoryError`); files written are capped at 1 GiB each (`RLIMIT_FSIZE`);
//! - processes: at most [`SandboxLimits::max_processes`] processes and threads at once, so a
//!   fork bomb is refused its forks. The run gets a pids cgroup of its own (cgroup v1, or v2
//!   where `pids` is delegated to the host's cgroup), which binds root too; where none can
//!   be made, bubblewrap run by a user other than root sets `RLIMIT_NPROC` inside the run's
//!   user namespace (with `prlimit`), which counts only the run's processes. When neither
//!   works, [`Bubblewrap`] refuses to run ([`SandboxError::Unavailable`], saying how to
//!   allow it) and [`Unsandboxed`] warns. A limit that refused forks adds a last line
//!   `[process limit of N reached: M forks refused]`; every process left in the cgroup is
//!   killed when the run ends;
//! - disk: a run that adds more than [`SandboxLimits::disk_bytes`] to its workdir is killed
//!   (no exit code, a last line `[wrote N bytes to the workspace, more than its limit of M,
//!   killed]`), checked ten times a second, so it may write about what the disk takes in a
//!   tenth of a second past the limit;
//! - time: after [`SandboxLimits::timeout`] the whole process group is killed
//!   ([`RunOutput::timed_out`], no exit code, the output so far is kept, with a last line
//!   `[timed out after N ms, killed]`); anything the command left running in the background
//!   is killed when it exits too;
//! - output: stderr is merged into stdout and read while the command runs; at most
//!   [`SandboxLimits::output_bytes`] are kept, the first and the last half, with a line
//!   `[… N bytes omitted …]` in between ([`RunOutput::output_omitted_bytes`] is N). It is
//!   decoded as lossy UTF-8.
//!
//! [`RunOutput::exit_code`] is `None` when the top process was killed by a signal, with a
//! last line `[killed by signal N]`. A command killed by a signal below the top process is
//! reported the way the shell (or bubblewrap) reports it: exit code 128 + N.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;

mod bubblewrap;
mod cgroup;
mod disk_guard;
mod process;
mod unsandboxed;

pub use bubblewrap::Bubblewrap;
pub use unsandboxed::Unsandboxed;

/// The bounds of one sandboxed run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxLimits {
    /// Wall-clock time before the run is killed.
    pub timeout: Duration,
    /// Address-space limit of every process of the run, in bytes.
    pub memory_bytes: u64,
    /// How much of the combined stdout and stderr is kept, in bytes.
    pub output_bytes: usize,
    /// Most processes and threads of the run at once; `None` runs without that limit.
    pub max_processes: Option<u32>,
    /// Most bytes the run may add to its workdir; `None` runs without that limit.
    pub disk_bytes: Option<u64>,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(120),
            memory_bytes: 1024 * 1024 * 1024,
            output_bytes: 64 * 1024,
            max_processes: Some(512),
            disk_bytes: Some(4 * 1024 * 1024 * 1024),
        }
    }
}

/// One command to run in a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxRun {
    /// The directory the command runs in, the only writable place (`/workspace` inside).
    pub workdir: PathBuf,
    /// The command, run by `/bin/sh -c`.
    pub command: String,
    /// Extra environment variables (the environment is otherwise cleared).
    pub env: Vec<(String, String)>,
    /// Paths relative to `workdir` that the command may read but not write (e.g. `.git`).
    pub read_only: Vec<String>,
    /// Time, memory and output bounds.
    pub limits: SandboxLimits,
}

/// What a sandboxed run did.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct RunOutput {
    /// The sandbox that ran it (`bubblewrap`, `unsandboxed`).
    pub sandbox: String,
    /// The command.
    pub command: String,
    /// The exit code; `None` when the process was killed by a signal or the timeout.
    pub exit_code: Option<i32>,
    /// Whether the run was killed for exceeding its time limit.
    pub timed_out: bool,
    /// How long it ran, in milliseconds.
    pub duration_ms: u64,
    /// Combined stdout and stderr, cut to the output limit (head and tail kept).
    pub output: String,
    /// How many bytes of output were cut out.
    pub output_omitted_bytes: u64,
}

/// Why a command could not be run at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// The sandbox is not available on this machine.
    #[error("{0}")]
    Unavailable(String),
    /// The command could not be started or followed.
    #[error("could not run the command: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs commands in isolation.
#[async_trait]
pub trait Sandbox: Send + Sync + fmt::Debug + 'static {
    /// The sandbox's name, recorded in every run.
    fn name(&self) -> &str;

    /// Runs `run.command`; a non-zero exit or a timeout is a normal [`RunOutput`].
    async fn run(&self, run: &SandboxRun) -> Result<RunOutput, SandboxError>;
}
