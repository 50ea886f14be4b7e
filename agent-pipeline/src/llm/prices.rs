//! What each model costs: a [`PriceTable`] from model names to [`TokenPrices`], with list
//! prices of common models by default and the `LLM_PRICES` variable on top.

use std::collections::BTreeMap;

use super::{INSTANT_MODEL, OFFLINE_MODEL, SIMULATED_MODEL, TokenPrices, Usage};

/// The list prices [`PriceTable::default`] starts from: (model, USD per million prompt
/// tokens, USD per million completion tokens).
///
/// They are the providers' public list prices at the time of writing (late 2025), for
/// standard requests without cached input or batch discounts, and the lower tier where a
/// price depends on the prompt's length (Gemini 2.5 Pro). Providers change them:
/// `LLM_PRICES` overrides any of them.
const DEFAULT_PRICES: &[(&str, f64, f64)] = &[
    // OpenAI.
    ("gpt-4o", 2.50, 10.00),
    // The first gpt-4o snapshot kept its launch price.
    ("gpt-4o-2024-05-13", 5.00, 15.00),
    ("gpt-4o-mini", 0.15, 0.60),
    ("gpt-4.1", 2.00, 8.00),
    ("gpt-4.1-mini", 0.40, 1.60),
    ("gpt-4.1-nano", 0.10, 0.40),
    ("o1", 15.00, 60.00),
    ("o1-mini", 1.10, 4.40),
    ("o1-pro", 150.00, 600.00),
    ("o3", 2.00, 8.00),
    ("o3-mini", 1.10, 4.40),
    ("o3-pro", 20.00, 80.00),
    ("o4-mini", 1.10, 4.40),
    ("gpt-5", 1.25, 10.00),
    ("gpt-5-mini", 0.25, 2.00),
    ("gpt-5-nano", 0.05, 0.40),
    ("gpt-5-pro", 15.00, 120.00),
    // Anthropic. Claude Opus 4.1 kept the price of Opus 4; Opus 4.5 is cheaper.
    ("claude-opus-4", 15.00, 75.00),
    ("claude-opus-4-5", 5.00, 25.00),
    ("claude-sonnet-4", 3.00, 15.00),
    ("claude-3-7-sonnet", 3.00, 15.00),
    ("claude-3-5-sonnet", 3.00, 15.00),
    ("claude-haiku-4-5", 1.00, 5.00),
    ("claude-3-5-haiku", 0.80, 4.00),
    ("claude-3-haiku", 0.25, 1.25),
    // Google.
    ("gemini-2.5-pro", 1.25, 10.00),
    ("gemini-2.5-flash", 0.30, 2.50),
    ("gemini-2.5-flash-lite", 0.10, 0.40),
    ("gemini-2.0-flash", 0.10, 0.40),
    // DeepSeek (cache-miss input).
    ("deepseek-chat", 0.28, 0.42),
    ("deepseek-reasoner", 0.28, 0.42),
    // The pipeline's own models cost nothing.
    (OFFLINE_MODEL, 0.0, 0.0),
    (INSTANT_MODEL, 0.0, 0.0),
    (SIMULATED_MODEL, 0.0, 0.0),
];

/// Prices by model name, in US dollars per million tokens.
///
/// [`PriceTable::default`] holds the providers' public list prices of common models at the
/// time of writing (OpenAI's gpt-4o, gpt-4.1, o-series and gpt-5 families, Anthropic's
/// Claude Opus, Sonnet and Haiku, Google's Gemini 2.5, DeepSeek) and the pipeline's own
/// models `offline`, `instant` and `simulated` at zero. Prices change: the `LLM_PRICES`
/// variable of [`LlmSettings`](super::LlmSettings) overrides them, model by model.
///
/// [`PriceTable::price`] also finds the price of a dated snapshot or a provider-prefixed name
/// under its family's name: `gpt-4o-mini-2024-07-18` and `openai/gpt-4o-mini` cost what
/// `gpt-4o-mini` costs.
///
/// ```
/// use agent_pipeline::llm::{PriceTable, TokenPrices, Usage};
/// let mut prices = PriceTable::default();
/// prices.set("my-model", TokenPrices { input_per_mtok: Some(1.0), output_per_mtok: Some(4.0) });
/// let usage = Usage { prompt_tokens: 500_000, completion_tokens: 250_000, total_tokens: 750_000 };
/// assert_eq!(prices.cost_usd("my-model", &usage), Some(1.5));
/// assert_eq!(prices.price("gpt-4o-mini-2024-07-18"), prices.price("gpt-4o-mini"));
/// assert_eq!(prices.cost_usd("offline", &usage), Some(0.0));
/// assert_eq!(prices.cost_usd("no-such-model", &usage), None);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PriceTable {
    /// A sorted map, so that [`PriceTable::entries`] lists models in order.
    prices: BTreeMap<String, TokenPrices>,
}

