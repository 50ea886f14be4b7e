//! Property tests of the configuration: whatever a configuration file holds and whatever value
//! a variable has, the host starts with a configuration or stops with an error naming the
//! file or the variable, and never panics.
//!
//! Each property runs 256 cases unless `PROPTEST_CASES` says otherwise.

use std::path::Path;

use proptest::prelude::*;
use serde_json::{Map, Value};

use super::{Config, ConfigFile, Flags, known_keys};

/// 256 cases per property, or `PROPTEST_CASES`.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        // A failure prints its minimal input; nothing is written into the source tree.
        failure_persistence: None,
        ..ProptestConfig::with_cases(cases)
    }
}

/// The name the file is read under, which its errors must give.
const FILE: &str = "config.local.json";

/// A known variable, or the key variable of a provider.
fn variable() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(known_keys()).prop_map(str::to_owned),
        1 => Just("LLM_PROVIDER_LOCAL_API_KEY".to_owned()),
    ]
}

/// A key of a configuration file: usually a known one.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => variable(),
        1 => "[A-Z_]{1,24}",
        1 => any::<String>(),
    ]
}

/// A value a person might write for some variable, or anything.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => any::<String>(),
        1 => "-?[0-9]{0,22}(\\.[0-9]{1,3})?(e[0-9]{1,3})?",
        1 => "(NaN|inf|-inf|1e400|0|-0|1|true|false|yes|off|TRUE|maybe| )",
        1 => "[0-9]{1,20}(h|m|s|ms|d)?",
        1 => "(127\\.0\\.0\\.1|0\\.0\\.0\\.0|\\[::1\\]|localhost|999\\.1\\.1\\.1):[0-9]{0,6}",
        1 => "(https?|ftp|sqlite|postgres)://[a-z0-9.:@/]{0,16}",
        1 => "([a-z0-9-]{0,8}=[a-z0-9.:/]{0,12},?){1,3}",
        1 => "(memory|kafka|bubblewrap|none|files|database|PLAIN|SCRAM-SHA-256|owner/name)",
    ]
}

/// Any JSON value, a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        value().prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// The text of a configuration file: an object of keys and values, cut short or not, or any
/// text.
fn file_text() -> impl Strategy<Value = String> {
    let object = || {
        prop::collection::btree_map(key(), json(), 0..6)
            .prop_map(|map| Value::Object(map.into_iter().collect::<Map<_, _>>()).to_string())
    };
    prop_oneof![
        3 => object(),
        1 => (object(), any::<prop::sample::Index>()).prop_map(|(text, at)| {
            let mut end = at.index(text.len() + 1);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text[..end].to_owned()
        }),
        1 => json().prop_map(|value| value.to_string()),
        1 => any::<String>(),
    ]
}

/// Whether a configuration file may set `key`: a known variable or a provider's key.
fn settable(key: &str) -> bool {
    known_keys().contains(&key)
        || key
            .strip_prefix("LLM_PROVIDER_")
            .and_then(|rest| rest.strip_suffix("_API_KEY"))
            .is_some_and(|name| {
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            })
}

/// A configuration file setting `pairs`.
fn file_of(pairs: &[(String, String)]) -> Result<ConfigFile, TestCaseError> {
    let object: Map<String, Value> = pairs
        .iter()
        .map(|(key, value)| (key.clone(), Value::String(value.clone())))
        .collect();
    ConfigFile::parse(Path::new(FILE), &Value::Object(object).to_string())
        .map_err(|error| TestCaseError::fail(format!("{error:#}")))
}

/// What resolving `pairs` promises, from the file and from the environment alike: a
/// configuration, or an error naming one of the variables.
fn check_resolve(pairs: &[(String, String)]) -> Result<(), TestCaseError> {
    let file = file_of(pairs)?;
    let env = |name: &str| {
        pairs
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let from_file = Config::resolve(&|_| None, Some(&file), &Flags::default());
    let from_env = Config::resolve(&env, None, &Flags::default());
    for resolved in [&from_file, &from_env] {
        if let Err(error) = resolved {
            let message = format!("{error:#}");
            prop_assert!(
                pairs.iter().any(|(key, _)| message.contains(key.as_str())),
                "{message:?} names none of {pairs:?}"
            );
        }
    }
    prop_assert_eq!(
        from_file.is_ok(),
        from_env.is_ok(),
        "the file and the environment disagree about {:?}",
        pairs
    );
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// Any text as the configuration file: its variables, or an error naming the file and,
    /// when a key is at fault, the key.
    #[test]
    fn any_config_file_is_read_or_refused_naming_the_file(text in file_text()) {
        let parsed = ConfigFile::parse(Path::new(FILE), &text);
        let expected = serde_json::from_str::<Value>(&text);
        match (&parsed, &expected) {
            (Ok(file), Ok(Value::Object(object))) => {
                for (key, value) in object {
                    prop_assert!(settable(key), "unknown key {key:?} accepted");
                    prop_assert_eq!(file.get(key), value.as_str());
                }
            }
            (Ok(_), _) => prop_assert!(false, "{text:?} is not a JSON object, yet accepted"),
            (Err(error), _) => {
                let message = format!("{error:#}");
                prop_assert!(message.contains(&format!("config file {FILE}")), "{message:?}");
                if let Ok(Value::Object(object)) = &expected {
                    let at_fault = object
                        .iter()
                        .filter(|(key, value)| !settable(key) || !value.is_string())
                        .map(|(key, _)| format!("{key:?}"))
                        .collect::<Vec<_>>();
                    prop_assert!(
                        at_fault.iter().any(|key| message.contains(key.as_str())),
                        "{message:?} names none of {at_fault:?}"
                    );
                }
            }
        }
    }

    /// Any value of one variable, in the file or the environment: a configuration, or an
    /// error naming the variable.
    #[test]
    fn any_value_of_a_variable_is_read_or_refused_naming_it(
        variable in variable(),
        value in value(),
    ) {
        check_resolve(&[(variable, value)])?;
    }

    /// Any values of a few variables together: a configuration, or an error naming one of
    /// them.
    #[test]
    fn any_values_of_several_variables_are_read_or_refused_naming_one(
        pairs in prop::collection::vec((variable(), value()), 2..6),
    ) {
        check_resolve(&pairs)?;
    }
}
