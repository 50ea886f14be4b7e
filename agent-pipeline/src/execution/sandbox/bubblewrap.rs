//! The bubblewrap sandbox: every namespace unshared, a read-only system, only the workspace
//! writable, no network.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;

use super::process::{self, SHELL};
use super::{RunOutput, Sandbox, SandboxError, SandboxRun};

/// The size limit of the sandbox's `/tmp` (a tmpfs, held in memory).
const TMP_BYTES: u64 = 64 * 1024 * 1024;

/// Where the workdir is mounted inside the sandbox.
const WORKSPACE: &str = "/workspace";

/// The user and group the command runs as inside (`nobody`).
const NOBODY: &str = "65534";

/// What programs need from `/etc`; the rest of the host's `/etc` stays out of the sandbox.
const ETC_ENTRIES: &[&str] = &[
    "alternatives",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "passwd",
    "group",
    "nsswitch.conf",
    "ssl",
    "ca-certificates",
    "mime.types",
];

/// Top-level system directories: symlinks into `/usr` on a merged-`/usr` host, read-only
/// binds otherwise.
const SYSTEM_DIRS: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Tells how to get bubblewrap and what the alternative is.
const INSTALL_HINT: &str = "install bubblewrap (`bwrap`, Debian package `bubblewrap`); \
     generated code is never run without a sandbox unless you opt in explicitly with \
     AGENT_SANDBOX=none (the host's setting)";

/// The bubblewrap sandbox (`bwrap`).
///
/// Each run gets new user, pid, network, ipc, uts and cgroup namespaces, runs as
/// `nobody` (65534) with no capabilities, in a new session, and dies with its parent. The
/// system (`/usr` and the few `/etc` files programs need) and the root are read-only, `/tmp`
/// is a 64 MiB tmpfs, the workdir is mounted read-write at `/workspace` (the command's directory) and
/// each [`SandboxRun::read_only`] entry is mounted over itself read-only. There is no network:
/// the new network namespace only has a loopback device that is down. The environment is
/// `PATH=/usr/local/bin:/usr/bin:/bin`, `HOME=/tmp`, `LANG=C.UTF-8`,
/// `PYTHONDONTWRITEBYTECODE=1` and [`SandboxRun::env`], nothing from the host.
///
/// `bwrap` (0.5 or newer) is looked up on `PATH` at every run, or is the program given to
/// [`Bubblewrap::with_program`]. When it is missing or cannot create the sandbox, `run`
/// fails with [`SandboxError::Unavailable`]: generated code is never run without a sandbox
/// behind the user's back (see [`Unsandboxed`](super::Unsandboxed) for the explicit opt-in).
///
/// # Example
///
/// ```no_run
/// use agent_pipeline::execution::sandbox::{Bubblewrap, Sandbox, SandboxLimits, SandboxRun};
///
/// # async fn example() -> Result<(), agent_pipeline::execution::sandbox::SandboxError> {
/// let run = SandboxRun {
///     workdir: "/srv/tasks/42".into(),
///     command: "python3 -m unittest -v".into(),
///     env: vec![],
///     read_only: vec![".git".into()],
///     limits: SandboxLimits::default(),
/// };
/// let output = Bubblewrap::default().run(&run).await?;
/// println!("exit code {:?}:\n{}", output.exit_code, output.output);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Bubblewrap {
    /// The program given by [`Bubblewrap::with_program`]; `bwrap` on `PATH` when `None`.
    program: Option<PathBuf>,
}

impl Bubblewrap {
    /// The sandbox run by `bwrap` from `PATH` (same as `default()`).
    pub fn new() -> Self {
        Self::default()
    }

    /// The sandbox run by `program` (a path, or a name looked up on `PATH`) instead of `bwrap`.
    pub fn with_program(program: impl Into<PathBuf>) -> Self {
        Self {
            program: Some(program.into()),
        }
    }

    /// Whether the bubblewrap program is there. It may still fail to create a sandbox (e.g.
    /// where unprivileged user namespaces are disabled); `run` then reports
    /// [`SandboxError::Unavailable`].
    pub fn is_available(&self) -> bool {
        self.find_program().is_some()
    }

    /// The program to run: the one given, or `bwrap`, found as an executable file.
    fn find_program(&self) -> Option<PathBuf> {
        let program = self.program.as_deref().unwrap_or(Path::new("bwrap"));
        if program.components().count() > 1 {
            return is_executable(program).then(|| program.to_path_buf());
        }
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|candidate| is_executable(candidate))
    }

    fn unavailable_message(&self) -> String {
        match &self.program {
            Some(program) => format!(
                "bubblewrap was not found at {}: {INSTALL_HINT}",
                program.display()
            ),
            None => format!("bubblewrap (`bwrap`) is not installed or not on PATH: {INSTALL_HINT}"),
        }
    }
}

#[async_trait]
impl Sandbox for Bubblewrap {
    fn name(&self) -> &str {
        "bubblewrap"
    }

