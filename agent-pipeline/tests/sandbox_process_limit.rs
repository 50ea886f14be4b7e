//! A fork bomb in the real bubblewrap sandbox is refused its forks at the run's process
//! limit: the host's process count never grows by more than the limit, the run keeps
//! control and ends normally, says how many forks were refused, and leaves neither a
//! process nor its cgroup behind.
//!
//! As root, where no pids cgroup can be made, the sandbox refuses to run rather than run
//! without the limit, unless the limit is switched off.
//!
//! The tests that run the sandbox in this process take turns (`SERIAL`), so the cgroups
//! named after this process while the fork bomb runs are its own. The tests print SKIPPED and pass when bubblewrap is missing (or, for the
//! second, when they do not run as root), except under `CI=true`, where that is a failure.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use agent_pipeline::execution::sandbox::{
    Bubblewrap, Sandbox, SandboxError, SandboxLimits, SandboxRun,
};

/// The process limit of the run.
const LIMIT: u32 = 64;

/// Processes that other tests running at the same time may start, beside the run's.
const NOISE: usize = 150;

/// A sleeper started first (so the top shell needs no fork later), then a fork bomb in the
/// background: every `bomb` starts two more, forever. The top shell waits for the sleeper
/// (a builtin, no fork) and says it is still in control.
const FORK_BOMB: &str =
    "sleep 3 & sleeper=$!; bomb() { bomb | bomb & }; bomb; wait $sleeper; echo still in control";

/// The number of processes on the host.
fn host_processes() -> usize {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.bytes().all(|b| b.is_ascii_digit()))
        })
        .count()
}

/// The cgroups named after this process left anywhere under `/sys/fs/cgroup`.
fn own_cgroups(dir: &Path, depth: usize, found: &mut Vec<String>) {
    let prefix = format!("agent-pipeline-{}-", std::process::id());
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if !kind.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) {
            found.push(entry.path().display().to_string());
        } else if depth > 0 {
            own_cgroups(&entry.path(), depth - 1, found);
        }
    }
}

/// Held by each test that runs the sandbox in this process.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Set in the environment of the copy of this binary that runs without writable cgroups.
const INNER: &str = "SANDBOX_PROCESS_LIMIT_INNER";

/// Whether a test may go on; `false` (SKIPPED) when `missing` names what it lacks, which is
/// a failure under `CI=true`.
fn may_run(missing: Option<&str>) -> bool {
    let Some(missing) = missing else {
        return true;
    };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{missing}, which CI requires"
    );
    eprintln!("SKIPPED: {missing}");
    false
}

fn bubblewrap_missing() -> Option<&'static str> {
    (!Bubblewrap::default().is_available()).then_some("bubblewrap (`bwrap`) is not installed")
}

