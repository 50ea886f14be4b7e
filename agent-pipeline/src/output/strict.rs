//! JSON Schemas that OpenAI structured outputs accept in strict mode.
//!
//! Strict mode wants every property listed in `required` (optional ones as nullable types),
//! `additionalProperties: false` on every object, `anyOf` rather than `oneOf`, and none of the
//! keywords it does not support. schemars has no such mode, so [`StrictSchema`] rewrites the
//! generated schema recursively.

use schemars::generate::SchemaSettings;
use schemars::transform::Transform;
use schemars::{JsonSchema, Schema};
use serde_json::{Map, Value};

/// String formats that strict mode accepts; any other `format` (schemars adds `uint32` and the
/// like) is removed.
const SUPPORTED_FORMATS: &[&str] = &[
    "date-time",
    "time",
    "date",
    "duration",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "uuid",
];

/// Keywords that strict mode rejects.
const UNSUPPORTED_KEYWORDS: &[&str] = &[
    "$schema",
    "default",
    "examples",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "uniqueItems",
    "contains",
    "minContains",
    "maxContains",
    "patternProperties",
    "propertyNames",
    "minProperties",
    "maxProperties",
    "unevaluatedProperties",
    "unevaluatedItems",
];

/// A schemars [`Transform`] that makes a schema acceptable to OpenAI strict structured outputs.
#[derive(Debug, Clone, Copy, Default)]
pub struct StrictSchema;

impl Transform for StrictSchema {
    fn transform(&mut self, schema: &mut Schema) {
        if let Some(object) = schema.as_object_mut() {
            make_strict(object);
        }
    }
}

/// The strict JSON Schema of `T`, as handed to the LLM.
///
/// ```
/// use agent_pipeline::output::{strict_schema, Design};
/// let schema = strict_schema::<Design>();
/// assert_eq!(schema["additionalProperties"], false);
/// assert_eq!(schema["required"], serde_json::json!(["design_summary", "files_touched"]));
/// ```
pub fn strict_schema<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::draft2020_12()
        .with(|settings| settings.inline_subschemas = true)
        .with_transform(StrictSchema)
        .into_generator();
    generator.into_root_schema_for::<T>().to_value()
}

fn make_strict(object: &mut Map<String, Value>) {
    for keyword in UNSUPPORTED_KEYWORDS {
        object.remove(*keyword);
    }
    if let Some(Value::String(format)) = object.get("format")
        && !SUPPORTED_FORMATS.contains(&format.as_str())
    {
        object.remove("format");
    }
    if let Some(one_of) = object.remove("oneOf") {
        object.insert("anyOf".to_owned(), one_of);
    }

    let required = object_required(object).unwrap_or_default();
    if let Some(Value::Object(properties)) = object.get_mut("properties") {
        for (name, property) in properties.iter_mut() {
            if !required.contains(name) {
                make_nullable(property);
            }
        }
    }
    let is_object =
        object.get("type").is_some_and(|t| t == "object") || object.contains_key("properties");
    if is_object {
        let names: Vec<Value> = match object.get("properties") {
            Some(Value::Object(properties)) => {
                properties.keys().cloned().map(Value::String).collect()
            }
            _ => Vec::new(),
        };
        object.insert("required".to_owned(), Value::Array(names));
        object.insert("additionalProperties".to_owned(), Value::Bool(false));
    }

    for key in ["properties", "$defs", "definitions"] {
        if let Some(Value::Object(children)) = object.get_mut(key) {
            children.values_mut().for_each(strict_value);
        }
    }
    for key in ["anyOf", "allOf", "prefixItems"] {
        if let Some(Value::Array(children)) = object.get_mut(key) {
            children.iter_mut().for_each(strict_value);
        }
    }
    for key in ["items", "not", "if", "then", "else"] {
        if let Some(child) = object.get_mut(key) {
            strict_value(child);
        }
    }
}

fn object_required(object: &Map<String, Value>) -> Option<Vec<String>> {
    match object.get("required") {
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
        ),
        _ => None,
    }
}

fn strict_value(value: &mut Value) {
    if let Value::Object(object) = value {
        make_strict(object);
    }
}

/// Optional properties become required but nullable, as strict mode asks.
fn make_nullable(property: &mut Value) {
    let Value::Object(object) = property else {
        return;
    };
    match object.get_mut("type") {
        Some(Value::String(single)) if single != "null" => {
            let single = std::mem::take(single);
            object.insert(
                "type".to_owned(),
                Value::Array(vec![Value::String(single), Value::String("null".into())]),
            );
        }
        Some(Value::Array(types)) => {
            if !types.iter().any(|t| t == "null") {
                types.push(Value::String("null".into()));
            }
        }
        _ => {
            let inner = std::mem::take(object);
            object.insert(
                "anyOf".to_owned(),
                Value::Array(vec![
                    Value::Object(inner),
                    serde_json::json!({ "type": "null" }),
                ]),
            );
        }
    }
}

/// Every way in which `schema` breaks strict mode, as human-readable paths; empty when strict.
///
/// Used by the tests of every stage output, and useful to check a custom agent's schema.
pub fn strictness_violations(schema: &Value) -> Vec<String> {
    let mut found = Vec::new();
    check(schema, "$", &mut found);
    found
}

fn check(value: &Value, path: &str, found: &mut Vec<String>) {
    let Value::Object(object) = value else {
        return;
    };
    if object.contains_key("oneOf") {
        found.push(format!("{path}: oneOf"));
    }
    for keyword in UNSUPPORTED_KEYWORDS.iter().filter(|k| **k != "$schema") {
        if object.contains_key(*keyword) {
            found.push(format!("{path}: unsupported keyword {keyword}"));
        }
    }
    if let Some(Value::String(format)) = object.get("format")
        && !SUPPORTED_FORMATS.contains(&format.as_str())
    {
        found.push(format!("{path}: unsupported format {format}"));
    }
    if let Some(Value::Object(properties)) = object.get("properties") {
        if object.get("additionalProperties") != Some(&Value::Bool(false)) {
            found.push(format!("{path}: additionalProperties is not false"));
        }
        let required = object_required(object).unwrap_or_default();
        for name in properties.keys() {
            if !required.contains(name) {
                found.push(format!("{path}: property {name} is not required"));
            }
        }
        for (name, child) in properties {
            check(child, &format!("{path}.{name}"), found);
        }
    } else if object.get("type").is_some_and(|t| t == "object")
        && object.get("additionalProperties") != Some(&Value::Bool(false))
    {
        found.push(format!("{path}: additionalProperties is not false"));
    }
    for key in ["$defs", "definitions"] {
        if let Some(Value::Object(children)) = object.get(key) {
            for (name, child) in children {
                check(child, &format!("{path}.{key}.{name}"), found);
            }
        }
    }
    for key in ["anyOf", "allOf", "prefixItems"] {
        if let Some(Value::Array(children)) = object.get(key) {
            for (index, child) in children.iter().enumerate() {
                check(child, &format!("{path}.{key}[{index}]"), found);
            }
        }
    }
    if let Some(items) = object.get("items") {
        check(items, &format!("{path}[]"), found);
    }
}
