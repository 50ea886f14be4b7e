//! A local HTTP server that speaks the Chat Completions protocol: the stand-in for a remote
//! LLM API. It answers what the offline model would, names the model it was asked for, counts
//! tokens as a real server would (about four characters each), and can hold calls. It can also
//! answer a queue of [`Fault`]s, one per request, as a failing provider would, or a fault that a
//! rule of the test picks from each request's body. The agent-host tests use it too (by path).
//!
//! It also answers `POST /v1/embeddings` with deterministic vectors: a bag of words hashed into
//! [`EMBEDDING_DIMS`] dimensions, where a few words count as their synonyms
//! ([`embedding_of`]), so that a question can be close in meaning to code it shares no word
//! with.

use std::collections::VecDeque;
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
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
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
    /// The faults still to answer with.
    faults: Arc<Mutex<Faults>>,
    /// Every embeddings request body, in order, with the `Authorization` header it came with
    /// under `"authorization"`.
    pub embedding_requests: Arc<Mutex<Vec<Value>>>,
    /// The HTTP status every embeddings request is answered with instead of vectors.
    embeddings_status: Arc<Mutex<Option<u16>>>,
}

/// The length of the vectors the embeddings endpoint answers.
pub const EMBEDDING_DIMS: usize = 1024;

/// Words the embeddings endpoint takes for another, as a model that knows meanings would.
const SYNONYMS: [(&str, &str); 6] = [
    ("bill", "invoice"),
    ("amount", "total"),
    ("calculated", "compute"),
    ("calculate", "compute"),
    ("computed", "compute"),
    ("sum", "total"),
];

/// The vector the embeddings endpoint answers for `text`: each word (split at non-letters,
/// `_` and case changes, lowercased, synonyms replaced; numbers are left out) adds 1 to the dimension its FNV-1a hash
/// picks.
pub fn embedding_of(text: &str) -> Vec<f32> {
    let mut vector = vec![0.0f32; EMBEDDING_DIMS];
    let mut spaced = String::new();
    let mut previous_lower = false;
    for c in text.chars() {
        if c.is_uppercase() && previous_lower {
            spaced.push(' ');
        }
        previous_lower = c.is_lowercase();
        spaced.push(if c.is_alphanumeric() { c } else { ' ' });
    }
    for word in spaced.split_whitespace() {
        if word.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let word = word.to_lowercase();
        let word = SYNONYMS
            .iter()
            .find(|(from, _)| *from == word)
            .map_or(word.as_str(), |(_, to)| to);
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in word.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        vector[(hash % EMBEDDING_DIMS as u64) as usize] += 1.0;
    }
    vector
}

