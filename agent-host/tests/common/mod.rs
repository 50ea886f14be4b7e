//! What the command-line tests share: the real binary, run in a temporary directory of its own
//! with a clean configuration, and never for longer than a bound.

#![allow(dead_code)] // Each test file uses its own part of these helpers.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_agent-host");

/// How long one command may take before the test fails.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(60);

/// Every variable the host reads; tests start from none of them set.
const CONFIG_VARIABLES: [&str; 12] = [
    "OPENAI_API_KEY",
    "OPENAI_MODEL",
    "OPENAI_BASE_URL",
    "REDPANDA_BROKERS",
    "TASK_TOPIC",
    "STEP_REQUESTS_TOPIC",
    "STEP_RESULTS_TOPIC",
    "REPORT_TOPIC",
    "CI_WATCH_TOPIC",
    "DLQ_TOPIC",
    "DATA_DIR",
    "AGENT_HOST_MAX_ATTEMPTS",
];

/// The prompt of mission.md.
pub(crate) const HELLO: &str = "Write a tiny Python program that prints 'Hello Earthling'";

/// A temporary directory that is the working directory (and so holds `./data`) of every
/// command run in it.
pub(crate) struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    /// A new, empty sandbox.
    pub(crate) fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    /// The sandbox's directory.
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The default data directory, `./data`.
    pub(crate) fn data_dir(&self) -> PathBuf {
        self.path().join("data")
    }

    /// The binary with `args`, in the sandbox, with no configuration variable set (so the
    /// offline model runs) and logs at `info`.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command.args(args).current_dir(self.path());
        for variable in CONFIG_VARIABLES {
            command.env_remove(variable);
        }
        command.env("RUST_LOG", "info");
        command
    }

    /// Runs the binary with `args` to its end.
    pub(crate) fn run(&self, args: &[&str]) -> Output {
        run(self.command(args))
    }

    /// Runs `send --text HELLO --wait`, checks it succeeded and returns the task id.
    pub(crate) fn send_hello(&self) -> (String, Output) {
        let output = self.run(&["send", "--text", HELLO, "--wait"]);
        assert!(output.status.success(), "send failed:\n{output}");
        let task_id = output.task_id();
        (task_id, output)
    }
}

/// What a finished command printed, and how it ended.
pub(crate) struct Output {
    /// How it ended.
    pub(crate) status: ExitStatus,
    /// Its standard output.
    pub(crate) stdout: String,
    /// Its standard error.
    pub(crate) stderr: String,
}

impl Output {
    /// The task id of the `task <id>` line that `send` prints first.
    pub(crate) fn task_id(&self) -> String {
        self.stdout
            .lines()
            .find_map(|line| line.strip_prefix("task "))
            .map(|id| id.trim().to_owned())
            .unwrap_or_else(|| panic!("no `task <id>` line:\n{self}"))
    }

    /// The exit code (`None` when a signal ended the process).
    pub(crate) fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Reads a child's pipe to its end on a thread, so that a full pipe cannot block the child.
fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    })
}

/// Runs `command` to its end, killing it (and failing the test) after [`TIMEOUT`].
pub(crate) fn run(mut command: Command) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_bounded(&mut child, TIMEOUT);
    let output = Output {
        status: status.unwrap_or_else(|| {
            let _ = child.kill();
            child.wait().expect("the killed binary is reaped")
        }),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    assert!(
        status.is_some(),
        "the command took longer than {TIMEOUT:?} and was killed:\n{output}"
    );
    output
}

/// Waits for `child` to end, at most `timeout`; `None` when it is still running.
pub(crate) fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every file under `dir`, recursively.
pub(crate) fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// A JSON file, parsed.
pub(crate) fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}
