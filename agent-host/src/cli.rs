//! The command line.

use std::path::PathBuf;

use agent_pipeline::budget::Budget;
use agent_pipeline::wire::{NewTask, Repository};
use clap::{Args, Parser, Subcommand};

use crate::config::{BusKind, parse_cost, parse_rounds, parse_tokens, parse_wall_time};

/// Runs the agent pipeline (Design → Implement → Test → Review) and inspects what it stored.
///
/// Configuration: defaults < environment < config.local.json (or --config) < flags. Keys:
/// OPENAI_API_KEY, OPENAI_MODEL, OPENAI_BASE_URL, AGENT_BUS, REDPANDA_BROKERS, the KAFKA_*
/// keys, AGENT_INSTANCE, AGENT_INSTANCES, TASK_TOPIC, STEP_REQUESTS_TOPIC, STEP_RESULTS_TOPIC,
/// REPORT_TOPIC, CI_WATCH_TOPIC, DLQ_TOPIC, DATA_DIR, WEB_ADDR, WEB_TOKEN, METRICS_ADDR,
/// TASK_MAX_TOKENS, TASK_MAX_COST_USD, TASK_MAX_WALL_TIME (600, 90s, 10m, 2h),
/// TASK_MAX_ROUNDS, REQUIRE_APPROVAL, LLM_PRICES, LLM_PROVIDERS (name=https://host/v1,… with
/// LLM_PROVIDER_<NAME>_API_KEY each), and the LLM limit, concurrency, sandbox, gate and
/// publishing keys of the README. Without OPENAI_API_KEY a clearly labelled offline model
/// runs, so everything works without network access.
///
/// On the embedded default (AGENT_BUS=memory) `run` holds the bus and every service in one
/// process. With a broker (AGENT_BUS=kafka or --bus kafka, brokers in REDPANDA_BROKERS) each
/// service may run as a process of its own (`planner`, `worker`, `orchestrator`, `ci-monitor`,
/// `web`), and `send`, `replay`, `approve`, `reject` and `cancel` publish to the broker
/// directly.
#[derive(Debug, Parser)]
#[command(name = "agent-host", version)]
pub(crate) struct Cli {
    /// Where artifacts, reports.jsonl and state.sqlite live [default: DATA_DIR, else ./data]
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,

    /// The bus: `memory` (inside the process of `run`) or `kafka` (the brokers of
    /// REDPANDA_BROKERS) [default: AGENT_BUS, else memory]
    #[arg(long, global = true, value_enum, value_name = "BUS")]
    pub(crate) bus: Option<BusKind>,

    /// A JSON object of "VARIABLE": "value" pairs that overrides the environment
    /// [default: ./config.local.json when it exists]
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,

