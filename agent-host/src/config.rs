//! The host's configuration, from four sources in increasing precedence:
//!
//! 1. defaults;
//! 2. the environment;
//! 3. `config.local.json` in the current directory, or the file given by `--config PATH`: a JSON
//!    object whose keys are the same variable names and whose values are strings;
//! 4. command-line flags (`--data-dir`, `--bus`, `--listen`, `--instance`, `--instances`).
//!
//! | key | default |
//! |---|---|
//! | `OPENAI_API_KEY` | none: the offline model is used |
//! | `OPENAI_MODEL` | `gpt-4o-mini` |
//! | `OPENAI_BASE_URL` | `https://api.openai.com/v1` |
//! | `LLM_MAX_CONCURRENCY`, `LLM_REQUESTS_PER_MINUTE`, `LLM_TOKENS_PER_MINUTE` | unset: no limit of this process's own (the server's rate-limit headers are still honoured); see `docs/llm-limits.md` |
//! | `LLM_PRICES` | unset: the list prices of common models; `model=input/output,…` in USD per million prompt / completion tokens on top |
//! | `LLM_PRICE_INPUT_PER_MTOK`, `LLM_PRICE_OUTPUT_PER_MTOK` | unset: USD per million prompt / completion tokens of `OPENAI_MODEL`, over `LLM_PRICES` |
//! | `LLM_EMBEDDINGS_MODEL` | unset: the code memory searches by BM25 only; an embeddings model of the `OPENAI_BASE_URL` server for a hybrid search (ignored without `OPENAI_API_KEY`) |
//! | `LLM_PROVIDERS` | unset; `name=https://host/v1,…`: further OpenAI-compatible servers a replay may name (`--provider`), each with its key in `LLM_PROVIDER_<NAME>_API_KEY` (never shown) |
//! | `TASK_MAX_TOKENS`, `TASK_MAX_COST_USD`, `TASK_MAX_WALL_TIME`, `TASK_MAX_ROUNDS` | unset: no limit (rounds: `GATE_ROUNDS`); the limits of a task that sets none of its own: tokens, US dollars, a duration (`600`, `90s`, `10m`, `2h`), rounds of gates |
//! | `REQUIRE_APPROVAL` | `false`; `true`: a task whose gates pass waits for `agent-host approve` before its change is published |
//! | `AGENT_BUS` | `memory`: the bus inside this process; `kafka`: the brokers of `REDPANDA_BROKERS` (`--bus` wins) |
//! | `REDPANDA_BROKERS` | `127.0.0.1:9092`: the Kafka-compatible brokers, comma-separated |
//! | `KAFKA_CLIENT_ID` | `agent-pipeline`: the client id the brokers see |
//! | `KAFKA_SASL_MECHANISM`, `KAFKA_SASL_USERNAME`, `KAFKA_SASL_PASSWORD` | unset; `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` with a user and password (never shown) |
//! | `KAFKA_TLS`, `KAFKA_TLS_CA_FILE` | `false`; `true` speaks TLS, trusting the system's authorities or those of the PEM file |
//! | `KAFKA_PARTITIONS`, `KAFKA_REPLICATION_FACTOR` | `6`, `1`: of the topics the host creates |
//! | `KAFKA_FETCH_WAIT_MS`, `KAFKA_LINGER_MS` | `500`, `5`: how long a fetch may wait for data, a produce for company |
//! | `AGENT_INSTANCE`, `AGENT_INSTANCES` | unset: partitions are shared by leases; set, this process owns the partitions `p % instances == instance` (`--instance`, `--instances` win) |
//! | `KAFKA_LEASE_TTL_MS`, `AGENT_MEMBER_ID` | `10000`, made per process: how long a partition lease holds without renewal (a dead member's partitions move on after it), and this process's name in the lease table |
//! | `TASK_TOPIC` … `DLQ_TOPIC` | see [`Topics::VARIABLES`] |
//! | `DATA_DIR` | `./data` (a relative path is relative to the current directory) |
//! | `DATABASE_URL` | unset: `DATA_DIR/state.sqlite`; `sqlite://PATH`, or `postgres://user:password@host/database` for the PostgreSQL store shared by many hosts |
//! | `RETENTION_DAYS` | unset: everything is kept; `N` (may be fractional): tasks that ended more than N days ago lose their superseded attempts, those attempts' artifacts and their report events (hourly, in the process that runs the mirror; `agent-host prune` once) |
//! | `RETENTION_DELETE_TASKS` | `false`; `true` deletes such tasks whole (state, documents, workspace) |
//! | `ARTIFACT_STORE` | `files`: documents under `DATA_DIR/<task_id>/`; `database` keeps them in the PostgreSQL database of `DATABASE_URL` (no shared disk needed) |
//! | `AGENT_SANDBOX` | `bubblewrap`; `none` runs generated code without isolation (explicit opt-in) |
//! | `SANDBOX_TIMEOUT_SECS` | `120`: wall-clock limit of one test or check run |
//! | `SANDBOX_MEMORY_MB` | `1024`: address-space limit of each process of a run |
//! | `SANDBOX_MAX_PROCESSES` | `512`: processes and threads of a run at once; `none` runs without that limit (needed where the sandbox can neither make a pids cgroup nor run as a user other than root) |
//! | `SANDBOX_DISK_MB` | `4096`: what a run may add to its workspace before it is killed; `none`: no limit |
//! | `EXECUTE_CODE` | `true`; `false` records the models' answers only: nothing is written to a workspace, run, gated or published |
//! | `WORKER_CONCURRENCY` | `4`: steps one worker process runs at once (keep it at or above `LLM_MAX_CONCURRENCY`) |
//! | `SERVICE_CONCURRENCY` | `64` on the in-memory bus, `1024` on Kafka: messages the planner, orchestrator and mirror each handle at once |
//! | `GATE_ROUNDS` | `3`: rounds of Implement → Test → Review a task gets to pass its gates |
//! | `PUBLISH_REPO` | `DATA_DIR/published.git`: the git repository branches are pushed to |
//! | `CI_CHECK_COMMAND` | unset: the ci-monitor runs the command that ran the task's tests |
//! | `GITHUB_REPOSITORY` | unset; `owner/name` publishes branches and pull requests on GitHub instead |
//! | `GITHUB_TOKEN`, `GITHUB_API_URL`, `GITHUB_BASE_BRANCH` | for GitHub: the token (required), `https://api.github.com`, `main` |
//! | `WEB_ADDR` | `127.0.0.1:5000`: where `run` and `web` serve the UI and API (`--listen` wins) |
//! | `WEB_TOKEN` | unset; when set, the UI and API need it (bearer header or login), and the CLI sends it |
//! | `AGENT_HOST_MAX_ATTEMPTS` | unset: the library's defaults (hidden; see [`MAX_ATTEMPTS`]) |
//!
//! An empty value counts as unset, so `"OPENAI_API_KEY": ""` in the file switches an API key
//! of the environment off and selects the offline model.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_pipeline::PipelineBuilder;
use agent_pipeline::budget::Budget;
use agent_pipeline::bus::Topics;
use agent_pipeline::execution::sandbox::SandboxLimits;
use agent_pipeline::llm::LlmSettings;
use agent_pipeline::machine::RetryPolicy;
use agent_pipeline::publish::GitHubSettings;
use agent_pipeline::retention::RetentionPolicy;
use agent_pipeline_kafka::KafkaSettings;
use anyhow::{Context, Result, bail};