impl Default for PriceTable {
    /// The list prices of common models, and the pipeline's own models at zero.
    fn default() -> Self {
        let mut table = Self::empty();
        for &(model, input, output) in DEFAULT_PRICES {
            table.set(
                model,
                TokenPrices {
                    input_per_mtok: Some(input),
                    output_per_mtok: Some(output),
                },
            );
        }
        table
    }
}

impl PriceTable {
    /// A table without any price: every call is unpriced.
    pub fn empty() -> Self {
        Self {
            prices: BTreeMap::new(),
        }
    }

    /// Sets the price of `model` (and so of its snapshots that have no price of their own).
    pub fn set(&mut self, model: impl Into<String>, prices: TokenPrices) {
        self.prices.insert(model.into(), prices);
    }

    /// The price of `model`, if the table knows it.
    ///
    /// The exact name comes first; then, without a provider prefix (`openai/gpt-4o-mini` →
    /// `gpt-4o-mini`), the exact name again; then the longest name in the table that
    /// `model` starts with followed by `-`, `:` or `@` (a snapshot such as
    /// `gpt-4o-mini-2024-07-18`, `claude-sonnet-4@20250514` or `llama3:8b`, or a variant
    /// such as `gpt-4o-search-preview`: a best guess, which an entry of its own corrects).
    ///
    /// ```
    /// use agent_pipeline::llm::PriceTable;
    /// let prices = PriceTable::default();
    /// let mini = prices.price("gpt-4o-mini");
    /// assert!(mini.is_some());
    /// assert_eq!(prices.price("gpt-4o-mini-2024-07-18"), mini);
    /// assert_eq!(prices.price("openai/gpt-4o-mini"), mini);
    /// assert_ne!(prices.price("gpt-4o-2024-08-06"), mini);
    /// assert_eq!(prices.price("gpt-4o-2024-08-06"), prices.price("gpt-4o"));
    /// assert_eq!(prices.price("gpt-4omni"), None);
    /// ```
    pub fn price(&self, model: &str) -> Option<TokenPrices> {
        let model = model.trim();
        if let Some(prices) = self.prices.get(model) {
            return Some(*prices);
        }
        let bare = model.rsplit_once('/').map_or(model, |(_, bare)| bare);
        if let Some(prices) = self.prices.get(bare) {
            return Some(*prices);
        }
        self.family_price(model).or_else(|| self.family_price(bare))
    }

    /// The price of the longest name in the table that `model` starts with, followed by a
    /// separator of a snapshot or variant.
    fn family_price(&self, model: &str) -> Option<TokenPrices> {
        self.prices
            .iter()
            .filter(|(name, _)| {
                model.strip_prefix(name.as_str()).is_some_and(|rest| {
                    rest.starts_with('-') || rest.starts_with(':') || rest.starts_with('@')
                })
            })
            .max_by_key(|(name, _)| name.len())
            .map(|(_, prices)| *prices)
    }

    /// What `usage` cost on `model`, in US dollars; `None` when the table has no price for
    /// it.
    pub fn cost_usd(&self, model: &str, usage: &Usage) -> Option<f64> {
        self.price(model)?.cost_usd(usage)
    }

