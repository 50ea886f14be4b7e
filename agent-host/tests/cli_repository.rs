//! A task on an existing repository through the binary, with the configured provider's
//! embeddings (the local server that speaks the OpenAI protocol): every step's agent is shown
//! the repository's code found by BM25 and embeddings, from the code as the task's last
//! attempt left it, and the implement artifact keeps the change as a diff.

mod common;

use common::openai::ChatServer;
use common::repository::{CART_PROMPT, source_repository};
use common::{Sandbox, read_json};

/// The embeddings model the host is configured with.
const EMBEDDINGS_MODEL: &str = "test-embedding-small";

#[test]
fn a_repository_task_retrieves_code_with_the_provider_s_embeddings() {
    let (runtime, server) = ChatServer::start_on_own_runtime();
    let sandbox = Sandbox::new();
    let source = tempfile::tempdir().expect("a directory");
    let main = source_repository(source.path());
    let mut env = server.env("model-a");
    env.push(("LLM_EMBEDDINGS_MODEL", EMBEDDINGS_MODEL.to_owned()));
    let repo = source.path().display().to_string();
    let send = sandbox.run_with(
        &[
            "send",
            "--local",
            "--wait",
            "--text",
            CART_PROMPT,
            "--repo",
            &repo,
            "--base-ref",
            "main",
        ],
        env,
    );
    assert!(send.status.success(), "{send}");
    let task_dir = sandbox.data_dir().join(send.task_id());

    // The embeddings endpoint was asked, with the key, for the configured model.
    let requests = server.embedding_requests();
    assert!(!requests.is_empty(), "no embeddings request");
    assert!(
        requests.iter().all(|r| r["model"] == EMBEDDINGS_MODEL
            && r["authorization"] == "Bearer sk-test-0123456789abcdef"),
        "{requests:?}"
    );
    assert!(
        !send.stderr.contains("sk-test-0123456789abcdef"),
        "the key is logged"
    );

    // Every step saw the repository's code, ranked by both BM25 and embeddings.
    for step in ["design", "implement", "test", "review"] {
        let artifact = read_json(&task_dir.join(format!("{step}@v1.json")));
        let retrieved = artifact["retrieved"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            retrieved
                .iter()
                .any(|chunk| chunk["path"] == "shop/cart.py" && chunk["vector_score"].is_number()),
            "{step}: {retrieved:?}"
        );
    }
    // Design saw the base; review the code as the tests left it (the implementation and the
    // tester's files on top of the base).
    let design = read_json(&task_dir.join("design@v1.json"));
    assert_eq!(design["retrieved_from"], main.as_str());
    let test = read_json(&task_dir.join("test@v1.json"));
    let review = read_json(&task_dir.join("review@v1.json"));
    assert_eq!(review["retrieved_from"], test["commit"], "{review:?}");
    assert_ne!(review["retrieved_from"], main.as_str());

    // The change is kept as a diff from the base; the repository's own tests ran before and
    // after it.
    let implement = read_json(&task_dir.join("implement@v1.json"));
    assert_eq!(implement["workspace"]["base"], main.as_str());
    let diff = implement["workspace"]["diff"].as_str().unwrap_or_default();
    assert!(diff.starts_with("diff --git"), "{diff}");
    assert!(
        !diff.contains("shop/cart.py"),
        "the offline model leaves the cart alone: {diff}"
    );
    let repository_tests = &test["repository_tests"];
    assert_eq!(
        repository_tests["before"]["passed"], 1,
        "{repository_tests:?}"
    );
    // After: the repository's test and the one the tester added, which its discovery finds.
    assert_eq!(
        repository_tests["after"]["passed"], 2,
        "{repository_tests:?}"
    );
    drop(runtime);
}

#[test]
fn the_banner_says_how_the_code_memory_searches() {
    let (_runtime, server) = ChatServer::start_on_own_runtime();
    let sandbox = Sandbox::new();
    let mut env = server.env("model-a");
    env.push(("LLM_EMBEDDINGS_MODEL", EMBEDDINGS_MODEL.to_owned()));
    let host = sandbox.start_host_with(env);
    let expected = format!(
        "code memory: BM25 and embeddings of {EMBEDDINGS_MODEL} at {}",
        server.base_url()
    );
    assert!(host.banner.contains(&expected), "{}", host.banner);
    drop(host);

    // The offline model has no server to ask for embeddings.
    let offline = Sandbox::new();
    let host = offline.start_host(&[("LLM_EMBEDDINGS_MODEL", EMBEDDINGS_MODEL)]);
    assert!(
        host.banner.contains(
            "code memory: BM25 only: LLM_EMBEDDINGS_MODEL is ignored without OPENAI_API_KEY"
        ),
        "{}",
        host.banner
    );
}
