//! What every serving command shares — `run`, `web` and the one-service commands `planner`,
//! `worker`, `orchestrator`, `ci-monitor`: assemble the pipeline on its bus, start the
//! process's services (and the web server), say what runs where, and stop gracefully on
//! Ctrl-C or SIGTERM.

use std::process::ExitCode;

use agent_pipeline::{Pipeline, Service};
use anyhow::{Context, Result};

use super::build_pipeline;
use super::bus::service_pipeline;
use super::web::WebServer;
use crate::config::{BusKind, Config, describe_budget};
use crate::database::ArtifactPlace;
use crate::telemetry::{self, MetricsServer};
use crate::web::WebSettings;

/// Why `agent-host web` on its own takes no work on the embedded default.
const READ_ONLY_ON_MEMORY_BUS: &str = "this `agent-host web` process serves the UI alone, and on \
     the embedded default the bus lives inside the process of `agent-host run`: tasks enqueued \
     here would reach no service. Use the UI of `agent-host run` to enqueue and replay, or run \
     every process on a broker (AGENT_BUS=kafka).";

/// What one serving process runs.
#[derive(Debug, Clone)]
pub(super) struct Process {
    /// How the banner names the process: `agent-host`, `agent-host web`, `agent-host worker`.
    pub(super) name: String,
    /// The services it runs (none: the UI alone).
    pub(super) services: Vec<Service>,
    /// Whether it serves the web UI and JSON API.
    pub(super) web: bool,
    /// The bus it runs on.
    pub(super) bus: BusKind,
}

/// `planner`, `worker`, `orchestrator` or `ci-monitor`: one service, always on the Kafka bus
/// (whatever `AGENT_BUS` says: alone on the in-memory bus it would never see a message).
pub(crate) async fn service(config: &Config, service: Service) -> Result<ExitCode> {
    let process = Process {
        name: format!("agent-host {service}"),
        services: vec![service],
        web: false,
        bus: BusKind::Kafka,
    };
    serve(config, &process).await
}

