//! [`Pipeline`]: one call assembles the embedded default; every part is replaceable.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::agent::{Agent, Agents};
use crate::budget::Budget;
use crate::bus::{Bus, FollowFrom, MemoryBus, Subscription, Topics};
use crate::execution::WorkspaceLimits;
use crate::execution::sandbox::{Bubblewrap, Sandbox, SandboxLimits};
use crate::gates::{Gate, default_gates};
use crate::ids::{StepId, TaskId};
use crate::llm::{self, Llm, LlmSettings, MeteredLlm, PriceTable};
use crate::machine::RetryPolicy;
use crate::publish::{LocalGitPublisher, Publisher};
use crate::retention::{self, Pruned, RetentionPolicy};
use crate::service::{
    Cancellations, CiMonitor, Deps, Execution, Handler, Mirror, OnStop, Orchestrator, Planner,
    Service, Worker, check_control, check_prompt, check_replay, follow_cancellations, run_consumer,
};
use crate::store::{ArtifactStore, FileArtifactStore, ReportLog, StateStore};
use crate::wire::{DeadLetter, NewTask, ReplayStep, ReportEvent, ReportStatus, TaskControl};
use crate::{Error, Result};

/// How many report events a slow reader of [`Pipeline::report_feed`] may fall behind before
/// it misses some (and is told so).
const REPORT_FEED_CAPACITY: usize = 1024;

/// Assembles a [`Pipeline`]; every part has a default.
///
/// | part | default |
/// |---|---|
/// | data directory | `./data` |
/// | bus | [`MemoryBus`] |
/// | state store | SQLite in `DATA_DIR/state.sqlite` (feature `sqlite`), else in memory |
/// | LLM | from `OPENAI_*` variables: OpenAI-compatible with a key, offline without |
/// | agents | [`architect`](crate::agent::architect) and the other three factories |
/// | retries | 3 tries, 500 ms base backoff |
/// | concurrency | 4 steps per worker, 64 messages per planner, orchestrator and mirror |
/// | sandbox | [`Bubblewrap`] (tests are refused where `bwrap` is missing), 120 s, 1 GiB, 64 KiB of output |
/// | gates | [`default_gates`]: tests passed, review approved, no secrets; 3 rounds |
/// | publisher | [`LocalGitPublisher`] to the bare repository `DATA_DIR/published.git` |
/// | ci check | the command that ran the task's tests |
/// | code execution | on (see [`PipelineBuilder::execute_code`]) |
/// | budget | none: no limit on tokens, cost or wall time; rounds as `gate_rounds` |
/// | approval | not required |
/// | prices | [`PriceTable::default`] with `LLM_PRICES` (and `LLM_PRICE_*_PER_MTOK`) on top |
/// | providers for replays | the default LLM, and `offline` |
/// | longest prompt | [`PipelineBuilder::DEFAULT_MAX_PROMPT_CHARS`] characters |
#[derive(Debug)]
pub struct PipelineBuilder {
    data_dir: PathBuf,
    bus: Option<Arc<dyn Bus>>,
    state: Option<Arc<dyn StateStore>>,
    artifacts: Option<Arc<dyn ArtifactStore>>,
    retention: Option<RetentionPolicy>,
    llm: Option<Arc<dyn Llm>>,
    agents: Vec<Arc<dyn Agent>>,
    topics: Topics,
    policy: RetryPolicy,
    step_timeout: Duration,
    worker_concurrency: usize,
    service_concurrency: usize,
    resume_unfinished: bool,
    sandbox: Option<Arc<dyn Sandbox>>,
    sandbox_limits: SandboxLimits,
    workspace_limits: WorkspaceLimits,
    gates: Vec<Arc<dyn Gate>>,
    gate_rounds: u32,
    publisher: Option<Arc<dyn Publisher>>,
    ci_check_command: Option<String>,
    execute_code: bool,
    budget: Budget,
    require_approval: bool,
    prices: Option<PriceTable>,
    providers: Vec<(String, Arc<dyn Llm>)>,
    max_prompt_chars: usize,
    #[cfg(feature = "memory")]
    memory_options: Option<crate::memory::MemoryOptions>,
}

impl Default for PipelineBuilder {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            bus: None,
            state: None,
            artifacts: None,
            retention: None,
            llm: None,
            agents: Vec::new(),
            topics: Topics::default(),
            policy: RetryPolicy::default(),
            step_timeout: Duration::from_secs(600),
            worker_concurrency: 4,
            service_concurrency: Self::DEFAULT_SERVICE_CONCURRENCY,
            resume_unfinished: false,
            sandbox: None,
            sandbox_limits: SandboxLimits::default(),
            workspace_limits: WorkspaceLimits::default(),
            gates: default_gates(),
            gate_rounds: 3,
            publisher: None,
            ci_check_command: None,
            execute_code: true,
            budget: Budget::default(),
            require_approval: false,
            prices: None,
            providers: Vec::new(),
            max_prompt_chars: Self::DEFAULT_MAX_PROMPT_CHARS,
            #[cfg(feature = "memory")]
            memory_options: None,
        }
    }
}

