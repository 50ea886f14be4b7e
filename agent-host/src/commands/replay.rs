//! `replay`: run one step of a task again — as it ran, or as a variant with another model or
//! provider, an edited prompt or edited upstream outputs — on the running host, through the
//! broker (or, with `--local`, in this process).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::process::ExitCode;

use agent_pipeline::wire::{ReplayStep, ReportEvent, ReportStatus};
use agent_pipeline::{Attempt, Error, StepId, TaskId};
use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Map, Value};

use super::bus::{Connecting, connect, follow_reports, pipeline_on};
use super::send::Events;
use super::{
    INTERRUPTED, Target, build_pipeline, event_line, no_such_task, open_existing_stores,
    parse_task_id, spend_line,
};
use crate::cli::ReplayArgs;
use crate::client::HostClient;
use crate::config::Config;
use crate::progress::Progress;
use crate::views::{self, TaskDetails};
use crate::web::ReplayRequest;

/// Checks the ids and the variant, asks for the replay where `--local` and `--url` say, and
/// waits for its outcome (with `--continue`, for the end of the task).
pub(crate) async fn replay(config: &Config, args: &ReplayArgs) -> Result<ExitCode> {
    let task_id = parse_task_id(&args.task_id)?;
    let step: StepId = args
        .step
        .trim()
        .parse()
        .with_context(|| format!("invalid step {:?}", args.step))?;
    // The library refuses other versions too; checked here first so that nothing is opened.
    if step != StepId::v1(step.stage()) {
        anyhow::bail!(
            "unknown step {step}: this pipeline runs {}",
            StepId::v1(step.stage())
        );
    }
    let command = replay_command(task_id, step, args)?;
    let target = Target::to_work(config, &args.host)?;
    match &target {
        Target::Local => replay_local(config, &target, command).await,
        Target::Host(client) => replay_on_host(config, &target, client, command).await,
        Target::Bus => replay_on_bus(config, &target, command).await,
    }
}

/// The replay command the arguments ask for, with the edited prompt and inputs read from
/// their files; refused here, before anything is opened, when the library would refuse it.
fn replay_command(task_id: TaskId, step: StepId, args: &ReplayArgs) -> Result<ReplayStep> {
    let prompt = match &args.prompt_file {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the prompt file {}", path.display()))?;
            if text.trim().is_empty() {
                bail!("the prompt file {} is empty", path.display());
            }
            Some(text)
        }
    };
    let mut inputs = BTreeMap::new();
    for spec in &args.inputs {
        let (input, file) = spec.split_once('=').with_context(|| {
            format!("--input {spec:?} is not STEP=FILE, e.g. design@v1=design.json")
        })?;
        let input: StepId = input
            .trim()
            .parse()
            .with_context(|| format!("--input {spec:?}: invalid step {input:?}"))?;
        let output = read_output(Path::new(file.trim()), input)?;
        if inputs.insert(input, output).is_some() {
            bail!("--input gives {input} twice");
        }
    }
    let command = ReplayStep {
        model: args.model.clone(),
        provider: args.provider.clone(),
        prompt,
        inputs,
        continue_downstream: args.continue_downstream,
        ..ReplayStep::new(task_id, step, args.reason.clone())
    };
    command
        .check()
        .map_err(|problem| anyhow::anyhow!("replay of {step} refused: {problem}"))?;
    Ok(command)
}

/// The edited output of `step` in `file`: a JSON object, as the step's artifact holds it.
fn read_output(file: &Path, step: StepId) -> Result<Map<String, Value>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the input file {}", file.display()))?;
    let value: Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "the input file {} is not JSON (it holds the output of {step})",
            file.display()
        )
    })?;
    match value {
        Value::Object(object) => Ok(object),
        _ => bail!(
            "the input file {} must hold a JSON object, the output of {step} (e.g. its \
             artifact's fields)",
            file.display()
        ),
    }
}

/// Starts the services in this process, replays the step on them and stops them.
async fn replay_local(config: &Config, target: &Target, command: ReplayStep) -> Result<ExitCode> {
    let (task_id, step) = (command.task_id, command.step_id);
    let continues = command.continue_downstream;
    let pipeline = build_pipeline(config, false).await?;

    // Checked and enqueued before the services start: a refusal then starts nothing, and the
    // in-memory bus keeps the command for the planner.
    let since = Utc::now();
    match pipeline.replay_variant(command).await {
        Ok(()) => {}
        Err(Error::TaskNotFound(_)) => {
            return Err(no_such_task(task_id, target, &config.data_dir));
        }
        Err(error) => return Err(error).with_context(|| format!("replay of {step} refused")),
    }
    let running = pipeline
        .start()
        .await
        .context("cannot start the services")?;
    eprintln!(
        "replaying {step} of task {task_id} in this process; model: {}",
        config.model_description()
    );
    let outcome = async {
        let events = Events::local(&pipeline, task_id).await?;
        // The in-memory bus of this process holds no older event of the task, but a clock
        // is the same here: nothing earlier than the request is its outcome.
        outcome_of(events, step, Some(since), continues).await
    };
    let interrupted = format!(
        "interrupted: the replay of {step} is unfinished; `agent-host run` resumes its unfinished steps"
    );
    let outcome = wait(outcome, step, &interrupted).await;
    running.shutdown().await;

    let Some(outcome) = outcome? else {
        return Ok(ExitCode::from(INTERRUPTED));
    };
    if let Some(failed) = print_outcome(task_id, step, &outcome, since) {
        return Ok(failed);
    }
    let details = views::task_details(
        pipeline.state().as_ref(),
        pipeline.artifacts().as_ref(),
        task_id,
    )
    .await
    .context("cannot read the replay's files")?;
    if let Some(details) = details {
        print_files(&details, step, outcome.replayed.attempt);
    }
    Ok(outcome.exit_code())
}