    /// What to do (default: run)
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

impl Cli {
    /// Whether the command runs services (`run`, `web`, `planner` …) rather than talking to
    /// a pipeline that runs elsewhere (`send`, `replay`, `approve`, `tasks`, `show`, `dlq` …).
    pub(crate) fn runs_services(&self) -> bool {
        matches!(
            self.command,
            None | Some(
                Command::Run(_)
                    | Command::Web(_)
                    | Command::Planner(_)
                    | Command::Worker(_)
                    | Command::Orchestrator(_)
                    | Command::CiMonitor(_)
            )
        )
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run every service and the web UI in this process until Ctrl-C or SIGTERM (the default)
    ///
    /// The UI and the JSON API are served on WEB_ADDR (default 127.0.0.1:5000). On the
    /// embedded default (in-memory bus, files and SQLite in DATA_DIR) this resumes the steps
    /// that an earlier process left unfinished; with --bus kafka every service consumes the
    /// broker's topics instead.
    Run(ServeArgs),
    /// Serve the web UI and JSON API over DATA_DIR (with a broker: and mirror the reports)
    ///
    /// With --bus kafka this process also runs the mirror, the one consumer of the report and
    /// dead-letter topics that writes reports.jsonl and dead_letters.jsonl and feeds the live
    /// UI; enqueue, replay and re-drive publish to the broker. On the embedded default the bus
    /// lives in the process of `agent-host run`, so a `web` process of its own shows tasks,
    /// reports and the dead-letter queue but cannot enqueue or replay (it says so).
    Web(ServeArgs),
    /// Run the planner alone on the broker: tasks and replay commands become step requests
    ///
    /// Always on the Kafka bus (REDPANDA_BROKERS), with the state store of DATA_DIR; runs
    /// until Ctrl-C or SIGTERM.
    Planner(ServiceArgs),
    /// Run a worker alone on the broker: runs the agent of each step request
    ///
    /// Always on the Kafka bus; start several with --instance 0..N-1 --instances N to share
    /// the partitions of the step-request topic. Runs until Ctrl-C or SIGTERM.
    Worker(ServiceArgs),
    /// Run the orchestrator alone on the broker: records results, requests the next steps,
    /// retries, gates, publishes
    ///
    /// Always on the Kafka bus, with the state store of DATA_DIR; runs until Ctrl-C or SIGTERM.
    Orchestrator(ServiceArgs),
    /// Run the ci-monitor alone on the broker: checks published changes and reports `ci`
    ///
    /// Always on the Kafka bus; runs until Ctrl-C or SIGTERM.
    #[command(name = "ci-monitor")]
    CiMonitor(ServiceArgs),
    /// Submit a task to the running host (or the broker) and follow it to its end
    ///
    /// Prints the task id, then its progress; the exit code is 0 when the task is done and 1
    /// when it ends in error (a budget it exceeded, a rejection, a cancellation included). A
    /// task that waits for approval (--require-approval, REQUIRE_APPROVAL) ends the command
    /// with exit code 0 and how to approve it, unless --wait follows it on to its end. The
    /// --max-* flags set the task's own limits over TASK_MAX_*. With --local the services run
    /// in this process instead; with --bus kafka (or AGENT_BUS=kafka) and no --url the task is
    /// published to TASK_TOPIC on the broker and followed on REPORT_TOPIC.
    Send(SendArgs),
    /// Run one step of a task again, on the running host (or through the broker)
    ///
    /// The step reruns with the task's prompt and the earlier stages' artifacts, writes a new
    /// attempt (`<step>.attemptN.json`) and updates the canonical artifact; later stages are not
    /// rerun unless --continue. --model, --provider, --prompt-file and --input make the
    /// attempt a variant (another model or provider, an edited prompt, edited upstream
    /// outputs), recorded in its artifact, to compare with `show` and the UI's diff. With
    /// --local the services run in this process instead; with --bus kafka and no --url the
    /// step is checked against DATA_DIR and the command published to the broker.
    Replay(ReplayArgs),
    /// Approve the change of a task awaiting approval: it is published, and the task is done
    ///
    /// The exit code is 0 once the task is done, and 1 with the reason when the task is not
    /// awaiting approval (or does not exist). Reaches the pipeline as `replay` does: the
    /// running host (--url), the broker (--bus kafka, checked against DATA_DIR), or this
    /// process (--local).
    Approve(ControlArgs),
    /// Reject the change of a task awaiting approval: nothing is published, and the task ends
    /// in error with the reason `rejected`
    ///
    /// The exit code is 0 once the rejection applied, and 1 with the reason when the task is
    /// not awaiting approval (or does not exist).
    Reject(ControlArgs),
    /// Cancel a task that has not ended: its running step is stopped, nothing more runs or is
    /// published, and the task ends `cancelled`
    ///
    /// The exit code is 0 once the cancellation applied, and 1 with the reason when the task
    /// has already ended (or does not exist).
    Cancel(ControlArgs),
    /// List every task with its latest status and what it spent, newest first
    Tasks(TasksArgs),
    /// Show one task: its prompt, status, budget, what it spent, its attempts (with their
    /// cost and how a replay differed) and artifacts
    Show(ShowArgs),
    /// List the dead-letter queue (DATA_DIR/dead_letters.jsonl), newest last
    Dlq,
    /// Prune tasks that ended long ago (RETENTION_DAYS), once, and say what went
    ///
    /// Keeps each step's last attempt and canonical artifact and drops the superseded attempts,
    /// their artifact files and report events older than the cutoff; with --delete-tasks (or
    /// RETENTION_DELETE_TASKS=true) such tasks are deleted whole. Tasks still running are never
    /// touched. A process that runs the mirror does this every hour when RETENTION_DAYS is set.
    Prune(PruneArgs),
    /// Copy the tasks of DATA_DIR (state.sqlite, the artifact files) to a PostgreSQL database
    ///
    /// Run it with the services stopped; it can run again after an interruption. Then start the
    /// services with DATABASE_URL set to the target (and ARTIFACT_STORE=database when the
    /// documents were copied too).
    Migrate(MigrateArgs),
    /// Print the JSON Schema of every message on the topics and of every stage output, with
    /// its name, topic and version
    ///
    /// Prints one JSON array of {name, topic, file, version, schema}; with --name the schema
    /// of that name alone (plain JSON Schema, for a validator), with --list a table. The
    /// version is the first 12 hexadecimal digits of the SHA-256 of the schema's canonical
    /// JSON: it changes exactly when the schema does (docs/schemas.md). Needs no broker and no
    /// database; the topic names are those of the configuration.
    Schemas(SchemasArgs),
}

/// Arguments of `schemas`.
#[derive(Debug, Args)]
pub(crate) struct SchemasArgs {
    /// Print only the JSON Schema of this name (e.g. step_result)
    #[arg(long, value_name = "NAME", conflicts_with = "list")]
    pub(crate) name: Option<String>,
    /// Print a table of name, topic and version instead of the schemas
    #[arg(long)]
    pub(crate) list: bool,
}

/// Arguments of `prune`.
#[derive(Debug, Args)]
pub(crate) struct PruneArgs {
    /// Prune tasks that ended more than this many days ago [default: RETENTION_DAYS]
    #[arg(long, value_name = "DAYS")]
    pub(crate) older_than_days: Option<f64>,
    /// Delete such tasks whole instead of pruning their history
    #[arg(long)]
    pub(crate) delete_tasks: bool,
}

/// Arguments of `migrate`.
#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {
    /// The PostgreSQL database to copy to: postgres://user:password@host/database
    #[arg(long, value_name = "URL")]
    pub(crate) to: String,
    /// Copy the artifact files into the database too (for ARTIFACT_STORE=database)
    #[arg(long)]
    pub(crate) with_artifacts: bool,
}

/// Arguments of `run` and `web`.
#[derive(Debug, Args, Default)]
pub(crate) struct ServeArgs {
    /// Where to serve the UI and API [default: WEB_ADDR, else 127.0.0.1:5000]; port 0 picks
    /// a free port (the address is printed)
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Option<std::net::SocketAddr>,
}

/// Arguments of `planner`, `worker`, `orchestrator` and `ci-monitor`.
#[derive(Debug, Args, Default)]
pub(crate) struct ServiceArgs {
    /// This process's number among the processes of the service, from 0 [default:
    /// AGENT_INSTANCE, else 0]; it consumes the partitions p with p % instances == instance
    #[arg(long, value_name = "I")]
    pub(crate) instance: Option<u32>,

