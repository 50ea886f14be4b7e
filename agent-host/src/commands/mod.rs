//! The subcommands, and what they share: assembling the pipeline, opening the stores, and
//! printing events and durations.

mod bus;
mod control;
mod dlq;
mod maintenance;
mod replay;
mod run;
mod schemas;
mod send;
mod services;
mod show;
mod tasks;
mod web;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use agent_pipeline::execution::sandbox::{Bubblewrap, Sandbox, Unsandboxed};
use agent_pipeline::llm::Spend;
use agent_pipeline::llm::{Llm, LlmSettings, OfflineLlm, OpenAiLlm, RateLimitedLlm, RateLimiter};
use agent_pipeline::memory::{MemoryOptions, OpenAiEmbedder};
use agent_pipeline::publish::{GitHubPublisher, LocalGitPublisher};
use agent_pipeline::wire::{ControlAction, ReportEvent};
use agent_pipeline::{Pipeline, PipelineBuilder, Service, TaskId};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use crate::cli::{Cli, Command, HostArgs, ServeArgs};
use crate::client::HostClient;
use crate::config::{BusKind, Config, Flags, SandboxChoice};
use crate::database::Stores;

/// The exit code of a process stopped by Ctrl-C (128 + SIGINT), as shells report it.
pub(crate) const INTERRUPTED: u8 = 130;

/// Reads the configuration and runs the command (`run` when none is given).
pub(crate) async fn dispatch(cli: Cli) -> Result<ExitCode> {
    let serves = cli.runs_services();
    let command = cli
        .command
        .unwrap_or_else(|| Command::Run(ServeArgs::default()));
    let mut flags = Flags {
        data_dir: cli.data_dir,
        bus: cli.bus,
        ..Flags::default()
    };
    match &command {
        Command::Run(args) | Command::Web(args) => flags.listen = args.listen,
        Command::Planner(args)
        | Command::Worker(args)
        | Command::Orchestrator(args)
        | Command::CiMonitor(args) => {
            flags.instance = args.instance;
            flags.instances = args.instances;
        }
        _ => {}
    }
    let mut config = Config::load(cli.config.as_deref(), &flags).context("configuration")?;
    if serves {
        // A serving host hands paths to clients that may run elsewhere: make them absolute.
        config.data_dir = std::path::absolute(&config.data_dir).with_context(|| {
            format!(
                "cannot resolve the data directory {}",
                config.data_dir.display()
            )
        })?;
    }
    tracing::debug!(?config, "configuration");
    match command {
        Command::Run(_) => run::run(&config).await,
        Command::Web(_) => web::web(&config).await,
        Command::Planner(_) => services::service(&config, Service::Planner).await,
        Command::Worker(_) => services::service(&config, Service::Worker).await,
        Command::Orchestrator(_) => services::service(&config, Service::Orchestrator).await,
        Command::CiMonitor(_) => services::service(&config, Service::CiMonitor).await,
        Command::Send(args) => send::send(&config, &args).await,
        Command::Replay(args) => replay::replay(&config, &args).await,
        Command::Approve(args) => control::control(&config, &args, ControlAction::Approve).await,
        Command::Reject(args) => control::control(&config, &args, ControlAction::Reject).await,
        Command::Cancel(args) => control::control(&config, &args, ControlAction::Cancel).await,
        Command::Tasks(args) => tasks::tasks(&config, &args).await,
        Command::Show(args) => show::show(&config, &args).await,
        Command::Dlq => dlq::dlq(&config).await,
        Command::Prune(args) => maintenance::prune(&config, &args).await,
        Command::Migrate(args) => maintenance::migrate(&config, &args).await,
        Command::Schemas(args) => schemas::schemas(&config, &args),
    }
}

/// Where `send`, `replay`, `approve`, `reject`, `cancel`, `tasks` and `show` do their work.
#[derive(Debug)]
pub(crate) enum Target {
    /// In this process, on `DATA_DIR` (`--local`).
    Local,
    /// On the running host this client talks to (the default).
    Host(HostClient),
    /// On the broker (the Kafka bus, without `--url` or `--local`): `send`, `replay` and the
    /// decisions publish to the task topic and follow the report topic themselves; what they
    /// check beforehand is read from `DATA_DIR` (or `DATABASE_URL`).
    Bus,
}