/// Asks the running host for the replay and follows the task's events there.
async fn replay_on_host(
    config: &Config,
    target: &Target,
    client: &HostClient,
    command: ReplayStep,
) -> Result<ExitCode> {
    let (task_id, step) = (command.task_id, command.step_id);
    let continues = command.continue_downstream;
    // Subscribed before asking, so that the outcome cannot come before this command listens.
    let stream = client.events(Some(task_id)).await?;
    let since = Utc::now();
    let body = ReplayRequest {
        step: step.to_string(),
        reason: command.reason,
        model: command.model,
        provider: command.provider,
        prompt: command.prompt,
        inputs: command.inputs,
        continue_downstream: command.continue_downstream,
    };
    if let Err(error) = client.replay(task_id, &body).await {
        return Err(match (error.status(), error.host_message()) {
            (Some(StatusCode::NOT_FOUND), _) => no_such_task(task_id, target, &config.data_dir),
            (Some(StatusCode::BAD_REQUEST | StatusCode::CONFLICT), Some(message)) => {
                anyhow::anyhow!("replay of {step} refused: {message}")
            }
            _ => error.into(),
        });
    }
    eprintln!(
        "replaying {step} of task {task_id} on the host at {}",
        client.url()
    );
    let events = Events::from_host(stream, task_id);
    // Events of the same step from before the request belong to an earlier run.
    let outcome = outcome_of(events, step, Some(since), continues);
    let interrupted = format!(
        "interrupted: the replay of {step} goes on on the host; `agent-host show {task_id}` \
         tells how it ends"
    );
    let Some(outcome) = wait(outcome, step, &interrupted).await? else {
        return Ok(ExitCode::from(INTERRUPTED));
    };
    if let Some(failed) = print_outcome(task_id, step, &outcome, since) {
        return Ok(failed);
    }
    let details = client
        .task(task_id)
        .await
        .context("cannot ask the host for the replay's files")?;
    print_files(&details, step, outcome.replayed.attempt);
    Ok(outcome.exit_code())
}

/// Checks the step against `DATA_DIR`, publishes the replay command to the broker and
/// follows the task's events on the report topic.
async fn replay_on_bus(config: &Config, target: &Target, command: ReplayStep) -> Result<ExitCode> {
    let (task_id, step) = (command.task_id, command.step_id);
    let continues = command.continue_downstream;
    // The check reads the stores the services write; without a database there is no task.
    let Some(stores) = open_existing_stores(config).await? else {
        return Err(no_such_task(task_id, target, &config.data_dir));
    };
    let bus = connect(config, stores.state.clone(), Connecting::Command).await?;
    // Following before publishing, so that the outcome cannot come before this command
    // listens; and from now on only, so that no earlier replay's outcome is taken for it.
    let reports = follow_reports(config, &bus).await?;
    let pipeline = pipeline_on(config, &stores, bus).await?;
    let since = Utc::now();
    match pipeline.replay_variant(command).await {
        Ok(()) => {}
        Err(Error::TaskNotFound(_)) => {
            return Err(no_such_task(task_id, target, &config.data_dir));
        }
        Err(error) => return Err(error).with_context(|| format!("replay of {step} refused")),
    }
    eprintln!(
        "replaying {step} of task {task_id} through the brokers at {} (topic {})",
        config.kafka.brokers.join(","),
        config.topics.tasks
    );
    let events = Events::from_bus(reports, task_id);
    // The reader starts now: no time filter, which the services' clocks might defeat.
    let outcome = outcome_of(events, step, None, continues);
    let interrupted = format!(
        "interrupted: the replay of {step} goes on on the broker's services; `agent-host show \
         {task_id}` tells how it ends"
    );
    let Some(outcome) = wait(outcome, step, &interrupted).await? else {
        return Ok(ExitCode::from(INTERRUPTED));
    };
    if let Some(failed) = print_outcome(task_id, step, &outcome, since) {
        return Ok(failed);
    }
    let details = views::task_details(stores.state.as_ref(), stores.artifacts.as_ref(), task_id)
        .await
        .context("cannot read the replay's files")?;
    if let Some(details) = details {
        print_files(&details, step, outcome.replayed.attempt);
    }
    Ok(outcome.exit_code())
}

/// What came of a replay.
#[derive(Debug)]
struct Outcome {
    /// The step's `replayed` event, or the `error` that refused or ended the replay.
    replayed: ReportEvent,
    /// With `--continue`, the event that ended the continued run: `done`, `error` or
    /// `awaiting_approval`.
    continued: Option<ReportEvent>,
}

