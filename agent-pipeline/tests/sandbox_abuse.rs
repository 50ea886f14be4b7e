//! Hostile test commands against the real bubblewrap sandbox: filling the disk (up to the
//! filesystem's end or past the run's disk limit) and opening sockets end in a failed run
//! with a clear message, within the time limit, with nothing
//! written outside the workdir and nothing left running.
//!
//! Tests that need bubblewrap (or mounting a tmpfs, which needs root) print SKIPPED and pass
//! when it is missing, except under `CI=true`, where that is a failure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use agent_pipeline::execution::sandbox::{
    Bubblewrap, RunOutput, Sandbox, SandboxLimits, SandboxRun,
};

/// The time limit of every run here; each test must end well within it.
const TIME_LIMIT: Duration = Duration::from_secs(20);

fn under_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Whether bubblewrap is there; fails under `CI=true` when it is not.
fn bwrap_present(test: &str) -> bool {
    if Bubblewrap::default().is_available() {
        return true;
    }
    assert!(
        !under_ci(),
        "bubblewrap (`bwrap`) is not installed, which CI requires"
    );
    eprintln!("SKIPPED {test}: bubblewrap (`bwrap`) is not installed");
    false
}

/// A small tmpfs, unmounted when dropped (also when the test fails).
struct Tmpfs {
    parent: tempfile::TempDir,
    mount: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `16m`) at `<temp>/mnt`; `None` (SKIPPED) when mounting
    /// is not permitted, which is a failure under `CI=true`.
    fn mount(test: &str, size: &str) -> Option<Self> {
        let parent = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mount = parent.path().join("mnt");
        std::fs::create_dir(&mount).unwrap_or_else(|e| panic!("mkdir {mount:?}: {e}"));
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mount)
            .output();
        match output {
            Ok(output) if output.status.success() => Some(Self { parent, mount }),
            other => {
                let why = match other {
                    Ok(output) => String::from_utf8_lossy(&output.stderr).trim().to_owned(),
                    Err(error) => error.to_string(),
                };
                assert!(
                    !under_ci(),
                    "could not mount a tmpfs, which CI requires: {why}"
                );
                eprintln!("SKIPPED {test}: could not mount a tmpfs: {why}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        &self.mount
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        match Command::new("umount").arg(&self.mount).status() {
            Ok(status) if status.success() => {}
            other => eprintln!("could not unmount {:?}: {other:?}", self.mount),
        }
        // Anything the run wrote beside the workdir would be here, on the real disk.
        let beside: Vec<_> = std::fs::read_dir(self.parent.path())
            .map(|entries| entries.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        if !std::thread::panicking() {
            assert_eq!(
                beside,
                vec![std::ffi::OsString::from("mnt")],
                "written beside the workdir"
            );
        }
    }
}

fn request(dir: &Path, command: &str) -> SandboxRun {
    SandboxRun {
        workdir: dir.to_path_buf(),
        command: command.to_owned(),
        env: Vec::new(),
        read_only: Vec::new(),
        limits: SandboxLimits {
            timeout: TIME_LIMIT,
            ..SandboxLimits::default()
        },
    }
}

async fn bwrap(run: &SandboxRun) -> RunOutput {
    let started = Instant::now();
    let output = tokio::time::timeout(
        TIME_LIMIT + Duration::from_secs(10),
        Bubblewrap::default().run(run),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the sandbox did not return within its time limit: {:?}",
            run.command
        )
    })
    .unwrap_or_else(|e| panic!("bubblewrap could not run {:?}: {e}", run.command));
    assert!(!output.timed_out, "{}", output.output);
    assert!(
        started.elapsed() < TIME_LIMIT,
        "took {:?}",
        started.elapsed()
    );
    output
}

/// Writes 1 MiB chunks to files under the directory given until a write fails, then says why
/// and exits 1.
const FILL: &str = r#"import sys, os
target = sys.argv[1]
chunk = b"x" * (1024 * 1024)
written = 0
try:
    for i in range(100000):
        with open(os.path.join(target, "fill-%d" % i), "wb") as f:
            for _ in range(8):
                f.write(chunk)
                f.flush()
                written += len(chunk)
