//! How to reach the LLM server and how much of it this process may use, read from variables.

use std::fmt;
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::time::Duration;

use super::{PriceTable, Usage};

/// `OPENAI_API_KEY`.
const API_KEY: &str = "OPENAI_API_KEY";
/// `OPENAI_MODEL`.
const MODEL: &str = "OPENAI_MODEL";
/// `OPENAI_BASE_URL`.
const BASE_URL: &str = "OPENAI_BASE_URL";
/// `LLM_MAX_CONCURRENCY`.
const MAX_CONCURRENCY: &str = "LLM_MAX_CONCURRENCY";
/// `LLM_REQUESTS_PER_MINUTE`.
const REQUESTS_PER_MINUTE: &str = "LLM_REQUESTS_PER_MINUTE";
/// `LLM_TOKENS_PER_MINUTE`.
const TOKENS_PER_MINUTE: &str = "LLM_TOKENS_PER_MINUTE";
/// `LLM_PRICE_INPUT_PER_MTOK`.
const PRICE_INPUT: &str = "LLM_PRICE_INPUT_PER_MTOK";
/// `LLM_PRICE_OUTPUT_PER_MTOK`.
const PRICE_OUTPUT: &str = "LLM_PRICE_OUTPUT_PER_MTOK";
/// `LLM_PRICES`.
const PRICES: &str = "LLM_PRICES";
/// `LLM_EMBEDDINGS_MODEL`.
pub(crate) const EMBEDDINGS_MODEL: &str = "LLM_EMBEDDINGS_MODEL";

/// An API key that never shows up in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key itself, to put in a request header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// How much of the LLM server one process may use; `None` everywhere (the default) means no
/// limit of its own, leaving only what the server says in its rate-limit headers.
///
/// See `docs/llm-limits.md` for how the limits are enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LlmLimits {
    /// `LLM_MAX_CONCURRENCY`: calls under way at once (unset: unlimited, so that the worker's
    /// concurrency decides).
    pub max_concurrency: Option<NonZeroUsize>,
    /// `LLM_REQUESTS_PER_MINUTE`: HTTP requests per rolling minute (unset: no limit).
    pub requests_per_minute: Option<NonZeroU32>,
    /// `LLM_TOKENS_PER_MINUTE`: prompt and completion tokens per rolling minute (unset: no
    /// limit).
    pub tokens_per_minute: Option<NonZeroU64>,
}

/// What one model costs, in US dollars per million tokens (an entry of a [`PriceTable`]); a
/// price that is not set counts as zero, and with neither set no cost is reported.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TokenPrices {
    /// USD per million prompt tokens.
    pub input_per_mtok: Option<f64>,
    /// USD per million completion tokens.
    pub output_per_mtok: Option<f64>,
}

impl TokenPrices {
    /// What `usage` cost in USD, or `None` when no price is set.
    ///
    /// ```
    /// use agent_pipeline::llm::{TokenPrices, Usage};
    /// let prices = TokenPrices { input_per_mtok: Some(0.25), output_per_mtok: Some(2.0) };
    /// let usage = Usage { prompt_tokens: 2_000_000, completion_tokens: 250_000, total_tokens: 2_250_000 };
    /// assert_eq!(prices.cost_usd(&usage), Some(1.0));
    /// assert_eq!(TokenPrices::default().cost_usd(&usage), None);
    /// ```
    pub fn cost_usd(&self, usage: &Usage) -> Option<f64> {
        if self.input_per_mtok.is_none() && self.output_per_mtok.is_none() {
            return None;
        }
        let per_token = |price: Option<f64>, tokens: u64| price.unwrap_or(0.0) * tokens as f64;
        let micro = per_token(self.input_per_mtok, usage.prompt_tokens)
            + per_token(self.output_per_mtok, usage.completion_tokens);
        Some(micro / 1_000_000.0)
    }
}

/// How to reach an OpenAI-compatible server, and how much of it to use.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmSettings {
    /// `OPENAI_API_KEY`; without it the offline model is used.
    pub api_key: Option<ApiKey>,
    /// `OPENAI_MODEL`, default `gpt-4o-mini`.
    pub model: String,
    /// `OPENAI_BASE_URL`, default `https://api.openai.com/v1`.
    pub base_url: String,
    /// How long one HTTP request may take.
    pub timeout: Duration,
    /// How many HTTP requests one call may make when the server answers 429 or 5xx.
    pub max_attempts: u32,
    /// Concurrency, requests and tokens per minute (`LLM_MAX_CONCURRENCY`,
    /// `LLM_REQUESTS_PER_MINUTE`, `LLM_TOKENS_PER_MINUTE`).
    pub limits: LlmLimits,
    /// Prices by model, for the cost of each call and the cost metric: the
    /// [default list prices](PriceTable::default), with `LLM_PRICES` on top, and
    /// `LLM_PRICE_INPUT_PER_MTOK` / `LLM_PRICE_OUTPUT_PER_MTOK` on top of that for
    /// [`model`](Self::model).
    pub prices: PriceTable,
    /// `LLM_EMBEDDINGS_MODEL`: the embeddings model of the same server, for the code
    /// memory's hybrid search (`memory::OpenAiEmbedder`); unset, it searches lexically.
    pub embeddings_model: Option<String>,
}

