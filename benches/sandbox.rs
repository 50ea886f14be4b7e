//! What running generated code costs: one sandboxed command (bubblewrap) against the same
//! command without isolation, with and without the run's process and disk limits, and one
//! commit to a task's git workspace.
//!
//! ```text
//! cargo bench -p agent-pipeline-benches --bench sandbox
//! ```

use agent_pipeline::TaskId;
use agent_pipeline::execution::TaskWorkspace;
use agent_pipeline::execution::WorkspaceLimits;
use agent_pipeline::execution::sandbox::{
    Bubblewrap, Sandbox, SandboxLimits, SandboxRun, Unsandboxed,
};
use agent_pipeline::output::FileContent;
use criterion::{Criterion, criterion_group, criterion_main};

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => panic!("no tokio runtime: {error}"),
    }
}

fn sandboxed_commands(c: &mut Criterion) {
    let runtime = runtime();
    let temp = match tempfile::tempdir() {
        Ok(temp) => temp,
        Err(error) => panic!("no temporary directory: {error}"),
    };
    let sandboxes: [(&str, Box<dyn Sandbox>); 2] = [
        ("bubblewrap", Box::new(Bubblewrap::new())),
        ("unsandboxed", Box::new(Unsandboxed)),
    ];
    for command in ["true", "python3 -c pass"] {
        for (name, sandbox) in &sandboxes {
            let run = SandboxRun {
                workdir: temp.path().to_path_buf(),
                command: command.to_owned(),
                env: Vec::new(),
                read_only: Vec::new(),
                limits: SandboxLimits::default(),
            };
            c.bench_function(&format!("{name}: {command}"), |b| {
                b.iter(|| match runtime.block_on(sandbox.run(&run)) {
                    Ok(output) if output.exit_code == Some(0) => output,
                    other => panic!("{name} could not run {command}: {other:?}"),
                })
            });
        }
    }
}

fn workspace_commits(c: &mut Criterion) {
    let runtime = runtime();
    let temp = match tempfile::tempdir() {
        Ok(temp) => temp,
        Err(error) => panic!("no temporary directory: {error}"),
    };
    let workspace = match runtime.block_on(TaskWorkspace::open(temp.path(), TaskId::new())) {
        Ok(workspace) => workspace,
        Err(error) => panic!("no workspace: {error}"),
    };
    let files = vec![
        FileContent {
            path: "hello.py".into(),
            content: "print(\"Hello Earthling\")\n".into(),
        },
        FileContent {
            path: "test_hello.py".into(),
            content: "import unittest\n".into(),
        },
    ];
    let limits = WorkspaceLimits::default();
    c.bench_function("commit two files to a task workspace", |b| {
        b.iter(|| {
            let commit = workspace.commit_files(None, &files, "bench", &limits);
            match runtime.block_on(commit) {
                Ok(commit) => commit,
                Err(error) => panic!("commit failed: {error}"),
            }
        })
    });
}

/// What the process limit (a cgroup per run) and the disk limit (a walk of the workdir at
/// the start, then the free space every 100 ms) add to a run.
fn run_limits(c: &mut Criterion) {
    let runtime = runtime();
    let temp = match tempfile::tempdir() {
        Ok(temp) => temp,
        Err(error) => panic!("no temporary directory: {error}"),
    };
    let unlimited = SandboxLimits {
        max_processes: None,
        disk_bytes: None,
        ..SandboxLimits::default()
    };
    for (name, limits) in [
        ("with the process and disk limits", SandboxLimits::default()),
        ("without the process and disk limits", unlimited),
    ] {
        let run = SandboxRun {
            workdir: temp.path().to_path_buf(),
            command: "true".to_owned(),
            env: Vec::new(),
            read_only: Vec::new(),
            limits,
        };
        c.bench_function(&format!("bubblewrap: true, {name}"), |b| {
            b.iter(|| match runtime.block_on(Bubblewrap::new().run(&run)) {
                Ok(output) if output.exit_code == Some(0) => output,
                other => panic!("bubblewrap could not run true: {other:?}"),
            })
        });
    }
}

criterion_group!(benches, sandboxed_commands, run_limits, workspace_commits);
criterion_main!(benches);
