//! A kill storm: a planner, two workers, an orchestrator and a web process (the mirror), each
//! an `agent-host` process of its own on one broker and one `DATA_DIR`, take 200 tasks that a
//! foreign producer publishes, while a chaos loop SIGKILLs the planner, a worker or the
//! orchestrator at random moments and starts it again after a short pause. Every task still
//! ends `done` exactly once, every step has exactly one succeeded attempt with attempt numbers
//! `1..=n` without a gap, and every artifact file is whole and names its own task, step and
//! attempt. The tasks trickle in over about 25 s (a batch published at once is done within a
//! few seconds, before a storm could start), and each kill waits briefly for a moment when
//! attempts are requested and unfinished, so that the kills land mid-step; at the end the
//! test checks that they did.
//!
//! A killed worker's step is not a new attempt: its request was not acknowledged, so the bus
//! delivers it again and a worker runs it again under the same attempt number (the
//! orchestrator keeps the first result of an attempt and ignores the others). New attempts come
//! only from failures, so the LLM server, a local stand-in for the provider, answers the first
//! call of one step in ten (chosen by the seed) with a body that is not a chat completion, and
//! of one in fifty the first two calls: those steps fail with a retryable error and are retried
//! as attempts 2 and 3, while the storm kills the processes that run and record them. The test
//! checks that some step did need more than one attempt, and that no step has more attempts
//! than its faults explain.
//!
//! The storm is seeded; the seed is printed, and `KILL_STORM_SEED=<seed>` replays the same
//! choices (victims, intervals, pauses, the steps whose calls fail; the moments the kills land
//! still depend on timing).
//!
//! Without a broker (no `REDPANDA_BROKERS`, no tansu) it says SKIPPED; under `CI=true` that is
//! a failure. The deadlines are functional (something is stuck), never performance bounds:
//! the timings are printed instead.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agent_pipeline::output::{Design, Implementation, Review};
use agent_pipeline::store::{Artifact, AttemptRecord, AttemptStatus, TaskStatus};
use agent_pipeline::wire::StepMode;
use agent_pipeline::{StepId, TaskId};
use common::kafka::Kafka;
use common::openai::{ChatServer, Fault};
use common::processes::{
    DEADLINE, Processes, State, poll_until, publish_numbered_tasks, read_reports,
};
use common::{Host, Sandbox, files_under};
use serde_json::Value;

/// Tasks in the run.
const TASKS: usize = 200;
/// Kills of each kind (planner, worker, orchestrator) the storm makes at least.
const KILLS_PER_KIND: usize = 3;
/// Tasks the foreign producer publishes at a time: 200 tasks over about 25 s.
const PUBLISHED_PER_TICK: usize = 8;
/// How often the foreign producer publishes.
const PUBLISH_TICK: Duration = Duration::from_secs(1);
/// How long a kill waits at most for a moment with steps in flight.
const AIM: Duration = Duration::from_secs(2);
/// The steps of every task, in pipeline order.
const STEPS: [&str; 4] = ["design@v1", "implement@v1", "test@v1", "review@v1"];
/// The processes the storm kills, by kind.
const KINDS: [&str; 3] = ["planner", "worker", "orchestrator"];
/// The response schema of each step's LLM call, in the order of [`STEPS`].
const SCHEMAS: [&str; 4] = ["design", "implementation", "test_plan", "review"];
/// The model the processes ask the LLM server for (one with a list price).
const MODEL: &str = "gpt-4o-mini";
/// The share of steps, in percent, whose first LLM call fails.
const FAULTED_PERCENT: u64 = 10;
/// Of those, the share of all steps, in percent, whose first two calls fail.
const FAULTED_TWICE_PERCENT: u64 = 2;

/// A small xorshift generator: enough to pick victims and intervals, and replayable from
/// its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A duration in `low..high` milliseconds.
    fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.next() % (high - low))
    }

    /// An index below `n`.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The LLM faults of the run. The seed picks the steps (task number and response schema)
