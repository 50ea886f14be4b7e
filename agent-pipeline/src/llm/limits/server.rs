//! What a server says about its rate limits in the headers of one answer.

use std::time::Duration;

use tokio::time::Instant;

/// `x-ratelimit-remaining-requests`.
const REMAINING_REQUESTS: &str = "x-ratelimit-remaining-requests";
/// `x-ratelimit-remaining-tokens`.
const REMAINING_TOKENS: &str = "x-ratelimit-remaining-tokens";
/// `x-ratelimit-reset-requests`.
const RESET_REQUESTS: &str = "x-ratelimit-reset-requests";
/// `x-ratelimit-reset-tokens`.
const RESET_TOKENS: &str = "x-ratelimit-reset-tokens";
/// `retry-after-ms` (OpenAI's, in milliseconds).
const RETRY_AFTER_MS: &str = "retry-after-ms";
/// `retry-after` (seconds; HTTP dates are not read).
const RETRY_AFTER: &str = "retry-after";

/// The rate-limit headers of one HTTP answer, read by [`ServerLimits::from_headers`] and
/// reported to a [`RateLimitFeedback`](super::RateLimitFeedback).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// When the request was sent: grants made after it are not counted in the remaining
    /// budgets yet.
    pub sent_at: Instant,
    /// Whether the answer was HTTP 429 (Too Many Requests).
    pub rate_limited: bool,
    /// `x-ratelimit-remaining-requests`.
    pub remaining_requests: Option<u64>,
    /// `x-ratelimit-reset-requests`: until the request budget is full again.
    pub reset_requests: Option<Duration>,
    /// `x-ratelimit-remaining-tokens`.
    pub remaining_tokens: Option<u64>,
    /// `x-ratelimit-reset-tokens`: until the token budget is full again.
    pub reset_tokens: Option<Duration>,
    /// `retry-after-ms`, else `retry-after` in seconds.
    pub retry_after: Option<Duration>,
}

impl ServerLimits {
    /// Reads the headers through `header(name)` (lower-case names, values as text).
    ///
    /// ```
    /// use std::time::Duration;
    /// use agent_pipeline::llm::ServerLimits;
    /// let headers = [("x-ratelimit-remaining-requests", "0"), ("x-ratelimit-reset-requests", "1m30.5s")];
    /// let header = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    /// let limits = ServerLimits::from_headers(tokio::time::Instant::now(), false, header);
    /// assert_eq!(limits.remaining_requests, Some(0));
    /// assert_eq!(limits.reset_requests, Some(Duration::from_millis(90_500)));
    /// ```
    pub fn from_headers<'a>(
        sent_at: Instant,
        rate_limited: bool,
        header: impl Fn(&str) -> Option<&'a str>,
    ) -> Self {
        let text = |name: &str| header(name).map(str::trim).filter(|v| !v.is_empty());
        let count = |name: &str| text(name).and_then(|v| v.parse::<u64>().ok());
        let reset = |name: &str| text(name).and_then(parse_duration);
        let retry_after_ms = text(RETRY_AFTER_MS)
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|ms| ms.is_finite() && *ms >= 0.0)
            .map(|ms| Duration::from_secs_f64(ms.min(u32::MAX as f64) / 1000.0));
        let retry_after_s = || {
            text(RETRY_AFTER)
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_secs)
        };
        Self {
            sent_at,
            rate_limited,
            remaining_requests: count(REMAINING_REQUESTS),
            reset_requests: reset(RESET_REQUESTS),
            remaining_tokens: count(REMAINING_TOKENS),
            reset_tokens: reset(RESET_TOKENS),
            retry_after: retry_after_ms.or_else(retry_after_s),
        }
    }

    /// Whether the answer said nothing about limits (and was not a 429).
    pub fn is_empty(&self) -> bool {
        !self.rate_limited
            && self.remaining_requests.is_none()
            && self.remaining_tokens.is_none()
            && self.retry_after.is_none()
    }
}

/// Reads a duration as OpenAI writes them in `x-ratelimit-reset-*`: `1s`, `6m0s`, `120ms`,
/// `1m30.5s`, `2h0m0s`, `500us`, `10ns`; a bare number is seconds. `None` when it is none of
/// those.
///
/// ```
/// use std::time::Duration;
/// use agent_pipeline::llm::parse_duration;
/// assert_eq!(parse_duration("6m0s"), Some(Duration::from_secs(360)));
/// assert_eq!(parse_duration("120ms"), Some(Duration::from_millis(120)));
/// assert_eq!(parse_duration("soon"), None);
/// ```
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(seconds) = text.parse::<f64>() {
        return seconds_to_duration(seconds);
    }
    let mut total = 0.0_f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += number * seconds_per_unit;
    }
    seconds_to_duration(total)
}

fn seconds_to_duration(seconds: f64) -> Option<Duration> {
    // `try_`: more seconds than a `Duration` holds (`1e20`, `99999999999999h`) are no
    // duration rather than a panic.
    (seconds.is_finite() && seconds >= 0.0)
        .then(|| Duration::try_from_secs_f64(seconds).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_reset_formats_are_read() {
        let cases = [
            ("1s", 1_000),
            ("6m0s", 360_000),
            ("120ms", 120),
            ("1m30.5s", 90_500),
            ("2h0m0s", 7_200_000),
            ("0.5", 500),
            ("17", 17_000),
        ];
        for (text, millis) in cases {
            assert_eq!(
                parse_duration(text),
                Some(Duration::from_millis(millis)),
                "{text}"
            );
        }
        assert_eq!(parse_duration("250us"), Some(Duration::from_micros(250)));
        // More seconds than a `Duration` holds (a server's header, a setting) are no
        // duration, not a panic.
        for bad in [
            "",
            "s",
            "1x",
            "-1s",
            "1m-3s",
            "m5",
            "1.2.3s",
            "1e20",
            "5130000000000000h",
            "NaN",
            "inf",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn headers_are_read_and_retry_after_ms_wins() {
        let headers = [
            (REMAINING_REQUESTS, "3"),
            (RESET_REQUESTS, "120ms"),
            (REMAINING_TOKENS, "1000"),
            (RESET_TOKENS, "6m0s"),
            (RETRY_AFTER, "2"),
            (RETRY_AFTER_MS, "1500"),
        ];
        let header = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        let now = Instant::now();
        let limits = ServerLimits::from_headers(now, true, header);
        assert_eq!(
            limits,
            ServerLimits {
                sent_at: now,
                rate_limited: true,
                remaining_requests: Some(3),
                reset_requests: Some(Duration::from_millis(120)),
                remaining_tokens: Some(1000),
                reset_tokens: Some(Duration::from_secs(360)),
                retry_after: Some(Duration::from_millis(1500)),
            }
        );
        let only_seconds = |name: &str| (name == RETRY_AFTER).then_some("7");
        let limits = ServerLimits::from_headers(now, true, only_seconds);
        assert_eq!(limits.retry_after, Some(Duration::from_secs(7)));
        let date = |name: &str| (name == RETRY_AFTER).then_some("Wed, 21 Oct 2015 07:28:00 GMT");
        assert_eq!(
            ServerLimits::from_headers(now, false, date).retry_after,
            None
        );
        assert!(ServerLimits::from_headers(now, false, |_| None).is_empty());
    }
}
