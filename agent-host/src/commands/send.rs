//! `send`: submit a task to the running host, or straight to the broker (or, with `--local`,
//! run it in this process) and follow it to its end, or until it waits for approval.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use agent_pipeline::bus::Subscription;
use agent_pipeline::store::{FileArtifactStore, MemoryStateStore};
use agent_pipeline::wire::{ReportEvent, ReportStatus};
use agent_pipeline::{Pipeline, TaskId};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;

use super::bus::{Connecting, connect, follow_reports, publish};
use super::{INTERRUPTED, Target, build_pipeline, event_line, spend_line};
use crate::cli::SendArgs;
use crate::client::{EventStream, HostClient};
use crate::config::Config;
use crate::database::ArtifactPlace;
use crate::progress::Progress;

/// Submits the task where `--local`, `--url` and the bus say, follows it to `done` or `error`
/// (or until it awaits approval, unless `--wait`) and says where its artifacts are.
pub(crate) async fn send(config: &Config, args: &SendArgs) -> Result<ExitCode> {
    if args.text.trim().is_empty() {
        anyhow::bail!("the task is empty: say what to build with --text");
    }
    match Target::to_work(config, &args.host)? {
        Target::Local => send_local(config, args).await,
        Target::Host(client) => send_to_host(config, args, &client).await,
        Target::Bus => send_to_bus(config, args).await,
    }
}

/// Starts the services in this process, runs the task on them and stops them.
async fn send_local(config: &Config, args: &SendArgs) -> Result<ExitCode> {
    let pipeline = build_pipeline(config, false).await?;
    let running = pipeline
        .start()
        .await
        .context("cannot start the services")?;
    eprintln!(
        "running the task in this process; model: {}; data: {}",
        config.model_description(),
        pipeline.data_dir().display()
    );

    let start = Utc::now();
    let outcome = async {
        let task_id = pipeline
            .enqueue(args.task())
            .await
            .context("cannot submit the task")?;
        println!("task {task_id}");
        let events = Events::local(&pipeline, task_id).await?;
        let interrupted = format!(
            "interrupted: task {task_id} is unfinished; `agent-host run` resumes its unfinished steps"
        );
        // Nobody else can reach this process's pipeline to approve: a task that waits for
        // approval ends the command even with --wait.
        let following = Following {
            print_all: args.wait,
            past_approval: false,
        };
        let last = follow(events, following, start, ci_wait(config), &interrupted).await?;
        Ok::<_, anyhow::Error>(last.map(|last| (task_id, last)))
    }
    .await;
    running.shutdown().await;

    let Some((task_id, last)) = outcome? else {
        return Ok(ExitCode::from(INTERRUPTED));
    };
    let task_dir = pipeline.artifacts().task_location(task_id);
    Ok(finish(
        task_id,
        &last,
        args.wait,
        start,
        Some(task_dir),
        " --local",
    ))
}

/// Enqueues the task on the running host and follows its events there.
async fn send_to_host(config: &Config, args: &SendArgs, client: &HostClient) -> Result<ExitCode> {
    // Subscribed before enqueuing, so that not even the task's first event can be missed.
    let stream = client.events(None).await?;
    let start = Utc::now();
    let enqueued = client
        .enqueue(&args.task())
        .await
        .context("cannot submit the task")?;
    let task_id = enqueued.task_id;
    eprintln!(
        "the host at {} runs the task (topic {}); its page: {}",
        client.url(),
        enqueued.topic,
        client.task_page(task_id)
    );
    println!("task {task_id}");
    if args.no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    let events = Events::from_host(stream, task_id);
    let interrupted = format!(
        "interrupted: task {task_id} goes on running on the host; `agent-host show {task_id}` \
         or {} tell how it ends",
        client.task_page(task_id)
    );
    let Some(last) = follow(
        events,
        Following::from(args),
        start,
        ci_wait(config),
        &interrupted,
    )
    .await?
    else {
        return Ok(ExitCode::from(INTERRUPTED));
    };
    // The host knows where its data directory is; this process may not even see it.
    let task_dir = match client.task(task_id).await {
        Ok(details) => Some(details.task.dir),
        Err(error) => {
            eprintln!("warning: cannot ask the host where the task's files are: {error:#}");
            None
        }
    };
    let url = if args.host.url.is_some() {
        format!(" --url {}", client.url())
    } else {
        String::new()
    };
    Ok(finish(task_id, &last, args.wait, start, task_dir, &url))
}