    /// How many processes of the service share the partitions [default: AGENT_INSTANCES,
    /// else 1]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) instances: Option<u32>,
}

/// How `send`, `replay`, `approve`, `reject`, `cancel`, `tasks` and `show` reach the
/// pipeline.
#[derive(Debug, Args, Default)]
pub(crate) struct HostArgs {
    /// The running host's URL [default: http:// and WEB_ADDR, i.e. http://127.0.0.1:5000;
    /// with the Kafka bus the commands that give work use the broker instead]; WEB_TOKEN is
    /// sent when set
    #[arg(long, value_name = "URL", conflicts_with = "local")]
    pub(crate) url: Option<String>,

    /// Work in this process on DATA_DIR instead of asking a running host (for `send`,
    /// `replay`, `approve`, `reject` and `cancel`: start the services here for the length of
    /// the command)
    #[arg(long)]
    pub(crate) local: bool,
}

/// Arguments of `send`.
#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// What to build, in plain language
    #[arg(long)]
    pub(crate) text: String,

    /// Print every report event of the task as it happens (otherwise only the last one), and
    /// follow a task that waits for approval on to its end (on a host or a broker)
    #[arg(long)]
    pub(crate) wait: bool,

    /// Print the task id and exit once the task is enqueued, without following it
    #[arg(long, conflicts_with_all = ["wait", "local"])]
    pub(crate) no_wait: bool,

