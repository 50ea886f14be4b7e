//! An [`Llm`] whose calls go through a [`RateLimiter`] and are counted in the metrics.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use super::limiter::RateLimiter;
use crate::llm::metrics::{
    BUDGET_WAIT_SECONDS, COST_USD_TOTAL, IN_FLIGHT, REQUESTS_TOTAL, TOKENS_TOTAL, outcome,
};
use crate::llm::{Llm, LlmError, LlmRequest, LlmResponse, PriceTable};

/// Wraps any [`Llm`]: each call waits for a slot and budget of the shared [`RateLimiter`],
/// then runs, then corrects the budget with the usage it reports, and records the LLM
/// [metrics](crate::llm::metrics).
///
/// [`from_settings`](crate::llm::from_settings) builds one around the configured provider.
///
/// ```
/// use std::num::NonZeroUsize;
/// use std::sync::Arc;
/// use agent_pipeline::llm::{InstantLlm, Llm, LlmLimits, RateLimitedLlm, RateLimiter};
/// let limiter = Arc::new(RateLimiter::new(&LlmLimits {
///     max_concurrency: NonZeroUsize::new(4),
///     ..LlmLimits::default()
/// }));
/// let llm = RateLimitedLlm::new(Arc::new(InstantLlm::new()), limiter);
/// assert_eq!(llm.model(), "instant");
/// ```
pub struct RateLimitedLlm {
    inner: Arc<dyn Llm>,
    limiter: Arc<RateLimiter>,
    prices: PriceTable,
}

impl fmt::Debug for RateLimitedLlm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitedLlm")
            .field("inner", &self.inner)
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl RateLimitedLlm {
    /// `inner`, limited by `limiter` (share one limiter between all the process's clients of
    /// one account).
    pub fn new(inner: Arc<dyn Llm>, limiter: Arc<RateLimiter>) -> Self {
        Self {
            inner,
            limiter,
            prices: PriceTable::empty(),
        }
    }

    /// Reports what the tokens cost, at `prices`, in
    /// [`COST_USD_TOTAL`](crate::llm::metrics::COST_USD_TOTAL): at the price of the model
    /// that answered, or of the configured model when the table has none for it. Without
    /// prices (the default) no cost is reported.
    pub fn with_prices(mut self, prices: PriceTable) -> Self {
        self.prices = prices;
        self
    }

    /// The shared limiter.
    pub fn limiter(&self) -> &Arc<RateLimiter> {
        &self.limiter
    }
}

/// Counts a call in flight until dropped (also when the call is cancelled).
struct InFlight(String);

impl InFlight {
    fn enter(model: &str) -> Self {
        metrics::gauge!(IN_FLIGHT, "model" => model.to_owned()).increment(1.0);
        Self(model.to_owned())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(IN_FLIGHT, "model" => std::mem::take(&mut self.0)).decrement(1.0);
    }
}

#[async_trait]
impl Llm for RateLimitedLlm {
    fn model(&self) -> &str {
        self.inner.model()
    }

    async fn complete(&self, request: &LlmRequest) -> Result<LlmResponse, LlmError> {
        let model = self.inner.model();
        let grant = self.limiter.acquire(request).await;
        metrics::histogram!(BUDGET_WAIT_SECONDS).record(grant.waited().as_secs_f64());
        let result = {
            let _in_flight = InFlight::enter(model);
            self.inner.complete(request).await
        };
        let usage = result.as_ref().ok().map(|response| &response.usage);
        self.limiter.settle(grant, usage);

        metrics::counter!(REQUESTS_TOTAL, "model" => model.to_owned(), "outcome" => outcome(&result))
            .increment(1);
        if let Ok(response) = &result {
            let usage = &response.usage;
            for (kind, tokens) in [
                ("prompt", usage.prompt_tokens),
                ("completion", usage.completion_tokens),
            ] {
                metrics::counter!(TOKENS_TOTAL, "model" => model.to_owned(), "kind" => kind)
                    .increment(tokens);
            }
            // The server names the snapshot that answered (`gpt-4o-mini-2024-07-18`), or
            // another model when the request asked for one; the configured model's price is
            // the best guess when the table knows neither.
            let prices = self
                .prices
                .price(&response.model)
                .or_else(|| self.prices.price(model));
            if let Some(usd) = prices.and_then(|prices| prices.cost_usd(usage)) {
                metrics::gauge!(COST_USD_TOTAL, "model" => model.to_owned()).increment(usd);
            }
        }
        result
    }
}
