//! What every sandbox shares: the shell wrapper that sets the limits inside, spawning in a
//! process group of its own, bounded capture of the output, the wall-clock timeout and the
//! kill of the whole group.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process_group};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{ChildStderr, ChildStdout, Command};
use tokio::time::Instant;

use super::cgroup::RunCgroup;
use super::disk_guard::DiskGuard;
use super::{RunOutput, SandboxError, SandboxLimits, SandboxRun};

/// The shell that runs the wrapper and the command, inside and outside a sandbox.
pub(super) const SHELL: &str = "/bin/sh";

/// `PATH` of every run.
pub(super) const SANDBOX_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The largest file a run may write (`RLIMIT_FSIZE`), so a runaway test cannot fill the disk
/// through the writable workspace.
pub(super) const MAX_FILE_BYTES: u64 = 1024 * 1024 * 1024;

/// From this memory limit on, the address space is left unlimited (the shells' `ulimit`
/// overflows on larger numbers).
const UNLIMITED_MEMORY_FROM: u64 = 1 << 50;

/// How long the output pipes may stay open after the top process exited (a background
/// process still holding them) before the process group is killed.
const LINGER_GRACE: Duration = Duration::from_secs(1);

/// How long to wait for the process and its pipes after a kill.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// How often a run's writes are checked against [`SandboxLimits::disk_bytes`].
const DISK_CHECK_EVERY: Duration = Duration::from_millis(100);

/// The script that moves itself into the run's cgroup (its `cgroup.procs` is `$0`), then
/// becomes the program (`"$@"`), so that every process of the run is born inside.
const JOIN_CGROUP: &str = concat!(
    "echo $$ > \"$0\" || { echo \"agent-pipeline: could not join the run's cgroup $0\" >&2; exit 125; }; ",
    "exec \"$@\""
);

/// What [`JOIN_CGROUP`] says, and its exit code, when it cannot join the cgroup.
const JOIN_FAILED: &str = "agent-pipeline: could not join the run's cgroup";
const JOIN_FAILED_EXIT: i32 = 125;

/// How much of what reached the real stderr (only the sandbox itself and the wrapper write
/// there: the command's stderr is merged into stdout) is kept apart to explain setup failures.
const DIRECT_STDERR_KEPT: usize = 4096;

/// The environment of every run (before [`SandboxRun::env`]), with `home` as `HOME`.
pub(super) fn base_env(home: &str) -> Vec<(String, String)> {
    [
        ("PATH", SANDBOX_PATH),
        ("HOME", home),
        ("LANG", "C.UTF-8"),
        ("PYTHONDONTWRITEBYTECODE", "1"),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value.to_owned()))
    .collect()
}

/// `prlimit` (util-linux), which sets `RLIMIT_NPROC` (dash has no `ulimit -u`).
pub(super) const PRLIMIT: &str = "/usr/bin/prlimit";

/// The arguments of [`SHELL`] that set the limits of `limits`, merge stderr into stdout and
/// then run `command` by `/bin/sh -c`.
///
/// `ulimit -v` and `ulimit -f` without `-S`/`-H` set both the soft and the hard limit, so the
/// command cannot raise them again. With `rlimit_nproc`, [`SandboxLimits::max_processes`] is
/// also set as `RLIMIT_NPROC` (soft and hard) by [`PRLIMIT`]: that is only meant inside a
/// user namespace of the run's own, where it counts the run's processes alone.
pub(super) fn wrapper_args(
    limits: &SandboxLimits,
    command: &str,
    rlimit_nproc: bool,
) -> Vec<OsString> {
    let memory = if limits.memory_bytes >= UNLIMITED_MEMORY_FROM {
        "unlimited".to_owned()
    } else {
        (limits.memory_bytes / 1024).to_string()
    };
    // `ulimit -f` counts 512-byte blocks in dash and in bash as `sh`.
    let file_blocks = MAX_FILE_BYTES / 512;
    let nproc = match limits.max_processes {
        Some(max) if rlimit_nproc => format!("{PRLIMIT} --nproc={max} -- "),
        _ => String::new(),
    };
    let script = format!(
        "ulimit -v {memory}; ulimit -f {file_blocks}; exec 2>&1; exec {nproc}{SHELL} -c \"$1\""
    );
    ["-c", &script, "sandbox", command]
        .into_iter()
        .map(OsString::from)
        .collect()
}