    /// Stop the task once its LLM calls spent this many tokens [default: TASK_MAX_TOKENS,
    /// else no limit]
    #[arg(long, value_name = "N", value_parser = parse_tokens, allow_negative_numbers = true)]
    pub(crate) max_tokens: Option<u64>,

    /// Stop the task once its LLM calls cost this many US dollars [default:
    /// TASK_MAX_COST_USD, else no limit]
    #[arg(long, value_name = "USD", value_parser = parse_cost, allow_negative_numbers = true)]
    pub(crate) max_cost: Option<f64>,

    /// Stop the task once it ran this long: 600, 90s, 10m, 2h [default: TASK_MAX_WALL_TIME,
    /// else no limit]
    #[arg(long, value_name = "DURATION", value_parser = parse_wall_time)]
    pub(crate) max_wall_time: Option<u64>,

    /// Rounds of Implement → Test → Review the task gets to pass its gates [default:
    /// TASK_MAX_ROUNDS, else GATE_ROUNDS]
    #[arg(long, value_name = "N", value_parser = parse_rounds, allow_negative_numbers = true)]
    pub(crate) max_rounds: Option<u32>,

    /// Wait for a person's approval (`agent-host approve`) before the change is published
    /// [default: REQUIRE_APPROVAL]
    #[arg(long, conflicts_with = "no_approval")]
    pub(crate) require_approval: bool,

    /// Publish the change without waiting for approval, whatever REQUIRE_APPROVAL says
    #[arg(long)]
    pub(crate) no_approval: bool,

    /// Change this existing git repository instead of starting from nothing: a path (made
    /// absolute here when it exists) or a URL the workers can clone
    #[arg(long, value_name = "PATH|URL")]
    pub(crate) repo: Option<String>,

    /// The branch, tag or commit of --repo the change starts from [default: its default
    /// branch]
    #[arg(long, value_name = "REF", requires = "repo")]
    pub(crate) base_ref: Option<String>,

    /// The test command of --repo, run before and after the change [default: detected from
    /// its files]
    #[arg(long, value_name = "COMMAND", requires = "repo")]
    pub(crate) test_command: Option<String>,

    /// When the change is published, also push it to --repo as the branch agent/<task_id>
    /// (the workers need write access to it)
    #[arg(long, requires = "repo")]
    pub(crate) push: bool,

    /// How to reach the pipeline.
    #[command(flatten)]
    pub(crate) host: HostArgs,
}

impl SendArgs {
    /// The task these arguments ask for: the text, with the limits and the approval
    /// requirement given (the rest is the pipeline's defaults).
    pub(crate) fn task(&self) -> NewTask {
        let mut task = NewTask::new(self.text.clone());
        let budget = Budget {
            max_tokens: self.max_tokens,
            max_cost_usd: self.max_cost,
            max_wall_time_secs: self.max_wall_time,
            max_rounds: self.max_rounds,
        };
        if !budget.is_unlimited() {
            task = task.with_budget(budget);
        }
        if self.require_approval {
            task = task.with_approval(true);
        } else if self.no_approval {
            task = task.with_approval(false);
        }
        if let Some(url) = &self.repo {
            // A local path is given relative to where the command runs, not the workers.
            let url = std::path::Path::new(url)
                .canonicalize()
                .map(|path| path.display().to_string())
                .unwrap_or_else(|_| url.clone());
            task = task.on_repository(Repository {
                url,
                base_ref: self.base_ref.clone(),
                test_command: self.test_command.clone(),
                push: self.push,
            });
        }
        task
    }
}

