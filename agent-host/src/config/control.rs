//! The settings of cost control and approval: the limits of every task that sets none of its
//! own (`TASK_MAX_*`), whether a person approves each change before it is published
//! (`REQUIRE_APPROVAL`), and the further LLM providers a replay may name (`LLM_PROVIDERS`,
//! each with its key in `LLM_PROVIDER_<NAME>_API_KEY`).
//!
//! The parsers of single values are shared with the flags of `send` (`--max-tokens` …), so
//! that a flag and its variable accept and refuse the same text.

use std::fmt;

use agent_pipeline::budget::Budget;
use agent_pipeline::llm::{ApiKey, OFFLINE_MODEL, parse_duration};
use anyhow::{Result, bail};

/// `TASK_MAX_TOKENS`.
pub(crate) const TASK_MAX_TOKENS: &str = "TASK_MAX_TOKENS";
/// `TASK_MAX_COST_USD`.
pub(crate) const TASK_MAX_COST_USD: &str = "TASK_MAX_COST_USD";
/// `TASK_MAX_WALL_TIME`.
pub(crate) const TASK_MAX_WALL_TIME: &str = "TASK_MAX_WALL_TIME";
/// `TASK_MAX_ROUNDS`.
pub(crate) const TASK_MAX_ROUNDS: &str = "TASK_MAX_ROUNDS";
/// `REQUIRE_APPROVAL`.
pub(crate) const REQUIRE_APPROVAL: &str = "REQUIRE_APPROVAL";
/// `LLM_PROVIDERS`.
pub(crate) const LLM_PROVIDERS: &str = "LLM_PROVIDERS";

/// The keys of this module with a fixed name (the providers' keys are named after them).
pub(crate) const KEYS: [&str; 6] = [
    TASK_MAX_TOKENS,
    TASK_MAX_COST_USD,
    TASK_MAX_WALL_TIME,
    TASK_MAX_ROUNDS,
    REQUIRE_APPROVAL,
    LLM_PROVIDERS,
];

/// The start and end of a provider's key variable: `LLM_PROVIDER_<NAME>_API_KEY`.
const PROVIDER_KEY_PREFIX: &str = "LLM_PROVIDER_";
/// See [`PROVIDER_KEY_PREFIX`].
const PROVIDER_KEY_SUFFIX: &str = "_API_KEY";

/// A limit of tokens: a whole number of at least 1.
pub(crate) fn parse_tokens(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| format!("must be a whole number of tokens of at least 1, not {text:?}"))
}

/// A limit of cost: US dollars, more than 0 (a limit of 0 would stop every task after its
/// first step, which no one means).
pub(crate) fn parse_cost(text: &str) -> Result<f64, String> {
    let trimmed = text.trim();
    trimmed
        .strip_prefix('$')
        .unwrap_or(trimmed)
        .parse::<f64>()
        .ok()
        .filter(|usd| usd.is_finite() && *usd > 0.0)
        .ok_or_else(|| format!("must be US dollars of more than 0, such as 0.50, not {text:?}"))
}

/// A limit of wall time in whole seconds: `600`, `90s`, `10m`, `2h`, `1h30m` (a fraction of
/// a second counts as a whole one), at least one second.
pub(crate) fn parse_wall_time(text: &str) -> Result<u64, String> {
    parse_duration(text)
        .map(|duration| duration.as_secs_f64().ceil() as u64)
        .filter(|secs| *secs >= 1)
        .ok_or_else(|| {
            format!("must be a duration such as 600 (seconds), 90s, 10m or 2h, not {text:?}")
        })
}

/// A limit of rounds: a whole number of at least 1.
pub(crate) fn parse_rounds(text: &str) -> Result<u32, String> {
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| format!("must be a whole number of rounds of at least 1, not {text:?}"))
}