impl PipelineBuilder {
    /// How many messages the planner, the orchestrator and the mirrors each handle at once
    /// unless [`PipelineBuilder::service_concurrency`] says otherwise. It suits the in-memory
    /// bus; over a broker, where a service holds each message until the broker has
    /// acknowledged what it produced, more keep the broker busy (docs/performance.md, B3).
    pub const DEFAULT_SERVICE_CONCURRENCY: usize = 64;

    /// The longest prompt accepted unless [`PipelineBuilder::max_prompt_chars`] says
    /// otherwise, in characters (what the web form accepts too).
    pub const DEFAULT_MAX_PROMPT_CHARS: usize = 100_000;

    /// Where artifacts (with the default artifact store), workspaces, `reports.jsonl` and
    /// `state.sqlite` live (`DATA_DIR`).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = dir.into();
        self
    }

    /// The bus (default: a new [`MemoryBus`]).
    pub fn bus(mut self, bus: Arc<dyn Bus>) -> Self {
        self.bus = Some(bus);
        self
    }

    /// The state store (default: SQLite in the data directory).
    pub fn state_store(mut self, state: Arc<dyn StateStore>) -> Self {
        self.state = Some(state);
        self
    }

    /// Prunes tasks that ended long ago (default: everything is kept). The process that runs
    /// [`Service::Mirror`] applies the policy at its start and then every `policy.every`;
    /// [`Pipeline::prune`] applies it at once.
    pub fn retention(mut self, policy: RetentionPolicy) -> Self {
        self.retention = Some(policy);
        self
    }

    /// Where tasks' documents (`task.json`, artifacts, records) are kept (default: files under
    /// the data directory, [`FileArtifactStore`]).
    pub fn artifact_store(mut self, artifacts: Arc<dyn ArtifactStore>) -> Self {
        self.artifacts = Some(artifacts);
        self
    }

    /// The LLM of the default agents (default: from the environment).
    pub fn llm(mut self, llm: Arc<dyn Llm>) -> Self {
        self.llm = Some(llm);
        self
    }

    /// Replaces the default agent of `agent.stage()`.
    pub fn agent(mut self, agent: Arc<dyn Agent>) -> Self {
        self.agents.push(agent);
        self
    }

    /// The topic names (default: those of mission.md).
    pub fn topics(mut self, topics: Topics) -> Self {
        self.topics = topics;
        self
    }

    /// Retries and backoff of failing steps.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// How long one step may run before it fails as timed out (default 10 minutes).
    pub fn step_timeout(mut self, timeout: Duration) -> Self {
        self.step_timeout = timeout;
        self
    }

    /// How many steps a worker runs at once, and how many published changes the ci-monitor
    /// checks at once (default 4; one task's steps never overlap).
    pub fn worker_concurrency(mut self, concurrency: usize) -> Self {
        self.worker_concurrency = concurrency.max(1);
        self
    }

    /// How many messages the planner, the orchestrator and the mirrors each handle at once
    /// (default 64; one task's messages are still handled in order, one at a time). Their
    /// work is bookkeeping that waits on the disk, so overlapping it is what lets many tasks
    /// move at once.
    pub fn service_concurrency(mut self, concurrency: usize) -> Self {
        self.service_concurrency = concurrency.max(1);
        self
    }

    /// Whether [`Pipeline::start`] sends again the steps that were requested and never
    /// finished, when the bus does not keep messages across restarts (default off; the host's
    /// `run` turns it on).
    pub fn resume_unfinished(mut self, resume: bool) -> Self {
        self.resume_unfinished = resume;
        self
    }

    /// The sandbox that runs the generated tests and the CI checks (default: [`Bubblewrap`]).
    /// [`Unsandboxed`](crate::execution::sandbox::Unsandboxed) runs them without isolation;
    /// choose it only knowingly.
    pub fn sandbox(mut self, sandbox: Arc<dyn Sandbox>) -> Self {
        self.sandbox = Some(sandbox);
        self
    }

    /// Time, memory and output bounds of each sandboxed run.
    pub fn sandbox_limits(mut self, limits: SandboxLimits) -> Self {
        self.sandbox_limits = limits;
        self
    }

    /// Size limits on the files a model may write into a task's workspace.
    pub fn workspace_limits(mut self, limits: WorkspaceLimits) -> Self {
        self.workspace_limits = limits;
        self
    }

    /// Adds a gate to the defaults (tests passed, review approved, no secrets).
    pub fn gate(mut self, gate: Arc<dyn Gate>) -> Self {
        self.gates.push(gate);
        self
    }

    /// Replaces every gate, the defaults included.
    pub fn gates(mut self, gates: Vec<Arc<dyn Gate>>) -> Self {
        self.gates = gates;
        self
    }

    /// How many rounds of Implement → Test → Review a task gets to pass its gates (default 3,
    /// at least 1).
    pub fn gate_rounds(mut self, rounds: u32) -> Self {
        self.gate_rounds = rounds.max(1);
        self
    }

    /// Where changes that pass their gates are published (default: the bare repository
    /// `DATA_DIR/published.git`).
    pub fn publisher(mut self, publisher: Arc<dyn Publisher>) -> Self {
        self.publisher = Some(publisher);
        self
    }

    /// The command the ci-monitor runs on a published change (default: the command that ran
    /// the task's tests).
    pub fn ci_check_command(mut self, command: impl Into<String>) -> Self {
        self.ci_check_command = Some(command.into());
        self
    }

    /// Whether the pipeline runs the code its models write (default `true`): commits it to the
    /// task's workspace, runs the tests in the sandbox, checks the gates and publishes the
    /// change.
    ///
    /// With `false` every step's artifact is what its model answered: the implementation's
    /// files are recorded but not written anywhere, the test plan is recorded as not run
    /// (`"executed": false`, no counts), and a task is `done` after its review, with no gates
    /// and nothing published. Nothing is executed, so no sandbox is needed (macOS, a
    /// container without user namespaces), and the pipeline's own overhead is what remains:
    /// the mode of the throughput benchmarks.
    pub fn execute_code(mut self, execute: bool) -> Self {
        self.execute_code = execute;
        self
    }

    /// The limits of every task that does not set its own ([`NewTask::budget`]; default:
    /// none). A task that reaches one ends `error` with the reason `budget_exceeded`; see
    /// [`crate::budget`].
    pub fn budget(mut self, budget: Budget) -> Self {
        self.budget = budget;
        self
    }

    /// Whether a task whose gates pass waits for a person's approval before its change is
    /// published (default `false`; a task may say otherwise, [`NewTask::require_approval`]).
    /// It reports `awaiting_approval`; [`Pipeline::control`] approves or rejects it.
    pub fn require_approval(mut self, required: bool) -> Self {
        self.require_approval = required;
        self
    }

    /// What LLM calls cost, by model (default: [`PriceTable::default`] with `LLM_PRICES` on
    /// top).
    pub fn prices(mut self, prices: PriceTable) -> Self {
        self.prices = Some(prices);
        self
    }

    /// Registers another LLM under `name`, for replays that name it as their provider
    /// ([`ReplayStep::provider`]). The default agents call it through the pipeline's LLM;
    /// custom agents with a client of their own do not see replays' models or providers.
    pub fn llm_provider(mut self, name: impl Into<String>, llm: Arc<dyn Llm>) -> Self {
        self.providers.push((name.into(), llm));
        self
    }

    /// The longest prompt a new task may have, in characters (default
    /// [`PipelineBuilder::DEFAULT_MAX_PROMPT_CHARS`]). [`Pipeline::enqueue`] refuses a longer
    /// one with [`Error::PromptTooLong`]; one that reaches the task topic anyway (from another
    /// producer) is dead-lettered by the planner, which records nothing of it and reports
    /// `error` with the reason `prompt_too_long`.
    pub fn max_prompt_chars(mut self, max: usize) -> Self {
        self.max_prompt_chars = max;
        self
    }

    /// How the code memory of tasks on an existing repository indexes and searches it:
    /// chunking, file sizes and, with [`MemoryOptions::embedder`](crate::memory::MemoryOptions),
    /// embeddings for a hybrid search. Without this call the search is lexical, unless the
    /// LLM is the one configured by the environment (no [`llm`](Self::llm) given) and
    /// `LLM_EMBEDDINGS_MODEL` names an embeddings model of its server.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use agent_pipeline::Pipeline;
    /// use agent_pipeline::llm::{ApiKey, LlmSettings};
    /// use agent_pipeline::memory::{MemoryOptions, OpenAiEmbedder};
    ///
    /// let settings = LlmSettings {
    ///     api_key: Some(ApiKey::new("sk-…")),
    ///     ..LlmSettings::default()
    /// };
    /// let embedder = OpenAiEmbedder::new(&settings, "text-embedding-3-small")?;
    /// let builder = Pipeline::builder().code_memory(MemoryOptions {
    ///     embedder: Some(Arc::new(embedder)),
    ///     ..MemoryOptions::default()
    /// });
    /// # Ok::<(), agent_pipeline::memory::EmbedError>(())
    /// ```
    #[cfg(feature = "memory")]
    pub fn code_memory(mut self, options: crate::memory::MemoryOptions) -> Self {
        self.memory_options = Some(options);
        self
    }

    /// Builds the pipeline, opening the default state store if none was given.
    ///
    /// The temporary files of atomic writes that stopped processes left in the data
    /// directory are removed first; those of writes that may still be under way, in this
    /// process or another, are kept (the rule is in `store/temp_files.rs`).
    pub async fn build(self) -> Result<Pipeline> {
        self.budget.check().map_err(Error::InvalidBudget)?;
        tokio::fs::create_dir_all(&self.data_dir)
            .await
            .map_err(|source| crate::store::StoreError::Io {
                action: "create directory",
                path: self.data_dir.clone(),
                source,
            })?;
        // Best effort: a file left now is swept at the next start.
        let data_dir = self.data_dir.clone();
        let swept = tokio::task::spawn_blocking(move || {
            crate::store::sweep_temp_files(&data_dir, SystemTime::now())
        });
        if let Err(error) = swept.await {
            tracing::warn!(%error, "the sweep of left temporary files did not finish");
        }
        let state = match self.state {
            Some(state) => state,
            None => default_state_store(&self.data_dir).await?,
        };
        #[cfg(feature = "memory")]
        let memory_options = match self.memory_options {
            Some(options) => options,
            None if self.llm.is_none() => memory_options_from_env(),
            None => crate::memory::MemoryOptions::default(),
        };
        let llm = match self.llm {
            Some(llm) => llm,
            None => llm::from_settings(&LlmSettings::from_env())?,
        };
        let mut metered = MeteredLlm::new(llm);
        for (name, provider) in self.providers {
            metered = metered.with_provider(name, provider);
        }
        let providers: Vec<String> = metered
            .provider_names()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let prices = match self.prices {
            Some(prices) => prices,
            None => LlmSettings::from_env().prices,
        };
        let mut agents = Agents::with_llm(Arc::new(metered));
        for agent in self.agents {
            agents.set(agent);
        }
        let artifacts: Arc<dyn ArtifactStore> = match self.artifacts {
            Some(artifacts) => artifacts,
            None => {
                let files = FileArtifactStore::new(&self.data_dir);
                files.recover().await?;
                Arc::new(files)
            }
        };
        let deps = Deps {
            bus: self.bus.unwrap_or_else(|| Arc::new(MemoryBus::new())),
            state,
            artifacts,
            data_dir: self.data_dir.clone(),
            reports: ReportLog::in_dir(&self.data_dir),
            dead_letters: ReportLog::named(&self.data_dir, "dead_letters.jsonl"),
            report_feed: tokio::sync::broadcast::channel(REPORT_FEED_CAPACITY).0,
            topics: self.topics,
            agents,
            policy: self.policy,
            step_timeout: self.step_timeout,
            worker_concurrency: self.worker_concurrency,
            execution: Execution {
                sandbox: self
                    .sandbox
                    .unwrap_or_else(|| Arc::new(Bubblewrap::default())),
                sandbox_limits: self.sandbox_limits,
                workspace_limits: self.workspace_limits,
                gates: self.gates,
                gate_rounds: self.gate_rounds,
                publisher: self.publisher.unwrap_or_else(|| {
                    Arc::new(LocalGitPublisher::new(self.data_dir.join("published.git")))
                }),
                ci_check_command: self.ci_check_command,
                execute_code: self.execute_code,
            },
            budget: self.budget,
            require_approval: self.require_approval,
            prices,
            providers,
            max_prompt_chars: self.max_prompt_chars,
            #[cfg(feature = "memory")]
            memory_options,
        };
        Ok(Pipeline {
            deps,
            retention: self.retention,
            resume_unfinished: self.resume_unfinished,
            service_concurrency: self.service_concurrency,
        })
    }
}

