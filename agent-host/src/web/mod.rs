//! The web UI and its JSON API: server-side HTML (maud on axum), live through server-sent
//! events, over the same stores and bus as the services.
//!
//! Every page has a JSON twin under `/api/…`:
//!
//! | page | JSON | what |
//! |---|---|---|
//! | `GET /` | `GET /api` | enqueue form and the most recent reports |
//! | `POST /` (form) | `POST /api/tasks` (JSON `{"prompt"}`, optionally `"budget"`, `"require_approval"`) | enqueue a task |
//! | `GET /reports` | `GET /api/reports` | report events, newest first; `?status=&task_id=&page=` |
//! | `GET /tasks` | `GET /api/tasks` | every task with its latest status |
//! | `GET /task/{id}` | `GET /api/task/{id}` | one task: steps, attempts, artifacts |
//! | `GET /task/{id}/diff/{step}?from=&to=` | `GET /api/task/{id}/diff/{step}?from=&to=` | two attempts side by side (model, provider, edits, tokens, cost, duration) and the diff of their outputs |
//! | `POST /task/{id}/replay` (form) | `POST /api/task/{id}/replay` (JSON `{"step","reason"}`, optionally `"model","provider","prompt","inputs","continue_downstream"`) | replay one step, as it ran or as a variant |
//! | `POST /task/{id}/approve`, `/reject`, `/cancel` (form) | `POST /api/task/{id}/approve`, `/reject`, `/cancel` (JSON `{"by","comment"}`, optional) | decide about a task awaiting approval, or cancel one that has not ended (409 when it does not apply) |
//! | | `GET /api/providers` | the providers a replay may name, the prices of models, the default budget |
//! | | `GET /api/schemas` | the schema registry: name, topic, version and URL of the JSON Schema of every message and stage output (`docs/schemas.md`) |
//! | | `GET /api/schemas/{name}` | one JSON Schema (`application/schema+json`), its version as the `ETag`; 404 for an unknown name |
//! | `GET /dlq` | `GET /api/dlq` | the dead-letter queue |
//! | `POST /dlq/{id}/redrive` (form) | `POST /api/dlq/{id}/redrive` | send a dead letter back |
//! | | `GET /api/events?task_id=` | report events as server-sent events |
//! | `GET /healthz`, `GET /readyz` | | liveness; bus and store reachable |
//! | | `GET /metrics` | the process's metrics in Prometheus's text format (`docs/metrics.md`) |
//!
//! Security: user-supplied text is escaped by maud; state-changing requests are POST only,
//! forms carry a CSRF token and cross-site POSTs are refused; with `WEB_TOKEN` set, every
//! route but the probes, the login page and the static files needs the token (a bearer
//! header, or the cookie the login page sets); `/metrics` takes the bearer header only, and
//! answers 401 rather than sending a scraper to the login page. A request body over 2 MiB
//! is refused with 413.

mod actions;
mod api;
pub use api::{
    ControlQueued, ControlRequest, EnqueueRequest, Enqueued, ReplayQueued, ReplayRequest,
};
mod assets;
mod error;
mod highlight;
mod live;
mod metrics;
mod pages;
mod query;
mod schemas;
pub use schemas::{SchemaIndex, SchemaSummary};
pub(crate) mod security;
mod text;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use agent_pipeline::{Pipeline, TaskId};
use axum::Router;
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use tokio::sync::watch;

pub use error::WebError;

/// How the web server behaves.
#[derive(Clone, Default)]
pub struct WebSettings {
    /// `WEB_TOKEN`: when set, the UI and the API need it.
    pub token: Option<String>,
    /// Why this process cannot take work (enqueue, replay, re-drive), when it cannot: e.g.
    /// `agent-host web` alone on the in-memory bus, where no service would ever see it.
    pub read_only: Option<String>,
}

impl std::fmt::Debug for WebSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSettings")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("read_only", &self.read_only)
            .finish()
    }
}

/// What every handler shares: the pipeline, the settings and the process's CSRF token.
#[derive(Debug, Clone)]
pub struct WebState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pipeline: Pipeline,
    settings: WebSettings,
    /// Forms carry it back; a page of another site cannot read it.
    csrf_token: String,
    /// Tasks this server enqueued that the planner may not have recorded yet, so that their
    /// page says "queued" instead of "not found".
    enqueued: Mutex<HashMap<TaskId, DateTime<Utc>>>,
    /// Flips to `true` when the server stops, ending the live streams.
    stopping: watch::Sender<bool>,
}

