//! What the web UI, the JSON API and the command line show, gathered from the stores.
//!
//! Each view is a plain serializable struct: the JSON API returns it as it is, `--json` prints
//! it, and the HTML pages and the text output render it. Gathering is kept here, once, so that
//! every surface shows the same thing.

mod dead_letters;
mod diff;
mod providers;
mod reports;
mod task;
mod tasks;

pub use dead_letters::{DeadLetterEntry, DeadLetterPage, dead_letter, dead_letters};
pub use diff::{AttemptDiff, DiffLine, DiffLineKind, DiffSide, artifact_text, diff_attempts};
pub use providers::{ModelPrice, Providers, providers};
pub use reports::{ReportFilter, ReportPage, report_page};
pub use task::{AttemptView, StepView, TaskDetails, TaskInfo, task_details};
pub use tasks::{TaskSummary, task_summaries};

/// Why a view could not be gathered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ViewError {
    /// The library failed (a store, most likely).
    #[error(transparent)]
    Pipeline(#[from] agent_pipeline::Error),
    /// A store failed.
    #[error(transparent)]
    Store(#[from] agent_pipeline::store::StoreError),
    /// A file of the data directory could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}
