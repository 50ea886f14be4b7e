//! The sandbox that runs generated tests, against the real `bwrap` and `python3`.
//!
//! Tests that need bubblewrap print a note and pass when it is missing, except under
//! `CI=true`, where a missing bubblewrap is a failure.

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use agent_pipeline::execution::sandbox::{
    Bubblewrap, RunOutput, Sandbox, SandboxError, SandboxLimits, SandboxRun, Unsandboxed,
};

/// Whether bubblewrap is there; fails under `CI=true` when it is not.
fn bwrap_present(test: &str) -> bool {
    if Bubblewrap::default().is_available() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "bubblewrap (`bwrap`) is not installed, which CI requires"
    );
    eprintln!("note: {test} skipped: bubblewrap (`bwrap`) is not installed");
    false
}

fn workdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("could not create a work dir: {e}"))
}

fn write(dir: &Path, name: &str, contents: &str) {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir {parent:?}: {e}"));
    }
    std::fs::write(&path, contents).unwrap_or_else(|e| panic!("writing {path:?}: {e}"));
}

fn request(dir: &Path, command: &str) -> SandboxRun {
    SandboxRun {
        workdir: dir.to_path_buf(),
        command: command.to_owned(),
        env: Vec::new(),
        read_only: Vec::new(),
        limits: SandboxLimits {
            timeout: Duration::from_secs(30),
            ..SandboxLimits::default()
        },
    }
}

async fn run_in(sandbox: &dyn Sandbox, run: &SandboxRun) -> RunOutput {
    sandbox
        .run(run)
        .await
        .unwrap_or_else(|e| panic!("{} could not run {:?}: {e}", sandbox.name(), run.command))
}

async fn bwrap(run: &SandboxRun) -> RunOutput {
    run_in(&Bubblewrap::default(), run).await
}

const PASSING_TEST: &str = r#"import unittest

class Arithmetic(unittest.TestCase):
    def test_addition(self):
        print("computing 2 + 2")
        self.assertEqual(2 + 2, 4)

if __name__ == "__main__":
    unittest.main()
"#;

const FAILING_TEST: &str = r#"import unittest

class Arithmetic(unittest.TestCase):
    def test_addition(self):
        self.assertEqual(2 + 2, 5, "arithmetic is broken")

if __name__ == "__main__":
    unittest.main()
"#;

#[tokio::test]
async fn a_passing_unittest_exits_zero_with_its_real_output() {
    if !bwrap_present("a_passing_unittest_exits_zero_with_its_real_output") {
        return;
    }
    let dir = workdir();
    write(dir.path(), "test_ok.py", PASSING_TEST);
    let output = bwrap(&request(dir.path(), "python3 -m unittest -v test_ok")).await;

    assert_eq!(output.sandbox, "bubblewrap");
    assert_eq!(output.command, "python3 -m unittest -v test_ok");
    assert_eq!(output.exit_code, Some(0), "{}", output.output);
    assert!(!output.timed_out);
    assert_eq!(output.output_omitted_bytes, 0);
    // stdout (the print, block-buffered by Python) and stderr (where unittest reports).
    assert!(
        output.output.contains("computing 2 + 2\n"),
        "{}",
        output.output
    );
    assert!(
        output.output.contains("\nRan 1 test in "),
        "{}",
        output.output
    );
    assert!(output.output.contains("test_addition (test_ok.Arithmetic"));
    assert!(output.output.contains("\nOK\n"), "{}", output.output);
}

#[tokio::test]
async fn a_failing_unittest_exits_non_zero() {
    if !bwrap_present("a_failing_unittest_exits_non_zero") {
        return;
    }
    let dir = workdir();
    write(dir.path(), "test_bad.py", FAILING_TEST);
    let output = bwrap(&request(dir.path(), "python3 -m unittest test_bad")).await;

    assert_eq!(output.exit_code, Some(1), "{}", output.output);
    assert!(!output.timed_out);
    assert!(
        output
            .output
            .contains("AssertionError: 4 != 5 : arithmetic is broken")
    );
    assert!(
        output.output.contains("FAILED (failures=1)"),
        "{}",
        output.output
    );
}

/// A command that outlives `limit`, leaving markers if any of its processes survive.
const SLEEPER: &str =
    "echo started; (sleep 3; echo alive > background.marker) & sleep 3; echo alive > top.marker";

async fn assert_killed_at_timeout(sandbox: &dyn Sandbox) {
    let dir = workdir();
    let mut run = request(dir.path(), SLEEPER);
    run.limits.timeout = Duration::from_millis(1500);
    let output = run_in(sandbox, &run).await;

    assert!(output.timed_out, "{output:?}");
    assert_eq!(output.exit_code, None);
    assert!(
        (1500..3000).contains(&output.duration_ms),
        "killed after {} ms",
        output.duration_ms
    );
    assert!(output.output.starts_with("started\n"), "{}", output.output);
    assert!(output.output.contains("[timed out after 1500 ms, killed]"));

    // Past the time the command would have written its markers.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for marker in ["top.marker", "background.marker"] {
        assert!(
            !dir.path().join(marker).exists(),
            "{marker} written: a process of the run survived the timeout"
        );
    }
}

