//! The acceptance test of the services as separate processes on a broker: a planner, two
//! workers, an orchestrator and a web process (which runs the mirror), each an `agent-host`
//! process of its own on one broker and one `DATA_DIR`, take 200 tasks that a foreign producer
//! publishes; a worker killed in the middle of a batch and started again loses nothing and
//! does nothing twice; `make replay` replays one step through the broker; every process stops
//! cleanly on SIGTERM.
//!
//! Without a broker (no `REDPANDA_BROKERS`, no tansu) it says SKIPPED; under `CI=true` that is
//! a failure. The deadlines are functional (something is stuck), never performance bounds:
//! the timings are printed instead.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use agent_pipeline::TaskId;
use agent_pipeline::output::{Design, Implementation, Review, TestReport};
use agent_pipeline::store::Artifact;
use common::kafka::Kafka;
use common::processes::{
    DEADLINE, Processes, State, poll_until, publish_tasks, read_reports, wait_for_tasks,
};
use common::{BIN, CONFIG_VARIABLES, Host, Sandbox, files_under, run};

/// Tasks per batch.
const BATCH: usize = 100;
/// The statuses of one task in `reports.jsonl`, in order, with the step of each.
const EXPECTED_REPORTS: [&str; 8] = [
    "received",
    "stage_done design@v1",
    "stage_done implement@v1",
    "stage_done test@v1",
    "stage_done review@v1",
    "gates",
    "pr",
    "done review@v1",
];

#[test]
fn service_processes_run_200_tasks_through_a_killed_worker_and_replay_with_make() {
    let total = Instant::now();
    let Some(kafka) = Kafka::start() else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let sandbox = Sandbox::new();
    let data_dir = sandbox.data_dir();

    let worker = |instance: &str| -> Host {
        kafka.start_service(
            &sandbox,
            &["worker", "--instance", instance, "--instances", "2"],
        )
    };
    let mut processes = Processes {
        named: vec![
            ("planner", kafka.start_service(&sandbox, &["planner"])),
            ("worker 0", worker("0")),
            ("worker 1", worker("1")),
            (
                "orchestrator",
                kafka.start_service(&sandbox, &["orchestrator"]),
            ),
            (
                "web",
                Host::start(kafka.command(
                    &sandbox,
                    &["web", "--bus", "kafka", "--listen", "127.0.0.1:0"],
                )),
            ),
        ],
    };
    for (name, process) in &processes.named {
        assert!(
            process.banner.contains(kafka.broker.brokers()),
            "{name} names the brokers:\n{}",
            process.banner
        );
    }
    assert!(
        processes.named[2].1.banner.contains("instance: 1 of 2"),
        "{}",
        processes.named[2].1.banner
    );
    eprintln!(
        "timing: broker and 5 processes ready after {:.1?}",
        total.elapsed()
    );

    let bus = runtime.block_on(kafka.bus());
    let state = runtime.block_on(State::sqlite(&data_dir.join("state.sqlite")));

    // Batch 1: published by a foreign producer, taken by the processes.
    let started = Instant::now();
    let batch1 = runtime.block_on(publish_tasks(&bus, &kafka.topics.tasks, BATCH));
    let published = started.elapsed();
    wait_for_tasks(&runtime, &state, &mut processes, &batch1, BATCH, "batch 1");
    eprintln!(
        "timing: batch 1: {BATCH} tasks published in {published:.1?}, all done after {:.1?}",
        started.elapsed()
    );
    check_artifacts(&data_dir, &batch1);
    let reports = wait_for_reports(&data_dir, &batch1, &mut processes);
    check_report_order(&reports, &batch1);

    // Batch 2: worker 1 is killed (SIGKILL) while tasks run, and started again.
    let started = Instant::now();
    let batch2 = runtime.block_on(publish_tasks(&bus, &kafka.topics.tasks, BATCH));
    let done_when_killed = wait_for_tasks(
        &runtime,
        &state,
        &mut processes,
        &batch2,
        10,
        "10 of batch 2",
    );
    assert!(
        done_when_killed < BATCH,
        "batch 2 ended before a worker could be killed: the kill was not tested"
    );
    let killed_at = started.elapsed();
    processes.take("worker 1").kill();
    std::thread::sleep(Duration::from_secs(1));
    processes.named.push(("worker 1", worker("1")));
    eprintln!(
        "timing: batch 2: worker 1 killed after {killed_at:.1?} with {done_when_killed} of \
         {BATCH} tasks done, running again after {:.1?}",
        started.elapsed()
    );
    wait_for_tasks(&runtime, &state, &mut processes, &batch2, BATCH, "batch 2");
    eprintln!("timing: batch 2: all done after {:.1?}", started.elapsed());

    // Every task of both batches ended once, each step ran once.
    let every: Vec<TaskId> = batch1.iter().chain(&batch2).copied().collect();
    let statuses = runtime.block_on(state.statuses());
    let attempts = runtime.block_on(state.attempts());
    for task_id in &every {
        let id = task_id.to_string();
        assert_eq!(statuses.get(&id).map(String::as_str), Some("done"), "{id}");
        let steps = attempts.get(&id).cloned().unwrap_or_default();
        assert_eq!(
            steps,
            ["design@v1 1", "implement@v1 1", "test@v1 1", "review@v1 1"],
            "task {id}: exactly one attempt per step"
        );
    }
    let second_attempts: Vec<PathBuf> = files_under(&data_dir)
        .into_iter()
        .filter(|path| path.to_string_lossy().contains(".attempt2."))
        .collect();
    assert!(second_attempts.is_empty(), "{second_attempts:?}");
    check_artifacts(&data_dir, &batch2);
    let reports = wait_for_reports(&data_dir, &every, &mut processes);
    check_report_order(&reports, &every);

    // A replay through the Makefile, as a user types it, from the repository's root.
    let started = Instant::now();
    let replayed = batch2[0];
    let output = make_replay(&kafka, &sandbox, replayed);
    assert_eq!(output.code(), Some(0), "{output}");
    assert!(output.stdout.contains("replayed implement@v1"), "{output}");
    let task_dir = data_dir.join(replayed.to_string());
    assert!(
        task_dir.join("implement@v1.attempt2.json").exists(),
        "the replay wrote its attempt:\n{output}"
    );
    let replay_reported = poll_until(DEADLINE, &mut processes, || {
        read_reports(&data_dir)
            .get(&replayed)
            .is_some_and(|events| events.iter().any(|e| e == "replayed implement@v1"))
    });
    assert!(replay_reported, "reports.jsonl has the replayed event");
    eprintln!("timing: make replay: {:.1?}", started.elapsed());

    // Every process stops cleanly on SIGTERM.
    let started = Instant::now();
    processes.stop_all();
    eprintln!(
        "timing: 5 processes stopped in {:.1?}; whole test {:.1?}",
        started.elapsed(),
        total.elapsed()
    );
}

