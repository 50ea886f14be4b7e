//! The budget the server reports in its headers, shared by every caller of the process: when
//! the server says a budget is spent, everybody waits for its reset instead of each caller
//! earning a 429 of its own.

use std::time::Duration;

use tokio::time::Instant;

use super::server::ServerLimits;

/// The longest pause a server's headers may impose on the process: a broken or hostile
/// server must not stop it for a day.
pub(crate) const MAX_SERVER_PAUSE: Duration = Duration::from_secs(600);

/// How long everybody waits after a 429 that names no wait.
pub(crate) const PAUSE_WITHOUT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// What is left of one of the server's budgets until it resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Remaining {
    left: u64,
    reset_at: Instant,
}

impl Remaining {
    /// The reported budget, if it is still current at `now`.
    fn current(this: Option<Self>, now: Instant) -> Option<Self> {
        this.filter(|r| r.reset_at > now)
    }
}

/// The server's view of the budget, as far as its headers tell.
#[derive(Debug, Default)]
pub(crate) struct ServerBudget {
    requests: Option<Remaining>,
    tokens: Option<Remaining>,
    paused_until: Option<Instant>,
}

impl ServerBudget {
    /// The earliest instant from `now` at which the server has room for one request of
    /// `requests` (0 or 1) requests and `tokens` tokens.
    pub(crate) fn ready_at(&self, now: Instant, requests: u64, tokens: u64) -> Instant {
        let mut ready = self.paused_until.map_or(now, |t| t.max(now));
        if let Some(r) = Remaining::current(self.requests, now)
            && r.left < requests
        {
            ready = ready.max(r.reset_at);
        }
        if let Some(t) = Remaining::current(self.tokens, now)
            && t.left < tokens
        {
            ready = ready.max(t.reset_at);
        }
        ready
    }

    /// Whether the server has reported what remains of a budget: from then on the grants
    /// must be logged, to count those its later reports cannot include yet.
    pub(crate) fn reports_remaining(&self) -> bool {
        self.requests.is_some() || self.tokens.is_some()
    }

    /// Counts a grant at `now` against the reported budgets.
    pub(crate) fn take(&mut self, now: Instant, requests: u64, tokens: u64) {
        self.requests = Remaining::current(self.requests, now).map(|r| Remaining {
            left: r.left.saturating_sub(requests),
            ..r
        });
        self.tokens = Remaining::current(self.tokens, now).map(|t| Remaining {
            left: t.left.saturating_sub(tokens),
            ..t
        });
    }

    /// Takes in what one answer's headers say, received at `now`. `granted_since` are the
    /// requests and tokens granted after the request was sent, which the server's counts
    /// cannot include yet.
    pub(crate) fn observe(
        &mut self,
        limits: &ServerLimits,
        now: Instant,
        granted_since: (u64, u64),
    ) {
        let reset = |wait: Duration| now + wait.min(MAX_SERVER_PAUSE);
        if let (Some(left), Some(wait)) = (limits.remaining_requests, limits.reset_requests) {
            self.requests = Some(Remaining {
                left: left.saturating_sub(granted_since.0),
                reset_at: reset(wait),
            });
        }
        if let (Some(left), Some(wait)) = (limits.remaining_tokens, limits.reset_tokens) {
            self.tokens = Some(Remaining {
                left: left.saturating_sub(granted_since.1),
                reset_at: reset(wait),
            });
        }
        let pause = match limits.retry_after {
            Some(wait) => Some(wait),
            // A 429 without Retry-After: wait for the reset of a spent budget, else a moment.
            None if limits.rate_limited => Some(
                [
                    (limits.remaining_requests, limits.reset_requests),
                    (limits.remaining_tokens, limits.reset_tokens),
                ]
                .into_iter()
                .filter_map(|(left, wait)| (left == Some(0)).then_some(wait).flatten())
                .max()
                .unwrap_or(PAUSE_WITHOUT_RETRY_AFTER),
            ),
            None => None,
        };
        if let Some(pause) = pause {
            let until = reset(pause);
            self.paused_until = Some(self.paused_until.map_or(until, |t| t.max(until)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(now: Instant) -> ServerLimits {
        ServerLimits::from_headers(now, false, |_| None)
    }

    #[test]
    fn a_spent_request_budget_waits_for_its_reset() {
        let now = Instant::now();
        let mut budget = ServerBudget::default();
        let said = ServerLimits {
            remaining_requests: Some(2),
            reset_requests: Some(Duration::from_secs(5)),
            ..limits(now)
        };
        budget.observe(&said, now, (1, 0));
        assert_eq!(budget.ready_at(now, 1, 0), now, "one request is left");
        budget.take(now, 1, 0);
        let reset = now + Duration::from_secs(5);
        assert_eq!(budget.ready_at(now, 1, 0), reset);
        assert_eq!(
            budget.ready_at(reset, 1, 0),
            reset,
            "a new budget after the reset"
        );
    }

    #[test]
    fn too_few_tokens_wait_for_their_reset() {
        let now = Instant::now();
        let mut budget = ServerBudget::default();
        let said = ServerLimits {
            remaining_tokens: Some(1_000),
            reset_tokens: Some(Duration::from_millis(1_500)),
            ..limits(now)
        };
        budget.observe(&said, now, (0, 0));
        assert_eq!(budget.ready_at(now, 1, 900), now);
        assert_eq!(
            budget.ready_at(now, 1, 1_100),
            now + Duration::from_millis(1_500)
        );
    }

    #[test]
    fn a_429_pauses_for_retry_after_or_the_spent_reset_or_a_moment() {
        let now = Instant::now();
        let mut budget = ServerBudget::default();
        let with_retry_after = ServerLimits {
            rate_limited: true,
            retry_after: Some(Duration::from_secs(20)),
            ..limits(now)
        };
        budget.observe(&with_retry_after, now, (0, 0));
        assert_eq!(budget.ready_at(now, 0, 0), now + Duration::from_secs(20));

        let mut budget = ServerBudget::default();
        let spent = ServerLimits {
            rate_limited: true,
            remaining_tokens: Some(0),
            reset_tokens: Some(Duration::from_secs(7)),
            ..limits(now)
        };
        budget.observe(&spent, now, (0, 0));
        assert_eq!(budget.ready_at(now, 0, 0), now + Duration::from_secs(7));

        let mut budget = ServerBudget::default();
        let bare = ServerLimits {
            rate_limited: true,
            ..limits(now)
        };
        budget.observe(&bare, now, (0, 0));
        assert_eq!(budget.ready_at(now, 0, 0), now + PAUSE_WITHOUT_RETRY_AFTER);

        let hostile = ServerLimits {
            retry_after: Some(Duration::from_secs(86_400)),
            ..limits(now)
        };
        budget.observe(&hostile, now, (0, 0));
        assert_eq!(budget.ready_at(now, 0, 0), now + MAX_SERVER_PAUSE);
    }
}
