//! The names of the LLM metrics, recorded through the [`metrics`] facade.
//!
//! The core installs no exporter: a process that wants them installs a recorder (the host
//! serves them on `/metrics` in the Prometheus format). Every series carries the label
//! `model`: the model the settings name, so that the label set stays small.

/// Counter: LLM calls, by `model` and `outcome` (see [`outcome`]).
pub const REQUESTS_TOTAL: &str = "agent_pipeline_llm_requests_total";
/// Counter: tokens the server reported, by `model` and `kind` (`prompt` or `completion`).
pub const TOKENS_TOTAL: &str = "agent_pipeline_llm_tokens_total";
/// What the tokens cost in US dollars, by `model`, from the [`PriceTable`](super::PriceTable)
/// (at the price of the model that answered); only when the table has a price for it.
///
/// It only ever grows, but is recorded as a gauge: the facade's counters count whole
/// numbers, and a cost is a fraction of a dollar.
pub const COST_USD_TOTAL: &str = "agent_pipeline_llm_cost_usd_total";
/// Histogram: seconds one call waited for a concurrency slot and for request and token
/// budget before it was sent (zero when it went at once).
pub const BUDGET_WAIT_SECONDS: &str = "agent_pipeline_llm_budget_wait_seconds";
/// Gauge: calls sent and not yet answered, by `model`.
pub const IN_FLIGHT: &str = "agent_pipeline_llm_in_flight";

/// Every LLM metric name, for documentation and tests.
pub const ALL: [&str; 5] = [
    REQUESTS_TOTAL,
    TOKENS_TOTAL,
    COST_USD_TOTAL,
    BUDGET_WAIT_SECONDS,
    IN_FLIGHT,
];

/// The `outcome` label of [`REQUESTS_TOTAL`] for a call's result: `ok`, or the kind of
/// failure (`rate_limited` for HTTP 429, `unavailable`, `timeout`, `transport`, `refused`,
/// `rejected`, `unauthorized`, `protocol`, `budget_exceeded`, `unknown_provider`).
pub fn outcome<T>(result: &Result<T, super::LlmError>) -> &'static str {
    use super::LlmError;
    match result {
        Ok(_) => "ok",
        Err(LlmError::Unavailable { status: 429, .. }) => "rate_limited",
        Err(LlmError::Unavailable { .. }) => "unavailable",
        Err(LlmError::Timeout(_)) => "timeout",
        Err(LlmError::Transport(_)) => "transport",
        Err(LlmError::Refused(_)) => "refused",
        Err(LlmError::Rejected { .. }) => "rejected",
        Err(LlmError::Unauthorized { .. }) => "unauthorized",
        Err(LlmError::Protocol(_)) => "protocol",
        Err(LlmError::BudgetExceeded(_)) => "budget_exceeded",
        Err(LlmError::UnknownProvider(_)) => "unknown_provider",
    }
}

/// Describes the metrics to the installed recorder (units and help texts); call it once
/// after installing one. Recording works without it.
pub fn describe() {
    metrics::describe_counter!(
        REQUESTS_TOTAL,
        "LLM calls by model and outcome (ok, rate_limited, unavailable, timeout, …)"
    );
    metrics::describe_counter!(
        TOKENS_TOTAL,
        "Tokens the LLM server reported, by model and kind (prompt, completion)"
    );
    metrics::describe_gauge!(
        COST_USD_TOTAL,
        "What the LLM tokens cost in US dollars (list prices, LLM_PRICES), by model"
    );
    metrics::describe_histogram!(
        BUDGET_WAIT_SECONDS,
        metrics::Unit::Seconds,
        "Time an LLM call waited for concurrency, request and token budget before it was sent"
    );
    metrics::describe_gauge!(IN_FLIGHT, "LLM calls sent and not yet answered, by model");
}
