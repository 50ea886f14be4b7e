//! The OpenAI client behind the limiter against a local server that enforces R requests per
//! rolling minute and answers 429 beyond it, on tokio's paused clock (the server counts on
//! the same clock).

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;
use tokio::time::{Instant, sleep};

use crate::llm::{
    ApiKey, Llm, LlmLimits, LlmRequest, LlmSettings, Message, OpenAiLlm, RateLimitedLlm,
    RateLimiter, Role,
};

const WINDOW: Duration = Duration::from_secs(60);
/// How long the server takes to answer.
const LATENCY: Duration = Duration::from_millis(800);

/// A Chat Completions server that accepts `limit` requests per rolling minute.
#[derive(Clone)]
struct Server {
    limit: usize,
    /// When each accepted request came.
    accepted: Arc<Mutex<Vec<Instant>>>,
    refused: Arc<AtomicUsize>,
}

impl Server {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            accepted: Arc::new(Mutex::new(Vec::new())),
            refused: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Counts the request against the window: `Ok(remaining)` if it is accepted, else
    /// `Err(until the oldest leaves the window)`.
    fn admit(&self) -> Result<(usize, Duration), Duration> {
        let now = Instant::now();
        let Ok(mut accepted) = self.accepted.lock() else {
            return Err(WINDOW);
        };
        let in_window: Vec<Instant> = accepted
            .iter()
            .copied()
            .filter(|at| *at + WINDOW > now)
            .collect();
        let reset = in_window
            .first()
            .map_or(WINDOW, |oldest| (*oldest + WINDOW) - now);
        if in_window.len() >= self.limit {
            return Err(reset);
        }
        accepted.push(now);
        Ok((self.limit - in_window.len() - 1, reset))
    }

    /// The requests accepted before `end`.
    fn accepted_before(&self, end: Instant) -> usize {
        self.accepted
            .lock()
            .map(|a| a.iter().filter(|at| **at < end).count())
            .unwrap_or(0)
    }
}

async fn chat_completions(State(server): State<Server>) -> Response {
    let admitted = server.admit();
    sleep(LATENCY).await;
    match admitted {
        Ok((remaining, reset)) => {
            let body = json!({
                "model": "gpt-test",
                "choices": [{"message": {"role": "assistant", "content": "{}", "refusal": null}}],
                "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25},
            });
            let headers = [
                ("x-ratelimit-remaining-requests", remaining.to_string()),
                (
                    "x-ratelimit-reset-requests",
                    format!("{}ms", reset.as_millis()),
                ),
            ];
            (headers, axum::Json(body)).into_response()
        }
        Err(reset) => {
            server.refused.fetch_add(1, Ordering::SeqCst);
            let headers = [
                ("retry-after-ms", reset.as_millis().to_string()),
                ("x-ratelimit-remaining-requests", "0".to_owned()),
                (
                    "x-ratelimit-reset-requests",
                    format!("{}ms", reset.as_millis()),
                ),
            ];
            let body = json!({"error": {"message": "Rate limit reached for requests"}});
            (StatusCode::TOO_MANY_REQUESTS, headers, axum::Json(body)).into_response()
        }
    }
}

async fn serve(server: Server) -> SocketAddr {
    let app = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .with_state(server);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a local port");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

fn settings(addr: SocketAddr) -> LlmSettings {
    LlmSettings {
        api_key: Some(ApiKey::new("sk-test")),
        model: "gpt-test".into(),
        base_url: format!("http://{addr}/v1"),
        max_attempts: 1,
        ..LlmSettings::default()
    }
}

fn request() -> LlmRequest {
    LlmRequest {
        messages: vec![Message::new(Role::User, "Write hello.py")],
        schema_name: "design".into(),
        schema: json!({}),
        model: None,
    }
}

/// `callers` tasks call `llm` again and again for `span`.
async fn hammer(llm: Arc<dyn Llm>, callers: usize, span: Duration) {
    let end = Instant::now() + span;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..callers {
        let llm = llm.clone();
        tasks.spawn(async move {
            while Instant::now() < end {
                let _ = llm.complete(&request()).await;
            }
        });
    }
    tasks.join_all().await;
}

#[tokio::test(start_paused = true)]
async fn the_limiter_uses_the_servers_rate_without_a_single_429() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    const R: u32 = 30;

    // Without the limiter, the server refuses: it does enforce its limit.
    let server = Server::new(R as usize);
    let addr = serve(server.clone()).await;
    let bare = OpenAiLlm::new(settings(addr)).expect("a client");
    hammer(Arc::new(bare), 20, Duration::from_secs(10)).await;
    assert!(server.refused.load(Ordering::SeqCst) > 0);

    let server = Server::new(R as usize);
    let addr = serve(server.clone()).await;
    let limits = LlmLimits {
        requests_per_minute: NonZeroU32::new(R),
        ..LlmLimits::default()
    };
    let limiter = Arc::new(RateLimiter::new(&limits));
    let client = OpenAiLlm::new(settings(addr))
        .expect("a client")
        .with_rate_limit_feedback(limiter.clone());
    let llm = RateLimitedLlm::new(Arc::new(client), limiter);
    let start = Instant::now();
    hammer(Arc::new(llm), 20, 2 * WINDOW).await;

    assert_eq!(server.refused.load(Ordering::SeqCst), 0, "no 429");
    // Calls granted before the end still finish after it: count the two minutes only.
    let accepted = server.accepted_before(start + 2 * WINDOW);
    let budget = 2 * R as usize;
    assert!(
        accepted * 100 >= 95 * budget && accepted <= budget,
        "{accepted} accepted in 2 minutes at {R} per minute"
    );
}
