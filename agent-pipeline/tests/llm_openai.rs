//! `OpenAiLlm` against a local HTTP server that speaks the Chat Completions protocol.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_pipeline::llm::{
    ApiKey, Llm, LlmError, LlmRequest, LlmSettings, Message, OpenAiLlm, Role, Usage,
};
use agent_pipeline::output::{Design, strict_schema};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

const KEY: &str = "sk-test-0123456789abcdef";

/// What the fake server saw and how it should answer.
#[derive(Clone)]
struct Server {
    requests: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<(HeaderMap, Value)>>>,
    answer: Arc<dyn Fn(usize) -> Response + Send + Sync>,
}

async fn chat_completions(
    State(server): State<Server>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let n = server.requests.fetch_add(1, Ordering::SeqCst);
    let body = serde_json::from_str(&body).unwrap_or(Value::String(body));
    if let Ok(mut seen) = server.seen.lock() {
        seen.push((headers, body));
    }
    (server.answer)(n)
}

/// Serves `app` on a random local port.
async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a local port");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// Settings that point at the server on `addr`, with a trailing `/` that the client must trim.
fn settings(addr: SocketAddr) -> LlmSettings {
    LlmSettings {
        api_key: Some(ApiKey::new(KEY)),
        model: "gpt-test".to_owned(),
        base_url: format!("http://{addr}/v1/"),
        timeout: Duration::from_secs(10),
        max_attempts: 3,
        ..LlmSettings::default()
    }
}

/// Starts a server whose `/v1/chat/completions` answers request number `n` (from 0) with
/// `answer(n)`; returns its state and settings that point at it.
async fn start(
    answer: impl Fn(usize) -> Response + Send + Sync + 'static,
) -> (Server, LlmSettings) {
    let server = Server {
        requests: Arc::new(AtomicUsize::new(0)),
        seen: Arc::new(Mutex::new(Vec::new())),
        answer: Arc::new(answer),
    };
    let app = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .with_state(server.clone());
    let addr = serve(app).await;
    (server, settings(addr))
}

fn request() -> LlmRequest {
    LlmRequest {
        messages: vec![
            Message::new(Role::System, "You are the architect."),
            Message::new(Role::User, "Write hello.py"),
        ],
        schema_name: "design".to_owned(),
        schema: strict_schema::<Design>(),
        model: None,
    }
}

fn completion(content: &str) -> Value {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-test-2026-01-01",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": null},
            "finish_reason": "stop",
        }],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    })
}

const DESIGN: &str = r#"{"design_summary":"print hello","files_touched":["hello.py"]}"#;

#[tokio::test]
async fn sends_a_strict_json_schema_request_and_parses_the_answer() {
    let (server, settings) = start(|_| Json(completion(DESIGN)).into_response()).await;
    let llm = OpenAiLlm::new(settings).expect("client");
    let request = request();

    let answer = llm.complete(&request).await.expect("an answer");

    assert_eq!(answer.content, DESIGN);
    assert_eq!(answer.model, "gpt-test-2026-01-01");
    assert_eq!(
        answer.usage,
        Usage {
            prompt_tokens: 11,
            completion_tokens: 7,
            total_tokens: 18,
        }
    );
    assert_eq!(llm.model(), "gpt-test");

    let seen = server.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1);
    let (headers, body) = &seen[0];
    assert_eq!(
        headers.get("authorization").and_then(|v| v.to_str().ok()),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(body["model"], "gpt-test");
    assert_eq!(
        body["messages"],
        json!([
            {"role": "system", "content": "You are the architect."},
            {"role": "user", "content": "Write hello.py"},
        ])
    );
    assert_eq!(body["response_format"]["type"], "json_schema");
    assert_eq!(body["response_format"]["json_schema"]["strict"], true);
    assert_eq!(body["response_format"]["json_schema"]["name"], "design");
    assert_eq!(
        body["response_format"]["json_schema"]["schema"],
        request.schema
    );
}