    async fn run(&self, run: &SandboxRun) -> Result<RunOutput, SandboxError> {
        let Some(program) = self.find_program() else {
            tracing::error!(sandbox = self.name(), "bubblewrap is not available");
            return Err(SandboxError::Unavailable(self.unavailable_message()));
        };
        let workdir = tokio::fs::canonicalize(&run.workdir).await?;
        let read_only = read_only_entries(&workdir, &run.read_only)?;
        let (cgroup, rlimit_nproc) = match process::run_cgroup(&run.limits) {
            Ok(cgroup) => (cgroup, false),
            Err(why) if rlimit_nproc_binds() => {
                tracing::debug!(
                    sandbox = self.name(),
                    %why,
                    "no cgroup for the run: RLIMIT_NPROC in its user namespace limits its processes"
                );
                (None, true)
            }
            Err(why) => {
                tracing::error!(sandbox = self.name(), %why, "the process limit cannot be kept");
                return Err(SandboxError::Unavailable(format!(
                    "the sandbox cannot limit the number of processes of a run ({why}), and \
                     RLIMIT_NPROC does not bind a host run as root; give the host a pids \
                     cgroup it can create children in, run it as another user, or run \
                     without the limit (SandboxLimits::max_processes = None; the host's \
                     SANDBOX_MAX_PROCESSES=none)"
                )));
            }
        };

        let mut args = arguments(&workdir, &read_only);
        args.extend(process::wrapper_args(
            &run.limits,
            &run.command,
            rlimit_nproc,
        ));
        // The environment of the sandbox is the one of `bwrap` itself, cleared rather than
        // set by `--clearenv` + `--setenv`, which would put the values of `run.env` on
        // `bwrap`'s command line, readable by every user of the host.
        let mut env = process::base_env("/tmp");
        env.extend(run.env.iter().cloned());

        tracing::info!(
            sandbox = self.name(),
            program = %program.display(),
            workdir = %workdir.display(),
            command = %run.command,
            env_keys = ?run.env.iter().map(|(key, _)| key.as_str()).collect::<Vec<_>>(),
            read_only = ?read_only,
            timeout_ms = u64::try_from(run.limits.timeout.as_millis()).unwrap_or(u64::MAX),
            memory_bytes = run.limits.memory_bytes,
            max_processes = ?run.limits.max_processes,
            process_limit = if cgroup.is_some() { "cgroup" } else if rlimit_nproc { "rlimit" } else { "none" },
            disk_bytes = ?run.limits.disk_bytes,
            "running in bubblewrap"
        );

        let invocation = process::Invocation {
            program,
            args,
            env,
            workdir,
        };
        let finished = match process::execute(self.name(), invocation, run, cgroup).await {
            Ok(finished) => finished,
            Err(SandboxError::Io(error)) if error.kind() == io::ErrorKind::NotFound => {
                return Err(SandboxError::Unavailable(self.unavailable_message()));
            }
            Err(error) => return Err(error),
        };
        // bwrap reports its own failures (before the command started) on its stderr and
        // exits with 1; the command's stderr never goes there (it is merged into stdout).
        if finished.output.exit_code == Some(1)
            && let Some(message) = finished.direct_stderr.strip_prefix("bwrap: ")
        {
            let message = message.lines().next().unwrap_or_default().trim();
            tracing::error!(sandbox = self.name(), reason = message, "bubblewrap failed");
            return Err(SandboxError::Unavailable(format!(
                "bubblewrap could not create the sandbox ({message}); it needs unprivileged \
                 user namespaces or to run as root; generated code is never run without a \
                 sandbox unless you opt in explicitly with AGENT_SANDBOX=none (the host's setting)"
            )));
        }
        Ok(finished.output)
    }
}

/// Whether `RLIMIT_NPROC` set inside the run's user namespace binds its processes: when the
/// host does not run as root (root's processes are exempt from it, whatever namespace they
/// are in) and [`process::PRLIMIT`] is there to set it.
fn rlimit_nproc_binds() -> bool {
    !rustix::process::getuid().is_root() && is_executable(Path::new(process::PRLIMIT))
}

/// Whether `path` is a file with an execute bit.
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
}

/// The existing `read_only` entries as canonical paths relative to `workdir` (itself
/// canonical). Entries that are absolute, contain `..` or lead out of the workdir through a
/// symlink are refused; missing entries are skipped.
fn read_only_entries(workdir: &Path, entries: &[String]) -> Result<Vec<PathBuf>, SandboxError> {
    let mut relative = Vec::new();
    for entry in entries {
        let path = Path::new(entry);
        let inside = !entry.is_empty()
            && path
                .components()
                .all(|component| matches!(component, Component::Normal(_) | Component::CurDir));
        if !inside {
            return Err(invalid_entry(
                entry,
                "must be a relative path inside the workdir",
            ));
        }
        let canonical = match std::fs::canonicalize(workdir.join(path)) {
            Ok(canonical) => canonical,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                tracing::debug!(entry = %entry, "read-only entry does not exist, skipped");
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        match canonical.strip_prefix(workdir) {
            Ok(rest) if rest.as_os_str().is_empty() => {
                return Err(invalid_entry(entry, "is the workdir itself"));
            }
            Ok(rest) => relative.push(rest.to_path_buf()),
            Err(_) => return Err(invalid_entry(entry, "leads out of the workdir")),
        }
    }
    Ok(relative)
}

fn invalid_entry(entry: &str, why: &str) -> SandboxError {
    SandboxError::Io(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("read-only entry {entry:?} {why}"),
    ))
}

