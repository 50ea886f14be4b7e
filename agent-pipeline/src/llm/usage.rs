//! What LLM calls spent: one [`LlmCall`] record per call, and their sum, a [`Spend`].
//!
//! Every sum the pipeline shows (a step's, a task's, the total) is the sum of call records,
//! so that they always agree.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Usage;

/// One call to a model: what it asked, what it spent and what it cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LlmCall {
    /// The model that answered (or was asked, when the call failed).
    pub model: String,
    /// The provider the call went to, when it was not the default one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Tokens of the prompt.
    pub prompt_tokens: u64,
    /// Tokens of the answer.
    pub completion_tokens: u64,
    /// What the tokens cost in US dollars, from the price table; `None` when the table has no
    /// price for the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// How long the call took.
    pub duration_ms: u64,
    /// Why the call failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl LlmCall {
    /// The call's tokens.
    pub fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            total_tokens: self.prompt_tokens + self.completion_tokens,
        }
    }
}

/// What some calls spent together: a step's, a task's, or everything's.
///
/// ```
/// use agent_pipeline::llm::{LlmCall, Spend};
/// let call = |cost| LlmCall {
///     model: "gpt-4o-mini".into(),
///     provider: None,
///     prompt_tokens: 1_000,
///     completion_tokens: 200,
///     cost_usd: cost,
///     duration_ms: 900,
///     error: None,
/// };
/// let spend = Spend::of(&[call(Some(0.25)), call(Some(0.5)), call(None)]);
/// assert_eq!(spend.calls, 3);
/// assert_eq!(spend.unpriced_calls, 1);
/// assert_eq!(spend.usage.total_tokens, 3_600);
/// assert_eq!(spend.cost_usd, 0.75);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Spend {
    /// Tokens, over every call.
    #[serde(flatten)]
    pub usage: Usage,
    /// US dollars, over every call with a price.
    pub cost_usd: f64,
    /// How many calls.
    pub calls: u64,
    /// How many of them had no price (their tokens count, their cost is unknown).
    #[serde(default)]
    pub unpriced_calls: u64,
}

impl Spend {
    /// The sum of `calls`.
    pub fn of<'a>(calls: impl IntoIterator<Item = &'a LlmCall>) -> Self {
        let mut spend = Spend::default();
        for call in calls {
            spend.add(call);
        }
        spend
    }

    /// Adds one call.
    pub fn add(&mut self, call: &LlmCall) {
        self.usage += call.usage();
        self.calls += 1;
        match call.cost_usd {
            Some(cost) => self.cost_usd += cost,
            None => self.unpriced_calls += 1,
        }
    }

    /// Whether nothing was spent.
    pub fn is_empty(&self) -> bool {
        self.calls == 0
    }
}

impl std::ops::AddAssign for Spend {
    fn add_assign(&mut self, other: Spend) {
        self.usage += other.usage;
        self.cost_usd += other.cost_usd;
        self.calls += other.calls;
        self.unpriced_calls += other.unpriced_calls;
    }
}

impl std::iter::Sum for Spend {
    fn sum<I: Iterator<Item = Spend>>(iter: I) -> Self {
        let mut total = Spend::default();
        for spend in iter {
            total += spend;
        }
        total
    }
}
