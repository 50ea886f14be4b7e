//! The consume loop every service shares: receive, handle, acknowledge.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::Deps;
use crate::Result;
use crate::bus::{BusError, Delivery, Subscription};
use crate::metrics::ConsumerMetrics;

/// Handles one delivery of a topic.
///
/// An error means the infrastructure failed (a store or the bus), not the message: the
/// delivery is tried again a few times, then dead-lettered with the error.
#[async_trait]
pub(crate) trait Handler: Send + Sync + 'static {
    async fn handle(&self, delivery: &Delivery) -> Result<()>;

    /// Gives up on a delivery that failed every try: dead-letters it with `reason`. A
    /// handler whose messages someone waits on an answer to (the planner's new tasks) also
    /// gives that answer.
    async fn give_up(&self, deps: &Deps, delivery: &Delivery, reason: &str) -> Result<()> {
        deps.dead_letter(delivery, reason).await
    }
}

/// How often a delivery is handled again after an infrastructure error.
const HANDLING_TRIES: u32 = 5;

/// How long a stopping consumer waits for the handlers under way.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How a consumer ends when it is told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnStop {
    /// Take no more messages.
    Stop,
    /// First handle what is already waiting on the topic (the mirrors, stopped last, so that
    /// the files hold every event the other services published).
    Drain,
}

/// How long a draining consumer waits for one more message before it stops.
const DRAIN_IDLE: Duration = Duration::from_millis(100);

/// Consumes `topic` as `group` until `shutdown` turns true, running up to `concurrency`
/// handlers at once (the bus keeps each key's messages in order). The topic's metrics are
/// registered at the call, so that they exist as soon as the service is started.
pub(crate) fn run_consumer(
    deps: Deps,
    topic: String,
    group: &'static str,
    concurrency: usize,
    handler: Arc<dyn Handler>,
    on_stop: OnStop,
    mut shutdown: watch::Receiver<bool>,
) -> impl Future<Output = Result<(), BusError>> + Send {
    let metrics = ConsumerMetrics::of(&topic);
    async move {
        let subscription: Arc<dyn Subscription> = deps.bus.subscribe(&topic, group).await?;
        let slots = Arc::new(Semaphore::new(concurrency.max(1)));
        let mut running = JoinSet::new();
        tracing::debug!(%topic, group, "consumer started");
        loop {
            let permit = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break,
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let delivery = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break,
                delivery = subscription.next() => delivery?,
            };
            let unacknowledged = metrics.received(&delivery);
            let span = delivery_span(&delivery, group);
            let (deps, handler, subscription) =
                (deps.clone(), handler.clone(), subscription.clone());
            running.spawn(
                async move {
                    handle_with_retries(&deps, handler.as_ref(), &delivery).await;
                    if let Err(error) = subscription.ack(delivery.receipt).await {
                        tracing::error!(%error, topic = %delivery.topic, "acknowledgement failed; the message will come again");
                    }
                    drop(unacknowledged);
                    drop(permit);
                }
                .instrument(span),
            );
            // Reap finished handlers so the set does not grow.
            while running.try_join_next().is_some() {}
        }
        // Handlers under way get a grace period to finish (an orchestrator between its effects
        // and its state change, a worker publishing its result). Those still running after it are
        // dropped with their subscription handle, so the bus delivers their messages again.
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(%topic, group, "handlers still running after {SHUTDOWN_GRACE:?}; their messages will be delivered again");
            running.abort_all();
            while running.join_next().await.is_some() {}
        }
        if on_stop == OnStop::Drain {
            while let Ok(delivery) = tokio::time::timeout(DRAIN_IDLE, subscription.next()).await {
                let delivery = delivery?;
                let unacknowledged = metrics.received(&delivery);
                let span = delivery_span(&delivery, group);
                handle_with_retries(&deps, handler.as_ref(), &delivery)
                    .instrument(span)
                    .await;
                subscription.ack(delivery.receipt).await?;
                drop(unacknowledged);
            }
        }
        if let Err(error) = subscription.close().await {
            tracing::warn!(%error, %topic, group, "could not leave the group cleanly; its partitions move to others once their leases expire");
        }
        tracing::debug!(%topic, group, "consumer stopped");
        Ok(())
    }
}

/// The span of one delivery's handling: where it came from, and the task its key names.
fn delivery_span(delivery: &Delivery, group: &'static str) -> tracing::Span {
    tracing::info_span!(
        "message",
        topic = %delivery.topic,
        group,
        partition = delivery.receipt.partition,
        offset = delivery.receipt.offset,
        task_id = %delivery.key,
    )
}

async fn handle_with_retries(deps: &Deps, handler: &dyn Handler, delivery: &Delivery) {
    let mut wait = Duration::from_millis(100);
    for attempt in 1..=HANDLING_TRIES {
        match handler.handle(delivery).await {
            Ok(()) => return,
            Err(error) if attempt < HANDLING_TRIES => {
                tracing::warn!(%error, topic = %delivery.topic, key = %delivery.key, attempt, "handling failed; trying again");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(error) => {
                let reason = format!("could not be handled after {HANDLING_TRIES} tries: {error}");
                if let Err(dlq_error) = handler.give_up(deps, delivery, &reason).await {
                    tracing::error!(%dlq_error, %reason, "giving up on the message failed too (its dead letter or its report); it is dropped");
                }
            }
        }
    }
}