/// The code memory's options for the LLM the environment configures: embeddings from its
/// server when `LLM_EMBEDDINGS_MODEL` is set and an API key is (the reason is logged when they
/// cannot be had), else lexical search.
#[cfg(feature = "memory")]
fn memory_options_from_env() -> crate::memory::MemoryOptions {
    #[cfg(feature = "openai")]
    {
        let settings = LlmSettings::from_env();
        if let Some(model) = &settings.embeddings_model {
            match crate::memory::OpenAiEmbedder::new(&settings, model) {
                Ok(embedder) => {
                    return crate::memory::MemoryOptions {
                        embedder: Some(Arc::new(embedder)),
                        ..crate::memory::MemoryOptions::default()
                    };
                }
                Err(error) => {
                    tracing::warn!(%error, %model, "no embeddings for the code memory: it searches lexically");
                }
            }
        }
    }
    crate::memory::MemoryOptions::default()
}

#[cfg(feature = "sqlite")]
async fn default_state_store(data_dir: &Path) -> Result<Arc<dyn StateStore>> {
    let store = crate::store::SqliteStateStore::open(data_dir.join("state.sqlite")).await?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "sqlite"))]
async fn default_state_store(_data_dir: &Path) -> Result<Arc<dyn StateStore>> {
    Ok(Arc::new(crate::store::MemoryStateStore::new()))
}