/// whose first call, or first two calls, the server answers with a body that is not a chat
/// completion: an HTML error page or a JSON body cut short, which fail the attempt with a
/// retryable error. Two at most, so that no step uses up its three tries and the task still
/// ends `done`. The picks depend on the seed only, not on the order of the calls.
#[derive(Clone)]
struct LlmFaults {
    seed: u64,
    /// (task number, step index) → the faults answered so far.
    answered: Arc<Mutex<HashMap<(usize, usize), u32>>>,
}

impl LlmFaults {
    fn new(seed: u64) -> Self {
        Self {
            seed,
            answered: Arc::default(),
        }
    }

    /// How many calls of task `task`'s step `step` (an index of [`STEPS`]) fail.
    fn planned(&self, task: usize, step: usize) -> u32 {
        let key = (task * STEPS.len() + step) as u64 + 1;
        let mut rng = Rng((self.seed ^ key.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1);
        match rng.next() % 100 {
            n if n < FAULTED_TWICE_PERCENT => 2,
            n if n < FAULTED_PERCENT => 1,
            _ => 0,
        }
    }

    /// The answer to the call `body`.
    fn answer(&self, body: &Value) -> Fault {
        let schema = body["response_format"]["json_schema"]["name"]
            .as_str()
            .unwrap_or_default();
        let (Some(step), Some(task)) =
            (SCHEMAS.iter().position(|s| *s == schema), task_number(body))
        else {
            return Fault::Ok;
        };
        let planned = self.planned(task, step);
        let mut answered = self.answered.lock().expect("the faults' lock");
        let count = answered.entry((task, step)).or_default();
        if *count >= planned {
            return Fault::Ok;
        }
        *count += 1;
        if (task + step) % 2 == 0 {
            Fault::NotJson
        } else {
            Fault::Truncated
        }
    }

    /// The faults answered to the calls of task `task`'s step `step`.
    fn answered(&self, task: usize, step: usize) -> u32 {
        let answered = self.answered.lock().expect("the faults' lock");
        answered.get(&(task, step)).copied().unwrap_or_default()
    }
}

/// The number `n` of the task whose prompt ends with `(task n)` (see
/// `common::processes::publish_numbered_tasks`), from the first message that names one.
fn task_number(body: &Value) -> Option<usize> {
    body["messages"].as_array()?.iter().find_map(|message| {
        let content = message["content"].as_str()?;
        let (_, after) = content.split_once("(task ")?;
        after.split_once(')')?.0.parse().ok()
    })
}

/// One kill of the storm, as the report prints it.
struct Kill {
    victim: &'static str,
    at: Duration,
    done: usize,
    /// Attempts requested and not finished when the kill landed (steps in flight).
    in_flight: usize,
}

#[test]
fn a_storm_of_sigkills_loses_no_task_and_duplicates_no_step() {
    let total = Instant::now();
    let Some(kafka) = Kafka::start() else {
        return;
    };
    let seed = std::env::var("KILL_STORM_SEED")
        .ok()
        .map(|s| s.parse::<u64>().expect("KILL_STORM_SEED is a number"))
        .unwrap_or_else(|| {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("the clock is after 1970")
                .as_nanos();
            // Xorshift must not start from zero.
            (nanos as u64) | 1
        });
    eprintln!("kill storm: seed {seed} (replay with KILL_STORM_SEED={seed})");
    let mut rng = Rng(seed);

    // The LLM server, on a runtime of its own, is dropped last (after the processes).
    let (_server_runtime, server) = ChatServer::start_on_own_runtime();
    let faults = LlmFaults::new(seed);
    let rule = faults.clone();
    server.set_fault_rule(move |body| rule.answer(body));
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let sandbox = Sandbox::new();
    let data_dir = sandbox.data_dir();

    // Code execution off: what is tested here is the state, not the sandbox.
    let start = |name: &'static str| -> Host {
        let args: &[&str] = match name {
            "planner" => &["planner"],
            "worker 0" => &["worker", "--instance", "0", "--instances", "2"],
            "worker 1" => &["worker", "--instance", "1", "--instances", "2"],
            "orchestrator" => &["orchestrator"],
            "web" => &["web", "--bus", "kafka", "--listen", "127.0.0.1:0"],
            _ => unreachable!("no process {name}"),
        };
        let mut command = kafka.command(&sandbox, args);
        command.env("EXECUTE_CODE", "false");
        command.envs(server.env(MODEL));
        if name == "web" {
            Host::start(command)
        } else {
            Host::start_service(command)
        }
    };
    let mut processes = Processes {
        named: ["planner", "worker 0", "worker 1", "orchestrator", "web"]
            .into_iter()
            .map(|name| (name, start(name)))
            .collect(),
    };
    eprintln!(
        "timing: broker and 5 processes ready after {:.1?}",
        total.elapsed()
    );