/// The limits of `TASK_MAX_TOKENS`, `TASK_MAX_COST_USD`, `TASK_MAX_WALL_TIME` and
/// `TASK_MAX_ROUNDS`; unset ones are no limit (rounds: `GATE_ROUNDS`).
pub(crate) fn task_budget(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Budget> {
    fn read<T>(
        lookup: &dyn Fn(&str) -> Option<String>,
        key: &str,
        parse: fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>> {
        match lookup(key) {
            None => Ok(None),
            Some(text) => match parse(&text) {
                Ok(value) => Ok(Some(value)),
                Err(problem) => bail!("{key} {problem}"),
            },
        }
    }
    Ok(Budget {
        max_tokens: read(lookup, TASK_MAX_TOKENS, parse_tokens)?,
        max_cost_usd: read(lookup, TASK_MAX_COST_USD, parse_cost)?,
        max_wall_time_secs: read(lookup, TASK_MAX_WALL_TIME, parse_wall_time)?,
        max_rounds: read(lookup, TASK_MAX_ROUNDS, parse_rounds)?,
    })
}

/// The limits a budget sets, for people: `50000 tokens, $0.50, 10m wall time, 2 round(s)`;
/// `none` when it sets none.
pub(crate) fn describe_limits(budget: &Budget) -> String {
    let mut parts = Vec::new();
    if let Some(tokens) = budget.max_tokens {
        parts.push(format!("{tokens} tokens"));
    }
    if let Some(usd) = budget.max_cost_usd {
        parts.push(format!("${usd:.2}"));
    }
    if let Some(secs) = budget.max_wall_time_secs {
        parts.push(format!("{} wall time", describe_seconds(secs)));
    }
    if let Some(rounds) = budget.max_rounds {
        parts.push(format!("{rounds} round(s)"));
    }
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(", ")
    }
}

/// The limits for people as [`describe_limits`] says them, with `gate_rounds` for the rounds
/// when the budget sets none of its own but sets something else; `none` when nothing is
/// limited.
pub(crate) fn describe_budget(budget: &Budget, gate_rounds: u32) -> String {
    let limits = describe_limits(budget);
    if budget.is_unlimited() || budget.max_rounds.is_some() {
        limits
    } else {
        format!("{limits}, {gate_rounds} round(s)")
    }
}

/// Seconds as the variable would say them: `2h`, `10m`, `1h30m`, `95s`.
fn describe_seconds(secs: u64) -> String {
    let (hours, minutes, seconds) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    if seconds > 0 || out.is_empty() {
        out.push_str(&format!("{seconds}s"));
    }
    out
}

/// Another OpenAI-compatible server a replay may name as its provider.
#[derive(Clone, PartialEq)]
pub(crate) struct ProviderConfig {
    /// The name replays use (`--provider`), as `LLM_PROVIDERS` gives it.
    pub(crate) name: String,
    /// Its Chat Completions base URL, e.g. `https://api.example.com/v1`.
    pub(crate) base_url: String,
    /// `LLM_PROVIDER_<NAME>_API_KEY` (never shown by `Debug`).
    pub(crate) api_key: ApiKey,
}

impl fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("name", &self.name)
            .field("base_url", &super::redact_url(&self.base_url))
            .field("api_key", &self.api_key)
            .finish()
    }
}

/// The variable of the key of provider `name`: `LLM_PROVIDER_<NAME>_API_KEY`, the name
/// upper-cased with `-` as `_` (variable names cannot hold `-`).
pub(crate) fn provider_key_variable(name: &str) -> String {
    format!(
        "{PROVIDER_KEY_PREFIX}{}{PROVIDER_KEY_SUFFIX}",
        name.to_ascii_uppercase().replace('-', "_")
    )
}

/// Whether `key` is the key variable of some provider, which a configuration file may set
/// whatever the provider's name.
pub(crate) fn is_provider_key(key: &str) -> bool {
    key.strip_prefix(PROVIDER_KEY_PREFIX)
        .and_then(|rest| rest.strip_suffix(PROVIDER_KEY_SUFFIX))
        .is_some_and(|name| {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        })
}