use crate::database::{ARTIFACT_STORE, ArtifactPlace, DATABASE_URL, StateDatabase, Stores};

mod control;
#[cfg(test)]
mod properties;

pub(crate) use control::{
    ProviderConfig, describe_budget, describe_limits, parse_cost, parse_rounds, parse_tokens,
    parse_wall_time, provider_key_variable,
};

/// The file read when no `--config` is given; a missing one is fine.
pub(crate) const DEFAULT_CONFIG_FILE: &str = "config.local.json";

/// `OPENAI_API_KEY`.
const API_KEY: &str = "OPENAI_API_KEY";
/// `OPENAI_MODEL`.
const MODEL: &str = "OPENAI_MODEL";
/// `OPENAI_BASE_URL`.
const BASE_URL: &str = "OPENAI_BASE_URL";
/// `AGENT_BUS`.
const BUS: &str = "AGENT_BUS";
/// `AGENT_INSTANCE`, which `--instance` overrides.
const INSTANCE: &str = "AGENT_INSTANCE";
/// `AGENT_INSTANCES`, which `--instances` overrides.
const INSTANCES: &str = "AGENT_INSTANCES";
/// `DATA_DIR`.
const DATA_DIR: &str = "DATA_DIR";

/// Hidden setting, not shown in `--help`: how often a failing step is tried, and how many HTTP
/// requests one LLM call may make (both the first included). Unset, the library's defaults
/// apply (3 tries of a step, 4 requests per call). Meant for tests and for impatient
/// experiments against an unreachable server: `AGENT_HOST_MAX_ATTEMPTS=1` fails at the first
/// error.
pub(crate) const MAX_ATTEMPTS: &str = "AGENT_HOST_MAX_ATTEMPTS";

/// `AGENT_SANDBOX`.
const SANDBOX: &str = "AGENT_SANDBOX";
/// `SANDBOX_TIMEOUT_SECS`.
const SANDBOX_TIMEOUT: &str = "SANDBOX_TIMEOUT_SECS";
/// `SANDBOX_MEMORY_MB`.
const SANDBOX_MEMORY: &str = "SANDBOX_MEMORY_MB";
/// `SANDBOX_MAX_PROCESSES`.
const SANDBOX_MAX_PROCESSES: &str = "SANDBOX_MAX_PROCESSES";
/// `SANDBOX_DISK_MB`.
const SANDBOX_DISK: &str = "SANDBOX_DISK_MB";
/// `EXECUTE_CODE`.
const EXECUTE_CODE: &str = "EXECUTE_CODE";
/// `WORKER_CONCURRENCY`.
const WORKER_CONCURRENCY: &str = "WORKER_CONCURRENCY";
/// `SERVICE_CONCURRENCY`.
const SERVICE_CONCURRENCY: &str = "SERVICE_CONCURRENCY";
/// `GATE_ROUNDS`.
const GATE_ROUNDS: &str = "GATE_ROUNDS";
/// `PUBLISH_REPO`.
const PUBLISH_REPO: &str = "PUBLISH_REPO";
/// `CI_CHECK_COMMAND`.
const CI_CHECK_COMMAND: &str = "CI_CHECK_COMMAND";
/// `WEB_ADDR`.
const WEB_ADDR: &str = "WEB_ADDR";
/// `WEB_TOKEN`.
const WEB_TOKEN: &str = "WEB_TOKEN";
/// The default of `WEB_ADDR`: this machine only, on the port of the original.
const DEFAULT_WEB_ADDR: &str = "127.0.0.1:5000";

/// The GitHub publisher's keys, read by [`GitHubSettings::from_lookup`].
const GITHUB_KEYS: [&str; 4] = [
    "GITHUB_REPOSITORY",
    "GITHUB_TOKEN",
    "GITHUB_API_URL",
    "GITHUB_BASE_BRANCH",
];

/// `RETENTION_DAYS`.
const RETENTION_DAYS: &str = "RETENTION_DAYS";
/// `RETENTION_DELETE_TASKS`.
const RETENTION_DELETE_TASKS: &str = "RETENTION_DELETE_TASKS";

/// A yes-or-no setting (`true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`).
fn boolean(lookup: &dyn Fn(&str) -> Option<String>, key: &str, default: bool) -> Result<bool> {
    match lookup(key)
        .map(|text| text.trim().to_ascii_lowercase())
        .as_deref()
    {
        None => Ok(default),
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some("false" | "0" | "no" | "off") => Ok(false),
        Some(other) => bail!("{key} must be true or false, not {other:?}"),
    }
}

/// The retention policy of `RETENTION_DAYS` and `RETENTION_DELETE_TASKS`; `None` keeps
/// everything.
fn retention_policy(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Option<RetentionPolicy>> {
    let Some(text) = lookup(RETENTION_DAYS) else {
        return Ok(None);
    };
    let days = text
        .trim()
        .parse::<f64>()
        .with_context(|| format!("{RETENTION_DAYS} must be a number of days, not {text:?}"))?;
    let policy = RetentionPolicy::after(days_duration(days).context(RETENTION_DAYS)?);
    Ok(Some(if boolean(lookup, RETENTION_DELETE_TASKS, false)? {
        policy.deleting_tasks()
    } else {
        policy
    }))
}

/// `days` as a duration, refusing a negative or infinite number.
pub(crate) fn days_duration(days: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(days * 86_400.0)
        .ok()
        .with_context(|| format!("a number of days must be zero or more, not {days}"))
}

/// The default of `DATA_DIR`.
const DEFAULT_DATA_DIR: &str = "./data";

/// Every key the environment and the configuration file may set.
pub(crate) fn known_keys() -> Vec<&'static str> {
    let mut keys = vec![API_KEY, MODEL, BASE_URL, BUS];
    // The LLM limits and prices: LLM_MAX_CONCURRENCY, LLM_REQUESTS_PER_MINUTE, …
    keys.extend(
        LlmSettings::VARIABLES
            .iter()
            .map(|(name, _)| *name)
            .filter(|name| name.starts_with("LLM_")),
    );
    keys.extend(KafkaSettings::VARIABLES.iter().map(|(name, _)| *name));
    keys.extend(Topics::VARIABLES.iter().map(|(name, _)| *name));
    keys.extend([
        DATA_DIR,
        DATABASE_URL,
        ARTIFACT_STORE,
        RETENTION_DAYS,
        RETENTION_DELETE_TASKS,
    ]);
    keys.extend([
        SANDBOX,
        SANDBOX_TIMEOUT,
        SANDBOX_MEMORY,
        SANDBOX_MAX_PROCESSES,
        SANDBOX_DISK,
        EXECUTE_CODE,
        WORKER_CONCURRENCY,
        SERVICE_CONCURRENCY,
        GATE_ROUNDS,
        PUBLISH_REPO,
        CI_CHECK_COMMAND,
    ]);
    keys.extend(GITHUB_KEYS);
    keys.extend([WEB_ADDR, WEB_TOKEN, crate::telemetry::MetricsSettings::ADDR]);
    keys.extend(control::KEYS);
    keys.push(MAX_ATTEMPTS);
    keys
}

