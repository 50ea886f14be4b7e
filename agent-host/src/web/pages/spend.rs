//! What LLM calls spent, for people: costs in US dollars, token counts, a task's spend beside
//! its budget. Shared by the task, tasks and compare pages.

use agent_pipeline::budget::Budget;
use agent_pipeline::llm::{LlmCall, Spend, Usage};
use agent_pipeline::store::Artifact;
use maud::{Markup, html};

/// US dollars: four decimals below a dollar (LLM calls cost fractions of a cent), two above.
pub(super) fn usd(cost: f64) -> String {
    if cost > 0.0 && cost < 0.0001 {
        "<$0.0001".to_owned()
    } else if cost < 1.0 {
        format!("${cost:.4}")
    } else {
        format!("${cost:.2}")
    }
}

/// A count with thousands separated: `12,345`.
pub(super) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// `1,000 + 250 tokens`, prompt and completion (the total in the tooltip).
pub(super) fn tokens(usage: &Usage) -> Markup {
    html! {
        span.tokens title={ (count(usage.total_tokens)) " tokens: prompt + completion" } {
            (count(usage.prompt_tokens)) " + " (count(usage.completion_tokens)) " tokens"
        }
    }
}

/// A spend's cost, saying how many calls had no price (their cost is unknown, not zero).
pub(super) fn cost(spend: &Spend) -> Markup {
    html! {
        span.cost { (usd(spend.cost_usd)) }
        @if spend.unpriced_calls > 0 {
            " " span.muted.unpriced title="the price table has no price for their model" {
                "+ " (spend.unpriced_calls) " unpriced " (calls_word(spend.unpriced_calls))
            }
        }
    }
}

/// `call` or `calls`.
pub(super) fn calls_word(n: u64) -> &'static str {
    if n == 1 { "call" } else { "calls" }
}

/// What one attempt spent: the sum of its recorded calls, else (an attempt recorded before
/// calls were) what its artifact says.
pub(super) fn attempt_spend(calls: &[LlmCall], artifact: Option<&Artifact>) -> Option<Spend> {
    if !calls.is_empty() {
        return Some(Spend::of(calls));
    }
    let artifact = artifact?;
    if !artifact.llm_calls.is_empty() {
        return Some(Spend::of(&artifact.llm_calls));
    }
    Some(Spend {
        usage: artifact.usage,
        cost_usd: artifact.cost_usd,
        calls: 0,
        unpriced_calls: 0,
    })
}

/// What a task spent so far against what its budget allows.
#[derive(Debug, Clone, Copy)]
pub(super) struct BudgetUse {
    /// The limits (the pipeline's defaults with the task's own on top).
    pub(super) budget: Budget,
    /// What its calls spent.
    pub(super) spend: Spend,
    /// Seconds since it arrived (to its end, once it ended).
    pub(super) wall_secs: f64,
    /// The highest round its run reached.
    pub(super) rounds: u32,
}

/// The budget as a table of limits, each with what was spent and a meter.
pub(super) fn budget_table(used: &BudgetUse) -> Markup {
    let budget = &used.budget;
    let mut rows: Vec<(&str, String, String, f64, f64)> = Vec::new();
    if let Some(max) = budget.max_cost_usd {
        rows.push((
            "Cost",
            usd(used.spend.cost_usd),
            usd(max),
            used.spend.cost_usd,
            max,
        ));
    }
    if let Some(max) = budget.max_tokens {
        rows.push((
            "Tokens",
            count(used.spend.usage.total_tokens),
            count(max),
            used.spend.usage.total_tokens as f64,
            max as f64,
        ));
    }
    if let Some(max) = budget.max_wall_time_secs {
        rows.push((
            "Wall time",
            format!("{:.0} s", used.wall_secs),
            format!("{max} s"),
            used.wall_secs,
            max as f64,
        ));
    }
    if let Some(max) = budget.max_rounds {
        rows.push((
            "Rounds",
            used.rounds.to_string(),
            max.to_string(),
            f64::from(used.rounds),
            f64::from(max),
        ));
    }
    html! {
        table #task-budget .budget {
            caption.visually-hidden { "The task's budget: each limit and what was spent" }
            thead {
                tr {
                    th scope="col" { "Limit" }
                    th.num scope="col" { "Spent" }
                    th.num scope="col" { "Allowed" }
                    th scope="col" { span.visually-hidden { "share used" } }
                }
            }
            tbody {
                @for (name, spent, allowed, value, max) in &rows {
                    @let over = *value >= *max;
                    tr class=[over.then_some("over")] {
                        th scope="row" { (name) }
                        td.num { (spent) }
                        td.num { (allowed) }
                        td {
                            @if *max > 0.0 {
                                meter min="0" max=(max) value=(value.min(*max))
                                    low=(max * 0.75) high=(max * 0.9) optimum="0"
                                    aria-label={ (name) ": " (spent) " of " (allowed) } {
                                    (spent) " of " (allowed)
                                }
                            }
                            @if over { " " span.bad { "reached" } }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_and_counts_read_as_people_write_them() {
        assert_eq!(usd(0.0), "$0.0000");
        assert_eq!(usd(0.012_345), "$0.0123");
        assert_eq!(usd(0.000_01), "<$0.0001");
        assert_eq!(usd(12.5), "$12.50");
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
    }

    #[test]
    fn a_budget_shows_only_its_limits_and_marks_those_reached() {
        let used = BudgetUse {
            budget: Budget {
                max_cost_usd: Some(0.01),
                max_rounds: Some(3),
                ..Budget::default()
            },
            spend: Spend {
                cost_usd: 0.02,
                calls: 4,
                ..Spend::default()
            },
            wall_secs: 3.0,
            rounds: 1,
        };
        let html = budget_table(&used).into_string();
        assert!(html.contains("<th scope=\"row\">Cost</th>"), "{html}");
        assert!(html.contains("<th scope=\"row\">Rounds</th>"), "{html}");
        assert!(!html.contains("Tokens"), "{html}");
        assert_eq!(html.matches("reached").count(), 1, "{html}");
        assert!(html.contains("<tr class=\"over\">"), "{html}");
    }
}
