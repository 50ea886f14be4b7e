//! Per-task limits on tokens, cost, wall time and feedback rounds.
//!
//! A [`Budget`] holds the limits: the pipeline's defaults
//! ([`PipelineBuilder::budget`](crate::PipelineBuilder::budget)) with a task's own overrides
//! on top ([`NewTask::budget`](crate::wire::NewTask::budget)). Each step request of the task's
//! run carries them as a [`TaskBudget`], with when the task started and what it had spent when
//! the step was requested: the worker refuses LLM calls past the limits and stops the step at
//! the deadline, and the orchestrator checks the sum of every recorded call after each step.
//! A task that reaches a limit ends `error` with the reason `budget_exceeded`; what it did so
//! far is kept.
//!
//! Replays are an operator's decision and run without a budget; their calls count in the
//! task's totals all the same.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::llm::Spend;

/// Limits of one task; `None` is no limit. The default has none.
///
/// ```
/// use agent_pipeline::budget::Budget;
/// let defaults = Budget { max_cost_usd: Some(1.0), max_rounds: Some(3), ..Budget::default() };
/// let task = Budget { max_cost_usd: Some(0.1), ..Budget::default() };
/// let effective = task.over(&defaults);
/// assert_eq!(effective.max_cost_usd, Some(0.1));
/// assert_eq!(effective.max_rounds, Some(3));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Budget {
    /// Prompt and completion tokens over every LLM call of the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// US dollars over every LLM call of the task (calls without a price count as free).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_usd: Option<f64>,
    /// Seconds from the task's arrival to its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wall_time_secs: Option<u64>,
    /// Rounds of Implement → Test → Review to pass the gates (the pipeline's
    /// [`gate_rounds`](crate::PipelineBuilder::gate_rounds) when not set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rounds: Option<u32>,
}

impl Budget {
    /// These limits, with `defaults` where these have none.
    pub fn over(&self, defaults: &Budget) -> Budget {
        Budget {
            max_tokens: self.max_tokens.or(defaults.max_tokens),
            max_cost_usd: self.max_cost_usd.or(defaults.max_cost_usd),
            max_wall_time_secs: self.max_wall_time_secs.or(defaults.max_wall_time_secs),
            max_rounds: self.max_rounds.or(defaults.max_rounds),
        }
    }

    /// Whether no limit is set.
    pub fn is_unlimited(&self) -> bool {
        *self == Budget::default()
    }

    /// Why these limits cannot be used, if they cannot: a negative or non-finite cost, or
    /// zero rounds.
    pub fn check(&self) -> Result<(), String> {
        if let Some(cost) = self.max_cost_usd
            && !(cost.is_finite() && cost >= 0.0)
        {
            return Err(format!(
                "max_cost_usd must be a number of US dollars of at least 0, not {cost}"
            ));
        }
        if self.max_rounds == Some(0) {
            return Err("max_rounds must be at least 1".to_owned());
        }
        Ok(())
    }

    /// The first limit `spent` (by a task that started at `started_at`) has reached at `now`;
    /// rounds are checked by the gates, not here.
    pub fn exceeded(
        &self,
        spent: &Spend,
        started_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<BudgetHit> {
        if let Some(max) = self.max_tokens
            && spent.usage.total_tokens >= max
        {
            return Some(BudgetHit {
                limit: BudgetLimit::Tokens,
                allowed: max as f64,
                spent: spent.usage.total_tokens as f64,
            });
        }
        if let Some(max) = self.max_cost_usd
            && spent.cost_usd >= max
        {
            return Some(BudgetHit {
                limit: BudgetLimit::CostUsd,
                allowed: max,
                spent: spent.cost_usd,
            });
        }
        if let Some(max) = self.max_wall_time_secs {
            let elapsed = (now - started_at).num_milliseconds().max(0) as f64 / 1000.0;
            if elapsed >= max as f64 {
                return Some(BudgetHit {
                    limit: BudgetLimit::WallTime,
                    allowed: max as f64,
                    spent: elapsed,
                });
            }
        }
        None
    }
}

/// Which limit of a [`Budget`] was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetLimit {
    /// [`Budget::max_tokens`].
    Tokens,
    /// [`Budget::max_cost_usd`].
    CostUsd,
    /// [`Budget::max_wall_time_secs`].
    WallTime,
    /// [`Budget::max_rounds`].
    Rounds,
}

impl BudgetLimit {
    /// The limit as named in events: `tokens`, `cost_usd`, `wall_time` or `rounds`.
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetLimit::Tokens => "tokens",
            BudgetLimit::CostUsd => "cost_usd",
            BudgetLimit::WallTime => "wall_time",
            BudgetLimit::Rounds => "rounds",
        }
    }
}

/// A limit that was reached: which, what was allowed and what was spent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BudgetHit {
    /// The limit.
    pub limit: BudgetLimit,
    /// What the budget allowed (tokens, US dollars, seconds or rounds).
    pub allowed: f64,
    /// What the task had spent.
    pub spent: f64,
}