/// Arguments of `replay`.
#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// The task (a UUID, as printed by `send` and `tasks`)
    #[arg(long, value_name = "ID")]
    pub(crate) task_id: String,

    /// The step to run again: design@v1, implement@v1, test@v1 or review@v1
    #[arg(long, value_name = "STEP")]
    pub(crate) step: String,

    /// Why, recorded in the new attempt's artifact
    #[arg(long, value_name = "TEXT")]
    pub(crate) reason: Option<String>,

    /// Run the step with this model instead of the configured one
    #[arg(long, value_name = "MODEL")]
    pub(crate) model: Option<String>,

    /// Send the step's LLM calls to this provider: `offline`, or a name of LLM_PROVIDERS
    /// [default: the configured server]
    #[arg(long, value_name = "NAME")]
    pub(crate) provider: Option<String>,

    /// Run the step with the edited task prompt in FILE (this attempt only)
    #[arg(long, value_name = "FILE")]
    pub(crate) prompt_file: Option<PathBuf>,

    /// Use the JSON object in FILE as the output of an upstream step instead of its
    /// artifact, e.g. --input design@v1=design.json (repeatable)
    #[arg(long = "input", value_name = "STEP=FILE")]
    pub(crate) inputs: Vec<String>,

    /// Run the later stages again from the new attempt once it succeeds, and follow the task
    /// to its end
    #[arg(long = "continue")]
    pub(crate) continue_downstream: bool,

    /// How to reach the pipeline.
    #[command(flatten)]
    pub(crate) host: HostArgs,
}

/// Arguments of `approve`, `reject` and `cancel`.
#[derive(Debug, Args)]
pub(crate) struct ControlArgs {
    /// The task (a UUID, as printed by `send` and `tasks`)
    #[arg(value_name = "TASK_ID")]
    pub(crate) task_id: String,

    /// Who decides, recorded with the decision
    #[arg(long, value_name = "NAME")]
    pub(crate) by: Option<String>,

    /// Why, recorded with the decision
    #[arg(long, value_name = "TEXT")]
    pub(crate) comment: Option<String>,

    /// How to reach the pipeline.
    #[command(flatten)]
    pub(crate) host: HostArgs,
}

/// Arguments of `tasks`.
#[derive(Debug, Args)]
pub(crate) struct TasksArgs {
    /// Print one JSON object per task and line instead of a table
    #[arg(long)]
    pub(crate) json: bool,

    /// How to reach the pipeline.
    #[command(flatten)]
    pub(crate) host: HostArgs,
}

