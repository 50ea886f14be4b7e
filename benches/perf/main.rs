//! The performance harness: B1–B5 of docs/performance.md. Each measurement runs in a child
//! process of its own, so that its peak memory is its own; the parent writes the results as
//! JSON, draws the plots as SVG and prints a table.
//!
//! ```text
//! scripts/perf            # everything, full size (≈ 10 minutes on 2 cores); docs/perf/
//! scripts/perf --quick    # the same, smaller (under 2 minutes); target/perf-quick/
//! scripts/perf b1 b5      # some of them
//! ```

mod embedded;
mod host;
mod kafka;
mod latency;
mod load;
mod plan;
mod rate_limit;
mod rss;
mod svg;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use agent_pipeline::llm::{
    InstantLlm, Latency, LlmLimits, RateLimitedLlm, RateLimiter, SimulatedLlm,
};
use serde_json::Value;

use plan::Plan;

/// The variable through which the parent hands its scratch directory to the children.
const SCRATCH: &str = "PERF_SCRATCH";

/// A directory on disk for one run's data, inside the parent's scratch directory.
///
/// It is not removed when the run ends: the parent removes them all at the end. Deleting
/// thousands of files just before the next run creates as many makes ext4 search its inode
/// bitmaps for inodes that were not freed in the last 30 s (`recently_deleted`), which
/// would charge one run for the last one's cleanup.
pub(crate) fn scratch_dir() -> Result<PathBuf, String> {
    let root = std::env::var_os(SCRATCH)
        .ok_or("run the measurements through `perf` (scripts/perf), which prepares their disk")?;
    tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(root)
        .map(tempfile::TempDir::keep)
        .map_err(|e| format!("scratch directory: {e}"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.first().map(String::as_str) {
        Some("--child") => child(&args[1..]).map(|value| println!("RESULT {value}")),
        _ => parent(&args),
    };
    if let Err(error) = outcome {
        eprintln!("perf: {error}");
        std::process::exit(1);
    }
}

/// Runs the plan's measurements one after the other, each in a child process.
fn parent(args: &[String]) -> Result<(), String> {
    let plan = Plan::from_args(args)?;
    std::fs::create_dir_all(&plan.out).map_err(|e| format!("{}: {e}", plan.out.display()))?;
    let me = std::env::current_exe().map_err(|e| format!("current executable: {e}"))?;
    // On disk (PERF_DIR, else the system's temporary directory), removed when this ends.
    let scratch = match std::env::var_os("PERF_DIR") {
        Some(base) => tempfile::tempdir_in(base),
        None => tempfile::tempdir(),
    }
    .map_err(|e| format!("scratch directory: {e}"))?;
    let mut results = Vec::new();
    for run in &plan.runs {
        eprintln!("perf: {} …", run.describe());
        let output = std::process::Command::new(&me)
            .arg("--child")
            .args(&run.args)
            .env(SCRATCH, scratch.path())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("{}: {e}", me.display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout
            .lines()
            .find_map(|line| line.strip_prefix("RESULT "))
            .ok_or_else(|| format!("{} failed ({})", run.describe(), output.status))?;
        let value: Value =
            serde_json::from_str(line).map_err(|e| format!("{}: {e}", run.describe()))?;
        eprintln!("perf: {} → {value}", run.describe());
        results.push(plan::Measured {
            run: run.clone(),
            value,
        });
    }
    plan::report(&plan, &results)
}

/// One measurement, in this process: `b1 TASKS CONCURRENCY`, `b2 TASKS CONCURRENCY`,
/// `b3 TASKS CONCURRENCY`, `b4 SECONDS REQUESTS_PER_MINUTE`, `b5 RUNS`.
fn child(args: &[String]) -> Result<Value, String> {
    let number = |i: usize| -> Result<usize, String> {
        args.get(i)
            .ok_or_else(|| format!("argument {i} missing"))?
            .parse()
            .map_err(|e| format!("argument {i}: {e}"))
    };
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("runtime: {e}"))?;
    let patience = Duration::from_secs(900);
    match args.first().map(String::as_str) {
        Some("b1") => runtime.block_on(embedded::run(
            Arc::new(InstantLlm::new()),
            number(1)?,
            number(2)?,
            patience,
        )),
        Some("b2") => {
            let concurrency = number(2)?;
            let limits = LlmLimits {
                max_concurrency: std::num::NonZeroUsize::new(concurrency),
                ..LlmLimits::default()
            };
            let llm = RateLimitedLlm::new(
                Arc::new(SimulatedLlm::new(Latency::Fixed(plan::B2_LATENCY))),
                Arc::new(RateLimiter::new(&limits)),
            );
            runtime.block_on(embedded::run(
                Arc::new(llm),
                number(1)?,
                concurrency,
                patience,
            ))
        }
        Some("b3") => runtime.block_on(kafka::run(number(1)?, number(2)?)),
        Some("b4") => runtime.block_on(rate_limit::run(
            Duration::from_secs(u64::try_from(number(1)?).unwrap_or(u64::MAX)),
            u32::try_from(number(2)?).unwrap_or(u32::MAX),
        )),
        Some("b5") => runtime.block_on(host::startup(number(1)?)),
        other => Err(format!("unknown measurement {other:?}")),
    }
}
