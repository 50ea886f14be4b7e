//! Time spent waiting for LLM budget does not count against a step's timeout.
//!
//! [`timeout_excluding_budget_wait`] runs a future with a task-local clock; the limiter
//! wraps its waits in [`count_as_budget_wait`], which records into that clock; the timeout's
//! deadline moves later by every such wait. A step that waits ten minutes for budget and then
//! takes a minute to answer has taken one minute.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

tokio::task_local! {
    static BUDGET_WAIT: Arc<WaitClock>;
}

/// The budget waits of one timed future.
#[derive(Debug, Default)]
struct WaitClock {
    state: Mutex<WaitState>,
    /// The clock of an enclosing [`timeout_excluding_budget_wait`], which must see the same
    /// waits.
    outer: Option<Arc<WaitClock>>,
}

#[derive(Debug, Default)]
struct WaitState {
    /// Waits that have ended, in total (overlapping waits counted once).
    finished: Duration,
    /// How many waits are under way.
    active: usize,
    /// Since when at least one wait is under way.
    active_since: Option<Instant>,
}

impl WaitClock {
    fn begin(&self, now: Instant) {
        if let Ok(mut state) = self.state.lock() {
            state.active += 1;
            state.active_since.get_or_insert(now);
        }
        if let Some(outer) = &self.outer {
            outer.begin(now);
        }
    }

    fn end(&self, now: Instant) {
        if let Ok(mut state) = self.state.lock() {
            state.active = state.active.saturating_sub(1);
            if state.active == 0
                && let Some(since) = state.active_since.take()
            {
                state.finished += now.saturating_duration_since(since);
            }
        }
        if let Some(outer) = &self.outer {
            outer.end(now);
        }
    }

    /// The time spent waiting up to `now`, a wait under way included.
    fn waited(&self, now: Instant) -> Duration {
        self.state.lock().map_or(Duration::ZERO, |state| {
            state.finished
                + state
                    .active_since
                    .map_or(Duration::ZERO, |since| now.saturating_duration_since(since))
        })
    }
}

/// Ends a wait when dropped, so that a cancelled wait ends too.
struct WaitGuard(Arc<WaitClock>);

impl Drop for WaitGuard {
    fn drop(&mut self) {
        self.0.end(Instant::now());
    }
}

/// Runs `future`, a wait for LLM budget (a concurrency slot, request or token budget, a
/// server's pause): inside [`timeout_excluding_budget_wait`] its time does not count against
/// the timeout. Elsewhere it simply runs `future`.
pub async fn count_as_budget_wait<F: Future>(future: F) -> F::Output {
    let guard = BUDGET_WAIT
        .try_with(|clock| {
            clock.begin(Instant::now());
            WaitGuard(clock.clone())
        })
        .ok();
    let output = future.await;
    drop(guard);
    output
}

/// A step ran out of time, not counting its waits for LLM budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("took longer than {limit:?}, not counting waits for LLM budget")]
pub struct BudgetTimeout {
    /// The time the step was allowed.
    pub limit: Duration,
}

/// Like [`tokio::time::timeout`], except that time spent in [`count_as_budget_wait`]
/// inside `future` (on its task) does not count: the deadline moves later by every such wait,
/// and never passes while one is under way.
///
/// ```
/// use std::time::Duration;
/// use agent_pipeline::llm::{count_as_budget_wait, timeout_excluding_budget_wait};
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
/// let step = async {
///     // Ten seconds waiting for budget, then one second of work.
///     count_as_budget_wait(tokio::time::sleep(Duration::from_secs(10))).await;
///     tokio::time::sleep(Duration::from_secs(1)).await;
///     "done"
/// };
/// assert_eq!(timeout_excluding_budget_wait(Duration::from_secs(2), step).await, Ok("done"));
/// # });
/// ```
///
/// # Errors
///
/// [`BudgetTimeout`] when `future` takes longer than `limit` plus its budget waits; `future`
/// is dropped then.
pub async fn timeout_excluding_budget_wait<F: Future>(
    limit: Duration,
    future: F,
) -> Result<F::Output, BudgetTimeout> {
    let clock = Arc::new(WaitClock {
        outer: BUDGET_WAIT.try_with(Arc::clone).ok(),
        ..WaitClock::default()
    });
    let start = Instant::now();
    let future = BUDGET_WAIT.scope(clock.clone(), future);
    tokio::pin!(future);
    loop {
        let deadline = start + limit + clock.waited(Instant::now());
        tokio::select! {
            biased;
            output = &mut future => return Ok(output),
            () = tokio::time::sleep_until(deadline) => {
                let now = Instant::now();
                if now >= start + limit + clock.waited(now) {
                    return Err(BudgetTimeout { limit });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::sleep;

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn work_beyond_the_limit_times_out() {
        let outcome = timeout_excluding_budget_wait(2 * SECOND, sleep(3 * SECOND)).await;
        assert_eq!(outcome, Err(BudgetTimeout { limit: 2 * SECOND }));
    }

    #[tokio::test(start_paused = true)]
    async fn budget_waits_do_not_count_even_while_they_last() {
        let started = Instant::now();
        let step = async {
            sleep(SECOND).await;
            count_as_budget_wait(sleep(100 * SECOND)).await;
            sleep(SECOND).await;
        };
        assert_eq!(
            timeout_excluding_budget_wait(3 * SECOND, step).await,
            Ok(())
        );
        assert_eq!(started.elapsed(), 102 * SECOND);

        let started = Instant::now();
        let step = async {
            count_as_budget_wait(sleep(100 * SECOND)).await;
            sleep(4 * SECOND).await;
        };
        assert!(
            timeout_excluding_budget_wait(3 * SECOND, step)
                .await
                .is_err()
        );
        assert_eq!(
            started.elapsed(),
            103 * SECOND,
            "the deadline moved by the wait"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn overlapping_waits_count_once_and_reach_an_enclosing_timeout() {
        let step = async {
            let inner = timeout_excluding_budget_wait(100 * SECOND, async {
                let a = count_as_budget_wait(sleep(10 * SECOND));
                let b = count_as_budget_wait(sleep(20 * SECOND));
                tokio::join!(a, b);
            });
            inner.await.is_ok()
        };
        assert_eq!(timeout_excluding_budget_wait(SECOND, step).await, Ok(true));
    }

    #[tokio::test(start_paused = true)]
    async fn outside_a_timeout_a_wait_just_runs() {
        assert_eq!(count_as_budget_wait(async { 7 }).await, 7);
    }
}
