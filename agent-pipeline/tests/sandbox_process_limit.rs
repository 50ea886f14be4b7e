//! A fork bomb in the real bubblewrap sandbox is refused its forks at the run's process
//! limit: the host's process count never grows by more than the limit, the run keeps
//! control and ends normally, says how many forks were refused, and leaves neither a
//! process nor its cgroup behind.
//!
//! It is alone in its test binary, so the cgroups named after this process are its own.
//! It prints SKIPPED and passes when bubblewrap is missing, except under `CI=true`, where
//! that is a failure.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use agent_pipeline::execution::sandbox::{Bubblewrap, Sandbox, SandboxLimits, SandboxRun};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_is_refused_its_forks_at_the_process_limit() {
    if !Bubblewrap::default().is_available() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "bubblewrap (`bwrap`) is not installed, which CI requires"
        );
        eprintln!("SKIPPED: bubblewrap (`bwrap`) is not installed");
        return;
    }
    let workdir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let run = SandboxRun {
        workdir: workdir.path().to_path_buf(),
        command: FORK_BOMB.to_owned(),
        env: Vec::new(),
        read_only: Vec::new(),
        limits: SandboxLimits {
            timeout: Duration::from_secs(30),
            max_processes: Some(LIMIT),
            ..SandboxLimits::default()
        },
    };

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
