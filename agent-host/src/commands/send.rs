//! `send`: submit a task and run it to its end in this process.

use std::process::ExitCode;

use agent_pipeline::wire::{ReportEvent, ReportStatus};
use agent_pipeline::{Pipeline, TaskId};
use anyhow::{Context, Result};
use chrono::Utc;
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
            last = follow(&pipeline, task_id, args.wait, start) => last?,
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

/// Follows the task's report events until its `done` or `error` event, printing each one
/// when `print_all`, and showing progress meanwhile.
async fn follow(
    pipeline: &Pipeline,
    task_id: TaskId,
    print_all: bool,
    start: chrono::DateTime<Utc>,
) -> Result<ReportEvent> {
    let mut events = Events::of(pipeline, task_id).await?;
    let mut progress = Progress::new();
    let mut ticker = progress.ticker();
    loop {
        tokio::select! {
            event = events.recv() => {
                let event = event
                    .context("the pipeline stopped before the task ended")?
                    .context("cannot follow the task's reports")?;
                progress.clear();
                if print_all {
                    println!("{}", event_line(&event, start));
                }
                progress.on_event(&event);
                if event.status.is_final() {
                    return Ok(event);
                }
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