/// Waits until the mirror has written a `done` event of every task of `tasks` to
/// `reports.jsonl` (it follows the state store by a moment), and returns the reports.
fn wait_for_reports(
    data_dir: &Path,
    tasks: &[TaskId],
    processes: &mut Processes,
) -> BTreeMap<TaskId, Vec<String>> {
    let mirrored = |reports: &BTreeMap<TaskId, Vec<String>>| {
        tasks.iter().all(|task| {
            reports
                .get(task)
                .is_some_and(|events| events.iter().any(|e| e.starts_with("done ")))
        })
    };
    let complete = poll_until(DEADLINE, processes, || mirrored(&read_reports(data_dir)));
    let reports = read_reports(data_dir);
    assert!(complete, "reports.jsonl lacks the done event of some tasks");
    reports
}

/// Every task's reports: received, each stage done in order, gates, pr, and one `done`.
fn check_report_order(reports: &BTreeMap<TaskId, Vec<String>>, tasks: &[TaskId]) {
    for task in tasks {
        let events = reports.get(task).cloned().unwrap_or_default();
        assert_eq!(
            events, EXPECTED_REPORTS,
            "task {task}: the reports in reports.jsonl"
        );
    }
}

/// Each task's four artifacts exist and parse as the stage's output type.
fn check_artifacts(data_dir: &Path, tasks: &[TaskId]) {
    for task in tasks {
        let dir = data_dir.join(task.to_string());
        let read = |step: &str| -> Artifact {
            let path = dir.join(format!("{step}.json"));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            let artifact: Artifact = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not an artifact: {e}", path.display()));
            assert_eq!(artifact.task_id, *task, "{}", path.display());
            assert_eq!(artifact.step.to_string(), step, "{}", path.display());
            artifact
        };
        let parsed = [
            read("design@v1").output_as::<Design>().map(drop),
            read("implement@v1").output_as::<Implementation>().map(drop),
            read("review@v1").output_as::<Review>().map(drop),
        ];
        for (step, result) in ["design@v1", "implement@v1", "review@v1"]
            .iter()
            .zip(parsed)
        {
            assert!(result.is_ok(), "task {task}, {step}: {result:?}");
        }
        let test: TestReport = read("test@v1")
            .output_as()
            .unwrap_or_else(|e| panic!("task {task}, test@v1: {e}"));
        assert!(
            test.passed > 0 && test.failed == 0,
            "task {task}: the tests ran and passed: {test:?}"
        );
    }
}

/// Runs `make replay TASK_ID=… STEP=implement@v1 REASON=…` in the repository's root with the
/// built binary, on the test's broker, topics and data directory.
fn make_replay(kafka: &Kafka, sandbox: &Sandbox, task: TaskId) -> common::Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // An empty configuration file, so that a developer's config.local.json in the root
    // cannot point the command elsewhere.
    let config = sandbox.path().join("empty-config.json");
    std::fs::write(&config, "{}").expect("the configuration file is written");
    let mut command = Command::new("make");
    command
        .args([
            "--no-print-directory",
            "replay",
            &format!("TASK_ID={task}"),
            "STEP=implement@v1",
            "REASON=replayed by the acceptance test",
            &format!("AGENT_HOST={BIN} --config {}", config.display()),
            &format!("DATA_DIR={}", sandbox.data_dir().display()),
        ])
        .current_dir(root);
    for variable in CONFIG_VARIABLES {
        command.env_remove(variable);
    }
    command.envs(kafka.env()).env("RUST_LOG", "info");
    run(command)
}