async fn embeddings(
    State(server): State<ChatServer>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut recorded = body.clone();
    recorded["authorization"] = json!(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    );
    if let Ok(mut seen) = server.embedding_requests.lock() {
        seen.push(recorded);
    }
    let status = server
        .embeddings_status
        .lock()
        .map(|s| *s)
        .unwrap_or_default();
    if let Some(code) = status {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = json!({"error": {"message": "Not found", "type": "invalid_request_error"}});
        return (status, Json(body)).into_response();
    }
    let inputs: Vec<String> = match &body["input"] {
        Value::String(one) => vec![one.clone()],
        Value::Array(many) => many
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .collect(),
        _ => Vec::new(),
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| json!({"object": "embedding", "index": index, "embedding": embedding_of(text)}))
        .collect();
    let tokens: usize = inputs.iter().map(|t| (t.len() / 4).max(1)).sum();
    Json(json!({
        "object": "list",
        "data": data,
        "model": body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
    .into_response()
}

/// How the server answers one request instead of the offline model's plain answer: the ways a
/// provider fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The offline model's answer, as without faults.
    Ok,
    /// The offline model's answer after this long: beyond the client's timeout, the call times
    /// out and the server sees it abandoned.
    Delay(Duration),
    /// This HTTP status with an OpenAI-style error body and no `Retry-After`.
    Status(u16),
    /// HTTP 429 with `Retry-After: 0`: a rate limit that allows an immediate retry.
    TooManyRequests,
    /// A 200 whose JSON body stops in the middle.
    Truncated,
    /// A 200 with an HTML error page, as a proxy in front of the API sends.
    NotJson,
    /// A valid completion whose content lacks the schema's first field and has every other
    /// field of the wrong type.
    SchemaViolation,
    /// A completion whose `refusal` is set and whose `content` is null.
    Refusal,
}

/// A rule that picks the answer to a request from its body, once the queue is used up.
pub type FaultRule = Arc<dyn Fn(&Value) -> Fault + Send + Sync>;

/// The queue of faults, and which requests consume them.
#[derive(Default)]
struct Faults {
    /// Only requests for this response schema (`design`, `implementation`, …) consume faults;
    /// any request does when `None`.
    schema: Option<String>,
    queue: VecDeque<Fault>,
    /// What answers a request once the queue is empty; [`Fault::Ok`] without one.
    rule: Option<FaultRule>,
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

async fn chat(State(server): State<ChatServer>, Json(body): Json<Value>) -> Response {
    let mut answering = Answering(server.abandoned.clone(), false);
    if let Ok(mut seen) = server.seen.lock() {
        seen.push(body.clone());
    }
    let fault = server.next_fault(&body);
    let delay = server.delay.lock().map(|d| *d).unwrap_or_default();
    tokio::time::sleep(delay).await;
    let mut hold = server.hold.subscribe();
    let _ = hold.wait_for(|held| !*held).await;
    if let Fault::Delay(delay) = fault {
        tokio::time::sleep(delay).await;
    }
    let error = |status: StatusCode, message: &str| {
        let body = json!({"error": {"message": message, "type": "server_error"}});
        (status, Json(body))
    };
    match fault {
        Fault::Status(code) => {
            answering.1 = true;
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return error(
                status,
                "The server had an error while processing your request.",
            )
            .into_response();
        }
        Fault::TooManyRequests => {
            answering.1 = true;
            let answer = error(StatusCode::TOO_MANY_REQUESTS, "Rate limit reached.");
            return ([(header::RETRY_AFTER, "0")], answer).into_response();
        }
        Fault::NotJson => {
            answering.1 = true;
            let page = "<html><head><title>502 Bad Gateway</title></head>\
                        <body><h1>502 Bad Gateway</h1></body></html>";
            return ([(header::CONTENT_TYPE, "text/html")], page).into_response();
        }
        Fault::Refusal => {
            answering.1 = true;
            let message = json!({
                "role": "assistant",
                "content": null,
                "refusal": "I'm sorry, I can't help with that.",
            });
            return Json(completion(&body, message, 10, 10)).into_response();
        }
        Fault::Ok | Fault::Delay(_) | Fault::Truncated | Fault::SchemaViolation => {}
    }
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
    let mut content = OfflineLlm::new()
        .complete(&request)
        .await
        .map(|answer| answer.content)
        .unwrap_or_default();
    if fault == Fault::SchemaViolation {
        content = violate_schema(&content);
    }
    let prompt_tokens = (prompt_chars / 4).max(1);
    let completion_tokens = (content.len() / 4).max(1);
    answering.1 = true;
    let message = json!({"role": "assistant", "content": content, "refusal": null});
    let answer = completion(&body, message, prompt_tokens, completion_tokens);
    if fault == Fault::Truncated {
        let text = answer.to_string();
        let cut: String = text.chars().take(text.chars().count() / 2).collect();
        return ([(header::CONTENT_TYPE, "application/json")], cut).into_response();
    }
    Json(answer).into_response()
}

/// A chat completion of the model `request` asked for, with one choice of `message`.
fn completion(
    request: &Value,
    message: Value,
    prompt_tokens: usize,
    completion_tokens: usize,
) -> Value {
    json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": request["model"],
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    })
}

/// The answer `content` with its first field left out and every other field of the wrong type.
fn violate_schema(content: &str) -> String {
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(content) else {
        return json!({"unexpected": true}).to_string();
    };
    let wrong: serde_json::Map<String, Value> = fields
        .into_iter()
        .skip(1)
        .map(|(name, value)| {
            let wrong = if value.is_number() {
                json!("42")
            } else {
                json!(42)
            };
            (name, wrong)
        })
        .collect();
    Value::Object(wrong).to_string()
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
            faults: Arc::default(),
            embedding_requests: Arc::default(),
            embeddings_status: Arc::default(),
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/embeddings", post(embeddings))
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

    /// Answers every embeddings request with the HTTP status `status` (404: a provider
    /// without embeddings), or with vectors again when `None`.
    pub fn answer_embeddings_with(&self, status: Option<u16>) {
        if let Ok(mut current) = self.embeddings_status.lock() {
            *current = status;
        }
    }

    /// The embeddings request bodies seen so far.
    pub fn embedding_requests(&self) -> Vec<Value> {
        self.embedding_requests
            .lock()
            .map(|seen| seen.clone())
            .unwrap_or_default()
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

    /// Answers the next requests with `faults`, one each, in order (replacing any left); once
    /// they are used up, the server answers as usual.
    pub fn set_faults(&self, faults: Vec<Fault>) {
        self.replace_faults(None, faults);
    }

    /// Like [`ChatServer::set_faults`], but only requests for the response schema `schema`
    /// (`design`, `implementation`, `test_plan`, `review`) consume the faults.
    pub fn set_faults_for(&self, schema: &str, faults: Vec<Fault>) {
        self.replace_faults(Some(schema.to_owned()), faults);
    }

    /// How many faults have not been answered yet.
    pub fn faults_left(&self) -> usize {
        self.faults
            .lock()
            .map(|f| f.queue.len())
            .unwrap_or_default()
    }

    /// Answers every request the queue does not with what `rule` picks from its body: a share
    /// of faults spread over a long run, whatever order the requests come in.
    pub fn set_fault_rule(&self, rule: impl Fn(&Value) -> Fault + Send + Sync + 'static) {
        if let Ok(mut current) = self.faults.lock() {
            current.rule = Some(Arc::new(rule));
        }
    }

    fn replace_faults(&self, schema: Option<String>, faults: Vec<Fault>) {
        if let Ok(mut current) = self.faults.lock() {
            current.schema = schema;
            current.queue = faults.into();
        }
    }

    /// The fault to answer the request `body` with.
    fn next_fault(&self, body: &Value) -> Fault {
        let schema = body["response_format"]["json_schema"]["name"]
            .as_str()
            .unwrap_or_default();
        let rule = {
            let Ok(mut faults) = self.faults.lock() else {
                return Fault::Ok;
            };
            if faults.schema.as_deref().is_none_or(|only| only == schema)
                && let Some(fault) = faults.queue.pop_front()
            {
                return fault;
            }
            faults.rule.clone()
        };
        // The rule runs outside the lock: it may take locks of its own.
        rule.map_or(Fault::Ok, |rule| rule(body))
    }
}
