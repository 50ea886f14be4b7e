//! The binary can build a TLS client: with one rustls provider (ring) installed at start-up, an
//! `https://` LLM server that cannot be reached is a connection error, not a panic.

mod common;

use common::{HELLO, Sandbox};

#[test]
fn an_https_llm_server_fails_with_a_connection_error_not_a_panic() {
    let sandbox = Sandbox::new();
    let mut command = sandbox.command(&["send", "--local", "--text", HELLO]);
    command
        .env("OPENAI_API_KEY", "sk-test")
        .env("OPENAI_BASE_URL", "https://127.0.0.1:9/v1")
        .env("AGENT_HOST_MAX_ATTEMPTS", "1");
    let output = common::run(command);
    assert!(!output.stderr.contains("panicked"), "{output}");
    assert!(!output.stderr.contains("CryptoProvider"), "{output}");
    assert_eq!(output.code(), Some(1), "{output}");
    assert!(
        output.stderr.contains("could not reach the LLM server"),
        "{output}"
    );
}