#[tokio::test]
async fn waits_for_retry_after_on_429_then_succeeds() {
    let (server, settings) = start(|n| {
        if n == 0 {
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "1")],
                Json(json!({"error": {"message": "Rate limit reached"}})),
            )
                .into_response()
        } else {
            Json(completion(DESIGN)).into_response()
        }
    })
    .await;
    let llm = OpenAiLlm::new(settings).expect("client");

    let started = std::time::Instant::now();
    let answer = llm
        .complete(&request())
        .await
        .expect("an answer after a retry");

    assert_eq!(answer.content, DESIGN);
    assert_eq!(server.requests.load(Ordering::SeqCst), 2);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "waited only {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn gives_up_as_unavailable_after_max_attempts_of_500() {
    let (server, settings) = start(|_| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("retry-after", "0")],
            Json(json!({"error": {"message": "The server had an error"}})),
        )
            .into_response()
    })
    .await;
    let llm = OpenAiLlm::new(LlmSettings {
        max_attempts: 2,
        ..settings
    })
    .expect("client");

    let error = llm.complete(&request()).await.expect_err("no answer");

    assert_eq!(
        error,
        LlmError::Unavailable {
            status: 500,
            attempts: 2,
            message: "The server had an error".to_owned(),
        }
    );
    assert!(error.is_retryable());
    assert_eq!(server.requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_protocol_error() {
    let (server, settings) = start(|_| "<html>gateway</html>".into_response()).await;
    let llm = OpenAiLlm::new(settings).expect("client");

    let error = llm.complete(&request()).await.expect_err("no answer");

    assert!(matches!(error, LlmError::Protocol(_)), "{error:?}");
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_answer_without_choices_is_a_protocol_error() {
    let (_server, settings) =
        start(|_| Json(json!({"object": "chat.completion", "choices": []})).into_response()).await;
    let llm = OpenAiLlm::new(settings).expect("client");

    let error = llm.complete(&request()).await.expect_err("no answer");

    match error {
        LlmError::Protocol(reason) => assert!(reason.contains("no choices"), "{reason}"),
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_refusal_is_refused_with_its_text() {
    let (_server, settings) = start(|_| {
        Json(json!({
            "model": "gpt-test",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": null, "refusal": "I can't help with that."},
                "finish_reason": "stop",
            }],
        }))
        .into_response()
    })
    .await;
    let llm = OpenAiLlm::new(settings).expect("client");

    let error = llm.complete(&request()).await.expect_err("no answer");

    assert_eq!(
        error,
        LlmError::Refused("I can't help with that.".to_owned())
    );
}

#[tokio::test]
async fn a_401_is_unauthorized_without_retry_and_the_key_stays_secret() {
    let (server, settings) = start(|_| {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {
                "message": "Incorrect API key provided: sk-test-****cdef.",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
            }})),
        )
            .into_response()
    })
    .await;
    let llm = OpenAiLlm::new(settings).expect("client");

    let error = llm.complete(&request()).await.expect_err("no answer");

    assert!(
        matches!(error, LlmError::Unauthorized { status: 401, .. }),
        "{error:?}"
    );
    let shown = error.to_string();
    assert!(shown.contains("OPENAI_API_KEY"), "{shown}");
    assert!(shown.contains("Incorrect API key provided"), "{shown}");
    assert!(!error.is_retryable());
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
    let debug = format!("{llm:?}");
    assert!(!debug.contains(KEY), "{debug}");
    assert!(debug.contains("gpt-test"), "{debug}");
}

#[tokio::test]
async fn a_server_that_does_not_answer_in_time_is_a_timeout() {
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>()
        }),
    );
    let addr = serve(app).await;
    let timeout = Duration::from_millis(200);
    let llm = OpenAiLlm::new(LlmSettings {
        timeout,
        max_attempts: 1,
        ..settings(addr)
    })
    .expect("client");

    let started = std::time::Instant::now();
    let error = llm.complete(&request()).await.expect_err("no answer");

    assert_eq!(error, LlmError::Timeout(timeout));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_missing_key_is_refused_before_any_request() {
    let error = OpenAiLlm::new(LlmSettings {
        api_key: None,
        ..LlmSettings::default()
    })
    .expect_err("no client without a key");

    assert!(
        matches!(error, LlmError::Unauthorized { status: 0, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("OPENAI_API_KEY"));
}

#[tokio::test]
async fn a_malformed_json_answer_is_sent_back_to_the_model_and_repaired() {
    use agent_pipeline::agent::{Agent, AgentInput, architect};
    use agent_pipeline::{Attempt, Stage, StepId, TaskId};

    let (server, settings) = start(|n| {
        let content = if n == 0 {
            "{\"design_summary\": \"print hel"
        } else {
            DESIGN
        };
        Json(completion(content)).into_response()
    })
    .await;
    let agent = architect(Arc::new(OpenAiLlm::new(settings).expect("client")));
    let input = AgentInput {
        task_id: TaskId::new(),
        step: StepId::v1(Stage::Design),
        attempt: Attempt::FIRST,
        prompt: "Write hello.py".to_owned(),
        prior: Vec::new(),
        reason: None,
        diff: None,
        code: None,
    };

    let output = agent
        .run(&input)
        .await
        .expect("repaired on the second call");

    assert_eq!(output.output["files_touched"], json!(["hello.py"]));
    assert_eq!(output.model, "gpt-test-2026-01-01");
    assert_eq!(
        output.usage.total_tokens, 36,
        "usage of both calls is recorded"
    );
    assert_eq!(server.requests.load(Ordering::SeqCst), 2);
    let seen = server.seen.lock().expect("requests").clone();
    let messages = seen[1].1["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        messages.len(),
        4,
        "the bad answer and the problem were sent back"
    );
    assert_eq!(messages[2]["role"], "assistant");
    assert!(
        messages[3]["content"]
            .as_str()
            .is_some_and(|c| c.contains("rejected") && c.contains("EOF")),
        "{}",
        messages[3]
    );
}
