//! B4: the request limiter against a local server that enforces R requests per rolling
//! minute (and answers 429 beyond it), with many callers pressing at once.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_pipeline::llm::{self, ApiKey, LlmLimits, LlmRequest, LlmSettings, Message, Role};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// How many callers press on the limiter at once.
const CALLERS: usize = 64;

/// The server's side: what it accepted in the last minute, and its counts.
#[derive(Debug)]
struct Enforcer {
    limit: usize,
    accepted: Mutex<VecDeque<Instant>>,
    ok: AtomicU64,
    refused: AtomicU64,
}

async fn chat_completions(State(enforcer): State<Arc<Enforcer>>) -> Response {
    let now = Instant::now();
    let admitted = match enforcer.accepted.lock() {
        Ok(mut accepted) => {
            while accepted
                .front()
                .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
            {
                accepted.pop_front();
            }
            let admitted = accepted.len() < enforcer.limit;
            if admitted {
                accepted.push_back(now);
            }
            admitted
        }
        Err(_) => false,
    };
    if !admitted {
        enforcer.refused.fetch_add(1, Ordering::Relaxed);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            axum::Json(json!({"error": {"message": "Rate limit reached for requests"}})),
        )
            .into_response();
    }
    enforcer.ok.fetch_add(1, Ordering::Relaxed);
    axum::Json(json!({
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "bench",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "{\"approved\":true,\"comments\":[]}", "refusal": null},
            "finish_reason": "stop",
        }],
        "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28},
    }))
    .into_response()
}

/// `CALLERS` callers through the limiter at `per_minute` for `window`; the server's counts.
pub(crate) async fn run(window: Duration, per_minute: u32) -> Result<Value, String> {
    let limit = NonZeroU32::new(per_minute).ok_or("the limit must be at least 1")?;
    let enforcer = Arc::new(Enforcer {
        limit: per_minute as usize,
        accepted: Mutex::new(VecDeque::new()),
        ok: AtomicU64::new(0),
        refused: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .with_state(enforcer.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| format!("address: {e}"))?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let settings = LlmSettings {
        api_key: Some(ApiKey::new("bench-key")),
        model: "bench".to_owned(),
        base_url: format!("http://{addr}/v1"),
        limits: LlmLimits {
            requests_per_minute: Some(limit),
            ..LlmLimits::default()
        },
        ..LlmSettings::default()
    };
    let llm = llm::from_settings(&settings).map_err(|e| format!("client: {e}"))?;
    let request = Arc::new(LlmRequest {
        messages: vec![Message::new(Role::User, "Review hello.py")],
        schema_name: "review".to_owned(),
        schema: agent_pipeline::output::strict_schema::<agent_pipeline::output::Review>(),
        model: None,
    });
    let started = Instant::now();
    let deadline = started + window;
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..CALLERS {
        let (llm, request) = (llm.clone(), request.clone());
        callers.spawn(async move {
            while Instant::now() < deadline {
                let call = tokio::time::timeout_at(deadline.into(), llm.complete(&request));
                if call.await.is_err() {
                    break;
                }
            }
        });
    }
    while callers.join_next().await.is_some() {}
    let seconds = started.elapsed().as_secs_f64();
    let ok = enforcer.ok.load(Ordering::Relaxed);
    Ok(json!({
        "window_s": seconds,
        "limit_per_minute": per_minute,
        "callers": CALLERS,
        "requests_ok": ok,
        "achieved_per_minute": ok as f64 * 60.0 / seconds,
        "too_many_requests": enforcer.refused.load(Ordering::Relaxed),
    }))
}