fn request(workdir: &Path, command: &str, max_processes: Option<u32>) -> SandboxRun {
    SandboxRun {
        workdir: workdir.to_path_buf(),
        command: command.to_owned(),
        env: Vec::new(),
        read_only: Vec::new(),
        limits: SandboxLimits {
            timeout: Duration::from_secs(30),
            max_processes,
            ..SandboxLimits::default()
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_is_refused_its_forks_at_the_process_limit() {
    if !may_run(bubblewrap_missing()) || std::env::var_os(INNER).is_some() {
        return;
    }
    let _turn = SERIAL.lock().await;
    let workdir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let run = request(workdir.path(), FORK_BOMB, Some(LIMIT));

    let baseline = host_processes();
    let peak = Arc::new(AtomicUsize::new(baseline));
    let running = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, running) = (Arc::clone(&peak), Arc::clone(&running));
        std::thread::spawn(move || {
            while running.load(Ordering::Relaxed) {
                peak.fetch_max(host_processes(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let output = tokio::time::timeout(Duration::from_secs(60), Bubblewrap::default().run(&run))
        .await
        .unwrap_or_else(|_| panic!("the sandbox did not return within its time limit"));
    running.store(false, Ordering::Relaxed);
    sampler
        .join()
        .unwrap_or_else(|_| panic!("the sampler panicked"));
    let output = output.unwrap_or_else(|e| panic!("bubblewrap could not run the bomb: {e}"));

    let grown = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    eprintln!(
        "host processes: {baseline} before, {} at the peak (+{grown}); output:\n{}",
        peak.load(Ordering::Relaxed),
        output.output
    );
    assert!(
        grown <= LIMIT as usize + NOISE,
        "the host's process count grew by {grown}, past the limit of {LIMIT}"
    );
    assert!(!output.timed_out, "{}", output.output);
    assert_eq!(output.exit_code, Some(0), "{}", output.output);
    assert!(
        output.output.contains("still in control"),
        "{}",
        output.output
    );
    let refused = output
        .output
        .lines()
        .find_map(|line| {
            line.strip_prefix(&format!("[process limit of {LIMIT} reached: "))?
                .strip_suffix(" forks refused]")?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no refused forks reported:\n{}", output.output));
    assert!(refused > 0);

    // Nothing of the run is left: its processes are gone and so is its cgroup.
    let mut settled = false;
    for _ in 0..100 {
        if host_processes() <= baseline + NOISE / 3 {
            settled = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        settled,
        "{} processes on the host after the run, {baseline} before it",
        host_processes()
    );
    let mut left = Vec::new();
    own_cgroups(Path::new("/sys/fs/cgroup"), 4, &mut left);
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
}

/// Runs the inner half of this test in a copy of this binary whose cgroup filesystems are
/// read-only (a mount namespace of its own), so no cgroup can be made for a run.
#[test]
fn as_root_without_a_pids_cgroup_the_sandbox_refuses_to_run() {
    if std::env::var_os(INNER).is_some() {
        return inner_refusal();
    }
    let root = std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|status| status.lines().any(|line| line.starts_with("Uid:\t0\t")));
    if !may_run(bubblewrap_missing().or((!root).then_some("the test does not run as root"))) {
        return;
    }
    let test_binary = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let output = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "/bin/sh", "-c"])
        .arg(
            "for m in $(findmnt -n -l -t cgroup,cgroup2 -o TARGET); do \
                 mount -o remount,bind,ro \"$m\" || exit 1; \
             done; exec \"$0\" \"$@\"",
        )
        .arg(test_binary)
        .args([
            "--exact",
            "as_root_without_a_pids_cgroup_the_sandbox_refuses_to_run",
            "--nocapture",
        ])
        .env(INNER, "1")
        .output()
        .unwrap_or_else(|e| panic!("unshare: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stderr.contains("refused as expected"),
        "inner run failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
}

/// With every cgroup filesystem read-only, a run with a process limit is refused with a
/// message that says how to allow it, and a run without the limit goes ahead.
fn inner_refusal() {
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("runtime: {e}"));
    let workdir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let limited = request(workdir.path(), "echo ran", Some(LIMIT));
    match runtime.block_on(Bubblewrap::default().run(&limited)) {
        Err(SandboxError::Unavailable(message)) => {
            assert!(
                message.contains("cannot limit the number of processes")
                    && message.contains("SANDBOX_MAX_PROCESSES=none"),
                "{message}"
            );
        }
        other => panic!("a run without a cgroup was not refused: {other:?}"),
    }
    let unlimited = request(workdir.path(), "echo ran", None);
    let output = runtime
        .block_on(Bubblewrap::default().run(&unlimited))
        .unwrap_or_else(|e| panic!("a run without the limit was refused: {e}"));
    assert_eq!(output.exit_code, Some(0), "{}", output.output);
    assert_eq!(output.output.trim(), "ran");
    eprintln!("refused as expected");
}

/// The cgroup a host left when it died (its pid is gone) is removed by the next run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cgroup_of_a_host_that_died_is_removed_by_the_next_run() {
    if !may_run(bubblewrap_missing()) || std::env::var_os(INNER).is_some() {
        return;
    }
    let hierarchy = Path::new("/sys/fs/cgroup/pids");
    if !may_run((!hierarchy.is_dir()).then_some("no cgroup v1 pids hierarchy")) {
        return;
    }
    let _turn = SERIAL.lock().await;
    let mut gone = std::process::Command::new("true")
        .spawn()
        .unwrap_or_else(|e| panic!("true: {e}"));
    let dead_pid = gone.id();
    gone.wait().unwrap_or_else(|e| panic!("wait: {e}"));
    let left = hierarchy.join(format!("agent-pipeline-{dead_pid}-0"));
    std::fs::create_dir(&left).unwrap_or_else(|e| panic!("mkdir {left:?}: {e}"));

    let workdir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let output = Bubblewrap::default()
        .run(&request(workdir.path(), "true", Some(LIMIT)))
        .await
        .unwrap_or_else(|e| panic!("bubblewrap: {e}"));
    assert_eq!(output.exit_code, Some(0), "{}", output.output);
    assert!(!left.exists(), "{left:?} was left");
}