impl WebState {
    /// The state of a server over `pipeline`.
    pub fn new(pipeline: Pipeline, settings: WebSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                pipeline,
                settings,
                csrf_token: security::random_token(),
                enqueued: Mutex::new(HashMap::new()),
                stopping: watch::channel(false).0,
            }),
        }
    }

    /// The pipeline the server reads and publishes to.
    pub fn pipeline(&self) -> &Pipeline {
        &self.inner.pipeline
    }

    /// The settings.
    pub fn settings(&self) -> &WebSettings {
        &self.inner.settings
    }

    /// The token every form must carry back.
    pub fn csrf_token(&self) -> &str {
        &self.inner.csrf_token
    }

    /// Ends the live streams, so that a graceful shutdown does not wait for browsers.
    pub fn stop_live_streams(&self) {
        let _ = self.inner.stopping.send(true);
    }

    /// Remembers that this server enqueued `task_id` just now.
    fn remember_enqueued(&self, task_id: TaskId) {
        if let Ok(mut enqueued) = self.inner.enqueued.lock() {
            // Forget the oldest once there are many: the planner has long recorded them.
            if enqueued.len() >= 10_000
                && let Some(oldest) = enqueued
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(id, _)| *id)
            {
                enqueued.remove(&oldest);
            }
            enqueued.insert(task_id, Utc::now());
        }
    }

    /// When this server enqueued `task_id`, if it did.
    fn enqueued_at(&self, task_id: TaskId) -> Option<DateTime<Utc>> {
        self.inner
            .enqueued
            .lock()
            .ok()
            .and_then(|enqueued| enqueued.get(&task_id).copied())
    }

    /// Refuses work in a read-only process, with the reason.
    fn check_accepts_work(&self) -> Result<(), WebError> {
        match &self.inner.settings.read_only {
            Some(reason) => Err(WebError::Unavailable(reason.clone())),
            None => Ok(()),
        }
    }
}

/// Every route of the UI and the API.
pub fn router(state: WebState) -> Router {
    let protected = Router::new()
        .route("/", get(pages::home).post(pages::enqueue))
        .route("/reports", get(pages::reports))
        .route("/tasks", get(pages::tasks))
        .route("/task/{task_id}", get(pages::task))
        .route("/task/{task_id}/diff/{step}", get(pages::diff))
        .route("/task/{task_id}/replay", post(pages::replay))
        .route("/task/{task_id}/approve", post(pages::approve))
        .route("/task/{task_id}/reject", post(pages::reject))
        .route("/task/{task_id}/cancel", post(pages::cancel))
        .route("/dlq", get(pages::dlq))
        .route("/dlq/{id}/redrive", post(pages::redrive))
        .route("/api", get(api::index))
        .route("/api/reports", get(api::reports))
        .route("/api/tasks", get(api::tasks).post(api::enqueue))
        .route("/api/task/{task_id}", get(api::task))
        .route("/api/task/{task_id}/diff/{step}", get(api::diff))
        .route("/api/task/{task_id}/replay", post(api::replay))
        .route("/api/task/{task_id}/approve", post(api::approve))
        .route("/api/task/{task_id}/reject", post(api::reject))
        .route("/api/task/{task_id}/cancel", post(api::cancel))
        .route("/api/providers", get(api::providers))
        .route("/api/schemas", get(schemas::index))
        .route("/api/schemas/{name}", get(schemas::schema))
        .route("/api/dlq", get(api::dlq))
        .route("/api/dlq/{id}/redrive", post(api::redrive))
        .route("/api/events", get(live::events))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            security::require_token,
        ));
    Router::new()
        .merge(protected)
        .route("/login", get(pages::login_page).post(pages::login))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/static/{file}", get(assets::serve))
        .fallback(pages::not_found)
        .layer(axum::extract::DefaultBodyLimit::max(
            security::MAX_BODY_BYTES,
        ))
        .layer(axum::middleware::from_fn(security::refuse_cross_site_posts))
        .layer(axum::middleware::from_fn(security::limit_body))
        .layer(axum::middleware::from_fn(security::headers))
        .with_state(state)
}

/// Serves [`router`] on `listener` until `shutdown` completes, then ends the live streams and
/// finishes the requests under way.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: WebState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            state.stop_live_streams();
        })
        .await
}