/// Arguments of `show`.
#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// The task (a UUID)
    pub(crate) task_id: String,

    /// Print the task, its attempts and its artifacts as one JSON document
    #[arg(long)]
    pub(crate) json: bool,

    /// How to reach the pipeline.
    #[command(flatten)]
    pub(crate) host: HostArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_is_the_default_and_global_flags_go_anywhere() -> Result<(), clap::Error> {
        let cli = Cli::try_parse_from(["agent-host", "--data-dir", "d"])?;
        assert!(cli.command.is_none());
        let cli = Cli::try_parse_from(["agent-host", "tasks", "--config", "c.json", "--json"])?;
        assert_eq!(cli.config, Some(PathBuf::from("c.json")));
        assert!(matches!(
            cli.command,
            Some(Command::Tasks(TasksArgs { json: true, .. }))
        ));
        Ok(())
    }

    #[test]
    fn each_service_has_a_command_with_its_instance() -> Result<(), clap::Error> {
        let cli = Cli::try_parse_from([
            "agent-host",
            "worker",
            "--instance",
            "1",
            "--instances",
            "2",
            "--bus",
            "kafka",
        ])?;
        assert_eq!(cli.bus, Some(BusKind::Kafka));
        assert!(matches!(
            cli.command,
            Some(Command::Worker(ServiceArgs {
                instance: Some(1),
                instances: Some(2)
            }))
        ));
        for name in ["planner", "orchestrator", "ci-monitor"] {
            let cli = Cli::try_parse_from(["agent-host", name])?;
            assert!(cli.command.is_some(), "{name}");
        }
        assert!(Cli::try_parse_from(["agent-host", "worker", "--instances", "0"]).is_err());
        assert!(Cli::try_parse_from(["agent-host", "--bus", "rabbitmq"]).is_err());
        Ok(())
    }

    /// The task `agent-host send --text x <extra>` enqueues.
    fn send(extra: &[&str]) -> Result<NewTask, clap::Error> {
        let mut args = vec!["agent-host", "send", "--text", "x"];
        args.extend_from_slice(extra);
        match Cli::try_parse_from(args)?.command {
            Some(Command::Send(args)) => Ok(args.task()),
            _ => Err(clap::Error::new(clap::error::ErrorKind::InvalidSubcommand)),
        }
    }

    #[test]
    fn send_flags_become_the_task_s_budget_and_approval() -> Result<(), clap::Error> {
        let plain = send(&[])?;
        assert_eq!((plain.budget, plain.require_approval), (None, None));
        let limited = send(&[
            "--max-tokens",
            "500",
            "--max-cost",
            "0.25",
            "--max-wall-time",
            "10m",
            "--max-rounds",
            "2",
            "--require-approval",
        ])?;
        assert_eq!(
            limited.budget,
            Some(Budget {
                max_tokens: Some(500),
                max_cost_usd: Some(0.25),
                max_wall_time_secs: Some(600),
                max_rounds: Some(2),
            })
        );
        assert_eq!(limited.require_approval, Some(true));
        assert_eq!(send(&["--no-approval"])?.require_approval, Some(false));
        for bad in [
            &["--max-cost", "-1"][..],
            &["--max-tokens", "0"],
            &["--max-wall-time", "soon"],
            &["--require-approval", "--no-approval"],
            &["--base-ref", "main"],
            &["--test-command", "make test"],
            &["--push"],
        ] {
            assert!(send(bad).is_err(), "{bad:?}");
        }
        Ok(())
    }

    #[test]
    fn send_flags_name_the_repository_with_local_paths_made_absolute() -> Result<(), clap::Error> {
        let remote = send(&[
            "--repo",
            "https://example.com/shop.git",
            "--base-ref",
            "v1.2",
            "--test-command",
            "make test",
            "--push",
        ])?;
        assert_eq!(
            remote.repository,
            Some(
                Repository::new("https://example.com/shop.git")
                    .at("v1.2")
                    .with_test_command("make test")
                    .with_push()
            )
        );
        let here =
            std::env::current_dir().map_err(|_| clap::Error::new(clap::error::ErrorKind::Io))?;
        let local = send(&["--repo", "."])?;
        assert_eq!(
            local.repository.map(|repository| repository.url),
            Some(here.display().to_string())
        );
        Ok(())
    }

    #[test]
    fn decisions_take_the_task_and_who_and_why() -> Result<(), clap::Error> {
        let cli = Cli::try_parse_from([
            "agent-host",
            "reject",
            "3f0c8a52-6a3e-4c1e-9d1e-5b8f2f6f4a10",
            "--by",
            "ada",
            "--comment",
            "not this way",
            "--local",
        ])?;
        let Some(Command::Reject(args)) = cli.command else {
            return Err(clap::Error::new(clap::error::ErrorKind::InvalidSubcommand));
        };
        assert_eq!(args.by.as_deref(), Some("ada"));
        assert!(args.host.local);
        for name in ["approve", "cancel"] {
            assert!(
                Cli::try_parse_from(["agent-host", name, "x"]).is_ok(),
                "{name}"
            );
        }
        Ok(())
    }
}