/// Settings given on the command line; they win over every other source.
#[derive(Debug, Clone, Default)]
pub(crate) struct Flags {
    /// `--data-dir`.
    pub(crate) data_dir: Option<PathBuf>,
    /// `--listen` of `run` and `web`.
    pub(crate) listen: Option<SocketAddr>,
    /// `--bus`.
    pub(crate) bus: Option<BusKind>,
    /// `--instance` of the one-service commands.
    pub(crate) instance: Option<u32>,
    /// `--instances` of the one-service commands.
    pub(crate) instances: Option<u32>,
}

/// Which bus the pipeline runs on (`AGENT_BUS`, `--bus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum BusKind {
    /// The in-memory bus of the embedded default: it lives in one process (`agent-host run`).
    #[default]
    Memory,
    /// A Kafka-compatible broker (Redpanda, Apache Kafka, tansu) at `REDPANDA_BROKERS`, shared
    /// by as many processes as needed.
    Kafka,
}

impl BusKind {
    /// The name `AGENT_BUS` and `--bus` take.
    pub(crate) fn name(self) -> &'static str {
        match self {
            BusKind::Memory => "memory",
            BusKind::Kafka => "kafka",
        }
    }
}

impl fmt::Display for BusKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The values of a configuration file, checked against [`known_keys`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ConfigFile {
    /// Where it was read from.
    pub(crate) path: PathBuf,
    /// Key → value; every key is known.
    values: BTreeMap<String, String>,
}

impl ConfigFile {
    /// Reads `path`; `Ok(None)` when it does not exist and `required` is false.
    pub(crate) fn read(path: &Path, required: bool) -> Result<Option<Self>> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(path, &text).map(Some),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && !required => Ok(None),
            Err(error) => Err(error)
                .with_context(|| format!("cannot read the config file {}", path.display())),
        }
    }

    /// Parses the text of a configuration file read from `path`.
    pub(crate) fn parse(path: &Path, text: &str) -> Result<Self> {
        let shown = path.display();
        // serde_json's messages give a line and column, never the content: the file may hold
        // the API key.
        let value: serde_json::Value = serde_json::from_str(text)
            .with_context(|| format!("config file {shown} is not valid JSON"))?;
        let serde_json::Value::Object(object) = value else {
            bail!("config file {shown} must hold a JSON object of \"VARIABLE\": \"value\" pairs");
        };
        let known = known_keys();
        let mut values = BTreeMap::new();
        for (key, value) in object {
            // A provider's key is named after the provider: any such name is known.
            if !known.contains(&key.as_str()) && !control::is_provider_key(&key) {
                bail!(
                    "config file {shown}: unknown key {key:?} (known keys: {}, and \
                     LLM_PROVIDER_<NAME>_API_KEY for each provider of LLM_PROVIDERS)",
                    known.join(", ")
                );
            }
            let serde_json::Value::String(text) = value else {
                bail!("config file {shown}: the value of {key:?} must be a string");
            };
            values.insert(key, text);
        }
        Ok(Self {
            path: path.to_path_buf(),
            values,
        })
    }

    /// The value of `key`, if the file sets it.
    fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }
}

/// A limit of the sandbox as configured: unset, `none` or a number.
enum Limit {
    Default,
    None,
    Set(u64),
}

/// Which sandbox runs generated code (`AGENT_SANDBOX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SandboxChoice {
    /// bubblewrap: no network, read-only system, the workspace the only writable place.
    Bubblewrap,
    /// No isolation at all; only when the user asks for it.
    None,
}

/// How generated code runs, is gated and is published.
#[derive(Debug, Clone)]
pub(crate) struct ExecutionConfig {
    /// `EXECUTE_CODE`: whether code is written, run, gated and published at all.
    pub(crate) execute_code: bool,
    /// `WORKER_CONCURRENCY`.
    pub(crate) worker_concurrency: usize,
    /// `SERVICE_CONCURRENCY`, when set; [`ExecutionConfig::service_concurrency`] gives the
    /// default of each bus.
    pub(crate) service_concurrency: Option<usize>,
    /// `AGENT_SANDBOX`.
    pub(crate) sandbox: SandboxChoice,
    /// `SANDBOX_TIMEOUT_SECS` and `SANDBOX_MEMORY_MB`.
    pub(crate) limits: SandboxLimits,
    /// `GATE_ROUNDS`.
    pub(crate) gate_rounds: u32,
    /// `PUBLISH_REPO`, when set (else `DATA_DIR/published.git`).
    pub(crate) publish_repo: Option<PathBuf>,
    /// `CI_CHECK_COMMAND`, when set.
    pub(crate) ci_check_command: Option<String>,
    /// The GitHub publisher's settings, when `GITHUB_REPOSITORY` is set (`Debug` hides the
    /// token).
    pub(crate) github: Option<GitHubSettings>,
}

impl ExecutionConfig {
    /// Messages each service handles at once on the in-memory bus when `SERVICE_CONCURRENCY`
    /// is unset: the library's default.
    pub(crate) const MEMORY_SERVICE_CONCURRENCY: usize =
        PipelineBuilder::DEFAULT_SERVICE_CONCURRENCY;
    /// The same on the Kafka bus, where a service holds each message until the broker has
    /// acknowledged what it produced: with 64 in flight, a broker answering in tens of
    /// milliseconds would cap each service at a few thousand messages a second
    /// (docs/performance.md, B3).
    pub(crate) const KAFKA_SERVICE_CONCURRENCY: usize = 1024;

    /// How many messages the planner, the orchestrator and the mirror each handle at once on
    /// `bus`: `SERVICE_CONCURRENCY`, else that bus's default.
    pub(crate) fn service_concurrency(&self, bus: BusKind) -> usize {
        self.service_concurrency.unwrap_or(match bus {
            BusKind::Memory => Self::MEMORY_SERVICE_CONCURRENCY,
            BusKind::Kafka => Self::KAFKA_SERVICE_CONCURRENCY,
        })
    }
}

/// Where the web UI and API are served, and the token that guards them.
#[derive(Clone)]
pub(crate) struct WebConfig {
    /// `WEB_ADDR`, or `--listen`.
    pub(crate) addr: SocketAddr,
    /// `WEB_TOKEN`, when set (never shown by `Debug`).
    pub(crate) token: Option<String>,
}

