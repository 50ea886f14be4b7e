//! The command line on a Kafka broker: `run --bus kafka` takes tasks that `send --bus kafka`
//! publishes to the broker directly, and decisions (`approve`, `reject`) checked against the
//! state of DATA_DIR; `web` on the broker takes work for the service processes;
//! a missing broker and an instance that does not exist are clear errors. The tests that need
//! a broker say SKIPPED without one (and fail under `CI=true`).

mod common;

use std::time::{Duration, Instant};

use common::kafka::Kafka;
use common::{HELLO, Host, Sandbox, run, unused_port};

/// Every report line of the task in `reports.jsonl`, as statuses.
fn statuses(sandbox: &Sandbox, task_id: &str) -> Vec<String> {
    let reports =
        std::fs::read_to_string(sandbox.data_dir().join("reports.jsonl")).unwrap_or_default();
    reports
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["task_id"] == task_id)
        .map(|event| event["status"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn send_on_the_bus_runs_a_task_on_run_with_the_kafka_bus() {
    let Some(kafka) = Kafka::start() else {
        return;
    };
    let sandbox = Sandbox::new();
    let started = Instant::now();
    let host = Host::start(kafka.command(
        &sandbox,
        &["run", "--bus", "kafka", "--listen", "127.0.0.1:0"],
    ));
    assert!(
        host.banner.contains("on the Kafka bus") && host.banner.contains(kafka.broker.brokers()),
        "the banner names the bus and the brokers:\n{}",
        host.banner
    );
    assert!(host.banner.contains(&kafka.topics.tasks), "{}", host.banner);

    // A client with the same topics and broker, and no host URL: it publishes to the broker.
    let client = Sandbox::new();
    let output = run(kafka.command(
        &client,
        &["send", "--bus", "kafka", "--text", HELLO, "--wait"],
    ));
    assert_eq!(output.code(), Some(0), "{output}");
    let task_id = output.task_id();
    for expected in [
        "] received — ",
        "] stage_done design@v1 — ",
        "] stage_done review@v1 — ",
        "] done review@v1 — ",
        "] ci — CI passed on agent/",
    ] {
        assert!(
            output.stdout.contains(expected),
            "missing {expected:?}:\n{output}"
        );
    }
    assert!(
        output
            .stderr
            .contains(&format!("published to {}", kafka.topics.tasks)),
        "{output}"
    );
    assert!(
        !client.data_dir().exists(),
        "a client on the bus needs no data directory of its own"
    );
    assert!(
        sandbox
            .data_dir()
            .join(&task_id)
            .join("review@v1.json")
            .exists(),
        "the host's services wrote the artifacts"
    );

    // `--no-wait` prints the id once the task is on the broker.
    let quick = run(kafka.command(
        &client,
        &["send", "--bus", "kafka", "--no-wait", "--text", HELLO],
    ));
    assert_eq!(quick.code(), Some(0), "{quick}");
    let quick_id = quick.task_id();
    assert!(!quick.stdout.contains("received"), "{quick}");

    // The host's API sees both tasks; the second one ends too.
    let deadline = Instant::now() + common::TIMEOUT;
    loop {
        let tasks = client.run(&["tasks", "--url", &host.url]);
        assert_eq!(tasks.code(), Some(0), "{tasks}");
        let done = |id: &str| {
            tasks
                .stdout
                .lines()
                .any(|line| line.starts_with(id) && line.contains(" done "))
        };
        if done(&task_id) && done(&quick_id) {
            break;
        }
        assert!(Instant::now() < deadline, "the tasks did not end:\n{tasks}");
        std::thread::sleep(Duration::from_millis(200));
    }

    let stopped = host.terminate();
    assert!(
        stopped.status.is_some_and(|s| s.success()),
        "run stops cleanly on SIGTERM: {:?}\n{}",
        stopped.status,
        stopped.stderr
    );
    let statuses = statuses(&sandbox, &task_id);
    assert_eq!(
        statuses.iter().filter(|s| *s == "done").count(),
        1,
        "{statuses:?}"
    );
    eprintln!(
        "timing: send on the bus against run --bus kafka: {:?}",
        started.elapsed()
    );
}

#[test]
fn decisions_on_the_bus_are_checked_against_data_dir_and_applied_by_the_services() {
    let Some(kafka) = Kafka::start() else {
        return;
    };
    let sandbox = Sandbox::new();
    let mut command = kafka.command(
        &sandbox,
        &["run", "--bus", "kafka", "--listen", "127.0.0.1:0"],
    );
    command.env("EXECUTE_CODE", "false");
    let host = Host::start(command);
    let data_dir = sandbox.data_dir();
    let data_dir = data_dir.to_str().expect("a UTF-8 path");

    // A client on the broker that sees the host's data directory (for the checks).
    let client = Sandbox::new();
    let on_bus = |args: &[&str]| {
        let mut all = vec!["--bus", "kafka", "--data-dir", data_dir];
        all.extend_from_slice(args);
        run(kafka.command(&client, &all))
    };
    let mut waiting = Vec::new();
    for _ in 0..2 {
        let send = on_bus(&["send", "--text", HELLO, "--require-approval"]);
        assert_eq!(send.code(), Some(0), "{send}");
        assert!(send.stdout.contains("] awaiting_approval "), "{send}");
        assert!(
            send.stdout
                .contains(&format!("run `agent-host approve {}`", send.task_id())),
            "{send}"
        );
        waiting.push(send.task_id());
    }
    let approve = on_bus(&["approve", &waiting[0], "--by", "ada"]);
    assert_eq!(approve.code(), Some(0), "{approve}");
    assert!(approve.stdout.contains("] approved "), "{approve}");
    assert!(
        approve.stdout.contains("approved: its change is published"),
        "{approve}"
    );
    let reject = on_bus(&["reject", &waiting[1]]);
    assert_eq!(reject.code(), Some(0), "{reject}");
    assert!(
        reject.stdout.contains("rejected: nothing was published"),
        "{reject}"
    );
    let again = on_bus(&["approve", &waiting[1]]);
    assert_eq!(again.code(), Some(1), "{again}");
    assert!(
        again
            .stderr
            .contains(&format!("cannot approve task {}: it is error", waiting[1])),
        "{again}"
    );

    let stopped = host.terminate();
    assert!(
        stopped.status.is_some_and(|s| s.success()),
        "{:?}\n{}",
        stopped.status,
        stopped.stderr
    );
    assert!(statuses(&sandbox, &waiting[0]).contains(&"approved".to_owned()));
}

#[test]
fn web_on_the_bus_takes_work_for_the_service_processes_and_mirrors_their_reports() {
    let Some(kafka) = Kafka::start() else {
        return;
    };
    let sandbox = Sandbox::new();
    let started = Instant::now();
    let web = Host::start(kafka.command(
        &sandbox,
        &["web", "--bus", "kafka", "--listen", "127.0.0.1:0"],
    ));
    assert!(
        !web.banner.contains("read-only") && web.banner.contains("mirror"),
        "web on the broker takes work and mirrors the reports:\n{}",
        web.banner
    );
    let services = ["planner", "worker", "orchestrator", "ci-monitor"]
        .map(|service| kafka.start_service(&sandbox, &[service]));
    for (service, process) in ["planner", "worker", "orchestrator", "ci-monitor"]
        .iter()
        .zip(&services)
    {
        assert!(
            process.banner.contains(&format!("agent-host {service}:"))
                && process.banner.contains(kafka.broker.brokers())
                && process
                    .banner
                    .contains("partitions: shared with the group's other members by leases"),
            "{}",
            process.banner
        );
    }
    assert!(
        services[0]
            .banner
            .contains(&format!("consumes: {} (group planner)", kafka.topics.tasks)),
        "{}",
        services[0].banner
    );

    // Enqueued through the web process's API (POST /api/tasks), followed on its live events.
    let client = Sandbox::new();
    let output = client.run(&["send", "--text", HELLO, "--url", &web.url]);
    assert_eq!(output.code(), Some(0), "{output}");
    let task_id = output.task_id();
    assert!(output.stdout.contains("] done review@v1 — "), "{output}");
    assert!(
        statuses(&sandbox, &task_id).contains(&"done".to_owned()),
        "the web process mirrored the reports to reports.jsonl"
    );

    for process in services.into_iter().chain([web]) {
        let stopped = process.terminate();
        assert!(
            stopped.status.is_some_and(|s| s.success()),
            "a service process stops cleanly on SIGTERM: {:?}\n{}",
            stopped.status,
            stopped.stderr
        );
    }
    eprintln!(
        "timing: web and four service processes, one task: {:?}",
        started.elapsed()
    );
}

#[test]
fn send_on_the_bus_without_a_broker_fails_quickly_and_says_why() {
    let sandbox = Sandbox::new();
    let brokers = format!("127.0.0.1:{}", unused_port());
    let mut command = sandbox.command(&["send", "--bus", "kafka", "--text", HELLO]);
    // With the default log filter, as a user runs it.
    command
        .env("REDPANDA_BROKERS", &brokers)
        .env_remove("RUST_LOG");
    let started = Instant::now();
    let output = run(command);
    let took = started.elapsed();
    assert_eq!(output.code(), Some(1), "{output}");
    assert!(
        output.stderr.contains(&format!(
            "no broker answers at {brokers} (REDPANDA_BROKERS)"
        )),
        "{output}"
    );
    assert!(took < Duration::from_secs(15), "gave up after {took:?}");
    assert!(
        !output.stderr.contains("rskafka"),
        "the Kafka client's retries are not shown:\n{output}"
    );
    eprintln!("timing: send without a broker gave up after {took:?}");
}

#[test]
fn an_instance_that_does_not_exist_and_an_unknown_task_are_refused_before_any_broker() {
    let sandbox = Sandbox::new();
    let mut command = sandbox.command(&["worker", "--instance", "2", "--instances", "2"]);
    // Nobody listens there: the refusal must come before any connection is tried.
    command.env("REDPANDA_BROKERS", format!("127.0.0.1:{}", unused_port()));
    let output = run(command);
    assert_eq!(output.code(), Some(1), "{output}");
    assert!(
        output
            .stderr
            .contains("--instance 2 --instances 2: instance 2 of 2 does not exist"),
        "{output}"
    );

    let unknown = "3f0c8a52-6a3e-4c1e-9d1e-5b8f2f6f4a10";
    let mut command = sandbox.command(&["replay", "--task-id", unknown, "--step", "implement@v1"]);
    command
        .env("AGENT_BUS", "kafka")
        .env("REDPANDA_BROKERS", format!("127.0.0.1:{}", unused_port()));
    let output = run(command);
    assert_eq!(output.code(), Some(1), "{output}");
    assert!(
        output
            .stderr
            .contains(&format!("task {unknown} does not exist")),
        "{output}"
    );
}