    let bus = runtime.block_on(kafka.bus());
    let state = runtime.block_on(State::sqlite(&data_dir.join("state.sqlite")));
    // The tasks trickle in while the storm runs, so that steps are in flight at every kill
    // (a batch published at once is done within a few seconds).
    let started = Instant::now();
    let topic = kafka.topics.tasks.clone();
    let publisher = runtime.spawn(async move {
        let mut tasks = Vec::with_capacity(TASKS);
        while tasks.len() < TASKS {
            let numbers = tasks.len()..(tasks.len() + PUBLISHED_PER_TICK).min(TASKS);
            tasks.extend(publish_numbered_tasks(&bus, &topic, numbers).await);
            tokio::time::sleep(PUBLISH_TICK).await;
        }
        (tasks, started.elapsed())
    });

    // The storm: kinds in a random order each round, so that every kind is killed once per
    // round; a random pause before each kill and before each restart.
    let mut kills: Vec<Kill> = Vec::new();
    let mut round: Vec<&'static str> = Vec::new();
    let storm_deadline = Instant::now() + DEADLINE;
    loop {
        let wait = rng.millis(500, 2000);
        let enough = KINDS.iter().all(|kind| {
            kills.iter().filter(|k| k.victim.starts_with(kind)).count() >= KILLS_PER_KIND
        });
        if enough && publisher.is_finished() {
            break;
        }
        assert!(
            Instant::now() < storm_deadline,
            "the storm: still running after {DEADLINE:?}"
        );
        std::thread::sleep(wait);
        processes.check_alive();
        if round.is_empty() {
            round = KINDS.to_vec();
            for i in (1..round.len()).rev() {
                round.swap(i, rng.below(i + 1));
            }
        }
        let victim = match round.pop().expect("a kind") {
            "worker" => ["worker 0", "worker 1"][rng.below(2)],
            kind => kind,
        };
        let pause = rng.millis(200, 1000);
        // Aim the kill at a moment with steps in flight: wait a little for one, if none is.
        let aim = Instant::now() + AIM;
        let (mut done, mut in_flight) = progress(&runtime, &state, true);
        while in_flight == 0 && Instant::now() < aim {
            std::thread::sleep(Duration::from_millis(20));
            (done, in_flight) = progress(&runtime, &state, true);
        }
        processes.take(victim).kill();
        kills.push(Kill {
            victim,
            at: started.elapsed(),
            done,
            in_flight,
        });
        std::thread::sleep(pause);
        processes.named.push((victim, start(victim)));
    }
    eprintln!(
        "timing: storm over after {:.1?}, {} kills:",
        started.elapsed(),
        kills.len()
    );
    for kill in &kills {
        eprintln!(
            "  {:>7.1?}  {:<12} killed with {:>3} of {TASKS} tasks done, {:>2} attempts in flight",
            kill.at, kill.victim, kill.done, kill.in_flight
        );
    }
    for kind in KINDS {
        let of_kind: Vec<&Kill> = kills
            .iter()
            .filter(|k| k.victim.starts_with(kind))
            .collect();
        let mid_step = of_kind.iter().filter(|k| k.in_flight > 0).count();
        eprintln!(
            "kill storm: {kind}: {} kills, {mid_step} with steps in flight",
            of_kind.len()
        );
        assert!(
            of_kind.len() >= KILLS_PER_KIND,
            "{kind} was killed {} times: the storm ended too early",
            of_kind.len()
        );
    }
    // A kill of a worker or of the orchestrator lands mid-step when attempts were requested
    // and not finished at that moment.
    for kind in ["worker", "orchestrator"] {
        assert!(
            kills
                .iter()
                .any(|k| k.victim.starts_with(kind) && k.in_flight > 0),
            "no kill of a {kind} landed while steps were in flight: the storm tested nothing"
        );
    }