impl fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebConfig")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl WebConfig {
    /// The URL a client on this machine reaches the server at: `http://` and the address,
    /// with an unspecified address (`0.0.0.0`, `::`) replaced by the loopback one.
    pub(crate) fn local_url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            let loopback: IpAddr = if addr.is_ipv4() {
                Ipv4Addr::LOCALHOST.into()
            } else {
                Ipv6Addr::LOCALHOST.into()
            };
            addr.set_ip(loopback);
        }
        format!("http://{addr}")
    }
}

/// Everything the host needs to know to assemble a pipeline.
///
/// `Debug` never shows the API key: it is held as an [`ApiKey`](agent_pipeline::llm::ApiKey).
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// The LLM server, model and key.
    pub(crate) llm: LlmSettings,
    /// `AGENT_BUS`, or `--bus`.
    pub(crate) bus: BusKind,
    /// The brokers and how to use them, for the Kafka bus (`REDPANDA_BROKERS`, `KAFKA_*`,
    /// `AGENT_INSTANCE[S]`; `Debug` hides the SASL password).
    pub(crate) kafka: KafkaSettings,
    /// The topic names.
    pub(crate) topics: Topics,
    /// Where artifacts, `reports.jsonl` and `state.sqlite` live.
    pub(crate) data_dir: PathBuf,
    /// `DATABASE_URL`: the state database (unset: `state.sqlite` in `data_dir`).
    pub(crate) database: StateDatabase,
    /// `ARTIFACT_STORE`: where the tasks' documents live.
    pub(crate) artifacts: ArtifactPlace,
    /// `RETENTION_DAYS`, `RETENTION_DELETE_TASKS`: what is pruned of ended tasks.
    pub(crate) retention: Option<RetentionPolicy>,
    /// [`MAX_ATTEMPTS`], when set.
    pub(crate) max_attempts: Option<u32>,
    /// How generated code runs, is gated and is published.
    pub(crate) execution: ExecutionConfig,
    /// The web UI and API.
    pub(crate) web: WebConfig,
    /// `METRICS_ADDR`: the metrics server of its own, if any.
    pub(crate) metrics: crate::telemetry::MetricsSettings,
    /// `TASK_MAX_TOKENS`, `TASK_MAX_COST_USD`, `TASK_MAX_WALL_TIME`, `TASK_MAX_ROUNDS`: the
    /// limits of every task that sets none of its own (unset: none; rounds: `GATE_ROUNDS`).
    pub(crate) budget: Budget,
    /// `REQUIRE_APPROVAL`: whether a task whose gates pass waits for a person's approval
    /// before its change is published (unless the task says otherwise).
    pub(crate) require_approval: bool,
    /// `LLM_PROVIDERS`: the further servers a replay may name, with their keys (`Debug`
    /// hides them).
    pub(crate) providers: Vec<ProviderConfig>,
    /// The configuration file that was read, if any.
    pub(crate) file: Option<PathBuf>,
}

impl Config {
    /// Opens the state database and the artifact store this configuration names.
    pub(crate) async fn open_stores(&self) -> Result<Stores> {
        Stores::connect(&self.database, self.artifacts, &self.data_dir).await
    }

    /// Reads the configuration from the process environment, the configuration file
    /// (`explicit_file`, or [`DEFAULT_CONFIG_FILE`] when it exists) and `flags`.
    pub(crate) fn load(explicit_file: Option<&Path>, flags: &Flags) -> Result<Self> {
        let file = match explicit_file {
            Some(path) => ConfigFile::read(path, true)?,
            None => ConfigFile::read(Path::new(DEFAULT_CONFIG_FILE), false)?,
        };
        Self::resolve(&|name| std::env::var(name).ok(), file.as_ref(), flags)
    }

