//! The code memory: an index of a repository's files that an agent's context is drawn from.
//!
//! [`CodeMemory::open`] indexes a work tree at a commit — a lexical BM25 index (tantivy) of
//! its text files cut into chunks by top-level definition, and, with an [`Embedder`], a
//! vector per chunk — or reuses the index already built for that commit.
//! [`CodeMemory::update`] re-indexes the files an attempt changed in the work tree, and
//! [`CodeMemory::apply`] the files a commit names; [`CodeMemory::search`]
//! returns the chunks that best answer a question; [`ContextBuilder`] packs the task, earlier
//! artifacts and those chunks within a token budget and records what went in
//! ([`Retrieved`]). `docs/memory.md` tells the whole story.
//!
//! ```
//! use agent_pipeline::memory::{CodeMemory, ContextBuilder, IndexOutcome, MemoryOptions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let repo = tempfile::tempdir()?;
//! std::fs::write(
//!     repo.path().join("invoice.py"),
//!     "def compute_invoice_total(lines):\n    return sum(l.amount for l in lines)\n",
//! )?;
//! let data = tempfile::tempdir()?;
//! let index_dir = data.path().join("memory/my-repo/3f2a9c1");
//!
//! let (memory, outcome) =
//!     CodeMemory::open(&index_dir, repo.path(), "3f2a9c1", MemoryOptions::default()).await?;
//! assert!(matches!(outcome, IndexOutcome::Built(_)));
//! let hits = memory.search("where is the invoice total computed", 5).await?;
//! assert_eq!(hits[0].path, "invoice.py");
//!
//! let context = ContextBuilder::new(1_000)
//!     .task("Add VAT to invoice totals.")
//!     .chunks(hits)
//!     .build();
//! assert_eq!(context.retrieved[0].start_line, 1);
//!
//! // A second task on the same commit reuses the index.
//! let (_, outcome) =
//!     CodeMemory::open(&index_dir, repo.path(), "3f2a9c1", MemoryOptions::default()).await?;
//! assert!(matches!(outcome, IndexOutcome::Reused(_)));
//! # Ok(())
//! # }
//! ```

mod chunk;
mod code_memory;
mod context;
mod embed;
mod error;
mod lexical;
mod manifest;
#[cfg(feature = "openai")]
mod openai;
mod rank;
mod vectors;
mod walk;
mod words;

pub use chunk::ChunkConfig;
pub use code_memory::{
    CodeMemory, EmbeddingsStatus, Hit, IndexOutcome, IndexStats, MemoryOptions, UpdateStats,
};
pub use context::{AssembledContext, ContextBuilder, estimate_tokens};
pub use embed::{EmbedError, Embedder};
pub use error::{MemoryError, Result};
#[cfg(feature = "openai")]
pub use openai::{EMBEDDINGS_MODEL_VARIABLE, OpenAiEmbedder};

pub use crate::output::Retrieved;
