//! The version of a schema: a hash of its content, so that it changes exactly when it does.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// How many hexadecimal digits of the SHA-256 a version keeps (48 bits).
const VERSION_DIGITS: usize = 12;

/// The version of `schema`: the first 12 hexadecimal digits of the SHA-256 of its canonical
/// JSON (object keys sorted, no white space).
///
/// Two schemas that differ in anything, a description included, have different versions; the
/// same schema written with its keys in another order has the same one.
///
/// ```
/// use agent_pipeline::schemas::version_of;
/// let a = serde_json::json!({"type": "object", "required": ["task_id"]});
/// let b = serde_json::json!({"required": ["task_id"], "type": "object"});
/// assert_eq!(version_of(&a), version_of(&b));
/// // Arrays keep their order: `required` in another order is another schema.
/// let c = serde_json::json!({"type": "object", "required": ["prompt", "task_id"]});
/// let d = serde_json::json!({"type": "object", "required": ["task_id", "prompt"]});
/// assert_ne!(version_of(&c), version_of(&d));
/// assert_eq!(version_of(&a).len(), 12);
/// assert_ne!(version_of(&a), version_of(&serde_json::json!({"type": "object"})));
/// ```
pub fn version_of(schema: &Value) -> String {
    let mut canonical = String::new();
    write_canonical(schema, &mut canonical);
    let digest = Sha256::digest(canonical.as_bytes());
    let mut hex = String::with_capacity(VERSION_DIGITS);
    for byte in digest.iter().take(VERSION_DIGITS / 2) {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

/// Writes `value` as compact JSON with the keys of every object sorted. Strings and numbers
/// are written as serde_json writes them, which is the same for the same value.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(object) => {
            let mut keys: Vec<&String> = object.keys().collect();
            keys.sort();
            out.push('{');
            for (index, key) in keys.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                if let Some(child) = object.get(key) {
                    write_canonical(child, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}