    // Every task ends; with code execution off a step fails only on an LLM fault, and never on
    // all of its tries, so a task in `error` lost something to a kill.
    let (tasks, publisher_done) = runtime
        .block_on(publisher)
        .expect("the publisher did not panic");
    eprintln!(
        "timing: {TASKS} tasks published over {:.1?}",
        publisher_done
    );
    let ended = poll_until(DEADLINE, &mut processes, || {
        progress(&runtime, &state, false).0 == TASKS
    });
    let statuses = runtime.block_on(state.statuses());
    let errors: Vec<(&String, &String)> = statuses
        .iter()
        .filter(|(_, status)| *status == "error")
        .collect();
    assert!(
        errors.is_empty(),
        "seed {seed}: tasks ended in error: {errors:?}"
    );
    assert!(
        ended,
        "seed {seed}: not every task ended after {DEADLINE:?}"
    );
    eprintln!(
        "timing: all {TASKS} tasks done after {:.1?}",
        started.elapsed()
    );

    let attempts = check_attempts(&runtime, &state, &tasks, &faults, seed);
    // A step whose worker was killed runs again under the same attempt number: its LLM call
    // comes again, word for word (the prompt names the attempt).
    let mut calls: HashMap<String, u32> = HashMap::new();
    for body in server.requests() {
        *calls.entry(body["messages"].to_string()).or_default() += 1;
    }
    eprintln!(
        "kill storm: {} LLM calls, {} of them made again under the same attempt",
        calls.values().sum::<u32>(),
        calls.values().map(|n| n - 1).sum::<u32>()
    );
    check_artifacts(&data_dir, &tasks, &attempts, seed);

    // The mirror writes one final event per task.
    let mirrored = poll_until(DEADLINE, &mut processes, || {
        let reports = read_reports(&data_dir);
        tasks.iter().all(|task| {
            reports
                .get(task)
                .is_some_and(|events| events.iter().any(|e| e.starts_with("done ")))
        })
    });
    assert!(
        mirrored,
        "seed {seed}: reports.jsonl lacks the done event of some tasks"
    );
    let reports = read_reports(&data_dir);
    let mut repeated: Vec<String> = Vec::new();
    for task in &tasks {
        let events = reports.get(task).cloned().unwrap_or_default();
        let finals: Vec<&String> = events
            .iter()
            .filter(|e| *e == "error" || e.starts_with("error ") || e.starts_with("done "))
            .collect();
        assert_eq!(
            finals,
            ["done review@v1"],
            "seed {seed}, task {task}: one final event in reports.jsonl: {events:?}"
        );
        assert_eq!(
            events.last(),
            finals.first().copied(),
            "seed {seed}, task {task}: the final event is the last: {events:?}"
        );
        // Each failed attempt is reported as one `retry` of its step; any other event once.
        let mut counts: HashMap<&str, u32> = HashMap::new();
        for event in &events {
            *counts.entry(event.as_str()).or_default() += 1;
        }
        let mut expected: HashMap<String, u32> = HashMap::new();
        for (step, (_, n)) in &attempts[task] {
            let retry = format!("retry {step}");
            let reported = counts.get(retry.as_str()).copied().unwrap_or_default();
            assert!(
                reported >= n - 1,
                "seed {seed}, task {task}: {n} attempts of {step}, {reported} retries reported: \
                 {events:?}"
            );
            expected.insert(retry, n - 1);
        }
        repeated.extend(counts.into_iter().filter_map(|(event, count)| {
            let once = expected.get(event).copied().unwrap_or(1);
            (count > once).then(|| format!("{task} {event} ×{count}"))
        }));
    }
    // Reports are sent at least once (the outbox resends what a killed process may not have
    // sent), so a non-final event may appear twice; only the final one must not.
    eprintln!(
        "kill storm: {} non-final report events repeated: {repeated:?}",
        repeated.len()
    );

