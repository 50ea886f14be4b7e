//! What the tests of a deployment of processes share: the processes by name, tasks published
//! as a foreign producer would, the state store read by the test, and bounded waits.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_pipeline::TaskId;
use agent_pipeline::store::{PostgresStateStore, SqliteStateStore, StateStore};
use agent_pipeline::wire::NewTask;
use agent_pipeline_kafka::{Bus, KafkaBus};

use super::{HELLO, Host};

/// How long a batch may take before a test decides something is stuck.
pub(crate) const DEADLINE: Duration = Duration::from_secs(600);
/// How often the state store is read while waiting.
pub(crate) const POLL: Duration = Duration::from_millis(250);

/// The processes of the deployment, by name.
pub(crate) struct Processes {
    pub(crate) named: Vec<(&'static str, Host)>,
}

impl Processes {
    /// Removes the process `name`.
    pub(crate) fn take(&mut self, name: &str) -> Host {
        let index = self
            .named
            .iter()
            .position(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no process {name}"));
        self.named.remove(index).1
    }

    /// Stops every process with SIGTERM, failing the test when one does not stop cleanly.
    pub(crate) fn stop_all(&mut self) {
        for (name, process) in self.named.drain(..) {
            let stopped = process.terminate();
            assert!(
                stopped.status.is_some_and(|status| status.success()),
                "{name} did not stop cleanly on SIGTERM: {:?}\n{}",
                stopped.status,
                stopped.stderr
            );
            assert!(
                stopped.stdout.contains("stopped"),
                "{name}: {}",
                stopped.stdout
            );
        }
    }

    /// Fails the test when a process ended on its own, with what it wrote.
    pub(crate) fn check_alive(&mut self) {
        let ended = self
            .named
            .iter_mut()
            .find_map(|(name, process)| process.exited().map(|status| (*name, status)));
        if let Some((name, status)) = ended {
            let process = self.take(name);
            let stopped = process.terminate();
            panic!(
                "{name} ended on its own ({status}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
                stopped.stdout, stopped.stderr
            );
        }
    }
}

/// Publishes `count` new tasks to `topic` as contracts.md says, one message each, keyed by
/// the task id, as a program that is not agent-pipeline would.
pub(crate) async fn publish_tasks(bus: &KafkaBus, topic: &str, count: usize) -> Vec<TaskId> {
    publish_numbered_tasks(bus, topic, 0..count).await
}

/// Like [`publish_tasks`], one task for each number of `numbers`, whose prompt ends with
/// `(task <number>)`: numbered over a whole run, no two prompts are alike.
pub(crate) async fn publish_numbered_tasks(
    bus: &KafkaBus,
    topic: &str,
    numbers: std::ops::Range<usize>,
) -> Vec<TaskId> {
    let mut ids = Vec::with_capacity(numbers.len());
    for n in numbers {
        let task = NewTask::new(format!("{HELLO} (task {n})"));
        let payload = serde_json::to_vec(&task).expect("a task encodes");
        bus.publish(topic, &task.task_id.to_string(), payload)
            .await
            .expect("the task is published");
        ids.push(task.task_id);
    }
    ids
}

/// The state store the processes use, opened by the test to read it.
pub(crate) struct State {
    pub(crate) store: Arc<dyn StateStore>,
}

impl State {
    /// `state.sqlite` at `path` (SQLite in WAL mode takes several processes).
    pub(crate) async fn sqlite(path: &Path) -> Self {
        let store = SqliteStateStore::open(path)
            .await
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        Self {
            store: Arc::new(store),
        }
    }

    /// The PostgreSQL database at `url`.
    pub(crate) async fn postgres(url: &str) -> Self {
        let store = PostgresStateStore::connect(url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test database: {e}"));
        Self {
            store: Arc::new(store),
        }
    }

    /// Task id → status.
    pub(crate) async fn statuses(&self) -> BTreeMap<String, String> {
        self.store
            .tasks(usize::MAX)
            .await
            .expect("the tasks can be read")
            .into_iter()
            .map(|task| (task.task_id.to_string(), task.status.to_string()))
            .collect()
    }

    /// Task id → `"<step> <attempt>"` of every attempt, in pipeline order.
    pub(crate) async fn attempts(&self) -> BTreeMap<String, Vec<String>> {
        let mut attempts: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for task in self
            .store
            .tasks(usize::MAX)
            .await
            .expect("the tasks can be read")
        {
            let records = self
                .store
                .attempts(task.task_id)
                .await
                .expect("the attempts can be read");
            attempts.insert(
                task.task_id.to_string(),
                records
                    .iter()
                    .map(|a| format!("{} {}", a.step_id(), a.attempt()))
                    .collect(),
            );
        }
        attempts
    }
}

/// Waits until at least `wanted` of `tasks` are `done`, failing on a task in `error`, on a
/// process that ended, and after [`DEADLINE`]. Returns how many were done.
pub(crate) fn wait_for_tasks(
    runtime: &tokio::runtime::Runtime,
    state: &State,
    processes: &mut Processes,
    tasks: &[TaskId],
    wanted: usize,
    what: &str,
) -> usize {
    let ids: HashSet<String> = tasks.iter().map(ToString::to_string).collect();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let statuses = runtime.block_on(state.statuses());
        let mine: Vec<(&String, &String)> = statuses
            .iter()
            .filter(|(id, _)| ids.contains(*id))
            .collect();
        if let Some((id, _)) = mine.iter().find(|(_, status)| *status == "error") {
            panic!("{what}: task {id} ended in error");
        }
        let done = mine.iter().filter(|(_, status)| *status == "done").count();
        if done >= wanted {
            return done;
        }
        processes.check_alive();
        assert!(
            Instant::now() < deadline,
            "{what}: only {done} of {} tasks done after {DEADLINE:?}",
            tasks.len()
        );
        std::thread::sleep(POLL);
    }
}

/// Polls `condition` until it holds (true) or `limit` passes (false), failing when a process
/// ended.
pub(crate) fn poll_until(
    limit: Duration,
    processes: &mut Processes,
    mut condition: impl FnMut() -> bool,
) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        processes.check_alive();
        std::thread::sleep(POLL);
    }
    condition()
}

/// `reports.jsonl` as task id → `"<status> <step>"` of each event, in file order.
pub(crate) fn read_reports(data_dir: &Path) -> BTreeMap<TaskId, Vec<String>> {
    let text = std::fs::read_to_string(data_dir.join("reports.jsonl")).unwrap_or_default();
    let mut reports: BTreeMap<TaskId, Vec<String>> = BTreeMap::new();
    // The last line may be half-written while the mirror runs.
    for event in text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
    {
        let Some(task_id) = event["task_id"]
            .as_str()
            .and_then(|id| TaskId::from_str(id).ok())
        else {
            continue;
        };
        let status = event["status"].as_str().unwrap_or_default();
        let line = match event["stage"].as_str() {
            Some(step) => format!("{status} {step}"),
            None => status.to_owned(),
        };
        reports.entry(task_id).or_default().push(line);
    }
    reports
}
