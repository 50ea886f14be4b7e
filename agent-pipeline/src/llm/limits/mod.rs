//! Limits on LLM calls per process: concurrency, requests and tokens per minute, and what the
//! server says in its rate-limit headers. The guide is `docs/llm-limits.md`.

mod budget;
mod estimate;
mod grant_log;
mod limited_llm;
mod limiter;
mod server;
mod server_budget;
mod wait_clock;

#[cfg(feature = "memory")]
pub(crate) use estimate::text_tokens;
pub use limited_llm::RateLimitedLlm;
pub use limiter::{Grant, RateLimitFeedback, RateLimiter};
pub use server::{ServerLimits, parse_duration};
pub use wait_clock::{BudgetTimeout, count_as_budget_wait, timeout_excluding_budget_wait};

#[cfg(test)]
mod tests;