    processes.stop_all();
    eprintln!("timing: whole test {:.1?}", total.elapsed());
}

/// How many tasks have ended, and (when `count_in_flight`) how many attempts are requested
/// and not finished: steps in flight. The data directory is the test's own: every task in it
/// is one of the test's.
fn progress(
    runtime: &tokio::runtime::Runtime,
    state: &State,
    count_in_flight: bool,
) -> (usize, usize) {
    let ended = runtime
        .block_on(state.store.tasks(usize::MAX))
        .expect("the tasks can be read")
        .iter()
        .filter(|r| r.status.is_final())
        .count();
    let in_flight = if count_in_flight {
        runtime
            .block_on(state.store.unfinished_attempts())
            .expect("the attempts can be read")
            .len()
    } else {
        0
    };
    (ended, in_flight)
}

/// Every task is `done`; each step has attempts `1..=n` without a gap, none still requested,
/// no replay, and exactly one succeeded; no more than one attempt per LLM fault its calls were
/// answered with, plus one; and some step needed more than one. Returns task → step → the
/// succeeded attempt and `n`.
fn check_attempts(
    runtime: &tokio::runtime::Runtime,
    state: &State,
    tasks: &[TaskId],
    faults: &LlmFaults,
    seed: u64,
) -> BTreeMap<TaskId, BTreeMap<StepId, (u32, u32)>> {
    let mut result = BTreeMap::new();
    let (mut planned, mut answered, mut retried, mut most) = (0, 0, 0, 0);
    for (number, task) in tasks.iter().enumerate() {
        let record = runtime
            .block_on(state.store.task(*task))
            .expect("the task can be read")
            .unwrap_or_else(|| panic!("seed {seed}: task {task} is not in the state store"));
        assert_eq!(record.status, TaskStatus::Done, "seed {seed}, task {task}");
        let records: Vec<AttemptRecord> = runtime
            .block_on(state.store.attempts(*task))
            .expect("the attempts can be read");
        let mut by_step: BTreeMap<StepId, Vec<&AttemptRecord>> = BTreeMap::new();
        for attempt in &records {
            by_step.entry(attempt.step_id()).or_default().push(attempt);
        }
        let mut steps: Vec<String> = by_step.keys().map(ToString::to_string).collect();
        steps.sort();
        let mut expected: Vec<String> = STEPS.iter().map(ToString::to_string).collect();
        expected.sort();
        assert_eq!(steps, expected, "seed {seed}, task {task}: the steps run");
        let mut of_task = BTreeMap::new();
        for (step, attempts) in by_step {
            let mut numbers: Vec<u32> = attempts.iter().map(|a| a.attempt().get()).collect();
            numbers.sort_unstable();
            let n = u32::try_from(numbers.len()).expect("few attempts");
            assert_eq!(
                numbers,
                (1..=n).collect::<Vec<_>>(),
                "seed {seed}, task {task}, {step}: attempt numbers without a gap or a repeat"
            );
            assert!(
                attempts.iter().all(|a| a.mode() == StepMode::Run),
                "seed {seed}, task {task}, {step}: no replay"
            );
            assert!(
                attempts.iter().all(|a| a.status.is_finished()),
                "seed {seed}, task {task}, {step}: an attempt is still requested: {attempts:?}"
            );
            let succeeded: Vec<u32> = attempts
                .iter()
                .filter(|a| a.status == AttemptStatus::Succeeded)
                .map(|a| a.attempt().get())
                .collect();
            assert_eq!(
                succeeded.len(),
                1,
                "seed {seed}, task {task}, {step}: exactly one succeeded attempt: {attempts:?}"
            );
            let index = STEPS
                .iter()
                .position(|s| *s == step.to_string())
                .expect("a step of the pipeline");
            let faulted = faults.answered(number, index);
            assert!(
                n <= faulted + 1,
                "seed {seed}, task {task}, {step}: {n} attempts, but only {faulted} LLM faults \
                 (attempts other than the first come only from failures): {attempts:?}"
            );
            planned += u32::from(faults.planned(number, index) > 0);
            answered += faulted;
            if n > 1 {
                retried += 1;
            }
            most = most.max(n);
            of_task.insert(step, (succeeded[0], n));
        }
        result.insert(*task, of_task);
    }
    eprintln!(
        "kill storm: LLM faults planned for {planned} steps, {answered} answered; \
         {retried} steps needed more than one attempt, at most {most}"
    );
    assert!(
        retried > 0,
        "seed {seed}: no step needed a second attempt: the attempt numbers were not tested"
    );
    result
}

