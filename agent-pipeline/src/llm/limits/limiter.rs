//! The process-wide limiter every LLM call goes through: a concurrency slot, then request and
//! token budget, then the call.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::budget::{Budget, WINDOW};
use super::estimate::TokenEstimator;
use super::grant_log::{Dimension, GrantLog};
use super::server::ServerLimits;
use super::server_budget::ServerBudget;
use super::wait_clock::count_as_budget_wait;
use crate::llm::{LlmLimits, LlmRequest, Usage};

/// Where an LLM client reports what the server says about its rate limits, and asks before
/// it sends a request again.
///
/// [`OpenAiLlm::with_rate_limit_feedback`](crate::llm::OpenAiLlm::with_rate_limit_feedback)
/// reports into one; [`RateLimiter`] is the implementation.
#[async_trait]
pub trait RateLimitFeedback: Send + Sync + fmt::Debug + 'static {
    /// Takes in the rate-limit headers of one HTTP answer, successful or not (a 429 among
    /// them).
    fn observe(&self, limits: &ServerLimits);

    /// Waits until one more HTTP request may be sent for a call that is already under way
    /// (a retry): it counts against the request budget, not again against the token budget.
    async fn before_retry(&self);
}

/// Permission to send one call, from [`RateLimiter::acquire`]; give it back to
/// [`RateLimiter::settle`] with the call's usage.
#[derive(Debug)]
pub struct Grant {
    id: u64,
    estimated_tokens: u64,
    waited: Duration,
    _slot: Option<OwnedSemaphorePermit>,
}

impl Grant {
    /// How long the call waited for its slot and budget.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// The tokens the call was expected to use.
    pub fn estimated_tokens(&self) -> u64 {
        self.estimated_tokens
    }
}

/// The limits of LLM calls for one process, shared by every caller.
///
/// - **Concurrency**: a semaphore slot held for the whole call.
/// - **Requests and tokens per minute**: evenly paced budgets that never exceed the limit in
///   any rolling minute (see `docs/llm-limits.md`). Tokens are estimated before the call and
///   corrected by the usage the server reports.
/// - **The server's word**: `x-ratelimit-remaining-*` / `x-ratelimit-reset-*` and
///   `Retry-After` reported through [`RateLimitFeedback`] make every caller wait for the reset
///   once the server says a budget is spent.
///
/// Callers wait in turn (first come, first served). Waiting is not a failure: it happens
/// inside [`count_as_budget_wait`], so it does not count against a step's timeout.
///
/// ```
/// use std::num::NonZeroU32;
/// use agent_pipeline::llm::{LlmLimits, RateLimiter};
/// let limiter = RateLimiter::new(&LlmLimits {
///     requests_per_minute: NonZeroU32::new(500),
///     ..LlmLimits::default()
/// });
/// assert_eq!(limiter.limits().requests_per_minute.map(|n| n.get()), Some(500));
/// ```
pub struct RateLimiter {
    limits: LlmLimits,
    slots: Option<Arc<Semaphore>>,
    /// Held by the caller at the head of the queue while it waits for budget; tokio's mutex
    /// is fair, so callers go in the order they came.
    turnstile: tokio::sync::Mutex<()>,
    /// Woken when the budget changes, so that the head of the queue looks again.
    changed: Notify,
    state: Mutex<State>,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// What the limiter knows, behind one lock.
#[derive(Debug)]
struct State {
    log: GrantLog,
    requests: Option<Budget>,
    tokens: Option<Budget>,
    server: ServerBudget,
    estimator: TokenEstimator,
}

impl State {
    fn ready_at(&mut self, now: Instant, requests: u64, tokens: u64) -> Instant {
        self.log.prune(now);
        let mut ready = self.server.ready_at(now, requests, tokens);
        for budget in [&self.requests, &self.tokens].into_iter().flatten() {
            ready = ready.max(budget.ready_at(&self.log, now, budget.cost(requests, tokens)));
        }
        ready
    }

