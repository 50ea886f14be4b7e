//! Retry limits and exponential backoff with jitter.

use std::time::Duration;

/// How often a failing step is tried, and how long to wait in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries per run of a step, the first included (default 3).
    pub max_attempts: u32,
    /// The wait after the first failure, before jitter (default 500 ms).
    pub base_delay: Duration,
    /// The longest wait (default 30 s).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait after try `failed_try` (from 1) failed: `base × 2^(failed_try − 1)`, capped at
    /// `max_delay`, of which the upper half is scaled by `jitter` in `[0, 1)` ("equal jitter":
    /// never less than half the exponential delay, so retries spread out but still back off).
    ///
    /// ```
    /// use std::time::Duration;
    /// use agent_pipeline::machine::RetryPolicy;
    /// let policy = RetryPolicy::default();
    /// assert_eq!(policy.backoff(1, 0.0), Duration::from_millis(250));
    /// assert_eq!(policy.backoff(2, 0.0), Duration::from_millis(500));
    /// assert!(policy.backoff(3, 0.99) < Duration::from_millis(2000));
    /// ```
    pub fn backoff(&self, failed_try: u32, jitter: f64) -> Duration {
        let exponent = failed_try.saturating_sub(1).min(30);
        let exponential = self
            .base_delay
            .saturating_mul(1u32 << exponent)
            .min(self.max_delay);
        let half = exponential / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// A number in `[0, 1)` for backoff jitter. uuid's v4 generator is already a dependency and
/// draws from the operating system, so no random-number crate is needed.
pub fn random_jitter() -> f64 {
    let bits = uuid::Uuid::new_v4().as_u128() >> 75;
    bits as f64 / (1u64 << 53) as f64
}
