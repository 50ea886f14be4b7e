//! What the code memory put into an agent's context, recorded in the step's artifact so that a
//! reviewer can see what the model saw.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One retrieved chunk of the repository that went into an agent's context.
///
/// It is recorded beside a stage's output, not asked of the model. The line range is the part
/// that was really included: when the context builder had to cut a chunk to stay within its
/// token budget, `end_line` is the last line kept and `truncated` is set.
///
/// ```
/// use agent_pipeline::output::Retrieved;
/// let retrieved = Retrieved {
///     path: "billing/invoice.py".to_owned(),
///     start_line: 10,
///     end_line: 24,
///     score: 0.032,
///     lexical_score: Some(7.5),
///     vector_score: None,
///     truncated: false,
/// };
/// let json = serde_json::to_value(&retrieved)?;
/// assert_eq!(json["path"], "billing/invoice.py");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Retrieved {
    /// The file, relative to the repository's root, with `/` separators.
    pub path: String,
    /// The first line included (1-based).
    pub start_line: u32,
    /// The last line included (1-based, inclusive).
    pub end_line: u32,
    /// The rank score the chunk was retrieved with (BM25, or reciprocal rank fusion of BM25
    /// and embeddings when both were used): higher is better, comparable within one search.
    pub score: f32,
    /// The chunk's BM25 score, when the lexical index found it.
    #[serde(default)]
    pub lexical_score: Option<f32>,
    /// The cosine similarity of the chunk's embedding to the query's, when embeddings were
    /// used and found it.
    #[serde(default)]
    pub vector_score: Option<f32>,
    /// Whether the chunk was cut at `end_line` to stay within the token budget.
    #[serde(default)]
    pub truncated: bool,
}