except OSError as error:
    print("write failed after %d MiB: %s" % (written // (1024 * 1024), error))
    sys.exit(1)
print("never filled")
"#;

/// Whether any process of the sandboxed command (they run as python3 fill.py / sockets.py)
/// is still alive on the host.
fn leftover(script: &str) -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .any(|entry| {
            std::fs::read(entry.path().join("cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(script))
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filling_the_workspace_ends_in_a_failed_run_at_enospc() {
    let test = "filling_the_workspace_ends_in_a_failed_run_at_enospc";
    if !bwrap_present(test) {
        return;
    }
    let Some(tmpfs) = Tmpfs::mount(test, "16m") else {
        return;
    };
    std::fs::write(tmpfs.path().join("fill_workspace.py"), FILL).unwrap_or_else(|e| panic!("{e}"));
    let output = bwrap(&request(
        tmpfs.path(),
        "python3 fill_workspace.py /workspace",
    ))
    .await;

    assert_eq!(output.exit_code, Some(1), "{}", output.output);
    assert!(
        output.output.contains("No space left on device"),
        "{}",
        output.output
    );
    assert!(
        !leftover("fill_workspace.py"),
        "a process of the run is still alive"
    );
    // The host side is unaffected: the test process still writes to its own disk.
    let probe = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(probe.path(), b"still fine").unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_writing_past_its_disk_limit_is_killed_before_the_disk_is_full() {
    let test = "a_run_writing_past_its_disk_limit_is_killed_before_the_disk_is_full";
    if !bwrap_present(test) {
        return;
    }
    let Some(tmpfs) = Tmpfs::mount(test, "512m") else {
        return;
    };
    let limit: u64 = 32 * 1024 * 1024;
    // A script name of its own: `leftover` looks for it among all the host's processes, and
    // the other tests here run at the same time.
    std::fs::write(tmpfs.path().join("fill_to_the_limit.py"), FILL)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut run = request(tmpfs.path(), "python3 fill_to_the_limit.py /workspace");
    run.limits.disk_bytes = Some(limit);
    let output = bwrap(&run).await;

    assert_eq!(output.exit_code, None, "{}", output.output);
    let note = format!("more than its limit of {limit}, killed]");
    assert!(output.output.contains(&note), "{}", output.output);
    assert!(
        !output.output.contains("No space left on device")
            && !output.output.contains("never filled"),
        "{}",
        output.output
    );
    let written: u64 = std::fs::read_dir(tmpfs.path())
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
        .filter_map(|entry| entry.metadata().ok())
        .map(|metadata| metadata.len())
        .sum();
    eprintln!("written before the kill: {} MiB", written / (1024 * 1024));
    assert!(written > limit, "killed at {written} bytes");
    // The writes go on for up to a check's interval (and longer on a loaded machine) past
    // the limit, but never to the end of the 512 MiB filesystem.
    assert!(
        written < 384 * 1024 * 1024,
        "{written} bytes written against a limit of {limit}"
    );
    assert!(
        !leftover("fill_to_the_limit.py"),
        "a process of the run is still alive"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filling_the_sandbox_tmp_stops_at_its_64_mib() {
    let test = "filling_the_sandbox_tmp_stops_at_its_64_mib";
    if !bwrap_present(test) {
        return;
    }
    let Some(tmpfs) = Tmpfs::mount(test, "16m") else {
        return;
    };
    std::fs::write(tmpfs.path().join("fill_tmp.py"), FILL).unwrap_or_else(|e| panic!("{e}"));
    let output = bwrap(&request(tmpfs.path(), "python3 fill_tmp.py /tmp")).await;

    assert_eq!(output.exit_code, Some(1), "{}", output.output);
    assert!(
        output
            .output
            .contains("write failed after 64 MiB: [Errno 28] No space left on device"),
        "{}",
        output.output
    );
    let names: Vec<_> = std::fs::read_dir(tmpfs.path())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["fill_tmp.py"],
        "the sandbox's /tmp is not the workdir"
    );
    assert!(
        !leftover("fill_tmp.py"),
        "a process of the run is still alive"
    );
}

/// Listens on and connects to its own loopback (private to the sandbox), then tries the
/// host's listener on the port given, outside addresses and name resolution; exits 1 when
/// anything beyond its own loopback worked.
const SOCKETS: &str = r#"import socket, sys
host_port = int(sys.argv[1])
escaped = []
def attempt(name, action, escape=True):
    try:
        action()
        if escape:
            escaped.append(name)
        print(name, "worked")
    except OSError as error:
        print(name, "failed:", error)
def own_loopback():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen()
    socket.create_connection(server.getsockname(), timeout=3).close()
def connect(address):
    return lambda: socket.create_connection(address, timeout=3).close()
def resolve():
    socket.getaddrinfo("example.com", 443)
attempt("own loopback", own_loopback, escape=False)
attempt("host listener", connect(("127.0.0.1", host_port)))
attempt("connect 1.1.1.1:443", connect(("1.1.1.1", 443)))
attempt("connect [2606:4700:4700::1111]:443", connect(("2606:4700:4700::1111", 443)))
attempt("resolve example.com", resolve)
if escaped:
    print("escaped:", escaped)
    sys.exit(1)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_reach_neither_the_host_nor_the_outside() {
    let test = "sockets_reach_neither_the_host_nor_the_outside";
    if !bwrap_present(test) {
        return;
    }
    let Some(tmpfs) = Tmpfs::mount(test, "1m") else {
        return;
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|e| panic!("could not listen on localhost: {e}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("no local address: {e}"))
        .port();
    std::fs::write(tmpfs.path().join("sockets.py"), SOCKETS).unwrap_or_else(|e| panic!("{e}"));
    let output = bwrap(&request(
        tmpfs.path(),
        &format!("python3 sockets.py {port}"),
    ))
    .await;

    assert_eq!(output.exit_code, Some(0), "{}", output.output);
    for line in [
        // The sandbox's own loopback works: servers in tests can talk to themselves.
        "own loopback worked",
        "host listener failed: [Errno 111] Connection refused",
        "connect 1.1.1.1:443 failed: [Errno 101] Network is unreachable",
        "connect [2606:4700:4700::1111]:443 failed: [Errno 101] Network is unreachable",
        "resolve example.com failed:",
    ] {
        assert!(output.output.contains(line), "{line}:\n{}", output.output);
    }
    assert!(
        output.duration_ms < 10_000,
        "took {} ms",
        output.duration_ms
    );
    listener
        .set_nonblocking(true)
        .unwrap_or_else(|e| panic!("set_nonblocking: {e}"));
    match listener.accept() {
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok((_, peer)) => panic!("the sandbox reached the host's listener from {peer}"),
        Err(error) => panic!("accept failed: {error}"),
    }
    assert!(
        !leftover("sockets.py"),
        "a process of the run is still alive"
    );
}