/// Runs `process` until Ctrl-C or SIGTERM, then stops its services gracefully (the mirror
/// last, so that `reports.jsonl` misses nothing) and its web server.
pub(super) async fn serve(config: &Config, process: &Process) -> Result<ExitCode> {
    // Every serving process records its metrics, for its `/metrics` (web or METRICS_ADDR).
    telemetry::install();
    let metrics_settings = config.metrics;
    let works = !process.services.is_empty();
    let pipeline = match process.bus {
        // Only a process that runs services resends what an earlier one left unfinished.
        BusKind::Memory => build_pipeline(config, works).await?,
        BusKind::Kafka => service_pipeline(config).await?,
    };
    let unfinished = if works && process.bus == BusKind::Memory {
        pipeline
            .state()
            .unfinished_attempts()
            .await
            .context("cannot read the unfinished steps")?
            .len()
    } else {
        0
    };
    // Bound before the services start, so that a busy port stops nothing half-way.
    let server = if process.web {
        let read_only =
            (!works && !pipeline.bus().is_durable()).then(|| READ_ONLY_ON_MEMORY_BUS.to_owned());
        let settings = WebSettings {
            token: config.web.token.clone(),
            read_only,
        };
        Some(WebServer::bind(config, pipeline.clone(), settings).await?)
    } else {
        None
    };
    let metrics_server = match metrics_settings.addr {
        Some(addr) => Some(MetricsServer::bind(addr, config.web.token.as_deref()).await?),
        None => None,
    };
    let metrics_url = match (&metrics_server, &server) {
        (Some(metrics), _) => Some(format!("{}  (Prometheus; METRICS_ADDR)", metrics.url())),
        (None, Some(web)) => Some(format!("{}/metrics  (Prometheus)", web.url())),
        (None, None) => None,
    };
    let metrics_server = metrics_server.map(MetricsServer::start);
    let running = if works {
        Some(
            pipeline
                .start_services(&process.services)
                .await
                .context("cannot start the services")?,
        )
    } else {
        None
    };

    // Listen before saying "Press Ctrl-C": a signal that came earlier would be lost.
    let interrupt = Interrupt::listen()?;
    print!(
        "{}",
        banner(
            config,
            process,
            &pipeline,
            server.as_ref(),
            metrics_url.as_deref(),
            unfinished
        )
    );
    println!("Press Ctrl-C to stop.");

    let served = match server {
        Some(server) => server.serve_until(interrupt.received()).await,
        None => {
            interrupt.received().await;
            Ok(())
        }
    };
    if let Some(running) = running {
        println!("stopping…");
        running.shutdown().await;
    }
    if let Some(metrics_server) = metrics_server {
        metrics_server.stop().await;
    }
    served?;
    println!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// What the process says when it is ready: what runs, where its data and bus are, and where
/// its UI is.
fn banner(
    config: &Config,
    process: &Process,
    pipeline: &Pipeline,
    server: Option<&WebServer>,
    metrics: Option<&str>,
    unfinished: usize,
) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    let kafka = process.bus == BusKind::Kafka;
    let data = pipeline.data_dir().display();
    let all = process.services.len() == Service::ALL.len();
    let what = match process.services.as_slice() {
        _ if all && kafka => "every service runs in this process, on the Kafka bus".to_owned(),
        _ if all => {
            "every service runs in this process (embedded default, in-memory bus)".to_owned()
        }
        [] => format!("the UI and JSON API over {data}"),
        [Service::Mirror] => format!(
            "the UI and JSON API over {data}, and the mirror of the report and dead-letter \
             topics"
        ),
        [service] => format!("the {service} alone: {}", job(*service)),
        services => {
            let names: Vec<&str> = services.iter().map(|service| service.name()).collect();
            format!("{} run in this process", names.join(", "))
        }
    };
    line(format!("{}: {what}", process.name));
    let artifacts = match config.artifacts {
        ArtifactPlace::Files => format!("artifacts in {data}/<task_id>/, "),
        ArtifactPlace::Database => String::new(),
    };
    line(format!("  data:    {data}  ({artifacts}reports.jsonl)"));
    line(format!("  state:   {}", config.database));
    if config.artifacts == ArtifactPlace::Database {
        line(format!(
            "  artifacts: {} (documents table)",
            config.database
        ));
    }
    if let Some(policy) = config.retention
        && process.services.contains(&Service::Mirror)
    {
        line(format!(
            "  retention: hourly, tasks that ended over {} day(s) ago are {}",
            policy.keep_for.as_secs_f64() / 86_400.0,
            match policy.pruning {
                agent_pipeline::store::Pruning::History => "pruned to their last attempts",
                agent_pipeline::store::Pruning::WholeTask => "deleted",
            }
        ));
    }
    if process.services.contains(&Service::Worker) {
        line(format!("  model:   {}", config.model_description()));
        line(format!("  prices:  {}", config.prices_description()));
        line(format!(
            "  providers: {} (a replay may name one; LLM_PROVIDERS)",
            pipeline.providers().join(", ")
        ));
        line(format!("  code memory: {}", config.memory_description()));
    }
    // The planner gives each new task its limits and approval requirement.
    if process.services.contains(&Service::Planner) {
        let gate_rounds = config.execution.gate_rounds;
        let budget = if config.budget.is_unlimited() {
            format!(
                "none (TASK_MAX_* unset; {gate_rounds} round(s) of gates, GATE_ROUNDS); a task \
                 may set its own"
            )
        } else {
            format!(
                "{} per task (TASK_MAX_*); a task may set its own",
                describe_budget(&config.budget, gate_rounds)
            )
        };
        line(format!("  budget:  {budget}"));
        let approval = if config.require_approval {
            "required: a change whose gates pass waits for `agent-host approve <task_id>` \
             (or reject) before it is published (REQUIRE_APPROVAL)"
        } else {
            "not required (REQUIRE_APPROVAL=false; `send --require-approval` asks for it)"
        };
        line(format!("  approval: {approval}"));
    }
    if let Some(file) = &config.file {
        line(format!("  config:  {}", file.display()));
    }
    let brokers = config.kafka.brokers.join(",");
    if kafka {
        line(format!(
            "  bus:     Kafka at {brokers} (REDPANDA_BROKERS); every topic exists"
        ));
    } else if !process.services.is_empty() {
        line(format!(
            "  bus:     in memory, inside this process (AGENT_BUS=memory; --bus kafka uses the \
             brokers at {brokers})"
        ));
    }
    let topics = &config.topics;
    if all {
        line(format!(
            "  topics:  {}, {}, {}, {}, {}, {}",
            topics.tasks,
            topics.step_requests,
            topics.step_results,
            topics.reports,
            topics.ci_watch,
            topics.dlq
        ));
    } else {
        for service in &process.services {
            line(format!(
                "  consumes: {} (group {service})",
                service.consumes(topics).join(", ")
            ));
        }
    }
    let ownership = config.kafka.ownership;
    match &config.kafka.leases {
        Some(leases) if kafka && !process.services.is_empty() => line(format!(
            "  partitions: shared with the group's other members by leases in the state store \
             (a dead member's move on after {} s)",
            leases.ttl.as_secs_f64()
        )),
        None if kafka && (ownership.instances > 1 || !process.web) => line(format!(
            "  instance: {} of {} (the partitions p with p % {} == {})",
            ownership.instance, ownership.instances, ownership.instances, ownership.instance
        )),
        _ => {}
    }
    if unfinished > 0 {
        line(format!(
            "  resumed: {unfinished} unfinished step(s) sent again"
        ));
    }
    if let Some(server) = server {
        line(format!(
            "  web:     {}/  (UI and JSON API under /api)",
            server.url()
        ));
        if config.web.token.is_some() {
            line(
                "           WEB_TOKEN is set: the UI asks for it, the API wants `Authorization: \
                 Bearer`"
                    .to_owned(),
            );
        }
        if server.read_only() {
            line(
                "  read-only: the embedded bus lives in `agent-host run`, so enqueue and replay \
                 are off here"
                    .to_owned(),
            );
        }
    }
    if let Some(metrics) = metrics {
        line(format!("  metrics: {metrics}"));
    }
    out
}

