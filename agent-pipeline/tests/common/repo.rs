//! A generated repository of a few hundred Python and Rust files with distinct functions, and
//! one file holding the function the retrieval tests look for.

use std::path::Path;

/// The file that holds the function the tests look for.
pub const TARGET_PATH: &str = "billing/ledger.py";
/// The function the tests look for.
pub const TARGET_FUNCTION: &str = "compute_invoice_total";

const VERBS: [&str; 12] = [
    "load", "render", "parse", "validate", "merge", "schedule", "encode", "resolve", "refresh",
    "archive", "publish", "collect",
];
const NOUNS: [&str; 15] = [
    "user",
    "order",
    "shipment",
    "report",
    "session",
    "token",
    "catalog",
    "warehouse",
    "profile",
    "message",
    "ticket",
    "payment",
    "coupon",
    "invoice",
    "customer",
];
const QUALIFIERS: [&str; 10] = [
    "header", "weight", "status", "count", "cache", "batch", "summary", "address", "limit",
    "window",
];

/// Writes `files` generated files (half Python, half Rust, in 10 directories) and the target
/// file under `root`. Several generated names share a word with the target's
/// (`render_invoice_header`, `collect_order_count`…), so that finding it takes ranking, not
/// a unique word.
pub fn generate(root: &Path, files: usize) -> std::io::Result<()> {
    for n in 0..files {
        let dir = root.join(format!("pkg{}", n % 10));
        std::fs::create_dir_all(&dir)?;
        let mut names = Vec::new();
        for f in 0..3 {
            let i = n * 3 + f;
            names.push(format!(
                "{}_{}_{}",
                VERBS[i % VERBS.len()],
                NOUNS[(i / VERBS.len()) % NOUNS.len()],
                QUALIFIERS[(i / 7) % QUALIFIERS.len()]
            ));
        }
        if n % 2 == 0 {
            let mut text = format!("\"\"\"Module {n}.\"\"\"\nimport os\n\n");
            for (f, name) in names.iter().enumerate() {
                text.push_str(&format!(
                    "\ndef {name}_{n}(items, limit={f}):\n    \"\"\"Handle {name}.\"\"\"\n    result = []\n    for item in items[:limit]:\n        result.append(item)\n    return result\n\n"
                ));
            }
            std::fs::write(dir.join(format!("module_{n}.py")), text)?;
        } else {
            let mut text = format!("//! Module {n}.\n\nuse std::collections::HashMap;\n\n");
            for (f, name) in names.iter().enumerate() {
                text.push_str(&format!(
                    "/// Handles {name}.\npub fn {name}_{n}(items: &[u32]) -> usize {{\n    let mut seen = HashMap::new();\n    for item in items {{\n        seen.insert(*item, {f});\n    }}\n    seen.len()\n}}\n\n"
                ));
            }
            std::fs::write(dir.join(format!("module_{n}.rs")), text)?;
        }
    }
    std::fs::create_dir_all(root.join("billing"))?;
    std::fs::write(
        root.join(TARGET_PATH),
        "\"\"\"The ledger of a customer account.\"\"\"\nfrom decimal import Decimal\n\n\n\
         def open_ledger(customer):\n    return {\"customer\": customer, \"entries\": []}\n\n\n\
         def compute_invoice_total(lines, tax_rate):\n    \"\"\"Add up the lines of an invoice, with tax.\"\"\"\n    \
         subtotal = Decimal(0)\n    for line in lines:\n        subtotal += line.price * line.quantity\n    \
         return subtotal * (1 + tax_rate)\n\n\n\
         def close_ledger(ledger):\n    ledger[\"closed\"] = True\n    return ledger\n",
    )?;
    Ok(())
}
