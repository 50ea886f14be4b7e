//! `approve`, `reject` and `cancel`: a person's decision about a task, sent where `--url`,
//! `--local` and the bus say, after checking that it applies, and followed until the task
//! shows what came of it.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use agent_pipeline::store::{StateStore, TaskStatus};
use agent_pipeline::wire::{ControlAction, ReportEvent, ReportStatus, TaskControl};
use agent_pipeline::{Error, TaskId};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use reqwest::StatusCode;

use super::bus::{Connecting, connect, follow_reports, pipeline_on};
use super::send::Events;
use super::{
    INTERRUPTED, Target, build_pipeline, event_line, no_such_task, open_existing_stores,
    parse_task_id, spend_line,
};
use crate::cli::ControlArgs;
use crate::client::HostClient;
use crate::config::Config;
use crate::web::ControlRequest;

/// How often the task's status is read while waiting for the outcome: the decision's events
/// say what came of it, and the status covers a decision that lost a race (another decision,
/// or the end of the run, came first), after which the planner sends no event of it.
const STATUS_POLL: Duration = Duration::from_secs(2);

/// How long the events may still take once the status says the task ended: the planner
/// records the status before it publishes the events.
const EVENT_GRACE: Duration = Duration::from_secs(3);

/// Sends `action` about the task and waits until it applied; the exit code says whether it
/// did.
pub(crate) async fn control(
    config: &Config,
    args: &ControlArgs,
    action: ControlAction,
) -> Result<ExitCode> {
    let task_id = parse_task_id(&args.task_id)?;
    let control = TaskControl {
        by: args.by.clone(),
        comment: args.comment.clone(),
        ..TaskControl::new(action, task_id)
    };
    let target = Target::to_work(config, &args.host)?;
    match &target {
        Target::Local => control_local(config, &target, control).await,
        Target::Host(client) => control_on_host(config, &target, client, control).await,
        Target::Bus => control_on_bus(config, &target, control).await,
    }
}

/// Starts the services in this process, applies the decision on them and stops them.
async fn control_local(config: &Config, target: &Target, control: TaskControl) -> Result<ExitCode> {
    let (task_id, action) = (control.task_id, control.action);
    let pipeline = build_pipeline(config, false).await?;
    // Checked and sent before the services start: a refusal then starts nothing, and the
    // in-memory bus keeps the decision for the planner.
    let since = Utc::now();
    if let Err(error) = pipeline.control(control).await {
        return Err(refusal(error, task_id, action, target, config));
    }
    let running = pipeline
        .start()
        .await
        .context("cannot start the services")?;
    let outcome = async {
        let events = Events::local(&pipeline, task_id).await?;
        let status = Status::Store(pipeline.state().clone());
        let interrupted = format!(
            "interrupted: the decision is recorded; `agent-host run` (or another `agent-host \
             {} {task_id} --local`) finishes applying it",
            action.as_str()
        );
        wait_for_outcome(events, &status, task_id, since, &interrupted).await
    }
    .await;
    running.shutdown().await;
    report(task_id, action, outcome?)
}

/// Asks the running host for the decision and follows the task's events there.
async fn control_on_host(
    config: &Config,
    target: &Target,
    client: &HostClient,
    control: TaskControl,
) -> Result<ExitCode> {
    let (task_id, action) = (control.task_id, control.action);
    // Subscribed before asking, so that the outcome cannot come before this command listens.
    let stream = client.events(Some(task_id)).await?;
    let since = Utc::now();
    let body = ControlRequest {
        by: control.by,
        comment: control.comment,
    };
    if let Err(error) = client.control(task_id, action, &body).await {
        return Err(match (error.status(), error.host_message()) {
            (Some(StatusCode::NOT_FOUND), _) => no_such_task(task_id, target, &config.data_dir),
            (Some(StatusCode::CONFLICT), Some(message)) => {
                anyhow::anyhow!("{message}{}", why_not(action))
            }
            (Some(StatusCode::BAD_REQUEST), Some(message)) => {
                anyhow::anyhow!("{} refused: {message}", action.as_str())
            }
            _ => error.into(),
        });
    }
    eprintln!(
        "{} sent to the host at {} for task {task_id}; its page: {}",
        action.as_str(),
        client.url(),
        client.task_page(task_id)
    );
    let events = Events::from_host(stream, task_id);
    let status = Status::Host(client.clone());
    let interrupted = format!(
        "interrupted: the host goes on applying the decision; `agent-host show {task_id}` tells \
         how it ends"
    );
    let outcome = wait_for_outcome(events, &status, task_id, since, &interrupted).await?;
    report(task_id, action, outcome)
}

/// Checks the decision against the state store of `DATA_DIR` (or `DATABASE_URL`), publishes
/// it to the broker and follows the task's events on the report topic.
async fn control_on_bus(
    config: &Config,
    target: &Target,
    control: TaskControl,
) -> Result<ExitCode> {
    let (task_id, action) = (control.task_id, control.action);
    // The check reads the stores the services write; without a database there is no task.
    let Some(stores) = open_existing_stores(config).await? else {
        return Err(no_such_task(task_id, target, &config.data_dir));
    };
    let bus = connect(config, stores.state.clone(), Connecting::Command).await?;
    // Following before publishing, so that the outcome cannot come before this command
    // listens.
    let reports = follow_reports(config, &bus).await?;
    let pipeline = pipeline_on(config, &stores, bus).await?;
    let since = Utc::now();
    if let Err(error) = pipeline.control(control).await {
        return Err(refusal(error, task_id, action, target, config));
    }
    eprintln!(
        "{} of task {task_id} published through the brokers at {} (topic {})",
        action.as_str(),
        config.kafka.brokers.join(","),
        config.topics.tasks
    );
    let events = Events::from_bus(reports, task_id);
    let status = Status::Store(stores.state.clone());
    let interrupted = format!(
        "interrupted: the broker's services go on applying the decision; `agent-host show \
         {task_id}` tells how it ends"
    );
    let outcome = wait_for_outcome(events, &status, task_id, since, &interrupted).await?;
    report(task_id, action, outcome)
}

