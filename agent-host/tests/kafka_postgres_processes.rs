//! Many processes, one truth: a planner, three workers, two orchestrators and a web process
//! (the mirror), each an `agent-host` process of its own on one broker and one PostgreSQL
//! database, with no static shares: the partitions are shared by leases. 200 tasks; one
//! orchestrator and one worker are killed with SIGKILL while tasks run and are not started
//! again. Every task ends `done` exactly once, no attempt is duplicated, and the dead members'
//! partitions move to the survivors.
//!
//! Without a broker or a PostgreSQL server it says SKIPPED; under `CI=true` that is a failure.
//! The deadlines are functional (something is stuck), never performance bounds.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use agent_pipeline::testing::TestDatabase;
use common::kafka::Kafka;
use common::processes::{
    DEADLINE, Processes, State, poll_until, publish_tasks, read_reports, wait_for_tasks,
};
use common::{Host, Sandbox};

/// Tasks in the run.
const TASKS: usize = 200;

#[test]
fn two_orchestrators_and_three_workers_on_postgres_survive_a_kill_of_each() {
    let total = Instant::now();
    let Some(kafka) = Kafka::start() else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let Some(database) = runtime.block_on(TestDatabase::create()) else {
        return;
    };
    let sandbox = Sandbox::new();
    let data_dir = sandbox.data_dir();

    // Every process on the same database, with a member id of its own, code execution off
    // (what is tested here is the state, not the sandbox).
    let start = |member: &'static str, args: &[&str]| -> (&'static str, Host) {
        let mut command = kafka.command(&sandbox, args);
        command
            .env("DATABASE_URL", database.url())
            .env("AGENT_MEMBER_ID", member)
            .env("EXECUTE_CODE", "false");
        let host = if args[0] == "web" {
            Host::start(command)
        } else {
            Host::start_service(command)
        };
        (member, host)
    };
    let mut processes = Processes {
        named: vec![
            start("planner", &["planner"]),
            start("worker-1", &["worker"]),
            start("worker-2", &["worker"]),
            start("worker-3", &["worker"]),
            start("orchestrator-1", &["orchestrator"]),
            start("orchestrator-2", &["orchestrator"]),
            start("web", &["web", "--bus", "kafka", "--listen", "127.0.0.1:0"]),
        ],
    };
    for (name, process) in &processes.named {
        assert!(
            process.banner.contains("state:   postgres://"),
            "{name} keeps its state in PostgreSQL:\n{}",
            process.banner
        );
    }
    eprintln!(
        "timing: broker, database and 7 processes ready after {:.1?}",
        total.elapsed()
    );

    let state = runtime.block_on(State::postgres(database.url()));
    let holders = |topic: &str| -> BTreeMap<String, BTreeSet<String>> {
        let prefix = format!("partition/worker/{topic}/");
        let prefix = if topic == kafka.topics.step_results {
            format!("partition/orchestrator/{topic}/")
        } else {
            prefix
        };
        let leases = runtime
            .block_on(state.store.leases(&prefix, chrono::Utc::now()))
            .expect("the leases can be read");
        let mut by_holder: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for lease in leases {
            by_holder
                .entry(lease.holder)
                .or_default()
                .insert(lease.resource);
        }
        by_holder
    };
    let requests = kafka.topics.step_requests.clone();
    let results = kafka.topics.step_results.clone();
    // Three partitions per topic: once the members have balanced, one each for the workers.
    let balanced = poll_until(DEADLINE, &mut processes, || {
        holders(&requests)
            .values()
            .map(BTreeSet::len)
            .collect::<Vec<_>>()
            == [1, 1, 1]
    });
    assert!(
        balanced,
        "the workers did not share the partitions: {:?}",
        holders(&requests)
    );

    let bus = runtime.block_on(kafka.bus());
    let started = Instant::now();
    let tasks = runtime.block_on(publish_tasks(&bus, &kafka.topics.tasks, TASKS));
    let done_when_killed = wait_for_tasks(&runtime, &state, &mut processes, &tasks, 5, "5 tasks");
    assert!(
        done_when_killed < TASKS,
        "every task ended before the kills: they were not tested"
    );
    let killed_at = started.elapsed();
    processes.take("worker-2").kill();
    processes.take("orchestrator-1").kill();
    eprintln!(
        "timing: worker-2 and orchestrator-1 killed after {killed_at:.1?} with \
         {done_when_killed} of {TASKS} tasks done"
    );
    wait_for_tasks(&runtime, &state, &mut processes, &tasks, TASKS, "all tasks");
    eprintln!(
        "timing: all {TASKS} tasks done after {:.1?}",
        started.elapsed()
    );

    // Every task done once, one attempt per step.
    let statuses = runtime.block_on(state.statuses());
    let attempts = runtime.block_on(state.attempts());
    for task_id in &tasks {
        let id = task_id.to_string();
        assert_eq!(statuses.get(&id).map(String::as_str), Some("done"), "{id}");
        assert_eq!(
            attempts.get(&id).cloned().unwrap_or_default(),
            ["design@v1 1", "implement@v1 1", "test@v1 1", "review@v1 1"],
            "task {id}: exactly one attempt per step"
        );
    }
    let mirrored = poll_until(DEADLINE, &mut processes, || {
        let reports = read_reports(&data_dir);
        tasks.iter().all(|task| {
            reports
                .get(task)
                .is_some_and(|events| events.iter().any(|e| e.starts_with("done ")))
        })
    });
    assert!(mirrored, "reports.jsonl lacks the done event of some tasks");
    let reports = read_reports(&data_dir);
    for task in &tasks {
        let done = reports.get(task).map_or(0, |events| {
            events.iter().filter(|e| e.starts_with("done ")).count()
        });
        assert_eq!(done, 1, "task {task}: `done` reported exactly once");
    }

    // The dead members' partitions moved to the survivors.
    let workers = holders(&requests);
    let orchestrators = holders(&results);
    assert_eq!(
        workers.keys().map(String::as_str).collect::<Vec<_>>(),
        ["worker-1", "worker-3"],
        "the surviving workers hold the request partitions: {workers:?}"
    );
    assert_eq!(
        workers.values().map(BTreeSet::len).sum::<usize>(),
        3,
        "{workers:?}"
    );
    assert_eq!(
        orchestrators.keys().map(String::as_str).collect::<Vec<_>>(),
        ["orchestrator-2"],
        "the surviving orchestrator holds every result partition: {orchestrators:?}"
    );
    assert_eq!(
        orchestrators.values().map(BTreeSet::len).sum::<usize>(),
        3,
        "{orchestrators:?}"
    );

    processes.stop_all();
    assert!(
        holders(&requests).is_empty() && holders(&results).is_empty(),
        "members that stop cleanly give their partitions up"
    );
    runtime.block_on(database.drop_database());
    eprintln!("timing: whole test {:.1?}", total.elapsed());
}
