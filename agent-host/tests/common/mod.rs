//! What the command-line tests share: the real binary, run in a temporary directory of its own
//! with a clean configuration, and never for longer than a bound.

#![allow(dead_code)] // Each test file uses its own part of these helpers.

pub(crate) mod http;
pub(crate) mod kafka;
#[allow(unreachable_pub)] // shared with the agent-pipeline tests, where it is `pub`
#[path = "../../../agent-pipeline/tests/common/openai.rs"]
pub(crate) mod openai;
pub(crate) mod processes;
pub(crate) mod repository;
pub(crate) mod web;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_agent-host");

/// How long one command may take before the test fails.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(60);

/// Every variable the host reads; tests start from none of them set.
pub(crate) const CONFIG_VARIABLES: [&str; 53] = [
    "OPENAI_API_KEY",
    "OPENAI_MODEL",
    "OPENAI_BASE_URL",
    "AGENT_BUS",
    "REDPANDA_BROKERS",
    "KAFKA_CLIENT_ID",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
    "KAFKA_TLS",
    "KAFKA_TLS_CA_FILE",
    "KAFKA_PARTITIONS",
    "KAFKA_REPLICATION_FACTOR",
    "KAFKA_FETCH_WAIT_MS",
    "KAFKA_LINGER_MS",
    "AGENT_INSTANCE",
    "AGENT_INSTANCES",
    "KAFKA_LEASE_TTL_MS",
    "AGENT_MEMBER_ID",
    "TASK_TOPIC",
    "STEP_REQUESTS_TOPIC",
    "STEP_RESULTS_TOPIC",
    "REPORT_TOPIC",
    "CI_WATCH_TOPIC",
    "DLQ_TOPIC",
    "DATA_DIR",
    "DATABASE_URL",
    "AGENT_HOST_MAX_ATTEMPTS",
    "WEB_ADDR",
    "WEB_TOKEN",
    "METRICS_ADDR",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "EXECUTE_CODE",
    "WORKER_CONCURRENCY",
    "SERVICE_CONCURRENCY",
    "LLM_MAX_CONCURRENCY",
    "LLM_REQUESTS_PER_MINUTE",
    "LLM_TOKENS_PER_MINUTE",
    "LLM_PRICE_INPUT_PER_MTOK",
    "LLM_PRICE_OUTPUT_PER_MTOK",
    "LLM_PRICES",
    "LLM_EMBEDDINGS_MODEL",
    "LLM_PROVIDERS",
    "TASK_MAX_TOKENS",
    "TASK_MAX_COST_USD",
    "TASK_MAX_WALL_TIME",
    "TASK_MAX_ROUNDS",
    "REQUIRE_APPROVAL",
    "AGENT_SANDBOX",
    "SANDBOX_TIMEOUT_SECS",
    "SANDBOX_MEMORY_MB",
    "GATE_ROUNDS",
    "PUBLISH_REPO",
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

    /// Runs the binary with `args` and the variables `env` set, to its end.
    pub(crate) fn run_with<K, V>(
        &self,
        args: &[&str],
        env: impl IntoIterator<Item = (K, V)>,
    ) -> Output
    where
        K: AsRef<std::ffi::OsStr>,
        V: AsRef<std::ffi::OsStr>,
    {
        let mut command = self.command(args);
        command.envs(env);
        run(command)
    }

    /// Runs `send --local --text HELLO --wait` (the services in the command's own process),
    /// checks it succeeded and returns the task id.
    pub(crate) fn send_hello(&self) -> (String, Output) {
        let output = self.run(&["send", "--local", "--text", HELLO, "--wait"]);
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

/// How long a host may take to stop after Ctrl-C.
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `agent-host run` (or another serving command), killed on drop if it still runs.
pub(crate) struct Host {
    child: Child,
    /// `http://127.0.0.1:<port>`, as its `web:` line says.
    pub(crate) url: String,
    /// What it printed up to `Press Ctrl-C to stop.`.
    pub(crate) banner: String,
    /// Its later standard output, line by line.
    lines: mpsc::Receiver<String>,
    /// Its standard error, read to its end.
    stderr: Option<JoinHandle<String>>,
}

/// How a host ended after Ctrl-C.
pub(crate) struct Stopped {
    /// Its exit status; `None` when it did not stop within [`STOP_TIMEOUT`] (it was killed).
    pub(crate) status: Option<ExitStatus>,
    /// What it printed after the banner.
    pub(crate) stdout: String,
    /// Everything it wrote to stderr.
    pub(crate) stderr: String,
}

impl Host {
    /// Starts `command` (which must serve, e.g. `run --listen 127.0.0.1:0`) and waits for its
    /// banner; fails the test when it does not start within [`TIMEOUT`].
    pub(crate) fn start(command: Command) -> Self {
        Self::spawn(command, true)
    }

    /// Starts `command`, a process that serves no UI (`planner`, `worker` …), and waits for
    /// its banner; fails the test when it does not start within [`TIMEOUT`].
    pub(crate) fn start_service(command: Command) -> Self {
        Self::spawn(command, false)
    }

    /// Starts `command` and waits for its banner, with a `web:` line when `serves_web`.
    fn spawn(mut command: Command, serves_web: bool) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let stdout = child.stdout.take().expect("a piped stdout");
        let stderr = drain(child.stderr.take());
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + TIMEOUT;
        let mut banner = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(line) = lines.recv_timeout(left) else {
                break;
            };
            let ready = line.starts_with("Press Ctrl-C");
            banner.push(line);
            if ready {
                break;
            }
        }
        let banner = banner.join("\n");
        let url = banner.lines().find_map(|line| {
            let rest = line.trim_start().strip_prefix("web:")?.trim_start();
            let url = rest.split_whitespace().next()?;
            Some(url.trim_end_matches('/').to_owned())
        });
        let mut host = Self {
            child,
            url: url.clone().unwrap_or_default(),
            banner,
            lines,
            stderr: Some(stderr),
        };
        if (serves_web && url.is_none()) || !host.banner.contains("Press Ctrl-C") {
            let _ = host.child.kill();
            let _ = host.child.wait();
            let stderr = host.stderr.take().map(|s| s.join().unwrap_or_default());
            panic!(
                "the host did not start:\n--- stdout ---\n{}\n--- stderr ---\n{}",
                host.banner,
                stderr.unwrap_or_default()
            );
        }
        host
    }

    /// The host's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How the process ended, if it has (a service must not end on its own).
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends Ctrl-C (SIGINT) and waits for the host to end, at most [`STOP_TIMEOUT`] (then it
    /// is killed, and `status` is `None`).
    pub(crate) fn interrupt(self) -> Stopped {
        self.stop_with("-INT")
    }

    /// Sends SIGTERM (what `kill`, systemd and container runtimes send) and waits for the
    /// host to end, as [`Host::interrupt`] does.
    pub(crate) fn terminate(self) -> Stopped {
        self.stop_with("-TERM")
    }

    /// Kills the process at once (SIGKILL: as abruptly as a crash) and reaps it.
    pub(crate) fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` (`kill`'s spelling, e.g. `-TERM`) and waits for the host to end.
    fn stop_with(mut self, signal: &str) -> Stopped {
        let sent = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill {signal} failed");
        let status = wait_bounded(&mut self.child, STOP_TIMEOUT);
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let stderr = self
            .stderr
            .take()
            .map(|s| s.join().unwrap_or_default())
            .unwrap_or_default();
        // The pipe closes when the process ends, and then the reading thread stops.
        let mut stdout = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            stdout.push(line);
        }
        Stopped {
            status,
            stdout: stdout.join("\n"),
            stderr,
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Sandbox {
    /// Starts `agent-host run` on a free port of 127.0.0.1 in the sandbox, with `env` set.
    pub(crate) fn start_host(&self, env: &[(&str, &str)]) -> Host {
        self.start_host_with(env.iter().copied())
    }

    /// [`Sandbox::start_host`] with variables of any string type.
    pub(crate) fn start_host_with<K, V>(&self, env: impl IntoIterator<Item = (K, V)>) -> Host
    where
        K: AsRef<std::ffi::OsStr>,
        V: AsRef<std::ffi::OsStr>,
    {
        let mut command = self.command(&["run", "--listen", "127.0.0.1:0"]);
        command.envs(env);
        Host::start(command)
    }
}

/// A port of 127.0.0.1 that nobody listens on (it was free a moment ago).
pub(crate) fn unused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}
