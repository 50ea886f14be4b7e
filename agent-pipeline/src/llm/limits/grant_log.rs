//! The calls let through during the last window: how many, how many tokens, and when.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// What a budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dimension {
    /// HTTP requests: each grant counts one.
    Requests,
    /// Tokens: each grant counts its tokens.
    Tokens,
}

/// One grant.
#[derive(Debug, Clone, Copy)]
struct Entry {
    id: u64,
    at: Instant,
    requests: u64,
    tokens: u64,
}

/// The grants of the rolling window `(now - window, now]`, with their sums.
#[derive(Debug)]
pub(crate) struct GrantLog {
    window: Duration,
    entries: VecDeque<Entry>,
    requests: u64,
    tokens: u64,
    next_id: u64,
}

impl GrantLog {
    /// An empty log of a rolling `window`.
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window,
            entries: VecDeque::new(),
            requests: 0,
            tokens: 0,
            next_id: 0,
        }
    }

    /// An id for a grant that is not recorded (nothing needs the log).
    pub(crate) fn skip(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Records a grant of `requests` requests (0 or 1) and `tokens` tokens at `at`; returns its
    /// id for [`GrantLog::correct`].
    pub(crate) fn record(&mut self, at: Instant, requests: u64, tokens: u64) -> u64 {
        let id = self.skip();
        self.entries.push_back(Entry {
            id,
            at,
            requests,
            tokens,
        });
        self.requests += requests;
        self.tokens += tokens;
        id
    }

    /// Forgets the grants that left the window by `now`.
    pub(crate) fn prune(&mut self, now: Instant) {
        while let Some(oldest) = self.entries.front() {
            if oldest.at + self.window > now {
                break;
            }
            self.requests -= oldest.requests;
            self.tokens -= oldest.tokens;
            self.entries.pop_front();
        }
    }

    /// Replaces the tokens of grant `id` (an estimate) with what it really used, if the grant
    /// is still in the window.
    pub(crate) fn correct(&mut self, id: u64, tokens: u64) {
        let index = self.entries.binary_search_by_key(&id, |e| e.id).ok();
        if let Some(entry) = index.and_then(|i| self.entries.get_mut(i)) {
            self.tokens = self.tokens - entry.tokens + tokens;
            entry.tokens = tokens;
        }
    }

    /// The requests and tokens granted after `instant` (and still in the window).
    pub(crate) fn since(&self, instant: Instant) -> (u64, u64) {
        self.entries
            .iter()
            .rev()
            .take_while(|e| e.at > instant)
            .fold((0, 0), |(r, t), e| (r + e.requests, t + e.tokens))
    }

    /// The earliest instant from `now` (after [`GrantLog::prune`]) at which the window has
    /// room for `cost` more of `dimension` under `limit`. A cost above the limit needs an
    /// empty window, so that it runs at all.
    pub(crate) fn room_at(
        &self,
        now: Instant,
        dimension: Dimension,
        limit: u64,
        cost: u64,
    ) -> Instant {
        let weight = |e: &Entry| match dimension {
            Dimension::Requests => e.requests,
            Dimension::Tokens => e.tokens,
        };
        let cost = cost.min(limit);
        let mut used = match dimension {
            Dimension::Requests => self.requests,
            Dimension::Tokens => self.tokens,
        };
        if used + cost <= limit {
            return now;
        }
        for entry in &self.entries {
            used -= weight(entry);
            if used + cost <= limit {
                return (entry.at + self.window).max(now);
            }
        }
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(60);

    #[test]
    fn room_comes_back_when_the_oldest_grants_leave_the_window() {
        let start = Instant::now();
        let mut log = GrantLog::new(WINDOW);
        for i in 0..3 {
            log.record(start + Duration::from_secs(i), 1, 100);
        }
        let now = start + Duration::from_secs(10);
        log.prune(now);
        assert_eq!(log.room_at(now, Dimension::Requests, 4, 1), now);
        assert_eq!(
            log.room_at(now, Dimension::Requests, 3, 1),
            start + WINDOW,
            "the first grant leaves at 60 s"
        );
        assert_eq!(
            log.room_at(now, Dimension::Tokens, 300, 150),
            start + WINDOW + Duration::from_secs(1),
            "150 tokens need two grants gone"
        );
        assert_eq!(
            log.room_at(now, Dimension::Tokens, 300, 1_000),
            start + WINDOW + Duration::from_secs(2),
            "a call above the limit waits for an empty window"
        );
        log.prune(start + WINDOW);
        assert_eq!(log.since(start), (2, 200));
    }

    #[test]
    fn corrections_change_the_sums() {
        let start = Instant::now();
        let mut log = GrantLog::new(WINDOW);
        let a = log.record(start, 1, 100);
        let b = log.record(start + Duration::from_secs(1), 1, 100);
        let unrecorded = log.skip();
        log.correct(unrecorded, 7);
        log.correct(b, 40);
        assert_eq!(log.since(start), (1, 40));
        log.prune(start + WINDOW);
        log.correct(a, 1_000);
        assert_eq!(log.tokens, 40, "a pruned grant is not corrected");
        assert_eq!(log.requests, 1);
    }
}
