//! B1 and B2: the embedded pipeline (memory bus, artifacts and SQLite on disk) in this
//! process, code execution off, with the instant or the latency-simulating model.

use std::sync::Arc;
use std::time::Duration;

use agent_pipeline::Pipeline;
use agent_pipeline::llm::Llm;
use serde_json::{Value, json};

use crate::load::burst;
use crate::rss::peak_rss_bytes;

/// One run of `tasks` tasks with `llm`, each service handling up to `concurrency` messages at
/// once; the result as JSON.
pub(crate) async fn run(
    llm: Arc<dyn Llm>,
    tasks: usize,
    concurrency: usize,
    patience: Duration,
) -> Result<Value, String> {
    let dir = crate::scratch_dir()?;
    let pipeline = Pipeline::builder()
        .data_dir(&dir)
        .llm(llm)
        .execute_code(false)
        .worker_concurrency(concurrency)
        .service_concurrency(concurrency)
        .build()
        .await
        .map_err(|e| format!("build: {e}"))?;
    let running = pipeline.start().await.map_err(|e| format!("start: {e}"))?;
    let measured = burst(&pipeline, tasks, patience).await?;
    running.shutdown().await;
    let mut result = measured.into_json(tasks, concurrency);
    result["peak_rss_mb"] = json!(peak_rss_bytes().map(|b| b as f64 / 1048576.0));
    Ok(result)
}
