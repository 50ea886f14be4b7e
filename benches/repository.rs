//! What a task on a large existing repository costs in its workspace: a generated git
//! repository of 20,000 files (about 40 MB in 400 directories) is cloned into a task
//! workspace, a change of 3 files is committed on top of its base (as every Implement and Test
//! attempt does), and the base is checked out and the change again (as the repository's
//! baseline test run does).
//!
//! ```text
//! cargo bench -p agent-pipeline-benches --bench repository
//! ```

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use agent_pipeline::TaskId;
use agent_pipeline::execution::{TaskWorkspace, WorkspaceLimits};
use agent_pipeline::output::FileContent;
use agent_pipeline::wire::Repository;
use criterion::{Criterion, criterion_group, criterion_main};

/// How many files the generated repository holds.
const FILES: usize = 20_000;
/// Files per directory.
const PER_DIR: usize = 50;

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => panic!("no tokio runtime: {error}"),
    }
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(["-c", "user.name=bench", "-c", "user.email=bench@localhost"])
        .args([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "core.hooksPath=/dev/null",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .status();
    match status {
        Ok(status) if status.success() => {}
        other => panic!("git {args:?} failed: {other:?}"),
    }
}

/// Writes `FILES` source files of about 2 KB each under `root` and commits them.
fn generate(root: &Path) {
    for n in 0..FILES {
        let dir = root.join(format!("crate{:02}/module{:03}", n / 2_000, n / PER_DIR));
        if let Err(error) = std::fs::create_dir_all(&dir) {
            panic!("cannot create {}: {error}", dir.display());
        }
        let mut text = format!("//! Generated module {n}.\n\n");
        for f in 0..16 {
            text.push_str(&format!(
                "/// Returns the {f}th value of module {n}.\npub fn value_{n}_{f}(x: u64) -> u64 {{\n    x.wrapping_mul({f}).wrapping_add({n})\n}}\n\n"
            ));
        }
        let path = dir.join(format!("file{n:05}.rs"));
        if let Err(error) = std::fs::write(&path, text) {
            panic!("cannot write {}: {error}", path.display());
        }
    }
    git(root, &["init", "--quiet", "--initial-branch=main"]);
    git(root, &["add", "--all"]);
    git(root, &["commit", "--quiet", "-m", "generated"]);
    // A real repository keeps its objects packed.
    git(root, &["repack", "-a", "-d", "--quiet"]);
}

fn changed_files(round: usize) -> Vec<FileContent> {
    (0..3)
        .map(|i| FileContent {
            path: format!("crate00/module{i:03}/file{:05}.rs", i * PER_DIR),
            content: format!(
                "//! Changed in round {round}.\npub fn changed() -> usize {{ {round} }}\n"
            ),
        })
        .collect()
}

fn repository_workspace(c: &mut Criterion) {
    let runtime = runtime();
    let temp = match tempfile::tempdir() {
        Ok(temp) => temp,
        Err(error) => panic!("no temporary directory: {error}"),
    };
    let source = temp.path().join("source");
    let started = Instant::now();
    generate(&source);
    eprintln!(
        "generated {FILES} files and committed them in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let repository = Repository::new(source.display().to_string());
    let data_dir = temp.path().join("data");
    let open = |task_id| match runtime.block_on(TaskWorkspace::open_with(
        &data_dir,
        task_id,
        Some(&repository),
    )) {
        Ok(workspace) => workspace,
        Err(error) => panic!("cannot open the workspace: {error}"),
    };

    let mut group = c.benchmark_group("repository of 20,000 files");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("clone into a task workspace", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let task_id = TaskId::new();
                let started = Instant::now();
                let workspace = open(task_id);
                total += started.elapsed();
                let task_dir = data_dir.join(task_id.to_string());
                if let Err(error) = std::fs::remove_dir_all(&task_dir) {
                    panic!("cannot remove {}: {error}", workspace.dir().display());
                }
            }
            total
        })
    });

    let workspace = open(TaskId::new());
    let base = match runtime.block_on(workspace.base()) {
        Ok(base) => base,
        Err(error) => panic!("no base: {error}"),
    };
    let limits = WorkspaceLimits::default();
    let mut round = 0;
    let commit = |round: usize| match runtime.block_on(workspace.commit_change(
        Some(&base),
        &changed_files(round),
        &[],
        "change 3 files",
        &limits,
    )) {
        Ok(commit) => commit,
        Err(error) => panic!("cannot commit: {error}"),
    };
    group.bench_function("commit_change of 3 files on the base", |b| {
        b.iter(|| {
            round += 1;
            commit(round)
        })
    });
    let changed = commit(0).id;
    group.bench_function("check_out the base and the change again", |b| {
        b.iter(|| {
            for target in [&base, &changed] {
                if let Err(error) = runtime.block_on(workspace.check_out(target)) {
                    panic!("cannot check out {target}: {error}");
                }
            }
        })
    });
    group.finish();
}

criterion_group!(benches, repository_workspace);
criterion_main!(benches);