impl Outcome {
    /// 0 when the replay (and the run it continued) succeeded or waits for approval.
    fn exit_code(&self) -> ExitCode {
        let last = self.continued.as_ref().unwrap_or(&self.replayed);
        match last.status {
            ReportStatus::Replayed | ReportStatus::Done | ReportStatus::AwaitingApproval => {
                ExitCode::SUCCESS
            }
            _ => ExitCode::FAILURE,
        }
    }
}

/// Waits in `events` (from `since`, when given) for the outcome of the replay of `step`: its
/// `replayed` event or the `error` that refused or ended it; when `continues` and it was
/// replayed, then for the end of the run it continued.
async fn outcome_of(
    mut events: Events,
    step: StepId,
    since: Option<DateTime<Utc>>,
    continues: bool,
) -> Result<Outcome> {
    let mut replayed: Option<ReportEvent> = None;
    loop {
        let event = events.recv().await?;
        if since.is_some_and(|since| event.timestamp < since) {
            continue;
        }
        match replayed.take() {
            None if is_outcome_of(&event, step) => {
                if continues && event.status == ReportStatus::Replayed {
                    replayed = Some(event);
                } else {
                    return Ok(Outcome {
                        replayed: event,
                        continued: None,
                    });
                }
            }
            None => {}
            Some(earlier) => {
                let ends =
                    event.status.is_final() || event.status == ReportStatus::AwaitingApproval;
                if ends {
                    return Ok(Outcome {
                        replayed: earlier,
                        continued: Some(event),
                    });
                }
                replayed = Some(earlier);
            }
        }
    }
}

/// Whether `event` ends a replay of `step`: its `replayed` event, or the `error` that
/// refused or ended it (as [`Pipeline::wait_replay`] decides in this process).
///
/// [`Pipeline::wait_replay`]: agent_pipeline::Pipeline::wait_replay
fn is_outcome_of(event: &ReportEvent, step: StepId) -> bool {
    event.stage == Some(step)
        && matches!(event.status, ReportStatus::Replayed | ReportStatus::Error)
}

/// Waits for `outcome`, showing which step runs meanwhile; `None` when Ctrl-C came first
/// (after saying `interrupted`).
async fn wait<T>(
    outcome: impl Future<Output = Result<T>>,
    step: StepId,
    interrupted: &str,
) -> Result<Option<T>> {
    let mut progress = Progress::new();
    progress.set_running(Some(step));
    let mut ticker = progress.ticker();
    tokio::pin!(outcome);
    loop {
        tokio::select! {
            event = &mut outcome => {
                progress.clear();
                return event.map(Some);
            }
            _ = ticker.tick() => progress.tick(),
            signal = tokio::signal::ctrl_c() => {
                signal.context("cannot listen for Ctrl-C")?;
                progress.clear();
                eprintln!("{interrupted}");
                return Ok(None);
            }
        }
    }
}

/// Prints the outcome's lines; when the replay (or the run it continued) failed, also why,
/// and returns the exit code.
fn print_outcome(
    task_id: TaskId,
    step: StepId,
    outcome: &Outcome,
    since: DateTime<Utc>,
) -> Option<ExitCode> {
    let event = &outcome.replayed;
    println!("{}", event_line(event, since));
    if event.status != ReportStatus::Replayed {
        let summary = event
            .summary
            .strip_prefix("error: ")
            .unwrap_or(&event.summary);
        let summary = crate::bidi::escape_for_terminal(summary);
        eprintln!("replay of {step} of task {task_id} ended in error: {summary}");
        return Some(ExitCode::FAILURE);
    }
    if let Some(last) = &outcome.continued {
        println!("{}", event_line(last, since));
        if last.status == ReportStatus::Error {
            let summary = last
                .summary
                .strip_prefix("error: ")
                .unwrap_or(&last.summary);
            let summary = crate::bidi::escape_for_terminal(summary);
            eprintln!("the run continued from {step} of task {task_id} ended in error: {summary}");
        }
    }
    None
}

/// Prints the new attempt's own file (a step replayed before it ever ran has none), what it
/// ran with and spent, and the canonical file.
fn print_files(details: &TaskDetails, step: StepId, attempt: Option<Attempt>) {
    let Some(view) = details.steps.iter().find(|view| view.step == step) else {
        return;
    };
    let own = view.attempts.iter().find(|a| Some(a.attempt) == attempt);
    if let (Some(attempt), Some(file)) = (attempt, own.and_then(|a| a.file.as_ref())) {
        println!("attempt {attempt}: {file}");
    }
    if let Some(own) = own {
        let model = crate::bidi::escape_for_terminal(own.model.as_deref().unwrap_or("-"));
        println!("  model {model}, spent {}", spend_line(&own.spend));
        if let Some(variant) = own.variant.as_ref().and_then(super::show::describe_variant) {
            println!("  variant: {}", crate::bidi::escape_for_terminal(&variant));
        }
    }
    if let Some(file) = &view.file {
        println!("canonical: {file}");
    }
}