/// The cgroup that keeps the run under [`SandboxLimits::max_processes`] (`None` when there
/// is no such limit), or why none can be made.
pub(super) fn run_cgroup(limits: &SandboxLimits) -> Result<Option<RunCgroup>, String> {
    limits.max_processes.map(RunCgroup::create).transpose()
}

/// A finished run, and what reached the real stderr (see [`DIRECT_STDERR_KEPT`]).
#[derive(Debug)]
pub(super) struct Finished {
    /// The outcome as reported to the caller.
    pub(super) output: RunOutput,
    /// The first bytes written to the process's own stderr, lossy UTF-8.
    pub(super) direct_stderr: String,
}

/// The program that runs a command, before the limits of the run are applied to it.
#[derive(Debug)]
pub(super) struct Invocation {
    /// The program (the sandbox, or [`SHELL`]).
    pub(super) program: PathBuf,
    /// Its arguments.
    pub(super) args: Vec<OsString>,
    /// Its whole environment.
    pub(super) env: Vec<(String, String)>,
    /// The run's canonical workdir, also the program's current directory.
    pub(super) workdir: PathBuf,
}

/// How a run ended, before its output is read to the end.
enum Ending {
    Exited(ExitStatus),
    TimedOut,
    /// Killed for adding this many bytes to its workdir.
    OverDisk(u64),
}