impl fmt::Display for BudgetHit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.limit {
            BudgetLimit::Tokens => write!(
                f,
                "the task spent {} tokens of its budget of {}",
                self.spent, self.allowed
            ),
            BudgetLimit::CostUsd => write!(
                f,
                "the task cost ${:.4} of its budget of ${:.4}",
                self.spent, self.allowed
            ),
            BudgetLimit::WallTime => write!(
                f,
                "the task ran {:.1} s of its budget of {} s",
                self.spent, self.allowed
            ),
            BudgetLimit::Rounds => write!(
                f,
                "the task used {} of its {} round(s) without passing its gates",
                self.spent, self.allowed
            ),
        }
    }
}

/// The budget a step of a task's run carries: the limits, when the task started, and what it
/// had spent when the step was requested.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskBudget {
    /// The task's limits.
    pub limits: Budget,
    /// When the task arrived (wall time counts from here).
    pub started_at: DateTime<Utc>,
    /// What the task had spent when the step was requested.
    #[serde(default)]
    pub spent: Spend,
}

impl TaskBudget {
    /// When the task runs out of wall time, if it can.
    pub fn deadline(&self) -> Option<DateTime<Utc>> {
        let secs = self.limits.max_wall_time_secs?;
        let secs = i64::try_from(secs).unwrap_or(i64::MAX / 1000);
        Some(self.started_at + chrono::Duration::seconds(secs))
    }

    /// How long the step may still run at `now` before the deadline (`None`: no deadline).
    pub fn time_left(&self, now: DateTime<Utc>) -> Option<Duration> {
        let deadline = self.deadline()?;
        Some((deadline - now).to_std().unwrap_or(Duration::ZERO))
    }

    /// What the step may still spend: (tokens, US dollars) left under the limits.
    pub fn allowance(&self) -> (Option<u64>, Option<f64>) {
        let tokens = self
            .limits
            .max_tokens
            .map(|max| max.saturating_sub(self.spent.usage.total_tokens));
        let cost = self
            .limits
            .max_cost_usd
            .map(|max| (max - self.spent.cost_usd).max(0.0));
        (tokens, cost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::Usage;

    fn spend(tokens: u64, cost: f64) -> Spend {
        Spend {
            usage: Usage {
                prompt_tokens: tokens,
                completion_tokens: 0,
                total_tokens: tokens,
            },
            cost_usd: cost,
            calls: 1,
            unpriced_calls: 0,
        }
    }

    #[test]
    fn each_limit_is_reached_at_its_value() {
        let now = Utc::now();
        let budget = Budget {
            max_tokens: Some(1000),
            max_cost_usd: Some(0.5),
            max_wall_time_secs: Some(60),
            max_rounds: None,
        };
        assert_eq!(budget.exceeded(&spend(999, 0.49), now, now), None);
        let hit = budget.exceeded(&spend(1000, 0.0), now, now);
        assert_eq!(hit.map(|h| h.limit), Some(BudgetLimit::Tokens));
        let hit = budget.exceeded(&spend(10, 0.5), now, now);
        assert_eq!(hit.map(|h| h.limit), Some(BudgetLimit::CostUsd));
        let started = now - chrono::Duration::seconds(61);
        let hit = budget.exceeded(&spend(10, 0.0), started, now);
        assert_eq!(hit.map(|h| h.limit), Some(BudgetLimit::WallTime));
        assert!(hit.is_some_and(|h| h.to_string().contains("of its budget of 60 s")));
        assert_eq!(
            Budget::default().exceeded(&spend(u64::MAX, 1e9), started, now),
            None
        );
    }

    #[test]
    fn the_allowance_is_what_is_left() {
        let now = Utc::now();
        let budget = TaskBudget {
            limits: Budget {
                max_tokens: Some(1000),
                max_cost_usd: Some(0.5),
                max_wall_time_secs: Some(60),
                max_rounds: None,
            },
            started_at: now - chrono::Duration::seconds(20),
            spent: spend(400, 0.2),
        };
        let (tokens, cost) = budget.allowance();
        assert_eq!(tokens, Some(600));
        assert!(cost.is_some_and(|c| (c - 0.3).abs() < 1e-9));
        let left = budget.time_left(now).map(|d| d.as_secs());
        assert_eq!(left, Some(40));
    }

    #[test]
    fn bad_limits_are_refused() {
        let bad = |b: Budget| b.check().is_err();
        assert!(bad(Budget {
            max_cost_usd: Some(-1.0),
            ..Budget::default()
        }));
        assert!(bad(Budget {
            max_cost_usd: Some(f64::NAN),
            ..Budget::default()
        }));
        assert!(bad(Budget {
            max_rounds: Some(0),
            ..Budget::default()
        }));
        assert!(Budget::default().check().is_ok());
    }
}
