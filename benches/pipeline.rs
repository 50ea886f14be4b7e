//! Throughput of the pipeline on the embedded default with the offline model: what the
//! pipeline itself costs (bus, state store, artifact files), without any LLM latency.
//!
//! ```text
//! cargo bench -p agent-pipeline-benches --bench pipeline
//! ```

use std::sync::Arc;

use agent_pipeline::llm::OfflineLlm;
use agent_pipeline::wire::ReportStatus;
use agent_pipeline::{Pipeline, StepId};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn step_id_parsing(c: &mut Criterion) {
    c.bench_function("parse and print a step id", |b| {
        b.iter(|| {
            let step: StepId = std::hint::black_box("implement@v1")
                .parse()
                .unwrap_or_else(|_| StepId::v1(agent_pipeline::Stage::Design));
            step.to_string()
        })
    });
}

fn tasks_end_to_end(c: &mut Criterion) {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => panic!("no tokio runtime: {error}"),
    };
    let temp = match tempfile::tempdir() {
        Ok(temp) => temp,
        Err(error) => panic!("no temporary directory: {error}"),
    };
    let (pipeline, running) = runtime.block_on(async {
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
        (pipeline, running)
    });

    const BATCH: u64 = 20;
    let mut group = c.benchmark_group("embedded pipeline, offline model");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(10);
    group.bench_function("20 tasks through all four stages", |b| {
        b.to_async(&runtime).iter(|| async {
            let mut ids = Vec::new();
            for n in 0..BATCH {
                let id = pipeline
                    .submit(format!("Write a Python program that prints 'task {n}'"))
                    .await;
                ids.push(id.unwrap_or_else(|e| panic!("submit: {e}")));
            }
            for id in ids {
                let last = pipeline
                    .wait(id)
                    .await
                    .unwrap_or_else(|e| panic!("wait: {e}"));
                assert_eq!(last.status, ReportStatus::Done);
            }
        })
    });
    group.finish();
    runtime.block_on(running.shutdown());
}

criterion_group!(benches, step_id_parsing, tasks_end_to_end);
criterion_main!(benches);