/// Publishes the task to the task topic on the broker, as any producer could, and follows
/// its events on the report topic; the services run wherever they run.
async fn send_to_bus(config: &Config, args: &SendArgs) -> Result<ExitCode> {
    // A command keeps no consumer position, so no state store of DATA_DIR is needed (this
    // machine may not even have one).
    let bus = connect(
        config,
        Arc::new(MemoryStateStore::new()),
        Connecting::Command,
    )
    .await?;
    // Following before publishing, so that not even the task's first event can be missed.
    let reports = if args.no_wait {
        None
    } else {
        Some(follow_reports(config, &bus).await?)
    };
    let start = Utc::now();
    let task = args.task();
    let task_id = task.task_id;
    let payload = serde_json::to_vec(&task).context("cannot encode the task")?;
    let topic = &config.topics.tasks;
    publish(config, &bus, topic, &task_id.to_string(), payload).await?;
    eprintln!(
        "published to {topic} on the brokers at {} (REDPANDA_BROKERS); the planner, workers and \
         orchestrator running there take it",
        config.kafka.brokers.join(",")
    );
    println!("task {task_id}");
    let Some(reports) = reports else {
        return Ok(ExitCode::SUCCESS);
    };
    let events = Events::from_bus(reports, task_id);
    let interrupted = format!(
        "interrupted: task {task_id} goes on running on the broker's services; `agent-host show \
         {task_id}` tells how it ends"
    );
    let Some(last) = follow(
        events,
        Following::from(args),
        start,
        ci_wait(config),
        &interrupted,
    )
    .await?
    else {
        return Ok(ExitCode::from(INTERRUPTED));
    };
    Ok(finish(
        task_id,
        &last,
        args.wait,
        start,
        stored_here(config, task_id).await,
        "",
    ))
}

/// Where the task's documents are, when this machine can see them: the services may write
/// to a DATA_DIR on another machine, so files are named only when they are here; documents
/// in the database are everywhere.
async fn stored_here(config: &Config, task_id: TaskId) -> Option<String> {
    match config.artifacts {
        ArtifactPlace::Database => Some(
            config
                .open_stores()
                .await
                .ok()?
                .artifacts
                .task_location(task_id),
        ),
        ArtifactPlace::Files => {
            let dir = FileArtifactStore::new(&config.data_dir).task_dir(task_id);
            tokio::fs::try_exists(&dir)
                .await
                .unwrap_or(false)
                .then(|| dir.display().to_string())
        }
    }
}

/// Prints the outcome: the last event (unless every event was printed), what the task spent,
/// where the files are, and the error that ended the task, if one did, or how to approve it
/// when it waits for that. `reach` is what the decision commands need to reach the same
/// pipeline (` --url …`, ` --local`, or nothing).
fn finish(
    task_id: TaskId,
    last: &ReportEvent,
    printed_all: bool,
    start: DateTime<Utc>,
    task_dir: Option<String>,
    reach: &str,
) -> ExitCode {
    if !printed_all {
        println!("{}", event_line(last, start));
    }
    if let Some(spend) = last.task_spend.filter(|spend| !spend.is_empty()) {
        println!("spent: {}", spend_line(&spend));
    }
    if let Some(task_dir) = task_dir {
        // A directory ends with a slash; a database location (`postgres://…#<task_id>`)
        // stays as it is.
        let slash = if task_dir.contains('#') { "" } else { "/" };
        println!("artifacts: {task_dir}{slash}");
    }
    match last.status {
        ReportStatus::Done => ExitCode::SUCCESS,
        // Waiting for a person is where this command's part ends, not a failure.
        ReportStatus::AwaitingApproval => {
            println!(
                "waiting for approval: run `agent-host approve {task_id}{reach}` to publish the \
                 change, or `agent-host reject {task_id}{reach}`"
            );
            ExitCode::SUCCESS
        }
        _ => {
            let summary = last
                .summary
                .strip_prefix("error: ")
                .unwrap_or(&last.summary);
            let reason = last
                .reason
                .as_deref()
                .map(|reason| format!(" ({reason})"))
                .unwrap_or_default();
            let summary = crate::bidi::escape_for_terminal(summary);
            eprintln!("task {task_id} ended in error{reason}: {summary}");
            ExitCode::FAILURE
        }
    }
}

