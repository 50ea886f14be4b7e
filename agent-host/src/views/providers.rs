//! What a replay may choose and what calls cost: `/api/providers`, the replay form.

use agent_pipeline::Pipeline;
use agent_pipeline::budget::Budget;
use serde::{Deserialize, Serialize};

/// The providers a replay may name, the price of each priced model, and the limits of tasks
/// that set none of their own.
// Not `Eq`: prices are `f64`s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Providers {
    /// The providers' names, sorted: `offline`, and those of `LLM_PROVIDERS`. A replay that
    /// names none goes to the default LLM (`OPENAI_*`).
    pub providers: Vec<String>,
    /// Every model with a price, sorted by name.
    pub prices: Vec<ModelPrice>,
    /// The limits of a task that sets none of its own (`TASK_MAX_*`).
    pub default_budget: Budget,
}

/// What one model costs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelPrice {
    /// The model (its snapshots and provider-prefixed names cost the same unless listed).
    pub model: String,
    /// US dollars per million prompt tokens.
    pub input_per_mtok: Option<f64>,
    /// US dollars per million completion tokens.
    pub output_per_mtok: Option<f64>,
}

/// The choices and prices of `pipeline`.
pub fn providers(pipeline: &Pipeline) -> Providers {
    Providers {
        providers: pipeline.providers().to_vec(),
        prices: pipeline
            .prices()
            .entries()
            .map(|(model, price)| ModelPrice {
                model: model.to_owned(),
                input_per_mtok: price.input_per_mtok,
                output_per_mtok: price.output_per_mtok,
            })
            .collect(),
        default_budget: *pipeline.default_budget(),
    }
}
