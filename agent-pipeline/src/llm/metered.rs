//! What each step's LLM calls spent, and the step's say over them: a [`StepMeter`] travels
//! with the step's future (a tokio task-local), and the [`MeteredLlm`] every agent calls
//! through records each call in it, routes the call to the provider and model the step
//! asks for, and refuses calls once the step's share of the task's budget is spent.
//!
//! The meter is task-local rather than a parameter of [`Llm::complete`] so that agents,
//! custom ones included, need not pass it along: whatever calls the pipeline's `Llm` while
//! the step runs is metered.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;

use super::{
    Llm, LlmCall, LlmError, LlmRequest, LlmResponse, OFFLINE_MODEL, OfflineLlm, PriceTable, Spend,
    Usage,
};

tokio::task_local! {
    /// The meter of the step whose future runs on this task, if any.
    static METER: StepMeter;
}

/// The name under which [`MeteredLlm`] always knows the offline model as a provider.
const OFFLINE_PROVIDER: &str = OFFLINE_MODEL;

/// The record of one step's LLM calls, with what the step may still spend and which model
/// and provider it asks for.
///
/// Cheap to clone: clones share the record. Run the step inside [`StepMeter::scope`]; every
/// call through a [`MeteredLlm`] in that future is then recorded here as an [`LlmCall`],
/// priced with the meter's [`PriceTable`]. Futures the step hands to `tokio::spawn` leave the
/// scope: their calls are neither metered nor routed.
///
/// ```
/// use std::sync::Arc;
/// use agent_pipeline::llm::{
///     InstantLlm, Llm, LlmError, LlmRequest, MeteredLlm, PriceTable, StepMeter, TokenPrices,
/// };
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let mut prices = PriceTable::empty();
/// prices.set("instant", TokenPrices { input_per_mtok: Some(1.0), output_per_mtok: Some(4.0) });
/// let llm = MeteredLlm::new(Arc::new(InstantLlm::new().with_usage(1_000, 250)));
/// // The step may spend 2,000 more tokens.
/// let meter = StepMeter::new(prices).with_allowance(Some(2_000), None);
/// let request = LlmRequest {
///     messages: Vec::new(),
///     schema_name: "review".into(),
///     schema: agent_pipeline::output::strict_schema::<agent_pipeline::output::Review>(),
///     model: None,
/// };
/// let answers = meter
///     .scope(async {
///         let mut answers = Vec::new();
///         for _ in 0..3 {
///             answers.push(llm.complete(&request).await);
///         }
///         answers
///     })
///     .await;
/// // Two calls went (the second went over), the third was refused.
/// assert!(answers[0].is_ok() && answers[1].is_ok());
/// assert!(matches!(answers[2], Err(LlmError::BudgetExceeded(_))));
/// let spend = meter.spend();
/// assert_eq!((spend.calls, spend.usage.total_tokens), (2, 2_500));
/// assert_eq!(spend.cost_usd, 2.0 * (1_000.0 * 1.0 + 250.0 * 4.0) / 1e6);
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct StepMeter {
    /// What the step may do; shared until a builder changes it.
    config: Arc<MeterConfig>,
    /// The calls so far, shared by every clone.
    calls: Arc<Mutex<Vec<LlmCall>>>,
}

/// The fixed part of a [`StepMeter`].
#[derive(Debug, Clone)]
struct MeterConfig {
    prices: PriceTable,
    tokens: Option<u64>,
    cost_usd: Option<f64>,
    model: Option<String>,
    provider: Option<String>,
}