/// How `send` follows a task.
#[derive(Debug, Clone, Copy)]
struct Following {
    /// Print every event (`--wait`), not only the last.
    print_all: bool,
    /// Go on past `awaiting_approval` until the task ends (`--wait` on a host or a broker,
    /// where another command can approve it).
    past_approval: bool,
}

impl From<&SendArgs> for Following {
    fn from(args: &SendArgs) -> Self {
        Self {
            print_all: args.wait,
            past_approval: args.wait,
        }
    }
}

/// How long `send` waits for the CI check after `done`: the check's own time limit, and some
/// time to check the branch out.
fn ci_wait(config: &Config) -> Duration {
    config.execution.limits.timeout + Duration::from_secs(30)
}

/// Follows the task's report events until its `done` or `error` event (or `awaiting_approval`
/// unless `following.past_approval`), and after `done` until the ci-monitor's `ci` check of
/// the change when one was published (for at most `ci_wait`), printing each one when
/// `following.print_all`, and showing progress meanwhile. Returns the final event, or `None`
/// when Ctrl-C came first (after saying `interrupted`).
async fn follow(
    mut events: Events,
    following: Following,
    start: DateTime<Utc>,
    ci_wait: Duration,
    interrupted: &str,
) -> Result<Option<ReportEvent>> {
    let print_all = following.print_all;
    let mut progress = Progress::new();
    let mut ticker = progress.ticker();
    let mut done: Option<ReportEvent> = None;
    // Whether the task's change was published, so that a `ci` check of it will follow.
    let mut published = false;
    let ci_deadline = tokio::time::sleep(Duration::MAX);
    tokio::pin!(ci_deadline);
    loop {
        tokio::select! {
            event = events.recv() => {
                let event = event?;
                progress.clear();
                if print_all || done.is_some() {
                    println!("{}", event_line(&event, start));
                }
                progress.on_event(&event);
                match (&event.status, done.take()) {
                    (ReportStatus::Pr, earlier) => {
                        published = true;
                        done = earlier;
                    }
                    (ReportStatus::Ci, Some(done)) => return Ok(Some(done)),
                    // Nothing was published (code execution off, or nothing to publish):
                    // no check will follow.
                    (ReportStatus::Done, _) if !published => return Ok(Some(event)),
                    (ReportStatus::Done, _) => {
                        ci_deadline.as_mut().reset(tokio::time::Instant::now() + ci_wait);
                        done = Some(event);
                    }
                    (status, _) if status.is_final() => return Ok(Some(event)),
                    (ReportStatus::AwaitingApproval, _) if !following.past_approval => {
                        return Ok(Some(event));
                    }
                    (ReportStatus::AwaitingApproval, earlier) => {
                        eprintln!(
                            "waiting for approval: `agent-host approve {}` publishes the change",
                            event.task_id
                        );
                        done = earlier;
                    }
                    (_, earlier) => done = earlier,
                }
            }
            () = &mut ci_deadline, if done.is_some() => {
                progress.clear();
                eprintln!("no ci report within {}s; the check goes on without this command", ci_wait.as_secs());
                return done.context("the task's done event").map(Some);
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

/// The report events of one task, from the pipeline of this process or from a running host,
/// received by a task of their own: a report that was received but not acknowledged would
/// hold back the task's later reports, so receiving must never be cancelled half-way (as
/// `select!` would do to [`ReportWatch::next`]).
///
/// [`ReportWatch::next`]: agent_pipeline::ReportWatch::next
#[derive(Debug)]
pub(super) struct Events {
    /// The events, as the receiving task gets them.
    receiver: mpsc::Receiver<Result<ReportEvent>>,
    /// The receiving task, stopped on drop.
    receiving: tokio::task::JoinHandle<()>,
    /// What it means when the events end before the task did.
    ended: &'static str,
}

impl Events {
    /// Starts receiving the events of `task_id` from the pipeline of this process, from its
    /// first.
    pub(super) async fn local(pipeline: &Pipeline, task_id: TaskId) -> Result<Self> {
        let watch = pipeline
            .watch(task_id)
            .await
            .context("cannot follow the task's reports")?;
        let events = futures_util::stream::unfold(watch, |mut watch| async move {
            let event = watch
                .next()
                .await
                .context("cannot follow the task's reports");
            Some((event, watch))
        });
        Ok(Self::forward(
            events,
            "the pipeline stopped before the task ended",
        ))
    }

    /// The events of `task_id` on a host's event stream (which is ready, so that nothing
    /// from then on is missed).
    pub(super) fn from_host(stream: EventStream, task_id: TaskId) -> Self {
        let events = futures_util::stream::unfold(stream, move |mut stream| async move {
            loop {
                let event = match stream.next().await {
                    Ok(Some(event)) if event.task_id == task_id => Ok(event),
                    Ok(Some(_)) => continue,
                    Ok(None) => return None,
                    Err(error) => {
                        Err(anyhow::Error::new(error).context("cannot follow the task's reports"))
                    }
                };
                return Some((event, stream));
            }
        });
        Self::forward(
            events,
            "the host closed its event stream before the task ended (it is stopping; \
             `agent-host run` resumes unfinished steps when it starts again)",
        )
    }

    /// The events of `task_id` on a reader of the report topic that started before the task
    /// was published.
    pub(super) fn from_bus(reports: Arc<dyn Subscription>, task_id: TaskId) -> Self {
        let events = futures_util::stream::unfold(reports, move |reports| async move {
            loop {
                let delivery = match reports.next().await {
                    Ok(delivery) => delivery,
                    Err(error) => {
                        let error = anyhow::Error::new(error).context("cannot follow the reports");
                        return Some((Err(error), reports));
                    }
                };
                // Acknowledging releases the key's next report; a reader keeps no position.
                if let Err(error) = reports.ack(delivery.receipt).await {
                    let error = anyhow::Error::new(error).context("cannot follow the reports");
                    return Some((Err(error), reports));
                }
                // Other producers' messages and other tasks' reports are not this one's.
                match serde_json::from_slice::<ReportEvent>(&delivery.payload) {
                    Ok(event) if event.task_id == task_id => return Some((Ok(event), reports)),
                    _ => continue,
                }
            }
        });
        Self::forward(events, "the report topic stopped before the task ended")
    }

    /// Receives `events` on a task of their own until one fails or nobody listens.
    fn forward(
        events: impl Stream<Item = Result<ReportEvent>> + Send + 'static,
        ended: &'static str,
    ) -> Self {
        let (sender, receiver) = mpsc::channel(64);
        let receiving = tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                let failed = event.is_err();
                if sender.send(event).await.is_err() || failed {
                    break;
                }
            }
        });
        Self {
            receiver,
            receiving,
            ended,
        }
    }

    /// The next event; an error when receiving failed or stopped.
    pub(super) async fn recv(&mut self) -> Result<ReportEvent> {
        self.receiver.recv().await.context(self.ended)?
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.receiving.abort();
    }
}
