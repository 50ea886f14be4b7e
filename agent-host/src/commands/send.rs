//! `send`: submit a task and run it to its end in this process.

use std::process::ExitCode;

use agent_pipeline::wire::{ReportEvent, ReportStatus};
use agent_pipeline::{Pipeline, TaskId};
use anyhow::{Context, Result};
use chrono::Utc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{INTERRUPTED, build_pipeline, event_line};
use crate::cli::SendArgs;
use crate::config::Config;
use crate::progress::Progress;

/// Starts the services, submits the task, follows it to `done` or `error` and says where its
/// artifacts are.
pub(crate) async fn send(config: &Config, args: &SendArgs) -> Result<ExitCode> {
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
            .submit(args.text.as_str())
            .await
            .context("cannot submit the task")?;
        println!("task {task_id}");
        let last = tokio::select! {
            last = follow(&pipeline, task_id, args.wait, start, ci_wait(config)) => last?,
            interrupted = tokio::signal::ctrl_c() => {
                interrupted.context("cannot listen for Ctrl-C")?;
                eprintln!("interrupted: task {task_id} is unfinished; `agent-host run` resumes its unfinished steps");
                return Ok(None);
            }
        };
        Ok::<_, anyhow::Error>(Some((task_id, last)))
    }
    .await;
    running.shutdown().await;

    let Some((task_id, last)) = outcome? else {
        return Ok(ExitCode::from(INTERRUPTED));
    };
    if !args.wait {
        println!("{}", event_line(&last, start));
    }
    let task_dir = pipeline.artifacts().task_dir(task_id);
    println!("artifacts: {}/", task_dir.display());
    if last.status == ReportStatus::Done {
        Ok(ExitCode::SUCCESS)
    } else {
        let summary = last
            .summary
            .strip_prefix("error: ")
            .unwrap_or(&last.summary);
        eprintln!("task {task_id} ended in error: {summary}");
        Ok(ExitCode::FAILURE)
    }
}

/// How long `send` waits for the CI check after `done`: the check's own time limit, and some
/// time to check the branch out.
fn ci_wait(config: &Config) -> Duration {
    config.execution.limits.timeout + Duration::from_secs(30)
}

/// Follows the task's report events until its `done` or `error` event, and after `done`
/// until the ci-monitor's `ci` check of the published change (for at most `ci_wait`),
/// printing each one when `print_all`, and showing progress meanwhile. Returns the final
/// event.
async fn follow(
    pipeline: &Pipeline,
    task_id: TaskId,
    print_all: bool,
    start: chrono::DateTime<Utc>,
    ci_wait: Duration,
) -> Result<ReportEvent> {
    let mut events = Events::of(pipeline, task_id).await?;
    let mut progress = Progress::new();
    let mut ticker = progress.ticker();
    let mut done: Option<ReportEvent> = None;
    let ci_deadline = tokio::time::sleep(Duration::MAX);
    tokio::pin!(ci_deadline);
    loop {
        tokio::select! {
            event = events.recv() => {
                let event = event
                    .context("the pipeline stopped before the task ended")?
                    .context("cannot follow the task's reports")?;
                progress.clear();
                if print_all || done.is_some() {
                    println!("{}", event_line(&event, start));
                }
                progress.on_event(&event);
                match (&event.status, done.take()) {
                    (ReportStatus::Ci, Some(done)) => return Ok(done),
                    (ReportStatus::Done, _) => {
                        ci_deadline.as_mut().reset(tokio::time::Instant::now() + ci_wait);
                        done = Some(event);
                    }
                    (status, _) if status.is_final() => return Ok(event),
                    (_, earlier) => done = earlier,
                }
            }
            () = &mut ci_deadline, if done.is_some() => {
                progress.clear();
                eprintln!("no ci report within {}s; the check goes on without this command", ci_wait.as_secs());
                return done.context("the task's done event");
            }
            _ = ticker.tick() => progress.tick(),
        }
    }
}

/// The report events of one task, received by a task of their own: a report that was
/// received but not acknowledged would hold back the task's later reports, so receiving must
/// never be cancelled half-way (as `select!` would do to [`ReportWatch::next`]).
///
/// [`ReportWatch::next`]: agent_pipeline::ReportWatch::next
#[derive(Debug)]
struct Events {
    /// The events, as the receiving task gets them.
    receiver: mpsc::Receiver<agent_pipeline::Result<ReportEvent>>,
    /// The receiving task, stopped on drop.
    receiving: tokio::task::JoinHandle<()>,
}

impl Events {
    /// Starts receiving the events of `task_id`, from its first.
    async fn of(pipeline: &Pipeline, task_id: TaskId) -> Result<Self> {
        let mut watch = pipeline
            .watch(task_id)
            .await
            .context("cannot follow the task's reports")?;
        let (sender, receiver) = mpsc::channel(64);
        let receiving = tokio::spawn(async move {
            loop {
                let event = watch.next().await;
                let failed = event.is_err();
                if sender.send(event).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Self {
            receiver,
            receiving,
        })
    }

    /// The next event; `None` when receiving stopped.
    async fn recv(&mut self) -> Option<agent_pipeline::Result<ReportEvent>> {
        self.receiver.recv().await
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.receiving.abort();
    }
}
