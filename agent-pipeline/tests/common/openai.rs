//! A local HTTP server that speaks the Chat Completions protocol: the stand-in for a remote
//! LLM API. It answers what the offline model would, names the model it was asked for, counts
//! tokens as a real server would (about four characters each), and can hold calls. The
//! agent-host tests use it too (by path).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_pipeline::llm::{
    ApiKey, Llm, LlmRequest, LlmSettings, Message, OfflineLlm, OpenAiLlm, Role,
};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::watch;

/// What the server saw, and how it answers.
#[derive(Clone)]
pub struct ChatServer {
    pub addr: SocketAddr,
    /// Every request body, in order of arrival.
    pub seen: Arc<Mutex<Vec<Value>>>,
    /// Calls whose client went away before the answer (abandoned calls).
    pub abandoned: Arc<AtomicUsize>,
    /// While true, calls wait before they are answered.
    hold: watch::Sender<bool>,
    /// How long each call takes.
    delay: Arc<Mutex<Duration>>,
}

/// Counts a call as abandoned when its handler is dropped before it answers.
struct Answering(Arc<AtomicUsize>, bool);

impl Drop for Answering {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn chat(State(server): State<ChatServer>, Json(body): Json<Value>) -> Json<Value> {
    let mut answering = Answering(server.abandoned.clone(), false);
    if let Ok(mut seen) = server.seen.lock() {
        seen.push(body.clone());
    }
    let delay = server.delay.lock().map(|d| *d).unwrap_or_default();
    tokio::time::sleep(delay).await;
    let mut hold = server.hold.subscribe();
    let _ = hold.wait_for(|held| !*held).await;
    let messages: Vec<Message> = body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let role = match m["role"].as_str() {
                Some("system") => Role::System,
                Some("assistant") => Role::Assistant,
                _ => Role::User,
            };
            Message::new(role, m["content"].as_str().unwrap_or_default())
        })
        .collect();
    let prompt_chars: usize = messages.iter().map(|m| m.content.len()).sum();
    let request = LlmRequest {
        messages,
        schema_name: body["response_format"]["json_schema"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        schema: body["response_format"]["json_schema"]["schema"].clone(),
        model: None,
    };
    let content = OfflineLlm::new()
        .complete(&request)
        .await
        .map(|answer| answer.content)
        .unwrap_or_default();
    let prompt_tokens = (prompt_chars / 4).max(1);
    let completion_tokens = (content.len() / 4).max(1);
    answering.1 = true;
    Json(json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": body["model"],
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": null},
            "finish_reason": "stop",
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }))
}

impl ChatServer {
    /// Starts a server on a free local port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a local port");
        let server = ChatServer {
            addr: listener.local_addr().expect("local address"),
            seen: Arc::default(),
            abandoned: Arc::default(),
            hold: watch::channel(false).0,
            delay: Arc::default(),
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .with_state(server.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        server
    }

    /// A server on a runtime of its own, for the tests that drive the binary from a plain
    /// thread: the runtime serves while the test waits for a command (drop it last).
    pub fn start_on_own_runtime() -> (tokio::runtime::Runtime, Self) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the server");
        let server = runtime.block_on(Self::start());
        (runtime, server)
    }

    /// Its base URL, as `OPENAI_BASE_URL` or a provider of `LLM_PROVIDERS` names it.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The variables that make `agent-host` call this server for `model`.
    pub fn env(&self, model: &str) -> Vec<(&'static str, String)> {
        vec![
            ("OPENAI_API_KEY", "sk-test-0123456789abcdef".to_owned()),
            ("OPENAI_BASE_URL", self.base_url()),
            ("OPENAI_MODEL", model.to_owned()),
        ]
    }

    /// The OpenAI-compatible client of `model` at this server.
    pub fn llm(&self, model: &str) -> Arc<dyn Llm> {
        let settings = LlmSettings {
            api_key: Some(ApiKey::new("sk-test-0123456789abcdef")),
            model: model.to_owned(),
            base_url: format!("http://{}/v1", self.addr),
            timeout: Duration::from_secs(30),
            max_attempts: 1,
            ..LlmSettings::default()
        };
        Arc::new(OpenAiLlm::new(settings).expect("client"))
    }

    /// Holds every call until [`ChatServer::release`].
    pub fn hold(&self) {
        self.hold.send_replace(true);
    }

    /// Answers the held calls and those to come.
    pub fn release(&self) {
        self.hold.send_replace(false);
    }

    /// Makes each call take `delay`.
    pub fn set_delay(&self, delay: Duration) {
        if let Ok(mut current) = self.delay.lock() {
            *current = delay;
        }
    }

    /// The request bodies seen so far.
    pub fn requests(&self) -> Vec<Value> {
        self.seen
            .lock()
            .map(|seen| seen.clone())
            .unwrap_or_default()
    }

    /// The calls whose client went away before the answer.
    pub fn abandoned(&self) -> usize {
        self.abandoned.load(Ordering::SeqCst)
    }
}