    /// Combines the sources: `env` (a lookup, so that tests need not touch the real
    /// environment) < `file` < `flags`, over the defaults.
    pub(crate) fn resolve(
        env: &dyn Fn(&str) -> Option<String>,
        file: Option<&ConfigFile>,
        flags: &Flags,
    ) -> Result<Self> {
        // The file wins over the environment even with an empty value; an empty value then
        // means "unset".
        let lookup = |key: &str| -> Option<String> {
            file.and_then(|f| f.get(key).map(str::to_owned))
                .or_else(|| env(key))
                .filter(|value| !value.trim().is_empty())
        };
        let max_attempts = lookup(MAX_ATTEMPTS)
            .map(|text| {
                text.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .with_context(|| {
                        format!("{MAX_ATTEMPTS} must be a whole number of at least 1, not {text:?}")
                    })
            })
            .transpose()?;
        let mut llm = LlmSettings::try_from_lookup(lookup).context("LLM settings")?;
        if let Some(max_attempts) = max_attempts {
            llm.max_attempts = max_attempts;
        }
        let data_dir = match &flags.data_dir {
            Some(dir) => dir.clone(),
            None => PathBuf::from(lookup(DATA_DIR).unwrap_or_else(|| DEFAULT_DATA_DIR.into())),
        };
        let whole_number = |key: &str, default: u64| -> Result<u64> {
            match lookup(key) {
                None => Ok(default),
                Some(text) => text
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .with_context(|| {
                        format!("{key} must be a whole number of at least 1, not {text:?}")
                    }),
            }
        };
        // A whole number of at least 1, or `none`.
        let limit_or_none = |key: &str| -> Result<Limit> {
            match lookup(key).as_deref().map(str::trim) {
                Some("none") => Ok(Limit::None),
                Some(_) => whole_number(key, 0)
                    .map(Limit::Set)
                    .with_context(|| format!("{key} may also be \"none\" (no limit)")),
                None => Ok(Limit::Default),
            }
        };
        let sandbox = match lookup(SANDBOX).as_deref().map(str::trim) {
            None | Some("bubblewrap") | Some("bwrap") => SandboxChoice::Bubblewrap,
            Some("none") => SandboxChoice::None,
            Some(other) => bail!("{SANDBOX} must be \"bubblewrap\" or \"none\", not {other:?}"),
        };
        let defaults = SandboxLimits::default();
        let limits = SandboxLimits {
            timeout: std::time::Duration::from_secs(whole_number(
                SANDBOX_TIMEOUT,
                defaults.timeout.as_secs(),
            )?),
            memory_bytes: whole_number(SANDBOX_MEMORY, defaults.memory_bytes / (1024 * 1024))?
                .saturating_mul(1024 * 1024),
            max_processes: match limit_or_none(SANDBOX_MAX_PROCESSES)? {
                Limit::Default => defaults.max_processes,
                Limit::None => None,
                Limit::Set(max) => Some(u32::try_from(max).unwrap_or(u32::MAX)),
            },
            disk_bytes: match limit_or_none(SANDBOX_DISK)? {
                Limit::Default => defaults.disk_bytes,
                Limit::None => None,
                Limit::Set(megabytes) => Some(megabytes.saturating_mul(1024 * 1024)),
            },
            ..defaults
        };
        let github = GitHubSettings::from_lookup(lookup)
            .context("GitHub publishing (GITHUB_REPOSITORY, GITHUB_TOKEN)")?;
        let execute_code = boolean(&lookup, EXECUTE_CODE, true)?;
        let count = |key: &str, default: u64| -> Result<usize> {
            Ok(usize::try_from(whole_number(key, default)?).unwrap_or(usize::MAX))
        };
        let execution = ExecutionConfig {
            execute_code,
            worker_concurrency: count(WORKER_CONCURRENCY, 4)?,
            service_concurrency: lookup(SERVICE_CONCURRENCY)
                .is_some()
                .then(|| count(SERVICE_CONCURRENCY, 0))
                .transpose()?,
            sandbox,
            limits,
            gate_rounds: u32::try_from(whole_number(GATE_ROUNDS, 3)?).unwrap_or(u32::MAX),
            publish_repo: lookup(PUBLISH_REPO).map(PathBuf::from),
            ci_check_command: lookup(CI_CHECK_COMMAND),
            github,
        };
        let addr = match flags.listen {
            Some(addr) => addr,
            None => {
                let text = lookup(WEB_ADDR).unwrap_or_else(|| DEFAULT_WEB_ADDR.into());
                text.trim().parse().with_context(|| {
                    format!("{WEB_ADDR} must be an address and port such as 127.0.0.1:5000, not {text:?}")
                })?
            }
        };
        let web = WebConfig {
            addr,
            token: lookup(WEB_TOKEN).map(|t| t.trim().to_owned()),
        };
        if let Some(token) = &web.token
            && !token.bytes().all(|b| b.is_ascii_graphic())
        {
            bail!("{WEB_TOKEN} must be printable ASCII without spaces");
        }
        let bus = match flags.bus {
            Some(bus) => bus,
            None => match lookup(BUS)
                .map(|text| text.trim().to_ascii_lowercase())
                .as_deref()
            {
                None | Some("memory") => BusKind::Memory,
                Some("kafka") => BusKind::Kafka,
                Some(other) => bail!("{BUS} must be \"memory\" or \"kafka\", not {other:?}"),
            },
        };
        // `--instance` and `--instances` stand in for their variables, so that the settings
        // check the pair as they check the variables.
        let instance_flag = |key: &str| match key {
            INSTANCE => flags.instance.map(|n| n.to_string()),
            INSTANCES => flags.instances.map(|n| n.to_string()),
            _ => None,
        };
        let kafka_lookup = |key: &str| instance_flag(key).or_else(|| lookup(key));
        let kafka = KafkaSettings::from_lookup(kafka_lookup).map_err(|error| {
            let flagged = flags.instance.is_some() || flags.instances.is_some();
            if flagged && [INSTANCE, INSTANCES].contains(&error.variable) {
                let shown = |key| kafka_lookup(key).unwrap_or_else(|| "unset".to_owned());
                anyhow::anyhow!(
                    "--instance {} --instances {}: {}",
                    shown(INSTANCE),
                    shown(INSTANCES),
                    error.problem
                )
            } else {
                anyhow::Error::new(error).context("the Kafka bus")
            }
        })?;
        let database = StateDatabase::from_url(lookup(DATABASE_URL).as_deref(), &data_dir)?;
        Ok(Self {
            llm,
            execution,
            web,
            metrics: crate::telemetry::MetricsSettings::from_lookup(lookup)?,
            budget: control::task_budget(&lookup)?,
            require_approval: boolean(&lookup, control::REQUIRE_APPROVAL, false)?,
            providers: control::providers(&lookup)?,
            bus,
            kafka,
            topics: Topics::from_lookup(lookup),
            artifacts: ArtifactPlace::from_setting(lookup(ARTIFACT_STORE).as_deref(), &database)?,
            retention: retention_policy(&lookup)?,
            database,
            data_dir,
            max_attempts,
            file: file.map(|f| f.path.clone()),
        })
    }

    /// The retry policy of failing steps: the library's, with [`MAX_ATTEMPTS`] tries if set.
    pub(crate) fn retry_policy(&self) -> RetryPolicy {
        let defaults = RetryPolicy::default();
        RetryPolicy {
            max_attempts: self.max_attempts.unwrap_or(defaults.max_attempts),
            ..defaults
        }
    }

    /// Whether no API key is configured, so that the offline model runs.
    pub(crate) fn is_offline(&self) -> bool {
        self.llm.api_key.is_none()
    }

    /// The model calls go to by default: `offline` without an API key, else `OPENAI_MODEL`.
    pub(crate) fn default_model(&self) -> &str {
        if self.is_offline() {
            agent_pipeline::llm::OFFLINE_MODEL
        } else {
            &self.llm.model
        }
    }

    /// The prices for people: how many models are priced, and the default model's price (or
    /// that it has none, so that its calls count as free).
    pub(crate) fn prices_description(&self) -> String {
        let model = self.default_model();
        let price = match self.llm.prices.price(model) {
            Some(price) => {
                let usd = |p: Option<f64>| format!("${}", p.unwrap_or(0.0));
                format!(
                    "{model} costs {} in / {} out per million tokens",
                    usd(price.input_per_mtok),
                    usd(price.output_per_mtok)
                )
            }
            None => format!("{model} has no price, its calls count as free (set LLM_PRICES)"),
        };
        format!(
            "{} models priced (LLM_PRICES); {price}",
            self.llm.prices.len()
        )
    }

    /// The embeddings model of the code memory: `LLM_EMBEDDINGS_MODEL`, unless the offline
    /// model runs (it has no server to ask).
    pub(crate) fn embeddings_model(&self) -> Option<&str> {
        match &self.llm.embeddings_model {
            Some(model) if !self.is_offline() => Some(model),
            _ => None,
        }
    }

    /// How the code memory searches a task's repository, for people.
    pub(crate) fn memory_description(&self) -> String {
        match (self.embeddings_model(), &self.llm.embeddings_model) {
            (Some(model), _) => format!(
                "BM25 and embeddings of {model} at {} (LLM_EMBEDDINGS_MODEL)",
                redact_url(&self.llm.base_url)
            ),
            (None, Some(_)) => {
                "BM25 only: LLM_EMBEDDINGS_MODEL is ignored without OPENAI_API_KEY".to_owned()
            }
            (None, None) => "BM25 only (LLM_EMBEDDINGS_MODEL unset)".to_owned(),
        }
    }

    /// The model for people: `offline model (no OPENAI_API_KEY)`, or the model and the server.
    pub(crate) fn model_description(&self) -> String {
        if self.is_offline() {
            "offline model (no OPENAI_API_KEY)".to_owned()
        } else {
            format!("{} at {}", self.llm.model, redact_url(&self.llm.base_url))
        }
    }
}