impl Target {
    /// Where a command that only reads goes (`tasks`, `show`): the host at `--url` (else at
    /// `WEB_ADDR`), or `DATA_DIR` with `--local`. Never [`Target::Bus`]: the broker holds no
    /// state to read.
    pub(crate) fn to_read(config: &Config, args: &HostArgs) -> Result<Self> {
        if args.local {
            return Ok(Target::Local);
        }
        Ok(Target::Host(HostClient::new(config, args.url.as_deref())?))
    }

    /// Where a command that gives the pipeline work goes (`send`, `replay`, `approve`,
    /// `reject`, `cancel`): as
    /// [`Target::to_read`], except that on the Kafka bus without `--url` it is the broker.
    pub(crate) fn to_work(config: &Config, args: &HostArgs) -> Result<Self> {
        if config.bus == BusKind::Kafka && !args.local && args.url.is_none() {
            return Ok(Target::Bus);
        }
        Self::to_read(config, args)
    }
}

/// LLM clients by the provider name replays use.
type NamedProviders = Vec<(String, Arc<dyn Llm>)>;

/// The LLM clients of `config`: the default one (`OPENAI_*`, or the offline model without a
/// key) and those of `LLM_PROVIDERS` by name, all behind one [`RateLimiter`], so that
/// `LLM_MAX_CONCURRENCY` and the per-minute budgets hold for the process as a whole.
///
/// Only the default client reports the server's rate-limit headers to the limiter: they
/// describe the budget of the default server's account, which another provider's answers
/// say nothing about.
fn llm_clients(config: &Config) -> Result<(Arc<dyn Llm>, NamedProviders)> {
    let limiter = Arc::new(RateLimiter::new(&config.llm.limits));
    let limited = |inner: Arc<dyn Llm>| -> Arc<dyn Llm> {
        Arc::new(RateLimitedLlm::new(inner, limiter.clone()).with_prices(config.llm.prices.clone()))
    };
    let default: Arc<dyn Llm> = if config.is_offline() {
        tracing::warn!(
            "no OPENAI_API_KEY: using the offline model; every artifact says \"model\": \"offline\""
        );
        Arc::new(OfflineLlm::new())
    } else {
        let client = OpenAiLlm::new(config.llm.clone())
            .context("cannot set up the LLM client (check OPENAI_BASE_URL and OPENAI_API_KEY)")?
            .with_rate_limit_feedback(limiter.clone());
        Arc::new(client)
    };
    let mut providers = Vec::with_capacity(config.providers.len());
    for provider in &config.providers {
        let settings = LlmSettings {
            api_key: Some(provider.api_key.clone()),
            base_url: provider.base_url.clone(),
            ..config.llm.clone()
        };
        let client = OpenAiLlm::new(settings).with_context(|| {
            format!(
                "cannot set up the LLM client of provider {:?} (check LLM_PROVIDERS and {})",
                provider.name,
                crate::config::provider_key_variable(&provider.name)
            )
        })?;
        providers.push((provider.name.clone(), limited(Arc::new(client))));
    }
    Ok((limited(default), providers))
}