/// The pipeline: its services, and the calls to enqueue, replay and follow tasks.
///
/// ```
/// use agent_pipeline::{Pipeline, wire::ReportStatus};
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let pipeline = Pipeline::builder()
///     .data_dir(dir.path())
///     .llm(std::sync::Arc::new(agent_pipeline::llm::OfflineLlm::new()))
///     .build()
///     .await
///     .unwrap();
/// let running = pipeline.start().await.unwrap();
/// let task_id = pipeline.submit("Write a tiny Python program that prints 'Hello Earthling'").await.unwrap();
/// let last = pipeline.wait(task_id).await.unwrap();
/// assert_eq!(last.status, ReportStatus::Done);
/// assert!(dir.path().join(task_id.to_string()).join("review@v1.json").exists());
/// running.shutdown().await;
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct Pipeline {
    deps: Deps,
    retention: Option<RetentionPolicy>,
    resume_unfinished: bool,
    service_concurrency: usize,
}

impl Pipeline {
    /// A builder with every default.
    pub fn builder() -> PipelineBuilder {
        PipelineBuilder::default()
    }

    /// The embedded default over `data_dir`: memory bus, files and SQLite, LLM from the
    /// environment.
    pub async fn embedded(data_dir: impl Into<PathBuf>) -> Result<Self> {
        Self::builder().data_dir(data_dir).build().await
    }