    /// Every model with a price, sorted by name, for display.
    pub fn entries(&self) -> impl Iterator<Item = (&str, TokenPrices)> + '_ {
        self.prices
            .iter()
            .map(|(model, prices)| (model.as_str(), *prices))
    }

    /// How many models have a price.
    pub fn len(&self) -> usize {
        self.prices.len()
    }

    /// Whether no model has a price.
    pub fn is_empty(&self) -> bool {
        self.prices.is_empty()
    }

    /// Sets the prices `spec` lists, in the format of `LLM_PRICES`:
    /// `model=input/output,model2=input/output` in US dollars per million tokens, spaces
    /// allowed. Nothing is set when an entry is bad.
    ///
    /// ```
    /// use agent_pipeline::llm::PriceTable;
    /// let mut prices = PriceTable::empty();
    /// prices.apply("gpt-4o-mini = 0.15/0.6, local-llama=0/0")?;
    /// assert_eq!(prices.len(), 2);
    /// assert!(prices.apply("gpt-4o=cheap").is_err());
    /// assert_eq!(prices.len(), 2);
    /// # Ok::<(), agent_pipeline::llm::PriceEntryError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`PriceEntryError`] naming the first entry that is not `model=input/output` with two
    /// non-negative numbers.
    pub fn apply(&mut self, spec: &str) -> Result<(), PriceEntryError> {
        let entries = parse_entries(spec)?;
        for (model, prices) in entries {
            self.set(model, prices);
        }
        Ok(())
    }
}

/// An entry of a price list (`LLM_PRICES`) that is not `model=input/output`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad entry {entry:?}: {problem}")]
pub struct PriceEntryError {
    /// The entry as written.
    pub entry: String,
    /// What is wrong with it.
    pub problem: String,
}

