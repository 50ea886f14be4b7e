//! The code memory's embeddings path against the local server that speaks the OpenAI protocol:
//! a hybrid search finds code by meaning, vectors are reused across tasks and only new chunks
//! are embedded, and a provider without embeddings leaves a lexical search.
#![cfg(all(feature = "memory", feature = "openai"))]

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agent_pipeline::llm::{ApiKey, LlmSettings};
use agent_pipeline::memory::{
    CodeMemory, EmbeddingsStatus, IndexOutcome, MemoryOptions, OpenAiEmbedder,
};
use common::TestResult;
use common::openai::ChatServer;
use common::repo::{TARGET_FUNCTION, TARGET_PATH, generate};

const COMMIT: &str = "9fceb02d0ae598e95dc970b74767f19372d61af8";
const KEY: &str = "sk-test-0123456789abcdef";
const MODEL: &str = "test-embedding-small";
/// A question that shares no word with the code: only its meaning leads to the function.
const BY_MEANING: &str = "calculate bill amount";

fn options(server: &ChatServer) -> Result<MemoryOptions, Box<dyn std::error::Error>> {
    let settings = LlmSettings {
        api_key: Some(ApiKey::new(KEY)),
        base_url: server.base_url(),
        timeout: Duration::from_secs(30),
        max_attempts: 1,
        ..LlmSettings::default()
    };
    Ok(MemoryOptions {
        embedder: Some(Arc::new(OpenAiEmbedder::new(&settings, MODEL)?)),
        ..MemoryOptions::default()
    })
}

fn setup() -> std::io::Result<(tempfile::TempDir, PathBuf, PathBuf)> {
    let temp = tempfile::tempdir()?;
    let repo = temp.path().join("repo");
    generate(&repo, 300)?;
    let index_dir = temp.path().join("data/memory/repo").join(COMMIT);
    Ok((temp, repo, index_dir))
}

#[tokio::test]
async fn a_hybrid_search_finds_code_by_meaning_and_vectors_are_reused() -> TestResult {
    let server = ChatServer::start().await;
    let (_temp, repo, index_dir) = setup()?;

    // Lexically, the question finds nothing of the function.
    let (lexical, outcome) =
        CodeMemory::open(&index_dir, &repo, COMMIT, MemoryOptions::default()).await?;
    assert!(matches!(outcome, IndexOutcome::Built(_)));
    assert_eq!(lexical.embeddings(), &EmbeddingsStatus::Off);
    let hits = lexical.search(BY_MEANING, 10).await?;
    assert!(
        hits.iter().all(|h| h.symbols != [TARGET_FUNCTION]),
        "{hits:#?}"
    );
    let chunks = lexical.stats().chunks;
    drop(lexical);

    // With embeddings, every chunk is embedded once, in batches, with the key.
    let (memory, outcome) = CodeMemory::open(&index_dir, &repo, COMMIT, options(&server)?).await?;
    assert!(matches!(outcome, IndexOutcome::Reused(_)));
    let EmbeddingsStatus::Ready { vectors, embedded } = memory.embeddings().clone() else {
        panic!("embeddings are not ready: {:?}", memory.embeddings());
    };
    assert_eq!(vectors, chunks);
    // Chunks of the same text (the generated files' identical preambles) share a vector.
    assert!(
        embedded <= chunks && embedded > chunks / 2,
        "{embedded} of {chunks}"
    );
    let requests = server.embedding_requests();
    assert_eq!(requests.len(), embedded.div_ceil(64));
    for request in &requests {
        assert_eq!(request["model"], MODEL);
        assert_eq!(request["authorization"], format!("Bearer {KEY}"));
        let inputs = request["input"].as_array().map_or(0, Vec::len);
        assert!((1..=64).contains(&inputs), "{inputs} inputs");
    }

    let hits = memory.search(BY_MEANING, 5).await?;
    assert_eq!(hits[0].path, TARGET_PATH, "{hits:#?}");
    assert_eq!(hits[0].symbols, [TARGET_FUNCTION]);
    assert!(hits[0].vector_score.is_some_and(|s| s > 0.0));
    assert_eq!(hits[0].lexical_score, None);
    let hits = memory.search("compute invoice total", 5).await?;
    assert_eq!(hits[0].symbols, [TARGET_FUNCTION]);
    assert!(hits[0].lexical_score.is_some() && hits[0].vector_score.is_some());
    drop(memory);

    // A second task on the commit embeds nothing: the vectors beside the index are reused.
    let before = server.embedding_requests().len();
    let (mut memory, _) = CodeMemory::open(&index_dir, &repo, COMMIT, options(&server)?).await?;
    assert_eq!(
        memory.embeddings(),
        &EmbeddingsStatus::Ready {
            vectors: chunks,
            embedded: 0
        }
    );
    assert_eq!(server.embedding_requests().len(), before);

    // An update embeds the changed file's chunks only.
    let target = repo.join(TARGET_PATH);
    let text = std::fs::read_to_string(&target)?;
    std::fs::write(&target, text.replace("with tax", "with tax and a discount"))?;
    let update = memory.update().await?;
    assert_eq!(update.changed_files, 1);
    let requests = server.embedding_requests();
    assert_eq!(requests.len(), before + 1);
    let inputs = requests[before]["input"].as_array().map_or(0, Vec::len);
    assert_eq!(
        inputs, 1,
        "only the changed chunk: {:?}",
        requests[before]["input"]
    );
    let hits = memory.search(BY_MEANING, 5).await?;
    assert!(
        hits[0].text.contains("with tax and a discount"),
        "{hits:#?}"
    );

    // When the question cannot be embedded, the search is lexical.
    server.answer_embeddings_with(Some(500));
    let hits = memory.search("compute invoice total", 5).await?;
    assert_eq!(hits[0].symbols, [TARGET_FUNCTION]);
    assert_eq!(hits[0].vector_score, None);
    Ok(())
}

#[tokio::test]
async fn a_provider_without_embeddings_leaves_a_lexical_search() -> TestResult {
    let server = ChatServer::start().await;
    server.answer_embeddings_with(Some(404));
    let (_temp, repo, index_dir) = setup()?;
    let (memory, outcome) = CodeMemory::open(&index_dir, &repo, COMMIT, options(&server)?).await?;
    assert!(matches!(outcome, IndexOutcome::Built(_)));
    let EmbeddingsStatus::Unavailable { reason } = memory.embeddings() else {
        panic!("{:?}", memory.embeddings());
    };
    assert!(reason.contains("404"), "{reason}");
    assert!(!reason.contains(KEY));
    // One request told it: no request per batch after the first refusal.
    assert_eq!(server.embedding_requests().len(), 1);
    assert!(!index_dir.join("vectors.bin").exists());

    let hits = memory.search("compute invoice total", 5).await?;
    assert_eq!(hits[0].symbols, [TARGET_FUNCTION]);
    assert_eq!(hits[0].vector_score, None);
    // Searching asks the provider nothing more.
    assert_eq!(server.embedding_requests().len(), 1);
    Ok(())
}