/// A pipeline builder with everything `config` sets but the bus and the state store: the
/// data directory, the LLM and the providers of replays, prices, task budgets and approval,
/// topics, retries, sandbox, gates and publisher, with the service concurrency of the
/// in-memory bus.
pub(crate) fn pipeline_builder(config: &Config) -> Result<PipelineBuilder> {
    let (llm, providers) = llm_clients(config)?;
    let execution = &config.execution;
    let sandbox: Arc<dyn Sandbox> = match execution.sandbox {
        SandboxChoice::Bubblewrap => Arc::new(Bubblewrap::default()),
        SandboxChoice::None => Arc::new(Unsandboxed),
    };
    let mut builder = Pipeline::builder()
        .data_dir(&config.data_dir)
        .llm(llm)
        .topics(config.topics.clone())
        .retry_policy(config.retry_policy())
        .sandbox(sandbox)
        .sandbox_limits(execution.limits)
        .gate_rounds(execution.gate_rounds)
        .execute_code(execution.execute_code)
        .worker_concurrency(execution.worker_concurrency)
        .service_concurrency(execution.service_concurrency(BusKind::Memory))
        .budget(config.budget)
        .require_approval(config.require_approval)
        .prices(config.llm.prices.clone());
    for (name, provider) in providers {
        builder = builder.llm_provider(name, provider);
    }
    if let Some(model) = config.embeddings_model() {
        let embedder = OpenAiEmbedder::new(&config.llm, model).with_context(|| {
            format!("cannot set up the embeddings client of {model:?} (LLM_EMBEDDINGS_MODEL)")
        })?;
        builder = builder.code_memory(MemoryOptions {
            embedder: Some(Arc::new(embedder)),
            ..MemoryOptions::default()
        });
    }
    if let Some(policy) = config.retention {
        builder = builder.retention(policy);
    }
    if let Some(command) = &execution.ci_check_command {
        builder = builder.ci_check_command(command.clone());
    }
    if let Some(github) = &execution.github {
        let publisher = GitHubPublisher::new(github.clone())
            .context("cannot set up the GitHub publisher (GITHUB_*)")?;
        builder = builder.publisher(Arc::new(publisher));
    } else if let Some(repository) = &execution.publish_repo {
        builder = builder.publisher(Arc::new(LocalGitPublisher::new(repository)));
    }
    Ok(builder)
}

/// The embedded default of `config` (memory bus, files in `DATA_DIR`, the state database of
/// `DATABASE_URL`, else SQLite in `DATA_DIR`; the configured LLM), not started.
pub(crate) async fn build_pipeline(config: &Config, resume_unfinished: bool) -> Result<Pipeline> {
    let stores = config.open_stores().await?;
    build(
        config,
        stores.apply(pipeline_builder(config)?.resume_unfinished(resume_unfinished)),
    )
    .await
}

/// Builds `builder`, saying which data directory could not be opened when that fails.
pub(crate) async fn build(config: &Config, builder: PipelineBuilder) -> Result<Pipeline> {
    builder.build().await.with_context(|| {
        format!(
            "cannot open the data directory {}",
            config.data_dir.display()
        )
    })
}

/// The stores of `config`, opened without starting any service; `None` when its SQLite
/// state database does not exist yet (so that looking creates nothing).
pub(crate) async fn open_existing_stores(config: &Config) -> Result<Option<Stores>> {
    if !config.database.may_exist().await {
        return Ok(None);
    }
    config.open_stores().await.map(Some)
}

/// The message for a task id that names no task where `target` looked.
pub(crate) fn no_such_task(task_id: TaskId, target: &Target, data_dir: &Path) -> anyhow::Error {
    let place = match target {
        Target::Local | Target::Bus => format!("in {}", data_dir.display()),
        Target::Host(client) => format!("on the host at {}", client.url()),
    };
    anyhow::anyhow!("task {task_id} does not exist (no such task {place})")
}

/// Parses a task id given on the command line.
pub(crate) fn parse_task_id(text: &str) -> Result<TaskId> {
    text.trim()
        .parse()
        .with_context(|| format!("invalid task id {text:?}"))
}

/// One report event as one line: `[12.3s] stage_done design@v1 — Design completed: …`, with
/// the time since `start`; bidirectional controls are written as escapes (`\u{202e}`).
pub(crate) fn event_line(event: &ReportEvent, start: DateTime<Utc>) -> String {
    let elapsed = (event.timestamp - start).to_std().unwrap_or_default();
    let stage = event
        .stage
        .map(|step| format!(" {step}"))
        .unwrap_or_default();
    let line = format!(
        "[{:.1}s] {}{stage} — {}",
        elapsed.as_secs_f64(),
        event.status,
        event.summary
    );
    // A summary quotes model output: its controls must not reorder the terminal.
    crate::bidi::escape_for_terminal(&line).into_owned()
}

/// A duration for people: `850ms`, `42s`, `3m05s`, `2h10m`, `3d04h`.
pub(crate) fn human_duration(duration: chrono::TimeDelta) -> String {
    let millis = duration.num_milliseconds().max(0);
    let seconds = millis / 1000;
    match seconds {
        _ if millis < 1000 => format!("{millis}ms"),
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        3600..86400 => format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60),
        _ => format!("{}d{:02}h", seconds / 86400, seconds % 86400 / 3600),
    }
}