/// The error of a decision the library refused, in the user's terms.
fn refusal(
    error: Error,
    task_id: TaskId,
    action: ControlAction,
    target: &Target,
    config: &Config,
) -> anyhow::Error {
    match error {
        Error::TaskNotFound(_) => no_such_task(task_id, target, &config.data_dir),
        refused @ Error::NotApplicable { .. } => {
            anyhow::anyhow!("{refused}{}", why_not(action))
        }
        other => anyhow::Error::new(other).context(format!("cannot {} the task", action.as_str())),
    }
}

/// What a refusal of `action` means, after the library's "cannot approve task …: it is …".
fn why_not(action: ControlAction) -> &'static str {
    match action {
        ControlAction::Approve | ControlAction::Reject => {
            " (only a task awaiting approval can be approved or rejected)"
        }
        ControlAction::Cancel => " (only a task that has not ended can be cancelled)",
    }
}

/// Where the task's status is read while waiting.
enum Status {
    /// The state store of this process's pipeline, or of `DATA_DIR`.
    Store(Arc<dyn StateStore>),
    /// The running host's API.
    Host(HostClient),
}

impl Status {
    /// The task's status now; `None` when it is not known (gone, or not readable now).
    async fn of(&self, task_id: TaskId) -> Option<TaskStatus> {
        match self {
            Status::Store(state) => state.task(task_id).await.ok().flatten().map(|t| t.status),
            Status::Host(client) => client.task(task_id).await.ok().map(|d| d.task.status),
        }
    }
}

/// What came of a decision: the event that ended the task, or (when no event came) the
/// status it ended with.
#[derive(Debug)]
enum Outcome {
    /// The task's `done` or `error` event (boxed: events are large, the other outcomes
    /// small).
    Event(Box<ReportEvent>),
    /// The status the task ended with, read from the store.
    Status(TaskStatus),
    /// Ctrl-C came first.
    Interrupted,
}

/// Prints the task's events (with the time since `since`, when the decision was sent) until
/// it ends (`done` or `error`), reading its status every [`STATUS_POLL`] in case no event
/// comes.
async fn wait_for_outcome(
    mut events: Events,
    status: &Status,
    task_id: TaskId,
    since: DateTime<Utc>,
    interrupted: &str,
) -> Result<Outcome> {
    let mut poll = tokio::time::interval(STATUS_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When the status said the task ended, and with what.
    let mut ended: Option<(tokio::time::Instant, TaskStatus)> = None;
    loop {
        tokio::select! {
            event = events.recv() => {
                // Each source gives the events from the moment it was opened, before the
                // decision was sent: none of them is older than the decision's check. They are
                // not filtered by time, which the services' clocks may see otherwise.
                let event = event?;
                println!("{}", event_line(&event, since));
                if event.status.is_final() {
                    return Ok(Outcome::Event(Box::new(event)));
                }
            }
            _ = poll.tick() => {
                match ended {
                    Some((at, status)) if at.elapsed() >= EVENT_GRACE => {
                        return Ok(Outcome::Status(status));
                    }
                    Some(_) => {}
                    None => {
                        if let Some(now) = status.of(task_id).await.filter(|s| s.is_final()) {
                            ended = Some((tokio::time::Instant::now(), now));
                        }
                    }
                }
            }
            signal = tokio::signal::ctrl_c() => {
                signal.context("cannot listen for Ctrl-C")?;
                eprintln!("{interrupted}");
                return Ok(Outcome::Interrupted);
            }
        }
    }
}

/// Says what came of the decision; exit code 0 when it applied as asked.
fn report(task_id: TaskId, action: ControlAction, outcome: Outcome) -> Result<ExitCode> {
    let (applied, ended_how) = match &outcome {
        Outcome::Interrupted => return Ok(ExitCode::from(INTERRUPTED)),
        Outcome::Event(event) => {
            let reason = event.reason.as_deref();
            let applied = match action {
                ControlAction::Approve => event.status == ReportStatus::Done,
                ControlAction::Reject => reason == Some("rejected"),
                ControlAction::Cancel => reason == Some("cancelled"),
            };
            if let Some(spend) = event.task_spend.filter(|spend| !spend.is_empty()) {
                println!("spent: {}", spend_line(&spend));
            }
            let how = match reason {
                Some(reason) => format!("`{} ({reason})`: {}", event.status, event.summary),
                None => format!("`{}`: {}", event.status, event.summary),
            };
            (applied, how)
        }
        Outcome::Status(status) => {
            let applied = match action {
                ControlAction::Approve => *status == TaskStatus::Done,
                ControlAction::Reject => *status == TaskStatus::Error,
                ControlAction::Cancel => *status == TaskStatus::Cancelled,
            };
            (applied, format!("`{status}`"))
        }
    };
    if applied {
        let what = match action {
            ControlAction::Approve => "approved: its change is published and the task is done",
            ControlAction::Reject => "rejected: nothing was published",
            ControlAction::Cancel => "cancelled: nothing more runs or is published",
        };
        println!("task {task_id} {what}");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "the {} of task {task_id} did not apply as asked: the task ended {ended_how}",
            action.as_str()
        );
        Ok(ExitCode::FAILURE)
    }
}