/// The entries of a price list; empty entries (a trailing comma) are skipped.
fn parse_entries(spec: &str) -> Result<Vec<(String, TokenPrices)>, PriceEntryError> {
    let mut entries = Vec::new();
    for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = |problem: &str| PriceEntryError {
            entry: entry.to_owned(),
            problem: problem.to_owned(),
        };
        // The prices never hold `=`, a model name might.
        let Some((model, prices)) = entry.rsplit_once('=') else {
            return Err(bad(
                "expected model=input/output in US dollars per million tokens, such as gpt-4o-mini=0.15/0.6",
            ));
        };
        let model = model.trim();
        if model.is_empty() {
            return Err(bad("the model name is missing"));
        }
        let Some((input, output)) = prices.split_once('/') else {
            return Err(bad(
                "expected input/output prices in US dollars per million tokens, such as 0.15/0.6",
            ));
        };
        let usd = |text: &str| match text.trim().parse::<f64>() {
            Ok(usd) if usd.is_finite() && usd >= 0.0 => Ok(usd),
            _ => Err(bad(&format!(
                "{:?} is not a price of at least 0 US dollars per million tokens",
                text.trim()
            ))),
        };
        let prices = TokenPrices {
            input_per_mtok: Some(usd(input)?),
            output_per_mtok: Some(usd(output)?),
        };
        entries.push((model.to_owned(), prices));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prices(input: f64, output: f64) -> Option<TokenPrices> {
        Some(TokenPrices {
            input_per_mtok: Some(input),
            output_per_mtok: Some(output),
        })
    }

    #[test]
    fn snapshots_take_the_price_of_their_longest_family_name() {
        let table = PriceTable::default();
        assert_eq!(table.price("gpt-4o-mini-2024-07-18"), prices(0.15, 0.6));
        assert_eq!(table.price("gpt-4o-2024-08-06"), prices(2.5, 10.0));
        assert_eq!(table.price("gpt-4o-2024-05-13"), prices(5.0, 15.0));
        // A variant without a price of its own is priced as its family, a best guess.
        assert_eq!(table.price("gpt-4o-search-preview"), prices(2.5, 10.0));
        assert_eq!(table.price("gpt-4.1-nano-2025-04-14"), prices(0.1, 0.4));
        assert_eq!(table.price("o3-mini-2025-01-31"), prices(1.1, 4.4));
        assert_eq!(table.price("o3-2025-04-16"), prices(2.0, 8.0));
        assert_eq!(table.price("claude-sonnet-4-20250514"), prices(3.0, 15.0));
        assert_eq!(table.price("claude-sonnet-4@20250514"), prices(3.0, 15.0));
        assert_eq!(table.price("claude-opus-4-1-20250805"), prices(15.0, 75.0));
        assert_eq!(table.price("claude-opus-4-5-20251101"), prices(5.0, 25.0));
        assert_eq!(table.price("claude-3-5-haiku-latest"), prices(0.8, 4.0));
        assert_eq!(table.price("gemini-2.5-flash-lite"), prices(0.1, 0.4));
        assert_eq!(
            table.price("gemini-2.5-flash-preview-05-20"),
            prices(0.3, 2.5)
        );
    }

    #[test]
    fn a_provider_prefix_is_ignored_unless_the_table_names_it() {
        let mut table = PriceTable::default();
        assert_eq!(table.price("openai/gpt-4o-mini"), prices(0.15, 0.6));
        assert_eq!(
            table.price("openrouter/openai/gpt-5-mini"),
            prices(0.25, 2.0)
        );
        assert_eq!(
            table.price("openai/gpt-4o-mini-2024-07-18"),
            prices(0.15, 0.6)
        );
        table.set(
            "azure/gpt-4o-mini",
            TokenPrices {
                input_per_mtok: Some(0.165),
                output_per_mtok: Some(0.66),
            },
        );
        assert_eq!(table.price("azure/gpt-4o-mini"), prices(0.165, 0.66));
        assert_eq!(table.price("gpt-4o-mini"), prices(0.15, 0.6));
    }

    #[test]
    fn a_name_that_merely_starts_like_a_known_one_has_no_price() {
        let table = PriceTable::default();
        assert_eq!(table.price("gpt-4omni"), None);
        assert_eq!(table.price("gpt-5x"), None);
        assert_eq!(table.price("o10"), None);
        assert_eq!(table.price(""), None);
        assert_eq!(PriceTable::empty().price("gpt-4o"), None);
    }

    #[test]
    fn the_local_models_are_free_and_unknown_ones_unpriced() {
        let table = PriceTable::default();
        let usage = Usage {
            prompt_tokens: 1_000,
            completion_tokens: 250,
            total_tokens: 1_250,
        };
        for model in [OFFLINE_MODEL, INSTANT_MODEL, SIMULATED_MODEL] {
            assert_eq!(table.cost_usd(model, &usage), Some(0.0), "{model}");
        }
        assert_eq!(table.cost_usd("my-finetune", &usage), None);
        let cost = table.cost_usd("gpt-4o-mini", &usage).unwrap_or(f64::NAN);
        assert!(
            (cost - (1_000.0 * 0.15 + 250.0 * 0.6) / 1e6).abs() < 1e-15,
            "{cost}"
        );
    }

    #[test]
    fn entries_are_sorted_and_every_default_price_is_a_real_price() {
        let table = PriceTable::default();
        let names: Vec<&str> = table.entries().map(|(model, _)| model).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        assert_eq!(table.len(), DEFAULT_PRICES.len());
        for (model, prices) in table.entries() {
            for price in [prices.input_per_mtok, prices.output_per_mtok] {
                assert!(price.is_some_and(|p| p.is_finite() && p >= 0.0), "{model}");
            }
        }
    }

    #[test]
    fn a_price_list_overrides_entries_and_refuses_bad_ones_whole() {
        let mut table = PriceTable::default();
        let result = table.apply(" gpt-4o-mini = 0.2 / 0.8 ,my-model=1/2,");
        assert_eq!(result, Ok(()));
        assert_eq!(table.price("gpt-4o-mini"), prices(0.2, 0.8));
        assert_eq!(table.price("my-model"), prices(1.0, 2.0));
        for (bad, entry) in [
            ("ok=1/2,gpt-4o", "gpt-4o"),
            ("gpt-4o=1", "gpt-4o=1"),
            ("=1/2", "=1/2"),
            ("gpt-4o=1/-2", "gpt-4o=1/-2"),
            ("gpt-4o=NaN/2", "gpt-4o=NaN/2"),
            ("gpt-4o=1/2/3", "gpt-4o=1/2/3"),
        ] {
            let mut table = PriceTable::empty();
            let error = table.apply(bad).map_err(|e| e.entry);
            assert_eq!(error, Err(entry.to_owned()), "{bad}");
            assert!(table.is_empty(), "{bad} set something");
        }
    }
}
