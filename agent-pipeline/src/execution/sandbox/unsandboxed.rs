//! The explicit opt-in runner without isolation.

use async_trait::async_trait;

use super::process::{self, SHELL};
use super::{RunOutput, Sandbox, SandboxError, SandboxRun};

/// Runs commands WITHOUT ANY ISOLATION: the command sees the host's whole filesystem with
/// the rights of the current user, has the network, and [`SandboxRun::read_only`] is not
/// enforced.
///
/// It exists only for machines where bubblewrap cannot run, and must only be chosen by an
/// explicit opt-in of the user (`AGENT_SANDBOX=none` on the host). What it keeps are the
/// limits: the wall-clock timeout (the whole process group is killed), the address-space
/// limit, the file-size limit, the disk limit and the output cap; the process limit is kept
/// where a cgroup can be made for the run, and a warning says so where none can. It runs `/bin/sh -c` in
/// [`SandboxRun::workdir`] with a cleared environment: `PATH=/usr/local/bin:/usr/bin:/bin`,
/// `HOME` the temporary directory, `LANG=C.UTF-8`, `PYTHONDONTWRITEBYTECODE=1` and
/// [`SandboxRun::env`]. Every run logs a warning.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unsandboxed;

#[async_trait]
impl Sandbox for Unsandboxed {
    fn name(&self) -> &str {
        "unsandboxed"
    }

    async fn run(&self, run: &SandboxRun) -> Result<RunOutput, SandboxError> {
        let workdir = tokio::fs::canonicalize(&run.workdir).await?;
        let home = std::env::temp_dir();
        tracing::warn!(
            sandbox = self.name(),
            workdir = %workdir.display(),
            command = %run.command,
            env_keys = ?run.env.iter().map(|(key, _)| key.as_str()).collect::<Vec<_>>(),
            read_only_not_enforced = ?run.read_only,
            "running generated code WITHOUT a sandbox (explicit opt-in): no filesystem or network isolation"
        );
        let cgroup = process::run_cgroup(&run.limits).unwrap_or_else(|why| {
            tracing::warn!(
                sandbox = self.name(),
                %why,
                "the run's processes are not limited in number"
            );
            None
        });
        let mut env = process::base_env(&home.to_string_lossy());
        env.extend(run.env.iter().cloned());
        let invocation = process::Invocation {
            program: SHELL.into(),
            args: process::wrapper_args(&run.limits, &run.command, false),
            env,
            workdir,
        };
        process::execute(self.name(), invocation, run, cgroup)
            .await
            .map(|finished| finished.output)
    }
}
