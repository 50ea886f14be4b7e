//! How a cancellation reaches the steps a worker is running: the worker follows the report
//! topic, and the `error` event of a cancelled task stops that task's steps in this process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use super::Deps;
use crate::bus::FollowFrom;
use crate::ids::TaskId;
use crate::machine::REASON_CANCELLED;
use crate::wire::{ReportEvent, ReportStatus};

/// The tasks whose steps run in this process, each with a flag that a cancellation raises.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cancellations {
    running: Arc<Mutex<HashMap<TaskId, Running>>>,
}

/// The flag of one task, and how many of its steps run.
#[derive(Debug)]
struct Running {
    flag: watch::Sender<bool>,
    steps: usize,
}

impl Cancellations {
    /// Registers a step of `task_id` until the guard is dropped.
    pub(crate) fn register(&self, task_id: TaskId) -> CancelGuard {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = running.entry(task_id).or_insert_with(|| Running {
            flag: watch::channel(false).0,
            steps: 0,
        });
        entry.steps += 1;
        CancelGuard {
            task_id,
            flag: entry.flag.subscribe(),
            owner: self.clone(),
        }
    }

    /// Stops the steps of `task_id` running in this process (none: nothing to do).
    pub(crate) fn cancel(&self, task_id: TaskId) {
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = running.get(&task_id) {
            entry.flag.send_replace(true);
        }
    }

    fn release(&self, task_id: TaskId) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = running.get_mut(&task_id) {
            entry.steps = entry.steps.saturating_sub(1);
            if entry.steps == 0 {
                running.remove(&task_id);
            }
        }
    }
}

/// A step's registration: [`CancelGuard::wait`] ends when its task is cancelled.
#[derive(Debug)]
pub(crate) struct CancelGuard {
    task_id: TaskId,
    flag: watch::Receiver<bool>,
    owner: Cancellations,
}

impl CancelGuard {
    /// Waits until the task is cancelled (for ever when it is not).
    pub(crate) async fn wait(&mut self) {
        if self.flag.wait_for(|cancelled| *cancelled).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.owner.release(self.task_id);
    }
}

/// How long to wait before following the report topic again after a bus error.
const REFOLLOW_DELAY: Duration = Duration::from_secs(1);

/// Follows the report topic until `stop` turns true, cancelling the steps of every task
/// reported cancelled. A task cancelled before a step of it starts is caught by the worker's
/// look at the task's status instead.
pub(crate) async fn follow_cancellations(
    deps: Deps,
    cancellations: Cancellations,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let subscription = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            followed = deps.bus.follow(&deps.topics.reports, FollowFrom::Now) => followed,
        };
        let subscription = match subscription {
            Ok(subscription) => subscription,
            Err(error) => {
                tracing::warn!(%error, "cannot follow the reports for cancellations; trying again");
                tokio::time::sleep(REFOLLOW_DELAY).await;
                continue;
            }
        };
        loop {
            let delivery = tokio::select! {
                _ = stop.wait_for(|stop| *stop) => return,
                delivery = subscription.next() => delivery,
            };
            let delivery = match delivery {
                Ok(delivery) => delivery,
                Err(error) => {
                    tracing::warn!(%error, "following the reports for cancellations failed; following again");
                    tokio::time::sleep(REFOLLOW_DELAY).await;
                    break;
                }
            };
            let _ = subscription.ack(delivery.receipt).await;
            let Ok(event) = serde_json::from_slice::<ReportEvent>(&delivery.payload) else {
                continue;
            };
            if event.status == ReportStatus::Error
                && event.reason.as_deref() == Some(REASON_CANCELLED)
            {
                cancellations.cancel(event.task_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cancellation_reaches_every_step_of_its_task_and_only_those() {
        let cancellations = Cancellations::default();
        let (task, other) = (TaskId::new(), TaskId::new());
        let mut first = cancellations.register(task);
        let mut second = cancellations.register(task);
        let mut unrelated = cancellations.register(other);
        cancellations.cancel(task);
        let waited = tokio::time::timeout(Duration::from_secs(1), async {
            first.wait().await;
            second.wait().await;
        })
        .await;
        assert!(waited.is_ok(), "both steps of the task are stopped");
        let untouched = tokio::time::timeout(Duration::from_millis(50), unrelated.wait()).await;
        assert!(untouched.is_err(), "another task's step goes on");
        drop((first, second, unrelated));
        let running = cancellations.running.lock().map(|r| r.len()).unwrap_or(1);
        assert_eq!(running, 0, "released steps are forgotten");
        // A cancellation with no step running leaves nothing behind.
        cancellations.cancel(task);
        let mut later = cancellations.register(task);
        let fresh = tokio::time::timeout(Duration::from_millis(50), later.wait()).await;
        assert!(
            fresh.is_err(),
            "a step started after the cancellation is not flagged here"
        );
    }
}