impl StepMeter {
    /// A meter that prices calls with `prices`, allows any spending and asks for nothing in
    /// particular.
    pub fn new(prices: PriceTable) -> Self {
        Self {
            config: Arc::new(MeterConfig {
                prices,
                tokens: None,
                cost_usd: None,
                model: None,
                provider: None,
            }),
            calls: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// What the step may still spend (`None`: no limit), such as
    /// [`TaskBudget::allowance`](crate::budget::TaskBudget::allowance) gives: once its calls
    /// have used `tokens` tokens or cost `cost_usd` US dollars, further calls are refused
    /// with [`LlmError::BudgetExceeded`]. Unpriced calls count as free.
    pub fn with_allowance(mut self, tokens: Option<u64>, cost_usd: Option<f64>) -> Self {
        let config = Arc::make_mut(&mut self.config);
        config.tokens = tokens;
        config.cost_usd = cost_usd;
        self
    }

    /// Asks for `model` instead of the configured one, from the provider named `provider`
    /// instead of the default one (see [`MeteredLlm::with_provider`]); `None` keeps each.
    pub fn with_override(mut self, model: Option<String>, provider: Option<String>) -> Self {
        let config = Arc::make_mut(&mut self.config);
        config.model = model;
        config.provider = provider;
        self
    }

    /// The prices calls are recorded at.
    pub fn prices(&self) -> &PriceTable {
        &self.config.prices
    }

    /// What the step may spend: (tokens, US dollars), `None` for no limit.
    pub fn allowance(&self) -> (Option<u64>, Option<f64>) {
        (self.config.tokens, self.config.cost_usd)
    }

    /// The model the step asks for, if not the configured one.
    pub fn model_override(&self) -> Option<&str> {
        self.config.model.as_deref()
    }

    /// The provider the step asks for, if not the default one.
    pub fn provider_override(&self) -> Option<&str> {
        self.config.provider.as_deref()
    }

    /// Runs `f` with this meter as the current one: the calls of [`MeteredLlm`]s that `f`
    /// makes (on this task) are routed and recorded here.
    pub async fn scope<F: Future>(&self, f: F) -> F::Output {
        METER.scope(self.clone(), f).await
    }

    /// The meter of the scope the current task runs in, if any.
    pub fn current() -> Option<StepMeter> {
        METER.try_with(StepMeter::clone).ok()
    }

    /// Every call recorded so far, in the order they ended.
    pub fn calls(&self) -> Vec<LlmCall> {
        self.lock().clone()
    }

    /// The sum of the calls so far.
    pub fn spend(&self) -> Spend {
        Spend::of(self.lock().iter())
    }

    /// Records a call to `model` (through `provider`, when not the default one) that used
    /// `usage` and took `duration`, priced with the meter's table; `error` says why it
    /// failed, if it did.
    ///
    /// [`MeteredLlm`] records its calls itself; this is for agents that call models some
    /// other way and report what they used.
    pub fn record(
        &self,
        model: &str,
        provider: Option<&str>,
        usage: Usage,
        duration: Duration,
        error: Option<String>,
    ) {
        let call = LlmCall {
            model: model.to_owned(),
            provider: provider.map(str::to_owned),
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cost_usd: self.config.prices.cost_usd(model, &usage),
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            error,
        };
        self.lock().push(call);
    }

    /// Whether the calls so far have used up the allowance, so that no further call may go.
    pub fn is_spent(&self) -> bool {
        self.spent_reason().is_some()
    }

    /// Why no further call may go, if none may.
    fn spent_reason(&self) -> Option<String> {
        let spend = self.spend();
        if let Some(tokens) = self.config.tokens
            && spend.usage.total_tokens >= tokens
        {
            return Some(format!(
                "the step's calls used {} tokens of the {tokens} left to it",
                spend.usage.total_tokens
            ));
        }
        if let Some(usd) = self.config.cost_usd
            && spend.cost_usd >= usd
        {
            return Some(format!(
                "the step's calls cost ${:.4} of the ${usd:.4} left to it",
                spend.cost_usd
            ));
        }
        None
    }

    /// The record; a panic elsewhere while it was held leaves the calls readable.
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<LlmCall>> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An [`Llm`] that meters its calls in the current [`StepMeter`], if any.
///
/// Outside a meter's scope it is its default provider. Inside one, each call goes to the
/// provider the meter names (the default one when it names none; `offline` is always known),
/// asks for the meter's model when it names one, is refused with
/// [`LlmError::BudgetExceeded`] before it is sent when the step's calls have used its
/// allowance, and is recorded in the meter with what it used and how long it took. A call
/// that goes while the step is under its allowance may take it over: the orchestrator checks
/// the task's totals after the step. A call cancelled before it answers is not recorded.
///
/// Wrap the process's providers (each behind its [`RateLimitedLlm`](super::RateLimitedLlm))
/// in one `MeteredLlm` and give it to the agents.
///
/// ```
/// use std::sync::Arc;
/// use agent_pipeline::llm::{InstantLlm, Llm, LlmRequest, MeteredLlm, PriceTable, StepMeter};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let llm = MeteredLlm::new(Arc::new(InstantLlm::new()))
///     .with_provider("instant", Arc::new(InstantLlm::new()));
/// assert_eq!(llm.provider_names(), ["instant", "offline"]);
/// let request = LlmRequest {
///     messages: Vec::new(),
///     schema_name: "review".into(),
///     schema: agent_pipeline::output::strict_schema::<agent_pipeline::output::Review>(),
///     model: None,
/// };
/// let meter = StepMeter::new(PriceTable::default()).with_override(None, Some("offline".into()));
/// let answer = meter.scope(llm.complete(&request)).await?;
/// assert_eq!(answer.model, "offline");
/// assert_eq!(meter.calls()[0].provider.as_deref(), Some("offline"));
/// // Outside the scope: the default provider, and nothing recorded.
/// assert_eq!(llm.complete(&request).await?.model, "instant");
/// assert_eq!(meter.spend().calls, 1);
/// # Ok::<(), agent_pipeline::llm::LlmError>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct MeteredLlm {
    default: Arc<dyn Llm>,
    /// The providers a meter may name, `offline` among them.
    providers: BTreeMap<String, Arc<dyn Llm>>,
}

impl MeteredLlm {
    /// Meters calls to `default`, the provider of calls that name none.
    pub fn new(default: Arc<dyn Llm>) -> Self {
        let mut providers: BTreeMap<String, Arc<dyn Llm>> = BTreeMap::new();
        providers.insert(OFFLINE_PROVIDER.to_owned(), Arc::new(OfflineLlm::new()));
        Self { default, providers }
    }

    /// Adds a provider a [`StepMeter`] may name (replacing one of the same name, `offline`
    /// included).
    pub fn with_provider(mut self, name: impl Into<String>, llm: Arc<dyn Llm>) -> Self {
        self.providers.insert(name.into(), llm);
        self
    }

    /// The names of the providers a meter may name, sorted.
    pub fn provider_names(&self) -> Vec<&str> {
        self.providers.keys().map(String::as_str).collect()
    }

    /// Whether a meter may name `name`.
    pub fn has_provider(&self, name: &str) -> bool {
        self.providers.contains_key(name)
    }

    /// The provider `meter` asks for.
    fn provider(&self, meter: &StepMeter) -> Result<&Arc<dyn Llm>, LlmError> {
        let Some(name) = meter.provider_override() else {
            return Ok(&self.default);
        };
        self.providers.get(name).ok_or_else(|| {
            LlmError::UnknownProvider(format!(
                "{name:?}; the known ones are {}",
                self.provider_names().join(", ")
            ))
        })
    }
}

#[async_trait]
impl Llm for MeteredLlm {
    fn model(&self) -> &str {
        self.default.model()
    }

    async fn complete(&self, request: &LlmRequest) -> Result<LlmResponse, LlmError> {
        let Some(meter) = StepMeter::current() else {
            return self.default.complete(request).await;
        };
        let provider = self.provider(&meter)?;
        if let Some(reason) = meter.spent_reason() {
            tracing::debug!(%reason, "refusing an LLM call: the step's allowance is spent");
            return Err(LlmError::BudgetExceeded(reason));
        }
        let request = match meter.model_override() {
            Some(model) => Cow::Owned(LlmRequest {
                model: Some(model.to_owned()),
                ..request.clone()
            }),
            None => Cow::Borrowed(request),
        };

        let started = tokio::time::Instant::now();
        let result = provider.complete(&request).await;
        let took = started.elapsed();
        let provider_name = meter.provider_override();
        match &result {
            Ok(response) => {
                meter.record(&response.model, provider_name, response.usage, took, None)
            }
            Err(error) => {
                // A failed call names no model: record the one it asked for.
                let asked = request.model.as_deref().unwrap_or(provider.model());
                let error = Some(error.to_string());
                meter.record(asked, provider_name, Usage::default(), took, error);
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::llm::TokenPrices;
    use crate::llm::metrics::outcome;

    /// Answers after `latency` as the model the request asks for, else as `name`, with fixed
    /// usage; counts its calls.
    #[derive(Debug)]
    struct Echo {
        name: &'static str,
        usage: Usage,
        latency: Duration,
        calls: AtomicUsize,
    }

    impl Echo {
        fn new(name: &'static str) -> Arc<Self> {
            Arc::new(Self {
                name,
                usage: Usage {
                    prompt_tokens: 1_000,
                    completion_tokens: 250,
                    total_tokens: 1_250,
                },
                latency: Duration::from_millis(300),
                calls: AtomicUsize::new(0),
            })
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl Llm for Echo {
        fn model(&self) -> &str {
            self.name
        }

        async fn complete(&self, request: &LlmRequest) -> Result<LlmResponse, LlmError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.latency).await;
            Ok(LlmResponse {
                content: "{}".into(),
                model: request.model.clone().unwrap_or_else(|| self.name.into()),
                usage: self.usage,
            })
        }
    }

    /// Fails every call as an overloaded server would.
    #[derive(Debug)]
    struct Down;

    #[async_trait]
    impl Llm for Down {
        fn model(&self) -> &str {
            "down-model"
        }

        async fn complete(&self, _request: &LlmRequest) -> Result<LlmResponse, LlmError> {
            Err(LlmError::Unavailable {
                status: 503,
                attempts: 4,
                message: "overloaded".into(),
            })
        }
    }

    fn request() -> LlmRequest {
        LlmRequest {
            messages: Vec::new(),
            schema_name: "s".into(),
            schema: serde_json::json!({}),
            model: None,
        }
    }

    /// What `Echo`'s usage costs on `model` at the default prices.
    fn echo_cost(model: &str) -> f64 {
        let price = PriceTable::default().price(model);
        let price = price.unwrap_or_else(|| panic!("no default price for {model}"));
        let usd = |p: Option<f64>| p.unwrap_or(f64::NAN);
        (1_000.0 * usd(price.input_per_mtok) + 250.0 * usd(price.output_per_mtok)) / 1e6
    }

    #[tokio::test(start_paused = true)]
    async fn calls_are_recorded_with_tokens_prices_and_durations() {
        let llm = MeteredLlm::new(Echo::new("gpt-4o-mini"));
        let meter = StepMeter::new(PriceTable::default());
        let answers = meter
            .scope(async {
                [
                    llm.complete(&request()).await,
                    llm.complete(&request()).await,
                ]
            })
            .await;
        assert!(answers.iter().all(Result::is_ok), "{answers:?}");

        let calls = meter.calls();
        let expected = LlmCall {
            model: "gpt-4o-mini".into(),
            provider: None,
            prompt_tokens: 1_000,
            completion_tokens: 250,
            cost_usd: Some(echo_cost("gpt-4o-mini")),
            duration_ms: 300,
            error: None,
        };
        assert_eq!(calls, [expected.clone(), expected]);
        let spend = meter.spend();
        assert_eq!(spend, Spend::of(&calls));
        assert_eq!(spend.calls, 2);
        assert_eq!(spend.usage.total_tokens, 2_500);
        assert!((spend.cost_usd - 2.0 * echo_cost("gpt-4o-mini")).abs() < 1e-15);
    }

    #[tokio::test]
    async fn a_model_without_a_price_is_recorded_unpriced() {
        let llm = MeteredLlm::new(Echo::new("my-finetune"));
        let meter = StepMeter::new(PriceTable::default());
        meter
            .scope(llm.complete(&request()))
            .await
            .expect("an answer");
        let spend = meter.spend();
        assert_eq!((spend.calls, spend.unpriced_calls), (1, 1));
        assert_eq!(spend.cost_usd, 0.0);
        assert_eq!(spend.usage.total_tokens, 1_250);
    }

    #[tokio::test(start_paused = true)]
    async fn the_token_allowance_refuses_the_call_after_it_is_spent() {
        let echo = Echo::new("gpt-4o-mini");
        let llm = MeteredLlm::new(echo.clone());
        // Room for one call and a bit: the second call still goes and takes the step over.
        let meter = StepMeter::new(PriceTable::default()).with_allowance(Some(2_000), None);
        let answers = meter
            .scope(async {
                let mut answers = Vec::new();
                for _ in 0..3 {
                    answers.push(llm.complete(&request()).await);
                }
                answers
            })
            .await;
        assert!(answers[0].is_ok() && answers[1].is_ok(), "{answers:?}");
        let Err(refused) = &answers[2] else {
            panic!("the third call went: {answers:?}");
        };
        assert!(
            matches!(refused, LlmError::BudgetExceeded(_)),
            "{refused:?}"
        );
        assert!(
            refused.to_string().contains("2500 tokens of the 2000"),
            "{refused}"
        );
        assert!(!refused.is_retryable());
        assert_eq!(outcome::<()>(&Err(refused.clone())), "budget_exceeded");
        assert_eq!(echo.calls(), 2, "the refused call was not sent");
        assert_eq!(meter.calls().len(), 2, "the refused call is not recorded");
        assert!(meter.is_spent());
    }

    #[tokio::test(start_paused = true)]
    async fn the_cost_allowance_counts_priced_calls_only() {
        let llm = MeteredLlm::new(Echo::new("gpt-4o"));
        let one_call = echo_cost("gpt-4o");
        let meter =
            StepMeter::new(PriceTable::default()).with_allowance(None, Some(1.5 * one_call));
        let answers = meter
            .scope(async {
                let mut answers = Vec::new();
                for _ in 0..3 {
                    answers.push(llm.complete(&request()).await.map(|_| ()));
                }
                answers
            })
            .await;
        assert!(
            matches!(
                answers[..],
                [Ok(()), Ok(()), Err(LlmError::BudgetExceeded(_))]
            ),
            "{answers:?}"
        );

        // Calls without a price never use a cost allowance up.
        let free = MeteredLlm::new(Echo::new("my-finetune"));
        let meter = StepMeter::new(PriceTable::default()).with_allowance(None, Some(0.01));
        for _ in 0..3 {
            meter
                .scope(free.complete(&request()))
                .await
                .expect("an unpriced call");
        }
        assert!(!meter.is_spent());
    }

    #[tokio::test]
    async fn a_spent_allowance_refuses_the_first_call() {
        let echo = Echo::new("gpt-4o-mini");
        let llm = MeteredLlm::new(echo.clone());
        for meter in [
            StepMeter::new(PriceTable::default()).with_allowance(Some(0), None),
            StepMeter::new(PriceTable::default()).with_allowance(None, Some(0.0)),
        ] {
            let answer = meter.scope(llm.complete(&request())).await;
            assert!(
                matches!(answer, Err(LlmError::BudgetExceeded(_))),
                "{answer:?}"
            );
        }
        assert_eq!(echo.calls(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_model_override_reaches_the_provider_and_prices_the_call() {
        let llm = MeteredLlm::new(Echo::new("gpt-4o-mini"));
        let meter =
            StepMeter::new(PriceTable::default()).with_override(Some("gpt-4.1-nano".into()), None);
        let answer = meter
            .scope(llm.complete(&request()))
            .await
            .expect("an answer");
        assert_eq!(answer.model, "gpt-4.1-nano");
        let calls = meter.calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].model, "gpt-4.1-nano");
        assert_eq!(calls[0].cost_usd, Some(echo_cost("gpt-4.1-nano")));
        assert_eq!(llm.model(), "gpt-4o-mini");
    }

    #[tokio::test(start_paused = true)]
    async fn the_provider_override_routes_to_the_named_provider() {
        let default = Echo::new("gpt-4o-mini");
        let claude = Echo::new("claude-sonnet-4-20250514");
        let llm = MeteredLlm::new(default.clone()).with_provider("anthropic", claude.clone());
        assert!(llm.has_provider("anthropic") && llm.has_provider("offline"));
        assert!(!llm.has_provider("gemini"));

        let meter =
            StepMeter::new(PriceTable::default()).with_override(None, Some("anthropic".into()));
        let answer = meter.scope(llm.complete(&request())).await;
        assert_eq!(
            answer.map(|a| a.model),
            Ok("claude-sonnet-4-20250514".to_owned())
        );
        assert_eq!((default.calls(), claude.calls()), (0, 1));
        let calls = meter.calls();
        assert_eq!(calls[0].provider.as_deref(), Some("anthropic"));
        assert_eq!(calls[0].cost_usd, Some(echo_cost("claude-sonnet-4")));

        // Both overrides: the named provider is asked for the named model.
        let meter = StepMeter::new(PriceTable::default())
            .with_override(Some("claude-haiku-4-5".into()), Some("anthropic".into()));
        let answer = meter.scope(llm.complete(&request())).await;
        assert_eq!(answer.map(|a| a.model), Ok("claude-haiku-4-5".to_owned()));
        assert_eq!(claude.calls(), 2);

        // The offline model is always there, and free.
        let meter =
            StepMeter::new(PriceTable::default()).with_override(None, Some("offline".into()));
        let answer = meter.scope(llm.complete(&request())).await;
        assert_eq!(answer.map(|a| a.model), Ok("offline".to_owned()));
        assert_eq!(meter.calls()[0].cost_usd, Some(0.0));
        assert_eq!(default.calls(), 0);
    }

    #[tokio::test]
    async fn an_unknown_provider_is_refused_naming_the_known_ones() {
        let default = Echo::new("gpt-4o-mini");
        let llm = MeteredLlm::new(default.clone()).with_provider("anthropic", Echo::new("c"));
        let meter =
            StepMeter::new(PriceTable::default()).with_override(None, Some("gemini".into()));
        let answer = meter.scope(llm.complete(&request())).await;
        let Err(error) = answer else {
            panic!("an unknown provider answered: {answer:?}");
        };
        assert!(matches!(error, LlmError::UnknownProvider(_)), "{error:?}");
        let text = error.to_string();
        assert!(
            text.contains("\"gemini\"") && text.contains("anthropic, offline"),
            "{text}"
        );
        assert!(!error.is_retryable());
        assert_eq!(outcome::<()>(&Err(error)), "unknown_provider");
        assert_eq!(default.calls(), 0);
        assert!(meter.calls().is_empty());
    }

    #[tokio::test]
    async fn a_failed_call_is_recorded_with_its_error_and_no_tokens() {
        let llm = MeteredLlm::new(Arc::new(Down));
        let meter = StepMeter::new(PriceTable::default());
        let answer = meter.scope(llm.complete(&request())).await;
        assert!(answer.is_err());
        let meter_with_model =
            StepMeter::new(PriceTable::default()).with_override(Some("gpt-4o".into()), None);
        let answer = meter_with_model.scope(llm.complete(&request())).await;
        assert!(answer.is_err());

        let calls = [meter.calls(), meter_with_model.calls()].concat();
        let models: Vec<&str> = calls.iter().map(|c| c.model.as_str()).collect();
        assert_eq!(models, ["down-model", "gpt-4o"]);
        for call in &calls {
            assert_eq!(call.usage(), Usage::default());
            let error = call.error.as_deref().unwrap_or_default();
            assert!(error.contains("HTTP 503"), "{error}");
        }
        assert_eq!(calls[1].cost_usd, Some(0.0));
    }

    #[tokio::test]
    async fn outside_a_scope_calls_go_to_the_default_unrecorded() {
        let llm = MeteredLlm::new(Echo::new("gpt-4o-mini"));
        let meter = StepMeter::new(PriceTable::default())
            .with_override(Some("gpt-4o".into()), Some("offline".into()))
            .with_allowance(Some(0), None);
        assert!(StepMeter::current().is_none());
        let answer = llm.complete(&request()).await;
        assert_eq!(answer.map(|a| a.model), Ok("gpt-4o-mini".to_owned()));
        assert!(meter.calls().is_empty());
        assert!(meter.spend().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_steps_keep_their_calls_apart() {
        let llm = Arc::new(MeteredLlm::new(Echo::new("gpt-4o-mini")));
        let step = |model: &str, calls: usize| {
            let llm = llm.clone();
            let meter =
                StepMeter::new(PriceTable::default()).with_override(Some(model.into()), None);
            let seen = meter.clone();
            let handle = tokio::spawn(async move {
                meter
                    .scope(async {
                        for _ in 0..calls {
                            llm.complete(&request()).await.expect("an answer");
                            tokio::task::yield_now().await;
                        }
                    })
                    .await;
            });
            (handle, seen)
        };
        let (first, first_meter) = step("gpt-4o", 5);
        let (second, second_meter) = step("gpt-4.1-mini", 3);
        first.await.expect("the first step");
        second.await.expect("the second step");

        let models = |meter: &StepMeter| -> Vec<String> {
            meter.calls().into_iter().map(|c| c.model).collect()
        };
        assert_eq!(models(&first_meter), vec!["gpt-4o"; 5]);
        assert_eq!(models(&second_meter), vec!["gpt-4.1-mini"; 3]);
    }

    #[test]
    fn record_prices_what_a_custom_agent_reports() {
        let mut prices = PriceTable::empty();
        prices.set(
            "house-model",
            TokenPrices {
                input_per_mtok: Some(2.0),
                output_per_mtok: Some(8.0),
            },
        );
        let meter = StepMeter::new(prices);
        let clone = meter.clone();
        let usage = Usage {
            prompt_tokens: 500_000,
            completion_tokens: 125_000,
            total_tokens: 625_000,
        };
        clone.record(
            "house-model",
            Some("house"),
            usage,
            Duration::from_secs(2),
            None,
        );
        clone.record("elsewhere", None, usage, Duration::ZERO, None);
        let calls = meter.calls();
        assert_eq!(calls.len(), 2, "clones share the record");
        assert_eq!(calls[0].cost_usd, Some(2.0));
        assert_eq!(calls[0].duration_ms, 2_000);
        assert_eq!(calls[0].provider.as_deref(), Some("house"));
        assert_eq!(calls[1].cost_usd, None);
    }
}