    /// Starts every service in this process.
    pub async fn start(&self) -> Result<RunningPipeline> {
        self.start_services(&Service::ALL).await
    }

    /// Starts the given services in this process (one process per service on a real bus).
    pub async fn start_services(&self, services: &[Service]) -> Result<RunningPipeline> {
        if self.resume_unfinished && !self.deps.bus.is_durable() {
            self.resend_unfinished().await?;
        }
        // Two phases: the working services stop first, the mirrors last, after draining what
        // the others published, so that reports.jsonl and dead_letters.jsonl miss nothing.
        let (stop_work, work_stopped) = watch::channel(false);
        let (stop_mirrors, mirrors_stopped) = watch::channel(false);
        let mut work = JoinSet::new();
        let mut mirrors = JoinSet::new();
        let deps = &self.deps;
        for service in services {
            // One handler per topic the service consumes, in the order of `consumes`.
            let handlers: Vec<(Arc<dyn Handler>, usize)> = match service {
                Service::Planner => vec![(
                    Arc::new(Planner { deps: deps.clone() }),
                    self.service_concurrency,
                )],
                Service::Worker => {
                    let cancellations = Cancellations::default();
                    work.spawn(follow_cancellations(
                        deps.clone(),
                        cancellations.clone(),
                        work_stopped.clone(),
                    ));
                    vec![(
                        Arc::new(Worker {
                            deps: deps.clone(),
                            cancellations,
                        }),
                        deps.worker_concurrency,
                    )]
                }
                Service::Orchestrator => vec![(
                    Arc::new(Orchestrator { deps: deps.clone() }),
                    self.service_concurrency,
                )],
                Service::CiMonitor => vec![(
                    Arc::new(CiMonitor { deps: deps.clone() }),
                    deps.worker_concurrency,
                )],
                Service::Mirror => vec![
                    (
                        Arc::new(Mirror {
                            deps: deps.clone(),
                            log: deps.reports.clone(),
                            feed: Some(deps.report_feed.clone()),
                            recent: Default::default(),
                        }),
                        self.service_concurrency,
                    ),
                    (
                        Arc::new(Mirror {
                            deps: deps.clone(),
                            log: deps.dead_letters.clone(),
                            feed: None,
                            recent: Default::default(),
                        }),
                        self.service_concurrency,
                    ),
                ],
            };
            let consumers = service
                .consumes(&deps.topics)
                .into_iter()
                .map(str::to_owned)
                .zip(handlers);
            let (on_stop, stopped, tasks) = match service {
                Service::Mirror => (OnStop::Drain, &mirrors_stopped, &mut mirrors),
                _ => (OnStop::Stop, &work_stopped, &mut work),
            };
            for (topic, (handler, concurrency)) in consumers {
                let group = service.name();
                let future = run_consumer(
                    deps.clone(),
                    topic.clone(),
                    group,
                    concurrency,
                    handler,
                    on_stop,
                    stopped.clone(),
                );
                tasks.spawn(async move {
                    if let Err(error) = future.await {
                        tracing::error!(%error, %topic, group, "consumer stopped on a bus error");
                    }
                });
            }
        }
        if let Some(policy) = self.retention
            && services.contains(&Service::Mirror)
        {
            work.spawn(prune_every(self.clone(), policy, work_stopped.clone()));
        }
        tracing::info!(services = ?services, data_dir = %deps.data_dir.display(), "pipeline started");
        Ok(RunningPipeline {
            stop_work,
            work,
            stop_mirrors,
            mirrors,
            artifacts: deps.artifacts.clone(),
        })
    }

