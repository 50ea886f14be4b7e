//! What the code memory costs on a repository of 301 generated files (the retrieval tests'
//! repository): building the index, reopening it for a second task, reopening it and
//! re-indexing an attempt's changed files for a later step, a lexical search, a
//! hybrid search with an in-process embedder (the vector ranking and fusion, without HTTP),
//! and packing a context.
//!
//! ```text
//! cargo bench -p agent-pipeline-benches --bench memory
//! ```

use std::sync::Arc;

use agent_pipeline::execution::ChangedFile;
use agent_pipeline::memory::{
    CodeMemory, ContextBuilder, EmbedError, Embedder, IndexOutcome, MemoryOptions,
};
use criterion::{Criterion, criterion_group, criterion_main};

#[allow(dead_code, unreachable_pub)]
#[path = "../agent-pipeline/tests/common/repo.rs"]
mod repo;

const COMMIT: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";
const QUESTION: &str = "where is the invoice total computed";

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => panic!("no tokio runtime: {error}"),
    }
}

/// Bag-of-words vectors of 1,024 dimensions, computed in process.
#[derive(Debug)]
struct HashEmbedder;

#[async_trait::async_trait]
impl Embedder for HashEmbedder {
    fn model(&self) -> &str {
        "bench-hash-1024"
    }

    async fn embed(&self, inputs: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(inputs
            .iter()
            .map(|text| {
                let mut vector = vec![0.0f32; 1024];
                for word in text.split(|c: char| !c.is_alphanumeric()) {
                    let hash = word.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                    });
                    vector[(hash % 1024) as usize] += 1.0;
                }
                vector
            })
            .collect())
    }
}

fn code_memory(c: &mut Criterion) {
    let runtime = runtime();
    let temp = match tempfile::tempdir() {
        Ok(temp) => temp,
        Err(error) => panic!("no temporary directory: {error}"),
    };
    let work_tree = temp.path().join("repo");
    if let Err(error) = repo::generate(&work_tree, 300) {
        panic!("cannot generate the repository: {error}");
    }
    let open = |dir: &std::path::Path, options: MemoryOptions| match runtime
        .block_on(CodeMemory::open(dir, &work_tree, COMMIT, options))
    {
        Ok(opened) => opened,
        Err(error) => panic!("cannot open the code memory: {error}"),
    };

    let mut group = c.benchmark_group("memory");
    group.sample_size(10);
    let mut builds = 0;
    group.bench_function("build the index of 301 files", |b| {
        b.iter(|| {
            builds += 1;
            let dir = temp.path().join(format!("build-{builds}"));
            let (memory, outcome) = open(&dir, MemoryOptions::default());
            assert!(matches!(outcome, IndexOutcome::Built(_)));
            memory
        })
    });
    let dir = temp.path().join("index");
    let (lexical, _) = open(&dir, MemoryOptions::default());
    group.bench_function("reuse the index (a second task)", |b| {
        b.iter(|| {
            let (memory, outcome) = open(&dir, MemoryOptions::default());
            assert!(matches!(outcome, IndexOutcome::Reused(_)));
            memory
        })
    });
    // What a step after an attempt adds: the base's index reopened, and the 3 files the
    // attempts changed re-indexed in memory.
    let changes = |n: usize| -> Vec<ChangedFile> {
        (0..n)
            .map(|i| ChangedFile {
                path: format!("pkg{i}/module_{i}.py"),
                content: Some(
                    format!("def changed_by_the_attempt_{i}(x):\n    return x\n").into_bytes(),
                ),
            })
            .collect()
    };
    group.bench_function(
        "reuse the index and apply 3 changed files (a later step)",
        |b| {
            b.iter(|| {
                let (mut memory, _) = open(&dir, MemoryOptions::default());
                match runtime.block_on(memory.apply(changes(3))) {
                    Ok(stats) if stats.changed_files == 3 => memory,
                    other => panic!("the apply failed: {other:?}"),
                }
            })
        },
    );
    group.finish();

    let search = |memory: &CodeMemory, k| match runtime.block_on(memory.search(QUESTION, k)) {
        Ok(hits) if !hits.is_empty() => hits,
        other => panic!("the search failed: {other:?}"),
    };
    c.bench_function("memory: lexical search, top 10", |b| {
        b.iter(|| search(&lexical, 10))
    });
    let hybrid_options = MemoryOptions {
        embedder: Some(Arc::new(HashEmbedder)),
        ..MemoryOptions::default()
    };
    let (hybrid, _) = open(&dir, hybrid_options);
    c.bench_function("memory: hybrid search, top 10 (in-process embedder)", |b| {
        b.iter(|| search(&hybrid, 10))
    });
    let hits = search(&lexical, 40);
    let task = "Add a discount to the invoice total.";
    c.bench_function("memory: pack 40 chunks into 4,000 tokens", |b| {
        b.iter(|| {
            ContextBuilder::new(4_000)
                .task(task)
                .artifact("design", "Change compute_invoice_total.")
                .chunks(hits.iter().cloned())
                .build()
        })
    });
}

criterion_group!(benches, code_memory);
criterion_main!(benches);
