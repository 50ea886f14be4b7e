//! `replay`: run one step of a task again, on the running host, through the broker (or, with
//! `--local`, in this process).

use std::future::Future;
use std::process::ExitCode;

use agent_pipeline::wire::{ReportEvent, ReportStatus};
use agent_pipeline::{Attempt, Error, StepId, TaskId};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use reqwest::StatusCode;

use super::bus::{Connecting, connect, follow_reports, pipeline_on};
use super::send::Events;
use super::{
    INTERRUPTED, Target, build_pipeline, event_line, no_such_task, open_existing_stores,
    parse_task_id,
};
use crate::cli::ReplayArgs;
use crate::client::HostClient;
use crate::config::Config;
use crate::progress::Progress;
use crate::views::{self, TaskDetails};

/// Checks the ids, asks for the replay where `--local` and `--url` say, and waits for its
/// outcome.
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
    let target = Target::to_work(config, &args.host)?;
    let request = Request {
        task_id,
        step,
        reason: args.reason.as_deref(),
    };
    match &target {
        Target::Local => replay_local(config, &target, &request).await,
        Target::Host(client) => replay_on_host(config, &target, client, &request).await,
        Target::Bus => replay_on_bus(config, &target, &request).await,
    }
}

/// One replay asked for.
#[derive(Debug)]
struct Request<'a> {
    /// The task.
    task_id: TaskId,
    /// The step to run again.
    step: StepId,
    /// Why, when the user said.
    reason: Option<&'a str>,
}

/// Starts the services in this process, replays the step on them and stops them.
async fn replay_local(config: &Config, target: &Target, request: &Request<'_>) -> Result<ExitCode> {
    let Request { task_id, step, .. } = *request;
    let pipeline = build_pipeline(config, false).await?;

    // Checked and enqueued before the services start: a refusal then starts nothing, and the
    // in-memory bus keeps the command for the planner.
    let since = Utc::now();
    let reason = request.reason.map(str::to_owned);
    match pipeline.replay(task_id, step, reason).await {
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
        pipeline
            .wait_replay(task_id, step, since)
            .await
            .context("cannot follow the replay's reports")
    };
    let interrupted = format!(
        "interrupted: the replay of {step} is unfinished; `agent-host run` resumes its unfinished steps"
    );
    let outcome = wait(outcome, step, &interrupted).await;
    running.shutdown().await;

    let Some(event) = outcome? else {
        return Ok(ExitCode::from(INTERRUPTED));
    };
    if let Some(failed) = print_outcome(request, &event, since) {
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
        print_files(&details, step, event.attempt);
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks the running host for the replay and follows the task's events there.
async fn replay_on_host(
    config: &Config,
    target: &Target,
    client: &HostClient,
    request: &Request<'_>,
) -> Result<ExitCode> {
    let Request { task_id, step, .. } = *request;
    // Subscribed before asking, so that the outcome cannot come before this command listens.
    let stream = client.events(Some(task_id)).await?;
    let since = Utc::now();
    if let Err(error) = client.replay(task_id, step, request.reason).await {
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
    let mut events = Events::from_host(stream, task_id);
    let outcome = async move {
        loop {
            let event = events.recv().await?;
            // Events of the same step from before the request belong to an earlier run.
            if event.timestamp >= since && is_outcome_of(&event, step) {
                return Ok(event);
            }
        }
    };
    let interrupted = format!(
        "interrupted: the replay of {step} goes on on the host; `agent-host show {task_id}` \
         tells how it ends"
    );
    let Some(event) = wait(outcome, step, &interrupted).await? else {
        return Ok(ExitCode::from(INTERRUPTED));
    };
    if let Some(failed) = print_outcome(request, &event, since) {
        return Ok(failed);
    }
    let details = client
        .task(task_id)
        .await
        .context("cannot ask the host for the replay's files")?;
    print_files(&details, step, event.attempt);
    Ok(ExitCode::SUCCESS)
}

/// Checks the step against `DATA_DIR`, publishes the replay command to the broker and
/// follows the task's events on the report topic.
async fn replay_on_bus(
    config: &Config,
    target: &Target,
    request: &Request<'_>,
) -> Result<ExitCode> {
    let Request { task_id, step, .. } = *request;
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
    match pipeline
        .replay(task_id, step, request.reason.map(str::to_owned))
        .await
    {
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
    let mut events = Events::from_bus(reports, task_id);
    let outcome = async move {
        loop {
            let event = events.recv().await?;
            if is_outcome_of(&event, step) {
                return Ok(event);
            }
        }
    };
    let interrupted = format!(
        "interrupted: the replay of {step} goes on on the broker's services; `agent-host show \
         {task_id}` tells how it ends"
    );
    let Some(event) = wait(outcome, step, &interrupted).await? else {
        return Ok(ExitCode::from(INTERRUPTED));
    };
    if let Some(failed) = print_outcome(request, &event, since) {
        return Ok(failed);
    }
    let details = views::task_details(stores.state.as_ref(), stores.artifacts.as_ref(), task_id)
        .await
        .context("cannot read the replay's files")?;
    if let Some(details) = details {
        print_files(&details, step, event.attempt);
    }
    Ok(ExitCode::SUCCESS)
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
async fn wait(
    outcome: impl Future<Output = Result<ReportEvent>>,
    step: StepId,
    interrupted: &str,
) -> Result<Option<ReportEvent>> {
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

/// Prints the outcome's line; when the replay failed, also why, and returns the exit code.
fn print_outcome(
    request: &Request<'_>,
    event: &ReportEvent,
    since: DateTime<Utc>,
) -> Option<ExitCode> {
    println!("{}", event_line(event, since));
    if event.status == ReportStatus::Replayed {
        return None;
    }
    let summary = event
        .summary
        .strip_prefix("error: ")
        .unwrap_or(&event.summary);
    eprintln!(
        "replay of {} of task {} ended in error: {summary}",
        request.step, request.task_id
    );
    Some(ExitCode::FAILURE)
}

/// Prints the new attempt's own file (a step replayed before it ever ran has none) and the
/// canonical file.
fn print_files(details: &TaskDetails, step: StepId, attempt: Option<Attempt>) {
    let Some(view) = details.steps.iter().find(|view| view.step == step) else {
        return;
    };
    let own_file = view
        .attempts
        .iter()
        .find(|a| Some(a.attempt) == attempt)
        .and_then(|a| a.file.as_ref());
    if let (Some(attempt), Some(file)) = (attempt, own_file) {
        println!("attempt {attempt}: {file}");
    }
    if let Some(file) = &view.file {
        println!("canonical: {file}");
    }
}