/// Spawns `invocation` in a process group of its own (inside `cgroup` when there is one)
/// and follows it to the end under `run.limits`.
///
/// On timeout or a disk overrun the whole process group, and whatever is in the cgroup, is
/// killed; after a normal exit it is killed too, so nothing the command left in the
/// background survives the run.
pub(super) async fn execute(
    sandbox: &str,
    invocation: Invocation,
    run: &SandboxRun,
    cgroup: Option<RunCgroup>,
) -> Result<Finished, SandboxError> {
    let limits = run.limits;
    let mut disk = match limits.disk_bytes {
        Some(limit) => {
            let workdir = invocation.workdir.clone();
            let started =
                tokio::task::spawn_blocking(move || DiskGuard::start(&workdir, limit)).await;
            Some(started.map_err(|e| SandboxError::Io(std::io::Error::other(e)))??)
        }
        None => None,
    };
    let mut command = match &cgroup {
        Some(cgroup) => {
            let mut command = Command::new(SHELL);
            command
                .args(["-c", JOIN_CGROUP])
                .arg(cgroup.procs_file())
                .arg(&invocation.program);
            command
        }
        None => Command::new(&invocation.program),
    };
    command
        .args(&invocation.args)
        .current_dir(&invocation.workdir)
        .env_clear()
        .envs(invocation.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);

    let start = Instant::now();
    let deadline = start + limits.timeout;
    let mut child = command.spawn()?;
    let pgid = child.id();
    tracing::debug!(sandbox, pid = ?pgid, "sandboxed process started");
    let kill_all = || kill_group(pgid, cgroup.as_ref());

    let mut capture = Capture::new(limits.output_bytes);
    let mut direct_stderr = Vec::new();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();

    let (status, ending) = {
        let reader = pump(stdout, stderr, &mut capture, &mut direct_stderr);
        tokio::pin!(reader);
        let mut reader_done = false;
        let mut disk_check = tokio::time::interval(DISK_CHECK_EVERY);
        disk_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

        let waited = tokio::time::timeout_at(deadline, async {
            loop {
                tokio::select! {
                    status = child.wait() => return status.map(Ending::Exited),
                    () = &mut reader, if !reader_done => reader_done = true,
                    _ = disk_check.tick(), if disk.is_some() => {
                        if let Some(written) = overrun(&mut disk).await {
                            return Ok(Ending::OverDisk(written));
                        }
                    }
                }
            }
        })
        .await;

        let ending = match waited {
            Ok(ending) => ending?,
            Err(_elapsed) => Ending::TimedOut,
        };
        let status = match ending {
            Ending::Exited(status) => Some(status),
            Ending::TimedOut | Ending::OverDisk(_) => {
                if let Ending::OverDisk(written) = ending {
                    tracing::warn!(
                        sandbox,
                        written,
                        "run wrote past its disk limit, killing it"
                    );
                } else {
                    tracing::warn!(
                        sandbox,
                        timeout_ms = duration_ms(limits.timeout),
                        "run timed out, killing its process group"
                    );
                }
                kill_all();
                if let Err(error) = child.start_kill() {
                    tracing::debug!(sandbox, %error, "could not kill the top process");
                }
                match tokio::time::timeout(KILL_GRACE, child.wait()).await {
                    Ok(Ok(status)) => Some(status),
                    Ok(Err(error)) => {
                        tracing::warn!(sandbox, %error, "could not reap the killed process");
                        None
                    }
                    Err(_elapsed) => {
                        tracing::warn!(sandbox, "the killed process did not exit");
                        None
                    }
                }
            }
        };

        let mut group_killed = !matches!(ending, Ending::Exited(_));
        if !reader_done {
            let grace = if group_killed {
                KILL_GRACE
            } else {
                LINGER_GRACE
            };
            if tokio::time::timeout(grace, &mut reader).await.is_err() {
                tracing::debug!(sandbox, "output still open after the process exited");
                kill_all();
                group_killed = true;
                if tokio::time::timeout(KILL_GRACE, &mut reader).await.is_err() {
                    tracing::warn!(sandbox, "output still open after the kill, no longer read");
                }
            }
        }
        if !group_killed {
            // A background process that no longer holds the output may still run.
            kill_all();
        }
        (status, ending)
    };
    let duration = start.elapsed();

    let (mut output, output_omitted_bytes) = capture.finish();
    let exit_code = match ending {
        Ending::Exited(_) => status.and_then(|status| exit_code(status, &mut output)),
        Ending::TimedOut => {
            let note = format!(
                "[timed out after {} ms, killed]",
                duration_ms(limits.timeout)
            );
            append_note(&mut output, &note);
            None
        }
        Ending::OverDisk(written) => {
            let limit = limits.disk_bytes.unwrap_or_default();
            let note = format!(
                "[wrote {written} bytes to the workspace, more than its limit of {limit}, killed]"
            );
            append_note(&mut output, &note);
            None
        }
    };
    if let Some(cgroup) = cgroup {
        let refused = cgroup.refused_forks();
        if refused > 0 {
            let note = format!(
                "[process limit of {} reached: {refused} forks refused]",
                cgroup.max_processes()
            );
            append_note(&mut output, &note);
        }
        cgroup.dispose().await;
    }
    let direct_stderr = String::from_utf8_lossy(&direct_stderr).into_owned();
    if exit_code == Some(JOIN_FAILED_EXIT) && direct_stderr.contains(JOIN_FAILED) {
        return Err(SandboxError::Unavailable(format!(
            "the run could not enter its cgroup: {}",
            direct_stderr.trim()
        )));
    }

    let output = RunOutput {
        sandbox: sandbox.to_owned(),
        command: run.command.clone(),
        exit_code,
        timed_out: matches!(ending, Ending::TimedOut),
        duration_ms: duration_ms(duration),
        output,
        output_omitted_bytes,
    };
    tracing::info!(
        sandbox,
        exit_code = ?output.exit_code,
        timed_out = output.timed_out,
        duration_ms = output.duration_ms,
        output_bytes = output.output.len(),
        output_omitted_bytes,
        "sandboxed run finished"
    );
    Ok(Finished {
        output,
        direct_stderr,
    })
}