#[tokio::test]
async fn a_command_past_its_time_limit_is_killed_with_all_its_processes() {
    if !bwrap_present("a_command_past_its_time_limit_is_killed_with_all_its_processes") {
        return;
    }
    assert_killed_at_timeout(&Bubblewrap::default()).await;
}

#[tokio::test]
async fn there_is_no_network() {
    if !bwrap_present("there_is_no_network") {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|e| panic!("could not listen on localhost: {e}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("no local address: {e}"))
        .port();
    let dir = workdir();
    write(
        dir.path(),
        "connect.py",
        &format!(
            r#"import socket, sys
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=3)
except OSError as error:
    print("connection failed:", error)
    sys.exit(0)
print("connected")
sys.exit(3)
"#
        ),
    );
    let output = bwrap(&request(dir.path(), "python3 connect.py")).await;

    assert_eq!(output.exit_code, Some(0), "{}", output.output);
    assert!(
        output.output.contains("connection failed:"),
        "{}",
        output.output
    );
    listener
        .set_nonblocking(true)
        .unwrap_or_else(|e| panic!("set_nonblocking: {e}"));
    match listener.accept() {
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok((_, peer)) => panic!("the sandbox reached the host's listener from {peer}"),
        Err(error) => panic!("accept failed: {error}"),
    }
}

#[tokio::test]
async fn the_system_is_read_only_and_the_workspace_writable() {
    if !bwrap_present("the_system_is_read_only_and_the_workspace_writable") {
        return;
    }
    let dir = workdir();
    let command = "for target in /usr/sandbox-test /etc/sandbox-test /sandbox-test; do \
                     if touch \"$target\" 2>/dev/null; then echo \"WROTE $target\"; \
                     else echo \"refused $target\"; fi; \
                   done; \
                   pwd; id -u; \
                   echo from-the-sandbox > result.txt && mkdir -p out/deep && echo x > out/deep/f; \
                   echo scratch > /tmp/scratch && cat /tmp/scratch; \
                   ls /etc";
    let output = bwrap(&request(dir.path(), command)).await;

    assert_eq!(output.exit_code, Some(0), "{}", output.output);
    for target in ["/usr/sandbox-test", "/etc/sandbox-test", "/sandbox-test"] {
        assert!(
            output.output.contains(&format!("refused {target}")),
            "{}",
            output.output
        );
    }
    assert!(!output.output.contains("WROTE"), "{}", output.output);
    assert!(
        output.output.contains("/workspace\n65534\n"),
        "{}",
        output.output
    );
    assert!(output.output.contains("scratch\n"));
    // Only the chosen few files of the host's /etc are there.
    assert!(output.output.contains("passwd"), "{}", output.output);
    assert!(!output.output.contains("shadow"), "{}", output.output);
    let written = std::fs::read_to_string(dir.path().join("result.txt"))
        .unwrap_or_else(|e| panic!("the workspace write did not reach the host: {e}"));
    assert_eq!(written, "from-the-sandbox\n");
    assert!(dir.path().join("out/deep/f").is_file());
}

#[tokio::test]
async fn read_only_entries_cannot_be_written() {
    if !bwrap_present("read_only_entries_cannot_be_written") {
        return;
    }
    let dir = workdir();
    write(dir.path(), ".git/config", "[core]\n");
    write(dir.path(), "src/lib.py", "x = 1\n");
    let mut run = request(
        dir.path(),
        "cat .git/config; \
         echo tampered >> .git/config || echo append-refused; \
         touch .git/hooks-evil || echo create-refused; \
         rm -rf .git 2>/dev/null || echo remove-refused; \
         echo y > src/lib.py && echo other-files-writable",
    );
    run.read_only = vec![".git".to_owned(), "does-not-exist".to_owned()];
    let output = bwrap(&run).await;

    assert!(output.output.starts_with("[core]\n"), "{}", output.output);
    for refused in ["append-refused", "create-refused", "remove-refused"] {
        assert!(output.output.contains(refused), "{}", output.output);
    }
    assert!(output.output.contains("other-files-writable"));
    let config = std::fs::read_to_string(dir.path().join(".git/config"))
        .unwrap_or_else(|e| panic!(".git/config is gone: {e}"));
    assert_eq!(config, "[core]\n");
    assert!(!dir.path().join(".git/hooks-evil").exists());
}

#[tokio::test]
async fn read_only_entries_outside_the_workdir_are_refused() {
    let dir = workdir();
    // A symlink out of the workdir is refused too, not followed.
    std::os::unix::fs::symlink("/etc", dir.path().join("escape"))
        .unwrap_or_else(|e| panic!("symlink: {e}"));
    for entry in ["/etc", "../x", "src/../../x", "escape"] {
        let mut run = request(dir.path(), "true");
        run.read_only = vec![entry.to_owned()];
        // Refused before bwrap is looked for... or after, when it is missing.
        let sandbox = Bubblewrap::default();
        match sandbox.run(&run).await {
            Err(SandboxError::Io(error)) => {
                assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput, "{entry}");
                assert!(error.to_string().contains("read-only entry"), "{error}");
            }
            Err(SandboxError::Unavailable(_)) if !sandbox.is_available() => {}
            other => panic!("read-only entry {entry:?} accepted: {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_allocation_past_the_memory_limit_fails() {
    if !bwrap_present("an_allocation_past_the_memory_limit_fails") {
        return;
    }
    let dir = workdir();
    let allocate = |mib: u64| {
        let mut run = request(
            dir.path(),
            &format!(
                "python3 -c 'b = bytearray({mib} * 1024 * 1024); print(\"allocated\", len(b))'"
            ),
        );
        run.limits.memory_bytes = 256 * 1024 * 1024;
        run
    };

    let within = bwrap(&allocate(64)).await;
    assert_eq!(within.exit_code, Some(0), "{}", within.output);
    assert!(within.output.contains("allocated 67108864"));

    let past = bwrap(&allocate(512)).await;
    assert_ne!(past.exit_code, Some(0), "{}", past.output);
    assert!(past.output.contains("MemoryError"), "{}", past.output);
    assert!(!past.output.contains("allocated"));
}

#[tokio::test]
async fn large_output_keeps_its_head_and_tail() {
    if !bwrap_present("large_output_keeps_its_head_and_tail") {
        return;
    }
    let dir = workdir();
    // 10 + 1_000_000 + 11 bytes, partly on stderr.
    let command = "python3 -c 'import sys; print(\"HEAD-MARK\"); sys.stdout.flush(); \
                   sys.stderr.write(\"x\" * 1_000_000); sys.stderr.flush(); print(\"\\nTAIL-MARK\")'";
    let output = bwrap(&request(dir.path(), command)).await;
    let limit = SandboxLimits::default().output_bytes;

    assert_eq!(output.exit_code, Some(0));
    let total = 10 + 1_000_000 + 11;
    assert_eq!(output.output_omitted_bytes, (total - limit) as u64);
    assert!(
        output.output.starts_with("HEAD-MARK\nxxx"),
        "{}",
        &output.output[..40]
    );
    assert!(output.output.ends_with("xxx\nTAIL-MARK\n"));
    assert!(
        output
            .output
            .contains(&format!("\n[… {} bytes omitted …]\n", total - limit))
    );
    // What is kept: the limit, the marker line and its newline.
    assert!(
        output.output.len() < limit + 64,
        "{} bytes kept",
        output.output.len()
    );
}

/// Run in a child process of this test binary with `OPENAI_API_KEY` set (a test cannot set
/// a variable in its own process: `std::env::set_var` is `unsafe`).
#[tokio::test]
async fn the_environment_is_cleared() {
    const CHILD: &str = "SANDBOX_RUNS_ENV_CHILD";
    if std::env::var_os(CHILD).is_none() {
        let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
        let child = std::process::Command::new(exe)
            .args(["--exact", "the_environment_is_cleared", "--nocapture"])
            .env(CHILD, "1")
            .env("OPENAI_API_KEY", "sk-test-secret")
            .output()
            .unwrap_or_else(|e| panic!("could not rerun the test binary: {e}"));
        assert!(
            child.status.success(),
            "the check in the child process failed:\n{}{}",
            String::from_utf8_lossy(&child.stdout),
            String::from_utf8_lossy(&child.stderr)
        );
        // The child really ran the check (not zero tests).
        assert!(String::from_utf8_lossy(&child.stdout).contains("1 passed"));
        return;
    }

    assert_eq!(
        std::env::var("OPENAI_API_KEY").as_deref(),
        Ok("sk-test-secret")
    );
    let dir = workdir();
    let mut run = request(dir.path(), "env | sort");
    run.env = vec![("GIVEN".to_owned(), "by the run".to_owned())];
    let mut sandboxes: Vec<Box<dyn Sandbox>> = vec![Box::new(Unsandboxed)];
    if bwrap_present("the_environment_is_cleared (bubblewrap)") {
        sandboxes.push(Box::new(Bubblewrap::default()));
    }
    for sandbox in sandboxes {
        let output = run_in(sandbox.as_ref(), &run).await;
        let name = sandbox.name();
        assert_eq!(output.exit_code, Some(0), "{name}: {}", output.output);
        assert!(
            !output.output.contains("sk-test-secret"),
            "{name}: {}",
            output.output
        );
        assert!(!output.output.contains("OPENAI_API_KEY"), "{name}");
        assert!(!output.output.contains(CHILD), "{name}");
        assert!(
            !output.output.contains("CARGO"),
            "{name}: {}",
            output.output
        );
        assert!(output.output.contains("GIVEN=by the run\n"), "{name}");
        assert!(
            output
                .output
                .contains("PATH=/usr/local/bin:/usr/bin:/bin\n"),
            "{name}"
        );
        assert!(output.output.contains("LANG=C.UTF-8\n"), "{name}");
        assert!(
            output.output.contains("PYTHONDONTWRITEBYTECODE=1\n"),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_missing_bwrap_is_unavailable_and_says_how_to_opt_out() {
    let dir = workdir();
    let sandbox = Bubblewrap::with_program("/nonexistent/bwrap");
    assert!(!sandbox.is_available());
    match sandbox
        .run(&request(dir.path(), "echo must not run > ran"))
        .await
    {
        Err(SandboxError::Unavailable(message)) => {
            assert!(message.contains("bubblewrap"), "{message}");
            assert!(message.contains("AGENT_SANDBOX=none"), "{message}");
            assert!(message.contains("/nonexistent/bwrap"), "{message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(!dir.path().join("ran").exists());
}

#[tokio::test]
async fn a_bwrap_that_cannot_create_the_sandbox_is_unavailable() {
    use std::os::unix::fs::PermissionsExt;

    let dir = workdir();
    let fake = dir.path().join("fake-bwrap");
    write(
        dir.path(),
        "fake-bwrap",
        "#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n",
    );
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod: {e}"));
    match Bubblewrap::with_program(&fake)
        .run(&request(dir.path(), "true"))
        .await
    {
        Err(SandboxError::Unavailable(message)) => {
            assert!(
                message.contains("No permissions to create new namespace"),
                "{message}"
            );
            assert!(message.contains("AGENT_SANDBOX=none"), "{message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn unsandboxed_runs_in_the_workdir() {
    let dir = workdir();
    write(dir.path(), "test_ok.py", PASSING_TEST);
    let output = run_in(
        &Unsandboxed,
        &request(dir.path(), "pwd; python3 -m unittest test_ok"),
    )
    .await;

    assert_eq!(output.sandbox, "unsandboxed");
    assert_eq!(output.exit_code, Some(0), "{}", output.output);
    let canonical = std::fs::canonicalize(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        output
            .output
            .starts_with(&format!("{}\n", canonical.display()))
    );
    assert!(output.output.contains("Ran 1 test"), "{}", output.output);
}

#[tokio::test]
async fn unsandboxed_enforces_the_timeout() {
    assert_killed_at_timeout(&Unsandboxed).await;
}

#[tokio::test]
async fn unsandboxed_enforces_the_memory_limit() {
    let dir = workdir();
    let mut run = request(dir.path(), "python3 -c 'bytearray(512 * 1024 * 1024)'");
    run.limits.memory_bytes = 256 * 1024 * 1024;
    let output = run_in(&Unsandboxed, &run).await;
    assert_ne!(output.exit_code, Some(0));
    assert!(output.output.contains("MemoryError"), "{}", output.output);
}

#[tokio::test]
async fn a_process_killed_by_a_signal_has_no_exit_code() {
    let dir = workdir();
    // The wrapper execs the command's shell, which is the top process here.
    let output = run_in(
        &Unsandboxed,
        &request(dir.path(), "echo before; kill -s KILL $$"),
    )
    .await;
    assert_eq!(output.exit_code, None, "{}", output.output);
    assert!(!output.timed_out);
    assert_eq!(output.output, "before\n[killed by signal 9]\n");
}

async fn assert_background_killed_at_exit(sandbox: &dyn Sandbox) {
    let dir = workdir();
    let run = request(
        dir.path(),
        "(sleep 2; echo alive > background.marker) </dev/null >/dev/null 2>&1 & echo done",
    );
    let output = run_in(sandbox, &run).await;
    assert_eq!(output.exit_code, Some(0), "{}", output.output);
    assert_eq!(output.output, "done\n");
    assert!(output.duration_ms < 1500, "took {} ms", output.duration_ms);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !dir.path().join("background.marker").exists(),
        "{}: a background process survived the run",
        sandbox.name()
    );
}

#[tokio::test]
async fn nothing_survives_the_end_of_a_run() {
    assert_background_killed_at_exit(&Unsandboxed).await;
    if bwrap_present("nothing_survives_the_end_of_a_run (bubblewrap)") {
        assert_background_killed_at_exit(&Bubblewrap::default()).await;
    }
}