    /// Applies `policy` now to the state, the artifacts and this process's `reports.jsonl`
    /// (see [`crate::retention`]).
    pub async fn prune(&self, policy: &RetentionPolicy) -> Result<Pruned> {
        Ok(retention::prune(
            self.deps.state.as_ref(),
            self.deps.artifacts.as_ref(),
            Some(&self.deps.reports),
            policy,
            Utc::now(),
        )
        .await?)
    }

    /// Sends again every step that was requested and has no result (after a restart on a bus
    /// that lost its messages). Returns how many were sent.
    pub async fn resend_unfinished(&self) -> Result<usize> {
        let unfinished = self.deps.state.unfinished_attempts().await?;
        for attempt in &unfinished {
            tracing::info!(task_id = %attempt.task_id(), step = %attempt.step_id(), attempt = %attempt.attempt(), "resending an unfinished step");
            self.deps
                .publish(
                    &self.deps.topics.step_requests,
                    attempt.task_id(),
                    &attempt.request,
                )
                .await?;
        }
        Ok(unfinished.len())
    }

    /// Enqueues a new task with the pipeline's defaults; returns its id.
    pub async fn submit(&self, prompt: impl Into<String>) -> Result<TaskId> {
        self.enqueue(NewTask::new(prompt)).await
    }

    /// Enqueues a task, with its own budget or approval requirement when it has them; returns
    /// its id. An empty prompt is refused ([`Error::EmptyPrompt`]), and so is one longer than
    /// [`Pipeline::max_prompt_chars`] ([`Error::PromptTooLong`]).
    ///
    /// ```
    /// use agent_pipeline::budget::Budget;
    /// use agent_pipeline::wire::{ControlAction, NewTask, ReportStatus, TaskControl};
    /// use agent_pipeline::Pipeline;
    /// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
    /// let dir = tempfile::tempdir().unwrap();
    /// let pipeline = Pipeline::builder()
    ///     .data_dir(dir.path())
    ///     .llm(std::sync::Arc::new(agent_pipeline::llm::OfflineLlm::new()))
    ///     .execute_code(false)
    ///     .build()
    ///     .await
    ///     .unwrap();
    /// let running = pipeline.start().await.unwrap();
    /// let task = NewTask::new("Write hello.py")
    ///     .with_budget(Budget { max_cost_usd: Some(0.50), ..Budget::default() })
    ///     .with_approval(true);
    /// let task_id = pipeline.enqueue(task).await.unwrap();
    /// let paused = pipeline.wait_for(task_id, &[ReportStatus::AwaitingApproval]).await.unwrap();
    /// assert_eq!(paused.status, ReportStatus::AwaitingApproval);
    /// pipeline.control(TaskControl::new(ControlAction::Approve, task_id)).await.unwrap();
    /// assert_eq!(pipeline.wait(task_id).await.unwrap().status, ReportStatus::Done);
    /// running.shutdown().await;
    /// # });
    /// ```
    pub async fn enqueue(&self, task: NewTask) -> Result<TaskId> {
        if task.prompt.trim().is_empty() {
            return Err(Error::EmptyPrompt);
        }
        check_prompt(&task.prompt, self.deps.max_prompt_chars)?;
        if let Some(budget) = &task.budget {
            budget.check().map_err(Error::InvalidBudget)?;
        }
        if let Some(repository) = &task.repository {
            repository.check().map_err(Error::InvalidRepository)?;
        }
        self.deps
            .publish(&self.deps.topics.tasks, task.task_id, &task)
            .await?;
        Ok(task.task_id)
    }

    /// Enqueues a replay of one step, after checking that it can run (the task exists and
    /// the earlier stages have their artifacts). The `replayed` report says when it is done.
    pub async fn replay(
        &self,
        task_id: TaskId,
        step: StepId,
        reason: Option<String>,
    ) -> Result<()> {
        self.replay_variant(ReplayStep::new(task_id, step, reason))
            .await
    }

    /// Enqueues a replay as `command` says — with another model or provider, an edited prompt
    /// or edited upstream outputs, and the later stages run again from it — after checking
    /// that it can run. The upstream artifacts it reads are pinned when the planner takes the
    /// command; the new attempt's artifact records the variant.
    pub async fn replay_variant(&self, command: ReplayStep) -> Result<()> {
        check_replay(
            self.deps.state.as_ref(),
            self.deps.artifacts.as_ref(),
            &self.deps.providers,
            &command,
        )
        .await?;
        self.deps
            .publish(&self.deps.topics.tasks, command.task_id, &command)
            .await
    }