/// The `bwrap` arguments for a run in `workdir` (canonical) with `read_only` entries
/// (canonical, relative to `workdir`), up to the command.
fn arguments(workdir: &Path, read_only: &[PathBuf]) -> Vec<OsString> {
    let mut args = Args::default();
    args.push([
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--uid",
        NOBODY,
        "--gid",
        NOBODY,
    ]);
    args.push(["--ro-bind", "/usr", "/usr"]);
    for dir in SYSTEM_DIRS {
        let host = Path::new("/").join(dir);
        match std::fs::read_link(&host) {
            Ok(target) if Path::new("/").join(&target).starts_with("/usr") => {
                args.push_os(["--symlink".as_ref(), target.as_ref(), host.as_ref()]);
            }
            // Not a symlink into /usr (or not there at all): bind it as it is, if it is.
            _ => args.push_os(["--ro-bind-try".as_ref(), host.as_ref(), host.as_ref()]),
        }
    }
    for entry in etc_entries() {
        args.push_os(["--ro-bind-try".as_ref(), entry.as_ref(), entry.as_ref()]);
    }
    args.push(["--dev", "/dev", "--proc", "/proc"]);
    let tmp_bytes = TMP_BYTES.to_string();
    args.push(["--size", &tmp_bytes, "--tmpfs", "/tmp"]);
    args.push_os(["--bind".as_ref(), workdir.as_ref(), WORKSPACE.as_ref()]);
    for entry in read_only {
        let inside = Path::new(WORKSPACE).join(entry);
        args.push_os([
            "--ro-bind".as_ref(),
            workdir.join(entry).as_ref(),
            inside.as_ref(),
        ]);
    }
    // The root bwrap builds is a writable tmpfs: make it read-only, leaving the mounts on it
    // (`/workspace`, `/tmp`, `/dev`) as they are.
    args.push(["--remount-ro", "/", "--chdir", WORKSPACE, SHELL]);
    args.0
}

/// The `/etc` entries bound into the sandbox: [`ETC_ENTRIES`] and Python's `/etc/python3*`
/// (Debian keeps `sitecustomize.py` there).
fn etc_entries() -> Vec<PathBuf> {
    let etc = Path::new("/etc");
    let mut entries: Vec<PathBuf> = ETC_ENTRIES.iter().map(|entry| etc.join(entry)).collect();
    let mut python: Vec<PathBuf> = std::fs::read_dir(etc)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("python3"))
        .map(|entry| entry.path())
        .collect();
    python.sort();
    entries.extend(python);
    entries
}

/// An argument list built from groups of arguments.
#[derive(Default)]
struct Args(Vec<OsString>);

impl Args {
    fn push<const N: usize>(&mut self, group: [&str; N]) {
        self.0.extend(group.map(OsString::from));
    }

    fn push_os<const N: usize>(&mut self, group: [&OsStr; N]) {
        self.0.extend(group.map(OsStr::to_os_string));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_entries_must_stay_inside() {
        let workdir = Path::new("/nonexistent-workdir");
        for entry in ["/etc", "../x", "a/../../x", ""] {
            let result = read_only_entries(workdir, &[entry.to_owned()]);
            assert!(
                matches!(&result, Err(SandboxError::Io(e)) if e.kind() == io::ErrorKind::InvalidInput),
                "{entry:?} gave {result:?}"
            );
        }
        let missing = read_only_entries(workdir, &[".git".to_owned()])
            .unwrap_or_else(|e| panic!("missing entry refused: {e}"));
        assert!(missing.is_empty());
    }

    #[test]
    fn arguments_mount_the_workspace_and_end_with_the_shell() {
        let args = arguments(Path::new("/w"), &[PathBuf::from(".git")]);
        let args: Vec<String> = args
            .iter()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        assert!(joined.starts_with(
            "--unshare-all --die-with-parent --new-session --cap-drop ALL --uid 65534 --gid 65534 --ro-bind /usr /usr"
        ));
        assert!(joined.contains(" --bind /w /workspace --ro-bind /w/.git /workspace/.git "));
        assert!(joined.ends_with(" --remount-ro / --chdir /workspace /bin/sh"));
        assert!(!joined.contains("--bind /etc /etc"));
    }
}
