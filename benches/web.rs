//! What the web UI's pages cost to answer, over a data directory with 50 finished tasks
//! (offline model, tests run in the sandbox): the request goes through the whole router
//! (`tower::ServiceExt::oneshot`), without a network.
//!
//! ```text
//! cargo bench -p agent-pipeline-benches --bench web
//! ```

use std::sync::Arc;

use agent_host::web::{WebSettings, WebState, router};
use agent_pipeline::llm::OfflineLlm;
use agent_pipeline::{Pipeline, TaskId};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// How many finished tasks the data directory holds.
const TASKS: usize = 50;

fn pages(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("runtime: {e}"));
    let temp = tempfile::tempdir().unwrap_or_else(|e| panic!("temporary directory: {e}"));
    let (app, task_id) = runtime.block_on(async {
        let pipeline = Pipeline::builder()
            .data_dir(temp.path())
            .llm(Arc::new(OfflineLlm::new()))
            .build()
            .await
            .unwrap_or_else(|e| panic!("pipeline: {e}"));
        let running = pipeline
            .start()
            .await
            .unwrap_or_else(|e| panic!("start: {e}"));
        let mut last: Option<TaskId> = None;
        for n in 0..TASKS {
            let id = pipeline
                .submit(format!("Write a Python program that prints 'task {n}'"))
                .await
                .unwrap_or_else(|e| panic!("submit: {e}"));
            pipeline
                .wait(id)
                .await
                .unwrap_or_else(|e| panic!("wait: {e}"));
            last = Some(id);
        }
        // Stopping drains the mirrors, so reports.jsonl holds every event.
        running.shutdown().await;
        let app = router(WebState::new(pipeline, WebSettings::default()));
        (app, last.unwrap_or_else(|| panic!("no task ran")))
    });

    let mut group = c.benchmark_group(format!("web pages, {TASKS} finished tasks"));
    for path in [
        "/".to_owned(),
        "/tasks".to_owned(),
        "/reports".to_owned(),
        format!("/task/{task_id}"),
        format!("/api/task/{task_id}"),
    ] {
        let name = path.replace(&task_id.to_string(), "<id>");
        group.bench_function(format!("GET {name}"), |b| {
            b.to_async(&runtime).iter(|| async {
                let request = Request::get(path.as_str())
                    .body(Body::empty())
                    .unwrap_or_else(|e| panic!("request: {e}"));
                let response = app
                    .clone()
                    .oneshot(request)
                    .await
                    .unwrap_or_else(|e| panic!("{path}: {e}"));
                assert_eq!(response.status(), StatusCode::OK, "{path}");
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .unwrap_or_else(|e| panic!("{path}: {e}"));
                body.to_bytes().len()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, pages);
criterion_main!(benches);