    fn take(&mut self, now: Instant, requests: u64, tokens: u64) -> u64 {
        for budget in [&mut self.requests, &mut self.tokens].into_iter().flatten() {
            let cost = budget.cost(requests, tokens);
            budget.take(now, cost);
        }
        self.server.take(now, requests, tokens);
        // Without budgets or reports of the server, nothing reads the log: at thousands of
        // calls a second it would hold a minute of them for nothing.
        if self.requests.is_some() || self.tokens.is_some() || self.server.reports_remaining() {
            self.log.record(now, requests, tokens)
        } else {
            self.log.skip()
        }
    }
}

impl RateLimiter {
    /// A limiter enforcing `limits`.
    pub fn new(limits: &LlmLimits) -> Self {
        Self {
            limits: *limits,
            slots: limits
                .max_concurrency
                .map(|n| Arc::new(Semaphore::new(n.get().min(Semaphore::MAX_PERMITS)))),
            turnstile: tokio::sync::Mutex::new(()),
            changed: Notify::new(),
            state: Mutex::new(State {
                log: GrantLog::new(WINDOW),
                requests: limits
                    .requests_per_minute
                    .map(|n| Budget::new(Dimension::Requests, u64::from(n.get()))),
                tokens: limits
                    .tokens_per_minute
                    .map(|n| Budget::new(Dimension::Tokens, n.get())),
                server: ServerBudget::default(),
                estimator: TokenEstimator::default(),
            }),
        }
    }

    /// The limits it enforces.
    pub fn limits(&self) -> &LlmLimits {
        &self.limits
    }

    /// Waits for a concurrency slot, then for the budget of one request and of the tokens
    /// `request` is expected to use, and takes them. The wait counts as a
    /// [budget wait](count_as_budget_wait).
    pub async fn acquire(&self, request: &LlmRequest) -> Grant {
        let estimated_tokens = self.state().estimator.estimate(request);
        let started = Instant::now();
        let (slot, id) = count_as_budget_wait(async {
            // The slot first: a call granted budget and then kept waiting for a slot would
            // be sent later than its budget allowed, bunched with others.
            let slot = match &self.slots {
                Some(slots) => slots.clone().acquire_owned().await.ok(),
                None => None,
            };
            (slot, self.take_budget(1, estimated_tokens).await)
        })
        .await;
        Grant {
            id,
            estimated_tokens,
            waited: started.elapsed(),
            _slot: slot,
        }
    }

    /// Gives back a grant once its call ended; `usage` is what the server reported (`None`
    /// or all zero when it reported nothing, and the estimate stands).
    pub fn settle(&self, grant: Grant, usage: Option<&Usage>) {
        let Some(usage) = usage.filter(|u| u.total_tokens > 0) else {
            return;
        };
        let refund = {
            let mut state = self.state();
            state.estimator.learn(usage);
            state.log.correct(grant.id, usage.total_tokens);
            if let Some(tokens) = &mut state.tokens {
                tokens.correct(grant.estimated_tokens, usage.total_tokens);
            }
            usage.total_tokens < grant.estimated_tokens
        };
        if refund {
            self.changed.notify_waiters();
        }
    }

    /// Waits at the head of the queue until `requests` and `tokens` fit every budget, takes
    /// them, and returns the grant's id.
    async fn take_budget(&self, requests: u64, tokens: u64) -> u64 {
        let _turn = self.turnstile.lock().await;
        loop {
            // Listen before looking, so that a change in between is not missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let now = Instant::now();
            let ready = {
                let mut state = self.state();
                let ready = state.ready_at(now, requests, tokens);
                if ready <= now {
                    return state.take(now, requests, tokens);
                }
                ready
            };
            tokio::select! {
                () = tokio::time::sleep_until(ready) => {}
                () = &mut changed => {}
            }
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent between statements, so a panic elsewhere while the lock
        // was held leaves nothing half-done that matters.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl RateLimitFeedback for RateLimiter {
    fn observe(&self, limits: &ServerLimits) {
        if limits.is_empty() {
            return;
        }
        let now = Instant::now();
        {
            let mut state = self.state();
            state.log.prune(now);
            let since = state.log.since(limits.sent_at);
            state.server.observe(limits, now, since);
        }
        if limits.rate_limited {
            tracing::warn!(
                retry_after = ?limits.retry_after,
                "the LLM server answered 429: every call of this process waits"
            );
        }
        // The head of the queue looks again: the budget may have grown or shrunk.
        self.changed.notify_waiters();
    }

    async fn before_retry(&self) {
        count_as_budget_wait(self.take_budget(1, 0)).await;
    }
}