    /// Approves or rejects a task awaiting approval, or cancels a task that has not ended,
    /// after checking that the decision applies ([`Error::NotApplicable`] when it does not).
    /// The task's next report says what came of it: `approved` then `pr` and `done`, or
    /// `error` with the reason `rejected` or `cancelled`.
    pub async fn control(&self, control: TaskControl) -> Result<()> {
        check_control(self.deps.state.as_ref(), &control).await?;
        self.deps
            .publish(&self.deps.topics.tasks, control.task_id, &control)
            .await
    }

    /// The longest prompt a new task may have, in characters
    /// ([`PipelineBuilder::max_prompt_chars`]).
    pub fn max_prompt_chars(&self) -> usize {
        self.deps.max_prompt_chars
    }

    /// The providers a replay may name.
    pub fn providers(&self) -> &[String] {
        &self.deps.providers
    }

    /// The limits of tasks that set none of their own.
    pub fn default_budget(&self) -> &Budget {
        &self.deps.budget
    }

    /// What LLM calls cost, by model.
    pub fn prices(&self) -> &PriceTable {
        &self.deps.prices
    }

    /// Publishes a raw message on the task topic, as any other program could: used to test
    /// how malformed input is handled.
    pub async fn publish_raw_task_message(&self, key: &str, payload: Vec<u8>) -> Result<()> {
        Ok(self
            .deps
            .bus
            .publish(&self.deps.topics.tasks, key, payload)
            .await?)
    }

    /// Follows the report events of one task, from its first.
    pub async fn watch(&self, task_id: TaskId) -> Result<ReportWatch> {
        let subscription = self
            .deps
            .bus
            .follow(&self.deps.topics.reports, FollowFrom::Oldest)
            .await?;
        Ok(ReportWatch {
            subscription,
            task_id,
            since: None,
        })
    }

    /// Waits for the task's `done` or `error` event.
    pub async fn wait(&self, task_id: TaskId) -> Result<ReportEvent> {
        self.wait_for(task_id, &[]).await
    }

    /// Waits for the task's first event with one of `statuses` (such as
    /// [`ReportStatus::AwaitingApproval`]), or its `done` or `error` event if that comes
    /// first.
    pub async fn wait_for(
        &self,
        task_id: TaskId,
        statuses: &[ReportStatus],
    ) -> Result<ReportEvent> {
        let mut watch = self.watch(task_id).await?;
        loop {
            let event = watch.next().await?;
            if event.status.is_final() || statuses.contains(&event.status) {
                return Ok(event);
            }
        }
    }

    /// Waits for the outcome of a replay of `step` requested at `since`: its `replayed`
    /// event, or the `error` event that refused or ended it.
    pub async fn wait_replay(
        &self,
        task_id: TaskId,
        step: StepId,
        since: DateTime<Utc>,
    ) -> Result<ReportEvent> {
        let mut watch = self.watch(task_id).await?;
        watch.since = Some(since);
        loop {
            let event = watch.next().await?;
            let about_step = event.stage == Some(step);
            if about_step && matches!(event.status, ReportStatus::Replayed | ReportStatus::Error) {
                return Ok(event);
            }
        }
    }

    /// Report events from now on, each sent once the mirror has written it to
    /// `reports.jsonl` (so that what a reader then reads from the stores includes it).
    ///
    /// Events arrive only while the [`Service::Mirror`] runs in this process. A reader that
    /// falls more than 1024 events behind gets [`RecvError::Lagged`] and then the newest.
    ///
    /// [`RecvError::Lagged`]: tokio::sync::broadcast::error::RecvError::Lagged
    pub fn report_feed(&self) -> tokio::sync::broadcast::Receiver<ReportEvent> {
        self.deps.report_feed.subscribe()
    }

    /// Checks that the bus and the state store answer, for readiness probes.
    pub async fn ready(&self) -> Result<()> {
        self.deps.bus.ping().await?;
        self.deps.state.tasks(1).await?;
        Ok(())
    }

