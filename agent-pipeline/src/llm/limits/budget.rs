//! One per-minute budget (requests or tokens): an evenly paced stream of grants that never
//! puts more than the limit into any rolling window.
//!
//! Two rules, both needed:
//!
//! - **Pace** (GCRA with no burst): after a grant of `c` units the next one waits
//!   `c × window / limit`. The budget is spread evenly over the minute, so a fresh start does
//!   not send a whole minute's budget at once: a token bucket holding one minute would let
//!   `limit` through at once and `limit` more during the next 60 s, twice what a server that
//!   counts a rolling minute allows.
//! - **Window**: a grant goes only when the grants of the rolling window plus this one stay
//!   within the limit. Pace alone keeps requests (cost 1) under the limit; tokens vary per
//!   call, and the window rule keeps a large call at the end of a minute from overflowing it.
//!
//! The window is 61 s rather than 60 s: the second of slack absorbs the jitter between when
//! a request leaves and when the server counts it, at the price of 1.6 % of the budget.

use std::time::Duration;

use tokio::time::Instant;

use super::grant_log::{Dimension, GrantLog};

/// The rolling window the budgets count in: a minute plus a second of slack.
pub(crate) const WINDOW: Duration = Duration::from_secs(61);

/// A per-minute budget of `limit` units of one [`Dimension`].
#[derive(Debug)]
pub(crate) struct Budget {
    dimension: Dimension,
    limit: u64,
    /// `WINDOW / limit`: the pace of one unit.
    per_unit: Duration,
    /// The earliest instant of the next grant (GCRA's theoretical arrival time).
    next_free: Option<Instant>,
}

impl Budget {
    /// A budget of `limit` units per minute (counted over [`WINDOW`]).
    pub(crate) fn new(dimension: Dimension, limit: u64) -> Self {
        let limit = limit.max(1);
        Self {
            dimension,
            limit,
            per_unit: Duration::from_secs_f64(WINDOW.as_secs_f64() / limit as f64),
            next_free: None,
        }
    }

    /// The cost of a grant of `tokens` tokens in this budget's units.
    pub(crate) fn cost(&self, requests: u64, tokens: u64) -> u64 {
        match self.dimension {
            Dimension::Requests => requests,
            Dimension::Tokens => tokens,
        }
    }

    /// The earliest instant from `now` at which a grant of `cost` units may go, given the
    /// grants in `log` (pruned to `now`).
    pub(crate) fn ready_at(&self, log: &GrantLog, now: Instant, cost: u64) -> Instant {
        if cost == 0 {
            return now;
        }
        let paced = self.next_free.map_or(now, |t| t.max(now));
        paced.max(log.room_at(now, self.dimension, self.limit, cost))
    }

    /// Takes a grant of `cost` units at `now`.
    pub(crate) fn take(&mut self, now: Instant, cost: u64) {
        let base = self.next_free.map_or(now, |t| t.max(now));
        self.next_free = Some(base + self.spacing(cost));
    }

    /// Moves the pace by `actual - estimated` units once a call's real cost is known: later
    /// for a call that cost more than estimated, earlier for one that cost less.
    pub(crate) fn correct(&mut self, estimated: u64, actual: u64) {
        let Some(next_free) = self.next_free else {
            return;
        };
        self.next_free = Some(if actual >= estimated {
            next_free + self.spacing(actual - estimated)
        } else {
            next_free
                .checked_sub(self.spacing(estimated - actual))
                .unwrap_or(next_free)
        });
    }

    fn spacing(&self, units: u64) -> Duration {
        self.per_unit
            .checked_mul(u32::try_from(units).unwrap_or(u32::MAX))
            .unwrap_or(Duration::MAX / 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Grants as fast as the budget allows for `span`; returns the grant instants.
    fn run(
        budget: &mut Budget,
        log: &mut GrantLog,
        start: Instant,
        span: Duration,
    ) -> Vec<Instant> {
        let mut now = start;
        let mut grants = Vec::new();
        loop {
            log.prune(now);
            now = budget.ready_at(log, now, 1);
            if now >= start + span {
                return grants;
            }
            log.prune(now);
            budget.take(now, 1);
            log.record(now, 1, 0);
            grants.push(now);
        }
    }

    #[test]
    fn a_fresh_start_is_paced_not_a_burst() {
        let start = Instant::now();
        let mut budget = Budget::new(Dimension::Requests, 60);
        let mut log = GrantLog::new(WINDOW);
        let grants = run(&mut budget, &mut log, start, Duration::from_secs(120));
        let first_ten_seconds = grants
            .iter()
            .filter(|g| **g < start + Duration::from_secs(10))
            .count();
        assert_eq!(first_ten_seconds, 10, "one per 61/60 s, not 60 at once");
        assert!(
            (116..=120).contains(&grants.len()),
            "{} grants in 2 minutes",
            grants.len()
        );
        for (i, first) in grants.iter().enumerate() {
            let in_minute = grants[i..]
                .iter()
                .take_while(|g| **g < *first + Duration::from_secs(60))
                .count();
            assert!(
                in_minute <= 60,
                "{in_minute} grants in the minute from grant {i}"
            );
        }
    }

    #[test]
    fn a_correction_moves_the_pace() {
        let start = Instant::now();
        let mut budget = Budget::new(Dimension::Tokens, 6_100);
        let log = GrantLog::new(WINDOW);
        budget.take(start, 100);
        assert_eq!(
            budget.ready_at(&log, start, 100),
            start + Duration::from_secs(1)
        );
        budget.correct(100, 300);
        assert_eq!(
            budget.ready_at(&log, start, 100),
            start + Duration::from_secs(3)
        );
        budget.correct(300, 0);
        assert_eq!(budget.ready_at(&log, start, 100), start);
    }
}