/// `url` without credentials or a query string, which may hold secrets of a proxy.
fn redact_url(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or_default();
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{path}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake environment.
    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |key| map.get(key).cloned()
    }

    fn file(text: &str) -> Result<ConfigFile> {
        ConfigFile::parse(Path::new("config.local.json"), text)
    }

    #[test]
    fn the_web_address_comes_from_web_addr_or_listen_and_the_token_stays_hidden() -> Result<()> {
        let config = Config::resolve(&env(&[]), None, &Flags::default())?;
        assert_eq!(config.web.addr.to_string(), "127.0.0.1:5000");
        assert_eq!(config.web.local_url(), "http://127.0.0.1:5000");
        assert_eq!(config.web.token, None);

        let env = env(&[("WEB_ADDR", "0.0.0.0:8080"), ("WEB_TOKEN", "s3cret-token")]);
        let config = Config::resolve(&env, None, &Flags::default())?;
        assert_eq!(config.web.local_url(), "http://127.0.0.1:8080");
        assert_eq!(config.web.token.as_deref(), Some("s3cret-token"));
        assert!(!format!("{config:?}").contains("s3cret-token"));

        let flags = Flags {
            listen: Some("127.0.0.1:0".parse()?),
            ..Flags::default()
        };
        assert_eq!(Config::resolve(&env, None, &flags)?.web.addr.port(), 0);

        let bad = Config::resolve(
            &super::tests::env(&[("WEB_ADDR", "localhost")]),
            None,
            &Flags::default(),
        );
        assert!(bad.is_err_and(|e| e.to_string().contains("WEB_ADDR must be an address")));
        Ok(())
    }

    #[test]
    fn defaults_apply_without_any_source() -> Result<()> {
        let config = Config::resolve(&env(&[]), None, &Flags::default())?;
        assert!(config.is_offline());
        assert_eq!(config.llm.model, "gpt-4o-mini");
        assert_eq!(config.llm.base_url, "https://api.openai.com/v1");
        assert_eq!(config.bus, BusKind::Memory);
        assert_eq!(config.kafka, KafkaSettings::new(["127.0.0.1:9092"]));
        assert_eq!(config.topics, Topics::default());
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(config.retry_policy(), RetryPolicy::default());
        assert_eq!(config.llm.max_attempts, LlmSettings::default().max_attempts);
        assert_eq!(
            config.model_description(),
            "offline model (no OPENAI_API_KEY)"
        );
        Ok(())
    }

    #[test]
    fn environment_beats_defaults_file_beats_environment_flags_beat_file() -> Result<()> {
        let env = env(&[
            ("OPENAI_MODEL", "env-model"),
            ("OPENAI_BASE_URL", "http://env.example/v1"),
            ("REDPANDA_BROKERS", "env:9092"),
            ("TASK_TOPIC", "env_tasks"),
            ("DLQ_TOPIC", "env_dlq"),
            ("DATA_DIR", "/env/data"),
        ]);
        let from_env = Config::resolve(&env, None, &Flags::default())?;
        assert_eq!(from_env.llm.model, "env-model");
        assert_eq!(from_env.kafka.brokers, ["env:9092"]);
        assert_eq!(from_env.topics.tasks, "env_tasks");
        assert_eq!(from_env.topics.step_results, "step_results");
        assert_eq!(from_env.data_dir, PathBuf::from("/env/data"));

        let file = file(
            r#"{ "OPENAI_MODEL": "file-model", "DATA_DIR": "/file/data", "DLQ_TOPIC": "file_dlq" }"#,
        )?;
        let with_file = Config::resolve(&env, Some(&file), &Flags::default())?;
        assert_eq!(with_file.llm.model, "file-model");
        assert_eq!(with_file.llm.base_url, "http://env.example/v1");
        assert_eq!(with_file.topics.tasks, "env_tasks");
        assert_eq!(with_file.topics.dlq, "file_dlq");
        assert_eq!(with_file.data_dir, PathBuf::from("/file/data"));
        assert_eq!(
            with_file.file.as_deref(),
            Some(Path::new("config.local.json"))
        );

        let flags = Flags {
            data_dir: Some(PathBuf::from("/flag/data")),
            ..Flags::default()
        };
        let with_flags = Config::resolve(&env, Some(&file), &flags)?;
        assert_eq!(with_flags.data_dir, PathBuf::from("/flag/data"));
        assert_eq!(with_flags.llm.model, "file-model");
        Ok(())
    }

    #[test]
    fn the_bus_comes_from_agent_bus_and_the_bus_flag_wins() -> Result<()> {
        let kafka = Config::resolve(&env(&[("AGENT_BUS", " Kafka ")]), None, &Flags::default())?;
        assert_eq!(kafka.bus, BusKind::Kafka);
        let file = file(r#"{ "AGENT_BUS": "memory" }"#)?;
        let from_file = Config::resolve(
            &env(&[("AGENT_BUS", "kafka")]),
            Some(&file),
            &Flags::default(),
        )?;
        assert_eq!(
            from_file.bus,
            BusKind::Memory,
            "the file beats the environment"
        );
        let flags = Flags {
            bus: Some(BusKind::Kafka),
            ..Flags::default()
        };
        let flagged = Config::resolve(&env(&[("AGENT_BUS", "memory")]), Some(&file), &flags)?;
        assert_eq!(
            flagged.bus,
            BusKind::Kafka,
            "--bus beats every other source"
        );

        let bad = Config::resolve(&env(&[("AGENT_BUS", "rabbitmq")]), None, &Flags::default())
            .map_err(|e| format!("{e:#}"));
        assert!(
            bad.as_ref()
                .is_err_and(|e| e.contains("AGENT_BUS must be \"memory\" or \"kafka\"")),
            "{bad:?}"
        );
        Ok(())
    }

    #[test]
    fn kafka_keys_may_be_set_in_the_file_and_the_password_stays_hidden() -> Result<()> {
        for (name, _) in KafkaSettings::VARIABLES {
            assert!(known_keys().contains(&name), "{name} is not a known key");
        }
        let file = file(
            r#"{
                "REDPANDA_BROKERS": "k1:9092,k2:9092",
                "KAFKA_CLIENT_ID": "from-file",
                "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
                "KAFKA_SASL_USERNAME": "agent",
                "KAFKA_SASL_PASSWORD": "pw-SECRET789",
                "KAFKA_PARTITIONS": "12",
                "KAFKA_FETCH_WAIT_MS": "50",
                "AGENT_INSTANCE": "1",
                "AGENT_INSTANCES": "3"
            }"#,
        )?;
        let env = env(&[("REDPANDA_BROKERS", "env:9092"), ("KAFKA_PARTITIONS", "2")]);
        let config = Config::resolve(&env, Some(&file), &Flags::default())?;
        let kafka = &config.kafka;
        assert_eq!(kafka.brokers, ["k1:9092", "k2:9092"]);
        assert_eq!(kafka.client_id, "from-file");
        assert_eq!(kafka.partitions, 12);
        assert_eq!(kafka.fetch_wait, std::time::Duration::from_millis(50));
        assert_eq!(
            (kafka.ownership.instance, kafka.ownership.instances),
            (1, 3)
        );
        assert_eq!(
            kafka.sasl.as_ref().map(|sasl| sasl.username.as_str()),
            Some("agent")
        );
        assert!(!format!("{config:?}").contains("SECRET789"));

        let bad = file_with(r#"{ "KAFKA_PARTITIONS": "none" }"#);
        assert!(bad.contains("KAFKA_PARTITIONS"), "{bad}");
        Ok(())
    }

    /// The error of resolving a configuration with the file `text` alone.
    fn file_with(text: &str) -> String {
        file(text)
            .and_then(|file| Config::resolve(&env(&[]), Some(&file), &Flags::default()))
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default()
    }

    #[test]
    fn instance_flags_override_the_variables_and_must_name_an_instance() -> Result<()> {
        let env = env(&[("AGENT_INSTANCE", "2"), ("AGENT_INSTANCES", "4")]);
        let flags = Flags {
            instance: Some(1),
            instances: Some(2),
            ..Flags::default()
        };
        let config = Config::resolve(&env, None, &flags)?;
        assert_eq!(
            (
                config.kafka.ownership.instance,
                config.kafka.ownership.instances
            ),
            (1, 2)
        );
        // One flag alone keeps the other variable.
        let flags = Flags {
            instance: Some(3),
            ..Flags::default()
        };
        let config = Config::resolve(&env, None, &flags)?;
        assert_eq!(config.kafka.ownership.instance, 3);

        let flags = Flags {
            instance: Some(2),
            instances: Some(2),
            ..Flags::default()
        };
        let refused =
            Config::resolve(&super::tests::env(&[]), None, &flags).map_err(|e| format!("{e:#}"));
        assert!(
            refused.as_ref().is_err_and(
                |e| e.contains("--instance 2 --instances 2") && e.contains("does not exist")
            ),
            "{refused:?}"
        );
        Ok(())
    }

    #[test]
    fn an_empty_value_in_the_file_switches_the_environment_key_off() -> Result<()> {
        let env = env(&[("OPENAI_API_KEY", "sk-env")]);
        let online = Config::resolve(&env, None, &Flags::default())?;
        assert!(!online.is_offline());
        let file = file(r#"{ "OPENAI_API_KEY": "" }"#)?;
        let offline = Config::resolve(&env, Some(&file), &Flags::default())?;
        assert!(offline.is_offline());
        Ok(())
    }

    #[test]
    fn unknown_keys_and_non_string_values_are_errors_naming_the_key() {
        let unknown = file(r#"{ "OPENAI_MODLE": "x" }"#).map_err(|e| format!("{e:#}"));
        assert!(
            unknown
                .as_ref()
                .is_err_and(|e| e.contains("unknown key \"OPENAI_MODLE\"")),
            "{unknown:?}"
        );
        let number = file(r#"{ "AGENT_HOST_MAX_ATTEMPTS": 2 }"#).map_err(|e| format!("{e:#}"));
        assert!(
            number
                .as_ref()
                .is_err_and(|e| e.contains("\"AGENT_HOST_MAX_ATTEMPTS\" must be a string")),
            "{number:?}"
        );
        assert!(file("[1, 2]").is_err());
        assert!(file("{ not json").is_err());
    }

    #[test]
    fn llm_limits_and_prices_come_from_the_file_or_the_environment() -> Result<()> {
        for (name, _) in LlmSettings::VARIABLES {
            assert!(known_keys().contains(&name), "{name} is not a known key");
        }
        let env = env(&[("LLM_REQUESTS_PER_MINUTE", "100")]);
        let file = file(
            r#"{ "LLM_MAX_CONCURRENCY": "8", "LLM_REQUESTS_PER_MINUTE": "500",
                 "LLM_TOKENS_PER_MINUTE": "200000", "LLM_PRICE_INPUT_PER_MTOK": "0.15",
                 "LLM_PRICE_OUTPUT_PER_MTOK": "0.6" }"#,
        )?;
        let from_env = Config::resolve(&env, None, &Flags::default())?;
        assert_eq!(
            from_env.llm.limits.requests_per_minute.map(|n| n.get()),
            Some(100)
        );
        assert_eq!(from_env.llm.limits.max_concurrency, None);
        let config = Config::resolve(&env, Some(&file), &Flags::default())?;
        let limits = config.llm.limits;
        assert_eq!(limits.max_concurrency.map(|n| n.get()), Some(8));
        assert_eq!(limits.requests_per_minute.map(|n| n.get()), Some(500));
        assert_eq!(limits.tokens_per_minute.map(|n| n.get()), Some(200_000));
        let prices = config.llm.prices.price(&config.llm.model);
        assert_eq!(prices.and_then(|p| p.input_per_mtok), Some(0.15));
        assert_eq!(prices.and_then(|p| p.output_per_mtok), Some(0.6));
        Ok(())
    }

    #[test]
    fn budgets_approval_and_providers_come_from_the_file_and_keys_stay_hidden() -> Result<()> {
        let defaults = Config::resolve(&env(&[]), None, &Flags::default())?;
        assert!(defaults.budget.is_unlimited() && !defaults.require_approval);
        assert!(defaults.providers.is_empty());
        let from_file = file(
            r#"{ "TASK_MAX_COST_USD": "0.25", "TASK_MAX_WALL_TIME": "10m",
                 "REQUIRE_APPROVAL": "true",
                 "LLM_PROVIDERS": "local=http://127.0.0.1:8000/v1",
                 "LLM_PROVIDER_LOCAL_API_KEY": "sk-SECRET77" }"#,
        )?;
        let env = env(&[("TASK_MAX_TOKENS", "1000"), ("TASK_MAX_COST_USD", "9")]);
        let config = Config::resolve(&env, Some(&from_file), &Flags::default())?;
        assert_eq!(config.budget.max_tokens, Some(1000));
        assert_eq!(config.budget.max_cost_usd, Some(0.25), "the file wins");
        assert_eq!(config.budget.max_wall_time_secs, Some(600));
        assert_eq!(config.budget.max_rounds, None, "GATE_ROUNDS applies");
        assert!(config.require_approval);
        assert_eq!(config.providers.len(), 1);
        assert_eq!(config.providers[0].api_key.expose(), "sk-SECRET77");
        assert!(!format!("{config:?}").contains("SECRET77"));

        for (text, key) in [
            (r#"{ "REQUIRE_APPROVAL": "maybe" }"#, "REQUIRE_APPROVAL"),
            (
                r#"{ "TASK_MAX_WALL_TIME": "a while" }"#,
                "TASK_MAX_WALL_TIME",
            ),
            (
                r#"{ "LLM_PROVIDERS": "x=http://h/v1" }"#,
                "LLM_PROVIDER_X_API_KEY",
            ),
        ] {
            let error = file_with(text);
            assert!(error.contains(key), "{text}: {error}");
        }
        let lower = file(r#"{ "LLM_PROVIDER_x_API_KEY": "k" }"#).map_err(|e| format!("{e:#}"));
        assert!(lower.is_err_and(|e| e.contains("unknown key")));
        Ok(())
    }

    #[test]
    fn the_prices_line_names_the_default_model_and_its_price() -> Result<()> {
        let offline = Config::resolve(&env(&[]), None, &Flags::default())?;
        assert!(
            offline
                .prices_description()
                .ends_with("offline costs $0 in / $0 out per million tokens"),
            "{}",
            offline.prices_description()
        );
        let unpriced = Config::resolve(
            &env(&[("OPENAI_API_KEY", "sk-test"), ("OPENAI_MODEL", "my-model")]),
            None,
            &Flags::default(),
        )?;
        assert!(
            unpriced
                .prices_description()
                .contains("my-model has no price"),
            "{}",
            unpriced.prices_description()
        );
        Ok(())
    }

    #[test]
    fn a_missing_default_file_is_fine_and_a_missing_explicit_one_is_not() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let missing = dir.path().join("config.local.json");
        assert_eq!(ConfigFile::read(&missing, false)?, None);
        assert!(ConfigFile::read(&missing, true).is_err());
        Ok(())
    }

    #[test]
    fn max_attempts_lowers_step_tries_and_http_requests() -> Result<()> {
        let config = Config::resolve(
            &env(&[("AGENT_HOST_MAX_ATTEMPTS", "1")]),
            None,
            &Flags::default(),
        )?;
        assert_eq!(config.retry_policy().max_attempts, 1);
        assert_eq!(config.llm.max_attempts, 1);
        for bad in ["0", "-1", "many"] {
            let result = Config::resolve(
                &env(&[("AGENT_HOST_MAX_ATTEMPTS", bad)]),
                None,
                &Flags::default(),
            );
            assert!(result.is_err(), "{bad:?} must be rejected");
        }
        Ok(())
    }

    #[test]
    fn execution_settings_have_safe_defaults_and_refuse_nonsense() -> Result<()> {
        let defaults = Config::resolve(&env(&[]), None, &Flags::default())?.execution;
        assert_eq!(defaults.sandbox, SandboxChoice::Bubblewrap);
        assert_eq!(defaults.limits, SandboxLimits::default());
        assert_eq!(defaults.gate_rounds, 3);
        assert!(defaults.execute_code);
        let on_each_bus = |execution: &ExecutionConfig| {
            [BusKind::Memory, BusKind::Kafka].map(|bus| execution.service_concurrency(bus))
        };
        assert_eq!(defaults.worker_concurrency, 4);
        assert_eq!(
            on_each_bus(&defaults),
            [64, 1024],
            "unset, each bus has its own default"
        );
        assert!(defaults.github.is_none() && defaults.publish_repo.is_none());
        let set = Config::resolve(
            &env(&[
                ("AGENT_SANDBOX", "none"),
                ("SANDBOX_TIMEOUT_SECS", "5"),
                ("SANDBOX_MEMORY_MB", "256"),
                ("SANDBOX_MAX_PROCESSES", "none"),
                ("SANDBOX_DISK_MB", "100"),
                ("GATE_ROUNDS", "1"),
                ("CI_CHECK_COMMAND", "make check"),
                ("EXECUTE_CODE", " False "),
                ("WORKER_CONCURRENCY", "1000"),
                ("SERVICE_CONCURRENCY", "8"),
            ]),
            None,
            &Flags::default(),
        )?
        .execution;
        assert_eq!(set.sandbox, SandboxChoice::None);
        assert_eq!(set.limits.timeout, std::time::Duration::from_secs(5));
        assert_eq!(set.limits.memory_bytes, 256 * 1024 * 1024);
        assert_eq!(set.limits.max_processes, None);
        assert_eq!(set.limits.disk_bytes, Some(100 * 1024 * 1024));
        assert_eq!(defaults.limits.max_processes, Some(512));
        assert_eq!(defaults.limits.disk_bytes, Some(4096 * 1024 * 1024));
        assert_eq!(set.gate_rounds, 1);
        assert_eq!(set.ci_check_command.as_deref(), Some("make check"));
        assert!(!set.execute_code);
        assert_eq!(set.worker_concurrency, 1000);
        assert_eq!(on_each_bus(&set), [8, 8], "set, it holds on both buses");
        for (key, bad) in [
            ("EXECUTE_CODE", "maybe"),
            ("WORKER_CONCURRENCY", "0"),
            ("SERVICE_CONCURRENCY", "lots"),
            ("AGENT_SANDBOX", "docker"),
            ("SANDBOX_TIMEOUT_SECS", "0"),
            ("SANDBOX_MAX_PROCESSES", "0"),
            ("SANDBOX_DISK_MB", "lots"),
            ("GATE_ROUNDS", "many"),
            ("GITHUB_REPOSITORY", "no-slash"),
        ] {
            let result = Config::resolve(&env(&[(key, bad)]), None, &Flags::default());
            let message = result.err().map(|e| format!("{e:#}")).unwrap_or_default();
            assert!(message.contains(key), "{key}={bad}: {message:?}");
        }
        Ok(())
    }

    #[test]
    fn debug_output_never_shows_the_api_key() -> Result<()> {
        let config = Config::resolve(
            &env(&[
                ("OPENAI_API_KEY", "sk-test-SECRET123"),
                ("GITHUB_REPOSITORY", "octo/hello"),
                ("GITHUB_TOKEN", "ghp_SECRET456"),
                (
                    "OPENAI_BASE_URL",
                    "https://user:pw@proxy.example/v1?token=t0k",
                ),
            ]),
            None,
            &Flags::default(),
        )?;
        let shown = format!("{config:?}");
        assert!(!shown.contains("SECRET123") && !shown.contains("SECRET456"));
        assert!(config.execution.github.is_some());
        let shown = config.model_description();
        assert_eq!(shown, "gpt-4o-mini at https://***@proxy.example/v1");
        Ok(())
    }

    #[test]
    fn an_https_client_builds_once_ring_is_installed() -> Result<()> {
        // The binary installs ring at start-up; so does this test, as the binary would.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = Config::resolve(
            &env(&[
                ("OPENAI_API_KEY", "sk-test"),
                ("OPENAI_BASE_URL", "https://127.0.0.1:9/v1"),
            ]),
            None,
            &Flags::default(),
        )?;
        let llm = agent_pipeline::llm::OpenAiLlm::new(config.llm.clone())?;
        assert!(format!("{llm:?}").contains("https://127.0.0.1:9/v1"));
        Ok(())
    }
}