    /// Sends a dead letter back into the pipeline and says how.
    ///
    /// A step that exhausted its retries is replayed (a new attempt, with the dead letter's
    /// reason recorded as the replay's reason). Any other message goes back, byte for byte and
    /// with its key, to the topic it came from, where it is handled (or dead-lettered) anew.
    /// Messages of the report and dead-letter topics, and of topics this pipeline does not
    /// consume, are refused with [`Error::NotRedrivable`].
    pub async fn redrive(&self, letter: &DeadLetter) -> Result<Redriven> {
        let topics = &self.deps.topics;
        let source = letter.source_topic.as_str();
        let exhausted_step = (source == topics.step_results && letter.attempt.is_some())
            .then(|| Some((letter.task_id.as_deref()?, letter.step_id.as_deref()?)))
            .flatten();
        if let Some((task_id, step)) = exhausted_step {
            let task_id: TaskId = task_id.parse()?;
            let step: StepId = step.parse()?;
            let reason = format!("re-driven from the dead-letter queue ({})", letter.reason);
            self.replay(task_id, step, Some(reason)).await?;
            return Ok(Redriven::Replayed { task_id, step });
        }
        let refuse = |why| {
            Err(Error::NotRedrivable {
                topic: source.to_owned(),
                why,
            })
        };
        if source == topics.reports || source == topics.dlq {
            return refuse("no service consumes it");
        }
        let consumed = [
            &topics.tasks,
            &topics.step_requests,
            &topics.step_results,
            &topics.ci_watch,
        ];
        if !consumed.iter().any(|topic| *topic == source) {
            return refuse("it is not one of this pipeline's topics");
        }
        let key = letter.key.as_deref().unwrap_or_default();
        self.deps
            .bus
            .publish(source, key, letter.payload.clone().into_bytes())
            .await?;
        Ok(Redriven::Republished {
            topic: source.to_owned(),
        })
    }

    /// The state store.
    pub fn state(&self) -> &Arc<dyn StateStore> {
        &self.deps.state
    }

    /// The artifact store.
    pub fn artifacts(&self) -> &Arc<dyn ArtifactStore> {
        &self.deps.artifacts
    }

    /// The `reports.jsonl` mirror.
    pub fn report_log(&self) -> &ReportLog {
        &self.deps.reports
    }

    /// The `dead_letters.jsonl` mirror of the dead-letter topic.
    pub fn dead_letter_log(&self) -> &ReportLog {
        &self.deps.dead_letters
    }

    /// The bus.
    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.deps.bus
    }

    /// The topic names.
    pub fn topics(&self) -> &Topics {
        &self.deps.topics
    }

    /// The sandbox that runs generated tests.
    pub fn sandbox(&self) -> &Arc<dyn Sandbox> {
        &self.deps.execution.sandbox
    }

    /// Where changes are published.
    pub fn publisher(&self) -> &Arc<dyn Publisher> {
        &self.deps.execution.publisher
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.deps.data_dir
    }
}

/// What [`Pipeline::redrive`] did with a dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Redriven {
    /// The exhausted step is replayed as a new attempt.
    Replayed {
        /// The task.
        task_id: TaskId,
        /// The step.
        step: StepId,
    },
    /// The message went back to the topic it came from.
    Republished {
        /// That topic.
        topic: String,
    },
}

/// Applies `policy` at once and then every `policy.every` until `stopped` says so.
async fn prune_every(
    pipeline: Pipeline,
    policy: RetentionPolicy,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        if let Err(error) = pipeline.prune(&policy).await {
            tracing::warn!(%error, "retention failed; it runs again later");
        }
        tokio::select! {
            _ = tokio::time::sleep(policy.every) => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
    }
}

/// Services running in this process; stop them with [`RunningPipeline::shutdown`].
#[derive(Debug)]
pub struct RunningPipeline {
    stop_work: watch::Sender<bool>,
    work: JoinSet<()>,
    stop_mirrors: watch::Sender<bool>,
    mirrors: JoinSet<()>,
    /// Checkpointed once everything has stopped.
    artifacts: Arc<dyn ArtifactStore>,
}

impl RunningPipeline {
    /// Stops the services gracefully: they take no new messages and finish the ones under
    /// way (for up to 10 s; what is still running then is left unacknowledged, so the bus
    /// delivers it again). The mirrors stop last, once they have written every report and
    /// dead letter published before, so the files are complete when this returns. Last, the
    /// artifact files are made durable in place and their journal deleted
    /// ([`ArtifactStore::checkpoint`]).
    pub async fn shutdown(mut self) {
        let _ = self.stop_work.send(true);
        while self.work.join_next().await.is_some() {}
        let _ = self.stop_mirrors.send(true);
        while self.mirrors.join_next().await.is_some() {}
        if let Err(error) = self.artifacts.checkpoint().await {
            tracing::warn!(%error, "the artifact journal is kept for the next start");
        }
    }
}

/// The report events of one task, in order.
#[derive(Debug)]
pub struct ReportWatch {
    subscription: Arc<dyn Subscription>,
    task_id: TaskId,
    since: Option<DateTime<Utc>>,
}

impl ReportWatch {
    /// The next event of the task; waits for it.
    pub async fn next(&mut self) -> Result<ReportEvent> {
        loop {
            let delivery = self.subscription.next().await?;
            self.subscription.ack(delivery.receipt).await?;
            let Ok(event) = serde_json::from_slice::<ReportEvent>(&delivery.payload) else {
                continue;
            };
            let recent = self.since.is_none_or(|since| event.timestamp >= since);
            if event.task_id == self.task_id && recent {
                return Ok(event);
            }
        }
    }
}
