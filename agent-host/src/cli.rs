//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Runs the agent pipeline (Design → Implement → Test → Review) and inspects what it stored.
///
/// Configuration: defaults < environment < config.local.json (or --config) < flags. Keys:
/// OPENAI_API_KEY, OPENAI_MODEL, OPENAI_BASE_URL, REDPANDA_BROKERS, TASK_TOPIC,
/// STEP_REQUESTS_TOPIC, STEP_RESULTS_TOPIC, REPORT_TOPIC, CI_WATCH_TOPIC, DLQ_TOPIC, DATA_DIR,
/// WEB_ADDR, WEB_TOKEN (and the sandbox, gate and publishing keys of the README).
/// Without OPENAI_API_KEY a clearly labelled offline model runs, so everything works without
/// network access.
#[derive(Debug, Parser)]
#[command(name = "agent-host", version)]
pub(crate) struct Cli {
    /// Where artifacts, reports.jsonl and state.sqlite live [default: DATA_DIR, else ./data]
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,

    /// A JSON object of "VARIABLE": "value" pairs that overrides the environment
    /// [default: ./config.local.json when it exists]
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,

    /// What to do (default: run)
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run every service and the web UI in this process until Ctrl-C (the default)
    ///
    /// The UI and the JSON API are served on WEB_ADDR (default 127.0.0.1:5000). On the
    /// embedded default (in-memory bus, files and SQLite in DATA_DIR) this resumes the steps
    /// that an earlier process left unfinished.
    Run(ServeArgs),
    /// Serve the web UI and JSON API alone, over DATA_DIR
    ///
    /// On the embedded default the bus lives in the process of `agent-host run`, so a `web`
    /// process of its own shows tasks, reports and the dead-letter queue but cannot enqueue or
    /// replay (it says so); use `agent-host run` for that.
    Web(ServeArgs),
    /// Submit a task to the running host and follow it to its end
    ///
    /// Prints the task id, then its progress; the exit code is 0 when the task is done and 1
    /// when it ends in error. With --local the services run in this process instead.
    Send(SendArgs),
    /// Run one step of a task again, on the running host
    ///
    /// The step reruns with the task's prompt and the earlier stages' artifacts, writes a new
    /// attempt (`<step>.attemptN.json`) and updates the canonical artifact; later stages are not
    /// rerun. With --local the services run in this process instead.
    Replay(ReplayArgs),
    /// List every task with its latest status, newest first
    Tasks(TasksArgs),
    /// Show one task: its prompt, status, attempts and artifacts
    Show(ShowArgs),
    /// List the dead-letter queue (DATA_DIR/dead_letters.jsonl), newest last
    Dlq,
}

/// Arguments of `run` and `web`.
#[derive(Debug, Args, Default)]
pub(crate) struct ServeArgs {
    /// Where to serve the UI and API [default: WEB_ADDR, else 127.0.0.1:5000]; port 0 picks
    /// a free port (the address is printed)
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Option<std::net::SocketAddr>,
}

/// How `send`, `replay`, `tasks` and `show` reach the pipeline.
#[derive(Debug, Args, Default)]
pub(crate) struct HostArgs {
    /// The running host's URL [default: http:// and WEB_ADDR, i.e. http://127.0.0.1:5000];
    /// WEB_TOKEN is sent when set
    #[arg(long, value_name = "URL", conflicts_with = "local")]
    pub(crate) url: Option<String>,

    /// Work in this process on DATA_DIR instead of asking a running host (for `send` and
    /// `replay`: start the services here for the length of the command)
    #[arg(long)]
    pub(crate) local: bool,
}

/// Arguments of `send`.
#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// What to build, in plain language
    #[arg(long)]
    pub(crate) text: String,

    /// Print every report event of the task as it happens (otherwise only the last one)
    #[arg(long)]
    pub(crate) wait: bool,

    /// How to reach the pipeline.
    #[command(flatten)]
    pub(crate) host: HostArgs,
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
}