impl Default for LlmSettings {
    fn default() -> Self {
        Self {
            api_key: None,
            model: "gpt-4o-mini".to_owned(),
            base_url: "https://api.openai.com/v1".to_owned(),
            timeout: Duration::from_secs(120),
            max_attempts: 4,
            limits: LlmLimits::default(),
            prices: PriceTable::default(),
            embeddings_model: None,
        }
    }
}

/// A variable of [`LlmSettings`] that holds something it cannot mean.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct LlmSettingsError {
    /// The variable at fault.
    pub variable: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl LlmSettings {
    /// Every variable these settings read, with its default (empty: unset).
    pub const VARIABLES: [(&'static str, &'static str); 10] = [
        (API_KEY, ""),
        (MODEL, "gpt-4o-mini"),
        (BASE_URL, "https://api.openai.com/v1"),
        (MAX_CONCURRENCY, ""),
        (REQUESTS_PER_MINUTE, ""),
        (TOKENS_PER_MINUTE, ""),
        (PRICE_INPUT, ""),
        (PRICE_OUTPUT, ""),
        (PRICES, ""),
        (EMBEDDINGS_MODEL, ""),
    ];

    /// Reads [`Self::VARIABLES`] from the environment, as [`LlmSettings::from_lookup`] does.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads [`Self::VARIABLES`] through `lookup` (a configuration file layered over the
    /// environment, say); unset or empty variables keep their defaults.
    ///
    /// A value that cannot be read (`LLM_REQUESTS_PER_MINUTE=lots`) is logged as a warning
    /// and left at its default; [`LlmSettings::try_from_lookup`] refuses it instead. A price
    /// list (`LLM_PRICES`) with a bad entry is left out whole.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let (settings, problems) = Self::read(lookup);
        for problem in problems {
            tracing::warn!(variable = problem.variable, problem = %problem.problem, "ignoring an LLM setting");
        }
        settings
    }

    /// The same as [`LlmSettings::from_lookup`], but a value that cannot be read is an error.
    ///
    /// ```
    /// use agent_pipeline::llm::LlmSettings;
    /// let settings = LlmSettings::try_from_lookup(|name| match name {
    ///     "LLM_REQUESTS_PER_MINUTE" => Some("500".to_owned()),
    ///     _ => None,
    /// })?;
    /// assert_eq!(settings.limits.requests_per_minute.map(|n| n.get()), Some(500));
    /// assert!(LlmSettings::try_from_lookup(|_| Some("-1".to_owned())).is_err());
    /// # Ok::<(), agent_pipeline::llm::LlmSettingsError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`LlmSettingsError`] naming the first variable that is not a number of the kind it
    /// must be, or `LLM_PRICES` and its first entry that is not `model=input/output`.
    pub fn try_from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, LlmSettingsError> {
        let (settings, problems) = Self::read(lookup);
        match problems.into_iter().next() {
            Some(problem) => Err(problem),
            None => Ok(settings),
        }
    }

    /// The settings with what could be read, and what could not.
    fn read(lookup: impl Fn(&str) -> Option<String>) -> (Self, Vec<LlmSettingsError>) {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut problems = Vec::new();
        let mut whole = |name: &'static str| -> Option<u64> {
            let text = var(name)?;
            match text.trim().parse::<u64>() {
                Ok(n) if n >= 1 => Some(n),
                _ => {
                    problems.push(LlmSettingsError {
                        variable: name,
                        problem: format!("must be a whole number of at least 1, not {text:?}"),
                    });
                    None
                }
            }
        };
        let limits = LlmLimits {
            max_concurrency: whole(MAX_CONCURRENCY)
                .and_then(|n| NonZeroUsize::new(usize::try_from(n).unwrap_or(usize::MAX))),
            requests_per_minute: whole(REQUESTS_PER_MINUTE)
                .and_then(|n| NonZeroU32::new(u32::try_from(n).unwrap_or(u32::MAX))),
            tokens_per_minute: whole(TOKENS_PER_MINUTE).and_then(NonZeroU64::new),
        };
        let mut price = |name: &'static str| -> Option<f64> {
            let text = var(name)?;
            match text.trim().parse::<f64>() {
                Ok(usd) if usd.is_finite() && usd >= 0.0 => Some(usd),
                _ => {
                    problems.push(LlmSettingsError {
                        variable: name,
                        problem: format!(
                            "must be US dollars per million tokens, such as 0.15, not {text:?}"
                        ),
                    });
                    None
                }
            }
        };
        let model_prices = TokenPrices {
            input_per_mtok: price(PRICE_INPUT),
            output_per_mtok: price(PRICE_OUTPUT),
        };
        let defaults = Self::default();
        let model = var(MODEL).unwrap_or(defaults.model);
        let mut prices = defaults.prices;
        if let Some(spec) = var(PRICES) {
            // All or nothing: a list with a bad entry is left out whole, as any other
            // variable that cannot be read is.
            if let Err(error) = prices.apply(&spec) {
                problems.push(LlmSettingsError {
                    variable: PRICES,
                    problem: format!(
                        "{error}; expected model=input/output,… in US dollars per million tokens, \
                         such as gpt-4o-mini=0.15/0.6"
                    ),
                });
            }
        }
        // The two older variables price the configured model, over the table: a deployment
        // that set them keeps the cost it configured.
        if model_prices != TokenPrices::default() {
            prices.set(model.clone(), model_prices);
        }
        let settings = Self {
            api_key: var(API_KEY).map(ApiKey::new),
            model,
            base_url: var(BASE_URL).unwrap_or(defaults.base_url),
            limits,
            prices,
            embeddings_model: var(EMBEDDINGS_MODEL).map(|model| model.trim().to_owned()),
            ..defaults
        };
        (settings, problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn the_variables_set_the_limits_and_prices() {
        let settings = LlmSettings::try_from_lookup(lookup(&[
            (MAX_CONCURRENCY, "8"),
            (REQUESTS_PER_MINUTE, " 500 "),
            (TOKENS_PER_MINUTE, "200000"),
            (PRICE_INPUT, "0.15"),
            (PRICE_OUTPUT, "0.6"),
        ]));
        let settings = settings.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(settings.limits.max_concurrency, NonZeroUsize::new(8));
        assert_eq!(settings.limits.requests_per_minute, NonZeroU32::new(500));
        assert_eq!(settings.limits.tokens_per_minute, NonZeroU64::new(200_000));
        assert_eq!(
            settings.prices.price("gpt-4o-mini"),
            Some(TokenPrices {
                input_per_mtok: Some(0.15),
                output_per_mtok: Some(0.6),
            })
        );
    }

    #[test]
    fn llm_prices_override_the_defaults_and_the_old_variables_override_the_model() {
        let settings = LlmSettings::try_from_lookup(lookup(&[
            (MODEL, "gpt-4.1-mini"),
            (PRICES, "gpt-4.1-mini=1/2, my-model = 0.5/1.5"),
            (PRICE_INPUT, "0.3"),
        ]));
        let settings = settings.unwrap_or_else(|e| panic!("{e}"));
        let prices = |input, output| {
            Some(TokenPrices {
                input_per_mtok: Some(input),
                output_per_mtok: Some(output),
            })
        };
        assert_eq!(settings.prices.price("my-model"), prices(0.5, 1.5));
        // An unset one of the two older variables counts as zero, as it always did.
        assert_eq!(
            settings.prices.price("gpt-4.1-mini"),
            Some(TokenPrices {
                input_per_mtok: Some(0.3),
                output_per_mtok: None,
            })
        );
        assert_eq!(
            settings.prices.price("gpt-4o-mini"),
            PriceTable::default().price("gpt-4o-mini")
        );
    }

    #[test]
    fn a_bad_price_list_names_the_variable_and_the_entry() {
        let bad = lookup(&[(PRICES, "gpt-4o=2.5/10,gpt-4o-mini=cheap")]);
        let error = LlmSettings::try_from_lookup(&bad).map_err(|e| e.to_string());
        assert!(
            error
                .as_ref()
                .is_err_and(|e| e.starts_with("LLM_PRICES: ") && e.contains("gpt-4o-mini=cheap")),
            "{error:?}"
        );
        // Ignored whole: the good entry before it is not applied either.
        assert_eq!(LlmSettings::from_lookup(bad), LlmSettings::default());
    }

    #[test]
    fn every_documented_default_is_the_default() {
        let defaults = LlmSettings::from_lookup(|_| None);
        assert_eq!(defaults, LlmSettings::default());
        for (name, default) in LlmSettings::VARIABLES {
            let explicit = LlmSettings::try_from_lookup(lookup(&[(name, default)]));
            assert_eq!(explicit, Ok(defaults.clone()), "{name}={default:?}");
        }
    }

    #[test]
    fn nonsense_is_refused_by_try_and_ignored_by_from_lookup() {
        for (name, bad) in [
            (MAX_CONCURRENCY, "0"),
            (REQUESTS_PER_MINUTE, "lots"),
            (TOKENS_PER_MINUTE, "-5"),
            (PRICE_INPUT, "NaN"),
            (PRICE_OUTPUT, "-0.1"),
            (PRICES, "gpt-4o-mini"),
        ] {
            let error = LlmSettings::try_from_lookup(lookup(&[(name, bad)]));
            assert_eq!(error.map_err(|e| e.variable), Err(name));
            assert_eq!(
                LlmSettings::from_lookup(lookup(&[(name, bad)])),
                LlmSettings::default()
            );
        }
    }

    #[test]
    fn cost_counts_an_unset_price_as_zero() {
        let usage = Usage {
            prompt_tokens: 1_000,
            completion_tokens: 500,
            total_tokens: 1_500,
        };
        let input_only = TokenPrices {
            input_per_mtok: Some(2.0),
            output_per_mtok: None,
        };
        assert_eq!(input_only.cost_usd(&usage), Some(0.002));
    }
}