/// The first line of `text`, cut to `max` characters.
pub(crate) fn one_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or_default().trim();
    if line.chars().count() > max {
        format!(
            "{}…",
            line.chars().take(max.saturating_sub(1)).collect::<String>()
        )
    } else {
        line.to_owned()
    }
}

/// US dollars for people: `$0.0123` below a dollar (LLM calls cost fractions of a cent),
/// `$1.50` above, `$0` for nothing.
pub(crate) fn usd(amount: f64) -> String {
    if amount == 0.0 {
        "$0".to_owned()
    } else if amount.abs() < 1.0 {
        format!("${amount:.4}")
    } else {
        format!("${amount:.2}")
    }
}

/// What LLM calls spent, for people: `1234 tokens (1000 prompt + 234 completion) in 4
/// call(s), $0.0012`, saying how many calls had no price (their cost is unknown, not zero).
pub(crate) fn spend_line(spend: &Spend) -> String {
    let usage = &spend.usage;
    let unpriced = match spend.unpriced_calls {
        0 => String::new(),
        n => format!(" ({n} call(s) without a price: set LLM_PRICES)"),
    };
    format!(
        "{} tokens ({} prompt + {} completion) in {} call(s), {}{unpriced}",
        usage.total_tokens,
        usage.prompt_tokens,
        usage.completion_tokens,
        spend.calls,
        usd(spend.cost_usd)
    )
}

/// A time for people: RFC 3339 to the second, in UTC.
pub(crate) fn timestamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_pipeline::wire::ReportStatus;
    use agent_pipeline::{Stage, StepId};
    use chrono::TimeDelta;

    #[test]
    fn events_print_as_one_line_with_the_time_since_the_start() {
        let start = Utc::now();
        let mut event = ReportEvent::new(
            TaskId::new(),
            ReportStatus::StageDone,
            "Design completed: 1 file(s) touched",
            start + TimeDelta::milliseconds(12_345),
        );
        event.stage = Some(StepId::v1(Stage::Design));
        assert_eq!(
            event_line(&event, start),
            "[12.3s] stage_done design@v1 — Design completed: 1 file(s) touched"
        );
        event.stage = None;
        event.timestamp = start - TimeDelta::seconds(1);
        assert!(event_line(&event, start).starts_with("[0.0s] stage_done — "));
    }

    #[test]
    fn an_event_line_shows_bidirectional_controls_as_escapes() {
        let start = Utc::now();
        let event = ReportEvent::new(
            TaskId::new(),
            ReportStatus::Error,
            "error: \u{202E}exe.gpj",
            start,
        );
        assert_eq!(
            event_line(&event, start),
            "[0.0s] error — error: \\u{202e}exe.gpj"
        );
    }

    #[test]
    fn durations_read_well_at_every_scale() {
        assert_eq!(human_duration(TimeDelta::milliseconds(850)), "850ms");
        assert_eq!(human_duration(TimeDelta::seconds(42)), "42s");
        assert_eq!(human_duration(TimeDelta::seconds(185)), "3m05s");
        assert_eq!(human_duration(TimeDelta::seconds(7800)), "2h10m");
        assert_eq!(
            human_duration(TimeDelta::seconds(3 * 86400 + 4 * 3600)),
            "3d04h"
        );
        assert_eq!(human_duration(TimeDelta::seconds(-5)), "0ms");
    }

    #[test]
    fn money_and_spend_read_well() {
        assert_eq!(usd(0.0), "$0");
        assert_eq!(usd(0.001234), "$0.0012");
        assert_eq!(usd(12.5), "$12.50");
        let spend = Spend {
            usage: agent_pipeline::llm::Usage {
                prompt_tokens: 1000,
                completion_tokens: 234,
                total_tokens: 1234,
            },
            cost_usd: 0.0012,
            calls: 4,
            unpriced_calls: 1,
        };
        assert_eq!(
            spend_line(&spend),
            "1234 tokens (1000 prompt + 234 completion) in 4 call(s), $0.0012 (1 call(s) \
             without a price: set LLM_PRICES)"
        );
    }

    #[test]
    fn long_text_is_cut_to_one_line() {
        assert_eq!(one_line("abc\ndef", 10), "abc");
        assert_eq!(one_line("abcdefghijkl", 5), "abcd…");
    }
}