/// The providers of `LLM_PROVIDERS` (`name=https://host/v1,name2=…`), each with its key.
pub(crate) fn providers(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Vec<ProviderConfig>> {
    let Some(spec) = lookup(LLM_PROVIDERS) else {
        return Ok(Vec::new());
    };
    let mut providers: Vec<ProviderConfig> = Vec::new();
    for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((name, base_url)) = entry.split_once('=') else {
            bail!("{LLM_PROVIDERS}: {entry:?} is not name=https://host/v1");
        };
        let (name, base_url) = (name.trim(), base_url.trim());
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_name {
            bail!(
                "{LLM_PROVIDERS}: the provider name {name:?} must be letters, digits, - and _ \
                 (at most 64)"
            );
        }
        if name == OFFLINE_MODEL {
            bail!(
                "{LLM_PROVIDERS}: {OFFLINE_MODEL:?} is the built-in offline model; name the provider otherwise"
            );
        }
        let variable = provider_key_variable(name);
        if let Some(other) = providers
            .iter()
            .find(|p| provider_key_variable(&p.name) == variable)
        {
            bail!(
                "{LLM_PROVIDERS}: {name:?} and {:?} would share the key variable {variable}",
                other.name
            );
        }
        let url_ok = reqwest::Url::parse(base_url)
            .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.has_host());
        if !url_ok {
            // The URL is not echoed: it may hold a proxy's credentials.
            bail!(
                "{LLM_PROVIDERS}: the base URL of {name:?} must be an http:// or https:// URL \
                 such as https://api.example.com/v1"
            );
        }
        let Some(key) = lookup(&variable) else {
            bail!(
                "{variable} is not set: provider {name:?} of {LLM_PROVIDERS} needs its API key \
                 (any non-empty value for a server that wants none)"
            );
        };
        providers.push(ProviderConfig {
            name: name.to_owned(),
            base_url: base_url.to_owned(),
            api_key: ApiKey::new(key.trim()),
        });
    }
    Ok(providers)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |key| map.get(key).cloned()
    }

    #[test]
    fn each_limit_is_read_and_nonsense_names_the_variable() -> Result<()> {
        let budget = task_budget(&env(&[
            (TASK_MAX_TOKENS, "50000"),
            (TASK_MAX_COST_USD, "$0.5"),
            (TASK_MAX_WALL_TIME, "1h30m"),
            (TASK_MAX_ROUNDS, " 2 "),
        ]))?;
        assert_eq!(
            budget,
            Budget {
                max_tokens: Some(50_000),
                max_cost_usd: Some(0.5),
                max_wall_time_secs: Some(5400),
                max_rounds: Some(2),
            }
        );
        assert_eq!(
            describe_budget(&budget, 3),
            "50000 tokens, $0.50, 1h30m wall time, 2 round(s)"
        );
        assert!(task_budget(&env(&[]))?.is_unlimited());
        assert_eq!(describe_budget(&Budget::default(), 3), "none");
        let cost_only = Budget {
            max_cost_usd: Some(1.0),
            ..Budget::default()
        };
        assert_eq!(describe_budget(&cost_only, 3), "$1.00, 3 round(s)");
        for (key, bad) in [
            (TASK_MAX_TOKENS, "0"),
            (TASK_MAX_TOKENS, "lots"),
            (TASK_MAX_COST_USD, "-1"),
            (TASK_MAX_COST_USD, "0"),
            (TASK_MAX_COST_USD, "NaN"),
            (TASK_MAX_WALL_TIME, "soon"),
            (TASK_MAX_WALL_TIME, "0s"),
            (TASK_MAX_ROUNDS, "0"),
        ] {
            let error = task_budget(&env(&[(key, bad)])).map_err(|e| e.to_string());
            assert!(
                error.as_ref().is_err_and(|e| e.starts_with(key)),
                "{key}={bad}: {error:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn wall_times_read_as_people_write_them() {
        for (text, secs) in [
            ("600", 600),
            ("90s", 90),
            ("10m", 600),
            ("2h", 7200),
            ("0.2", 1),
        ] {
            assert_eq!(parse_wall_time(text), Ok(secs), "{text}");
        }
        assert_eq!(describe_seconds(95), "1m35s");
        assert_eq!(describe_seconds(7200), "2h");
    }

    #[test]
    fn providers_come_with_their_keys_and_bad_ones_are_refused() -> Result<()> {
        let providers = providers(&env(&[
            (
                LLM_PROVIDERS,
                "local=http://127.0.0.1:8000/v1, big-lab = https://api.example.com/v1,",
            ),
            ("LLM_PROVIDER_LOCAL_API_KEY", "none"),
            ("LLM_PROVIDER_BIG_LAB_API_KEY", "sk-SECRET42"),
        ]))?;
        let names: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["local", "big-lab"]);
        assert_eq!(providers[1].base_url, "https://api.example.com/v1");
        assert_eq!(providers[1].api_key.expose(), "sk-SECRET42");
        assert!(!format!("{providers:?}").contains("SECRET42"));
        assert!(is_provider_key("LLM_PROVIDER_BIG_LAB_API_KEY"));
        assert!(!is_provider_key("LLM_PROVIDER__API_KEY"));
        assert!(!is_provider_key("LLM_PROVIDER_x_API_KEY"));

        for (spec, keys, expected) in [
            ("local", &[][..], "not name=https://host/v1"),
            ("a b=http://x/v1", &[][..], "must be letters, digits"),
            ("offline=http://x/v1", &[][..], "built-in offline model"),
            (
                "x=ftp://host/v1",
                &[("LLM_PROVIDER_X_API_KEY", "k")][..],
                "http:// or https://",
            ),
            (
                "x=http://host/v1",
                &[][..],
                "LLM_PROVIDER_X_API_KEY is not set",
            ),
            (
                "a-b=http://h/v1,a_b=http://h/v1",
                &[("LLM_PROVIDER_A_B_API_KEY", "k")][..],
                "would share the key variable",
            ),
        ] {
            let mut pairs = vec![(LLM_PROVIDERS, spec)];
            pairs.extend_from_slice(keys);
            let error = super::providers(&env(&pairs)).map_err(|e| e.to_string());
            assert!(
                error.as_ref().is_err_and(|e| e.contains(expected)),
                "{spec}: {error:?}"
            );
        }
        Ok(())
    }
}
