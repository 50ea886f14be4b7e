//! A thread that takes its jobs in batches: whatever waits when it wakes is handled together,
//! so that a burst of writes shares one sync of the disk and one wake-up of the thread.

use std::sync::mpsc;

use tokio::sync::oneshot;

use super::{StoreError, StoreResult};

/// Starts the thread `name`: it hands `handle` every job waiting when it wakes (at most
/// `max_batch`, in order) until every sender is dropped, then drops `handle` (whose `Drop`
/// can finish its work).
pub(crate) fn spawn<J, H>(
    name: &str,
    max_batch: usize,
    mut handle: H,
) -> std::io::Result<mpsc::Sender<J>>
where
    J: Send + 'static,
    H: FnMut(Vec<J>) + Send + 'static,
{
    let (jobs, queue) = mpsc::channel::<J>();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            while let Ok(first) = queue.recv() {
                let mut batch = vec![first];
                batch.extend(queue.try_iter().take(max_batch.saturating_sub(1)));
                handle(batch);
            }
        })?;
    Ok(jobs)
}

/// [`spawn`] for a thread started on first use: if it cannot start, the error is logged and
/// the returned sender's jobs fail ("… has stopped").
pub(crate) fn spawn_or_log<J, H>(name: &str, max_batch: usize, handle: H) -> mpsc::Sender<J>
where
    J: Send + 'static,
    H: FnMut(Vec<J>) + Send + 'static,
{
    spawn(name, max_batch, handle).unwrap_or_else(|error| {
        tracing::error!(thread = name, %error, "a store thread could not start: its writes will fail");
        mpsc::channel().0
    })
}

/// Sends `job` (built around the reply channel) to a batch thread and waits for the reply.
pub(crate) async fn ask<J, T>(
    jobs: &mpsc::Sender<J>,
    what: &str,
    job: impl FnOnce(oneshot::Sender<StoreResult<T>>) -> J,
) -> StoreResult<T> {
    let (done, answer) = oneshot::channel();
    let stopped = || StoreError::Database(format!("the {what} has stopped"));
    jobs.send(job(done)).map_err(|_| stopped())?;
    answer.await.map_err(|_| stopped())?
}