/// Every file of each task is whole: `task.json`, the canonical `<step>.json` of each step
/// (the succeeded attempt's artifact, parsing as the stage's output type) and
/// `<step>.attempt<k>.json` files naming attempt `k ≤ n`; nothing else, and no temporary
/// file left anywhere in the data directory.
fn check_artifacts(
    data_dir: &Path,
    tasks: &[TaskId],
    attempts: &BTreeMap<TaskId, BTreeMap<StepId, (u32, u32)>>,
    seed: u64,
) {
    let leftovers: Vec<_> = files_under(data_dir)
        .into_iter()
        .filter(|path| path.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "seed {seed}: temporary files left: {leftovers:?}"
    );
    for task in tasks {
        let dir = data_dir.join(task.to_string());
        let steps = &attempts[task];
        let read = |path: &Path| -> Artifact {
            let text = std::fs::read_to_string(path)
                .unwrap_or_else(|e| panic!("seed {seed}: cannot read {}: {e}", path.display()));
            serde_json::from_str(&text).unwrap_or_else(|e| {
                panic!(
                    "seed {seed}: {} is not an artifact (torn?): {e}",
                    path.display()
                )
            })
        };
        let mut canonical = 0;
        for path in files_under(&dir) {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name == "task.json" {
                common::read_json(&path);
                continue;
            }
            let stem = name
                .strip_suffix(".json")
                .unwrap_or_else(|| panic!("seed {seed}: an unexpected file {}", path.display()));
            let (step, attempt) = match stem.split_once(".attempt") {
                Some((step, k)) => (step, Some(k.parse::<u32>().expect("an attempt number"))),
                None => (stem, None),
            };
            let step: StepId = step
                .parse()
                .unwrap_or_else(|_| panic!("seed {seed}: an unexpected file {}", path.display()));
            let (succeeded, n) = *steps.get(&step).unwrap_or_else(|| {
                panic!(
                    "seed {seed}: a file of a step that did not run: {}",
                    path.display()
                )
            });
            let artifact = read(&path);
            assert_eq!(artifact.task_id, *task, "seed {seed}: {}", path.display());
            assert_eq!(artifact.step, step, "seed {seed}: {}", path.display());
            match attempt {
                Some(k) => {
                    assert!(
                        n > 1 && (1..=n).contains(&k),
                        "seed {seed}: {} names no recorded attempt (n = {n})",
                        path.display()
                    );
                    assert_eq!(artifact.attempt.get(), k, "seed {seed}: {}", path.display());
                }
                None => {
                    canonical += 1;
                    assert_eq!(
                        artifact.attempt.get(),
                        succeeded,
                        "seed {seed}: {} is the succeeded attempt's artifact",
                        path.display()
                    );
                    let parsed = match step.to_string().as_str() {
                        "design@v1" => artifact.output_as::<Design>().map(drop),
                        "implement@v1" => artifact.output_as::<Implementation>().map(drop),
                        // With code execution off the test step reports that nothing ran, not a
                        // `TestReport`.
                        "test@v1" if artifact.output.is_empty() => {
                            panic!("seed {seed}: {} has no output", path.display())
                        }
                        "test@v1" => Ok(()),
                        _ => artifact.output_as::<Review>().map(drop),
                    };
                    assert!(
                        parsed.is_ok(),
                        "seed {seed}: {}: {parsed:?}",
                        path.display()
                    );
                }
            }
        }
        assert_eq!(
            canonical,
            STEPS.len(),
            "seed {seed}, task {task}: one canonical artifact per step"
        );
    }
}