/// What `service` does, in a few words.
fn job(service: Service) -> &'static str {
    match service {
        Service::Planner => "turns tasks and replay commands into step requests",
        Service::Worker => "runs the agent of each step request",
        Service::Orchestrator => {
            "records results, requests next steps, retries, gates and publishes"
        }
        Service::CiMonitor => "checks published changes and reports `ci`",
        Service::Mirror => "mirrors the reports and dead letters to DATA_DIR",
        _ => "a service of the pipeline",
    }
}

/// Ctrl-C (SIGINT) or SIGTERM (what `kill`, systemd and container runtimes send), listened
/// for from the moment it is created.
#[cfg(unix)]
pub(super) struct Interrupt {
    /// SIGINT.
    interrupt: tokio::signal::unix::Signal,
    /// SIGTERM.
    terminate: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Interrupt {
    /// Starts listening.
    pub(super) fn listen() -> Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?,
            terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
        })
    }

    /// Waits for Ctrl-C or SIGTERM.
    pub(super) async fn received(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Ctrl-C, listened for when awaited.
#[cfg(not(unix))]
pub(super) struct Interrupt;

#[cfg(not(unix))]
impl Interrupt {
    /// Starts listening.
    pub(super) fn listen() -> Result<Self> {
        Ok(Self)
    }

    /// Waits for Ctrl-C (or for good, when it cannot be listened for).
    pub(super) async fn received(self) {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_pipeline::bus::Topics;

    #[test]
    fn every_service_names_the_topics_it_consumes() {
        let topics = Topics::default();
        let all: Vec<&str> = Service::ALL
            .iter()
            .flat_map(|service| service.consumes(&topics))
            .collect();
        assert_eq!(
            all,
            [
                "agent_tasks",
                "step_requests",
                "step_results",
                "ci_watch",
                "agent_reports",
                "agent_dlq"
            ]
        );
    }
}
