//! Running the `git` command-line tool with a fixed, isolated configuration.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::{CommitId, WorkspaceError};

/// Configuration passed to every git command, so that the user's or the system's settings,
/// hooks and signing never change what the pipeline does.
const CONFIG: &[&str] = &[
    "user.name=agent-pipeline",
    "user.email=agent-pipeline@localhost",
    "commit.gpgsign=false",
    "tag.gpgsign=false",
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "core.autocrlf=false",
    "core.pager=cat",
    "init.defaultBranch=main",
    "advice.detachedHead=false",
    "gc.auto=0",
];

/// The most of git's error output kept in an error message, in bytes.
const MAX_MESSAGE_BYTES: usize = 4000;

/// One git invocation, built up argument by argument.
#[derive(Debug)]
pub(crate) struct Git {
    command: Command,
    subcommand: String,
    input: Option<Vec<u8>>,
}

impl Git {
    /// `git <subcommand>` outside any repository (for `init` and `clone`).
    pub(crate) fn new(subcommand: &str) -> Self {
        Self::build(subcommand, |_| {})
    }

    /// `git <subcommand>` in the repository whose work tree is `dir` (git directory
    /// `dir/.git`), never searching parent directories for another repository.
    pub(crate) fn in_work_tree(dir: &Path, subcommand: &str) -> Self {
        Self::build(subcommand, |command| {
            command
                .arg(prefixed("--git-dir=", &dir.join(".git")))
                .arg(prefixed("--work-tree=", dir))
                .current_dir(dir);
        })
    }

    /// `git <subcommand>` in the bare repository `git_dir`.
    pub(crate) fn in_git_dir(git_dir: &Path, subcommand: &str) -> Self {
        Self::build(subcommand, |command| {
            command.arg(prefixed("--git-dir=", git_dir));
        })
    }

    fn build(subcommand: &str, locate: impl FnOnce(&mut Command)) -> Self {
        let mut command = Command::new("git");
        // Inherited GIT_* variables (GIT_DIR, GIT_INDEX_FILE, GIT_CONFIG_PARAMETERS, ...) would
        // point git somewhere else; a git hook that runs the pipeline sets several of them.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("GIT_") {
                command.env_remove(&key);
            }
        }
        command
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for setting in CONFIG {
            command.arg("-c").arg(setting);
        }
        locate(&mut command);
        command.arg(subcommand);
        Self {
            command,
            subcommand: subcommand.to_owned(),
            input: None,
        }
    }

    /// Adds one argument.
    pub(crate) fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.command.arg(arg);
        self
    }

    /// Adds several arguments.
    pub(crate) fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command.args(args);
        self
    }

    /// Feeds `input` to git's standard input.
    pub(crate) fn stdin(mut self, input: Vec<u8>) -> Self {
        self.command.stdin(Stdio::piped());
        self.input = Some(input);
        self
    }

    /// Runs the command and waits for it; fails only when git cannot be run at all.
    async fn run(self) -> Result<(String, std::process::Output), WorkspaceError> {
        let Self {
            mut command,
            subcommand,
            input,
        } = self;
        tracing::debug!(command = %subcommand, "running git");
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => return Err(not_run(subcommand, &e)),
        };
        let stdin = child.stdin.take();
        let feed = async move {
            if let (Some(mut stdin), Some(input)) = (stdin, input) {
                // A write error means git stopped reading; its exit status tells why.
                let _ = stdin.write_all(&input).await;
                let _ = stdin.shutdown().await;
            }
        };
        let ((), output) = tokio::join!(feed, child.wait_with_output());
        match output {
            Ok(output) => Ok((subcommand, output)),
            Err(e) => Err(not_run(subcommand, &e)),
        }
    }

    /// Runs the command; its standard output when it succeeds, a [`WorkspaceError::Git`] with
    /// git's error output when it does not.
    pub(crate) async fn output(self) -> Result<Vec<u8>, WorkspaceError> {
        let (subcommand, output) = self.run().await?;
        if output.status.success() {
            return Ok(output.stdout);
        }
        let mut message = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if message.is_empty() {
            message = format!("git exited with {}", output.status);
        } else if message.len() > MAX_MESSAGE_BYTES {
            let mut end = MAX_MESSAGE_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push_str(" [...]");
        }
        tracing::debug!(command = %subcommand, status = %output.status, message = %message, "git failed");
        Err(WorkspaceError::Git {
            command: subcommand,
            message,
        })
    }

    /// Runs the command and returns its output as trimmed text.
    pub(crate) async fn text(self) -> Result<String, WorkspaceError> {
        let output = self.output().await?;
        Ok(String::from_utf8_lossy(&output).trim().to_owned())
    }

    /// Runs a command that prints one commit id.
    pub(crate) async fn commit_id(self) -> Result<CommitId, WorkspaceError> {
        let subcommand = self.subcommand.clone();
        let text = self.text().await?;
        parse_commit_id(&subcommand, &text)
    }

    /// Runs the command and tells whether it succeeded, for questions such as
    /// `rev-parse --verify --quiet`.
    pub(crate) async fn succeeds(self) -> Result<bool, WorkspaceError> {
        let (_, output) = self.run().await?;
        Ok(output.status.success())
    }
}

fn not_run(command: String, error: &std::io::Error) -> WorkspaceError {
    WorkspaceError::Git {
        command,
        message: format!("could not run git: {error}"),
    }
}

/// Parses git's printed object id as a [`CommitId`].
pub(crate) fn parse_commit_id(command: &str, text: &str) -> Result<CommitId, WorkspaceError> {
    CommitId::try_from(text.trim().to_owned()).map_err(|problem| WorkspaceError::Git {
        command: command.to_owned(),
        message: format!("unexpected output: {problem}"),
    })
}

/// `--option=<path>` as one argument, without requiring the path to be UTF-8.
fn prefixed(option: &str, path: &Path) -> std::ffi::OsString {
    let mut arg = std::ffi::OsString::from(option);
    arg.push(path.as_os_str());
    arg
}