/// Whether the run behind `disk` wrote past its limit: the bytes it wrote, if so. `disk`
/// is lent to a blocking thread for the check (it may walk the workdir) and is `None` from
/// the first check that fails on (the limit is then no longer followed).
async fn overrun(disk: &mut Option<DiskGuard>) -> Option<u64> {
    let mut guard = disk.take()?;
    let checked = tokio::task::spawn_blocking(move || {
        let overrun = guard.overrun();
        (guard, overrun)
    })
    .await;
    match checked {
        Ok((guard, Ok(overrun))) => {
            *disk = Some(guard);
            overrun
        }
        Ok((guard, Err(error))) => {
            tracing::warn!(%error, limit = guard.limit(), "cannot measure the run's writes any more");
            None
        }
        Err(error) => {
            tracing::warn!(%error, "the check of the run's writes did not finish");
            None
        }
    }
}

/// The exit code of `status`, or `None` with a note in `output` when a signal ended it.
fn exit_code(status: ExitStatus, output: &mut String) -> Option<i32> {
    if let Some(code) = status.code() {
        return Some(code);
    }
    match status.signal() {
        Some(signal) => append_note(output, &format!("[killed by signal {signal}]")),
        None => append_note(output, "[ended without an exit code]"),
    }
    None
}

/// Appends `note` to `output` on a line of its own.
fn append_note(output: &mut String, note: &str) {
    if !output.is_empty() && !output.ends_with('\n') {
        output.push('\n');
    }
    output.push_str(note);
    output.push('\n');
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Kills process group `pgid` and whatever is in `cgroup` with `SIGKILL`.
fn kill_group(pgid: Option<u32>, cgroup: Option<&RunCgroup>) {
    if let Some(cgroup) = cgroup {
        cgroup.kill_all();
    }
    let Some(pgid) = pgid
        .and_then(|pgid| i32::try_from(pgid).ok())
        .and_then(Pid::from_raw)
    else {
        return;
    };
    // It fails when the group is already gone, which is the usual case after an exit.
    let killed = kill_process_group(pgid, Signal::KILL).is_ok();
    tracing::debug!(
        pgid = pgid.as_raw_nonzero().get(),
        killed,
        "process group kill"
    );
}

/// Reads stdout and stderr until both are closed, into `capture`; the first bytes of
/// stderr are also kept in `direct_stderr`.
async fn pump(
    mut stdout: Option<ChildStdout>,
    mut stderr: Option<ChildStderr>,
    capture: &mut Capture,
    direct_stderr: &mut Vec<u8>,
) {
    let mut out_buf = vec![0_u8; 16 * 1024];
    let mut err_buf = vec![0_u8; 4 * 1024];
    while stdout.is_some() || stderr.is_some() {
        tokio::select! {
            read = read_some(&mut stdout, &mut out_buf) => match read {
                Ok(0) | Err(_) => stdout = None,
                Ok(n) => capture.push(&out_buf[..n]),
            },
            read = read_some(&mut stderr, &mut err_buf) => match read {
                Ok(0) | Err(_) => stderr = None,
                Ok(n) => {
                    let keep = n.min(DIRECT_STDERR_KEPT.saturating_sub(direct_stderr.len()));
                    direct_stderr.extend_from_slice(&err_buf[..keep]);
                    capture.push(&err_buf[..n]);
                }
            },
        }
    }
}

/// Reads from `reader`, or waits forever once it is gone.
async fn read_some<R: AsyncRead + Unpin>(
    reader: &mut Option<R>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    match reader {
        Some(reader) => reader.read(buf).await,
        None => std::future::pending().await,
    }
}

/// Output kept within a byte limit: the first half and the last half, counting what falls
/// in between.
#[derive(Debug)]
struct Capture {
    head_limit: usize,
    tail_limit: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
}

impl Capture {
    fn new(limit: usize) -> Self {
        let head_limit = limit / 2;
        Self {
            head_limit,
            tail_limit: limit - head_limit,
            head: Vec::new(),
            tail: VecDeque::new(),
            total: 0,
        }
    }

    fn push(&mut self, mut data: &[u8]) {
        self.total = self
            .total
            .saturating_add(u64::try_from(data.len()).unwrap_or(u64::MAX));
        if self.head.len() < self.head_limit {
            let n = data.len().min(self.head_limit - self.head.len());
            self.head.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        if data.len() >= self.tail_limit {
            self.tail.clear();
            self.tail.extend(&data[data.len() - self.tail_limit..]);
        } else {
            let excess = (self.tail.len() + data.len()).saturating_sub(self.tail_limit);
            self.tail.drain(..excess);
            self.tail.extend(data);
        }
    }

    fn omitted(&self) -> u64 {
        let kept = u64::try_from(self.head.len() + self.tail.len()).unwrap_or(u64::MAX);
        self.total.saturating_sub(kept)
    }

    /// The kept output as lossy UTF-8, with a `[… N bytes omitted …]` line where bytes were
    /// cut out, and N.
    fn finish(self) -> (String, u64) {
        let omitted = self.omitted();
        let Self { mut head, tail, .. } = self;
        if omitted == 0 {
            head.extend(tail);
            return (String::from_utf8_lossy(&head).into_owned(), 0);
        }
        let tail: Vec<u8> = tail.into();
        let mut output = String::from_utf8_lossy(&head).into_owned();
        if !output.is_empty() && !output.ends_with('\n') {
            output.push('\n');
        }
        output.push_str(&format!("[… {omitted} bytes omitted …]\n"));
        output.push_str(&String::from_utf8_lossy(&tail));
        (output, omitted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_output_is_kept_whole() {
        let mut capture = Capture::new(16);
        capture.push(b"hello ");
        capture.push(b"world");
        assert_eq!(capture.finish(), ("hello world".to_owned(), 0));
    }

    #[test]
    fn large_output_keeps_head_and_tail() {
        let mut capture = Capture::new(8);
        for chunk in [&b"abc"[..], b"defghij", b"k", b"lmnopqrstuvwxyz"] {
            capture.push(chunk);
        }
        assert_eq!(capture.head.len() + capture.tail.len(), 8);
        assert_eq!(
            capture.finish(),
            ("abcd\n[… 18 bytes omitted …]\nwxyz".to_owned(), 18)
        );
    }

    #[test]
    fn one_huge_chunk_is_cut() {
        let mut capture = Capture::new(4);
        capture.push(&[b'x'; 1000]);
        capture.push(b"end");
        assert_eq!(capture.tail.len(), 2);
        assert_eq!(
            capture.finish(),
            ("xx\n[… 999 bytes omitted …]\nnd".to_owned(), 999)
        );
    }

    #[test]
    fn zero_limit_keeps_nothing() {
        let mut capture = Capture::new(0);
        capture.push(b"abc");
        assert_eq!(capture.finish(), ("[… 3 bytes omitted …]\n".to_owned(), 3));
    }

    #[test]
    fn wrapper_sets_both_limits_and_passes_the_command_as_an_argument() {
        let limits = SandboxLimits {
            memory_bytes: 256 * 1024 * 1024,
            ..SandboxLimits::default()
        };
        let args = wrapper_args(&limits, "echo 'a b' \"$HOME\"", false);
        assert_eq!(args.len(), 4);
        let script = args[1].to_string_lossy();
        assert!(script.starts_with("ulimit -v 262144; ulimit -f 2097152; exec 2>&1;"));
        assert!(script.ends_with("; exec /bin/sh -c \"$1\""), "{script}");
        assert_eq!(args[3], "echo 'a b' \"$HOME\"");

        let args = wrapper_args(&limits, "true", true);
        let script = args[1].to_string_lossy();
        assert!(
            script.ends_with("; exec /usr/bin/prlimit --nproc=512 -- /bin/sh -c \"$1\""),
            "{script}"
        );
    }
}
