//! What the web tests share: a pipeline over a temporary data directory with its services
//! running, the router over it, and requests sent to the router without a network
//! (`tower::ServiceExt::oneshot`).

use std::sync::Arc;
use std::time::Duration;

use agent_host::web::{WebSettings, WebState, router};
use agent_pipeline::llm::OfflineLlm;
use agent_pipeline::wire::ReportEvent;
use agent_pipeline::{Pipeline, PipelineBuilder, RunningPipeline, TaskId};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// The prompt of mission.md.
pub(crate) const HELLO: &str = "Write a tiny Python program that prints 'Hello Earthling'";

/// A pipeline with its services running, and the web router over it.
pub(crate) struct App {
    /// The data directory (removed on drop).
    pub(crate) dir: tempfile::TempDir,
    /// The pipeline.
    pub(crate) pipeline: Pipeline,
    /// The web state (holds the CSRF token).
    pub(crate) state: WebState,
    /// The router under test.
    pub(crate) router: Router,
    running: Option<RunningPipeline>,
}

/// One answer: status, content type and body.
#[derive(Debug)]
pub(crate) struct Answer {
    /// The status code.
    pub(crate) status: StatusCode,
    /// Every header.
    pub(crate) headers: axum::http::HeaderMap,
    /// The body as text.
    pub(crate) body: String,
}

impl Answer {
    /// The `Location` header of a redirect.
    pub(crate) fn location(&self) -> Option<&str> {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
    }

    /// The task the enqueue form's `303 /task/<id>?enqueued=1` redirect names; panics with the
    /// answer when it is not that redirect.
    pub(crate) fn enqueued_task(&self) -> TaskId {
        assert_eq!(self.status, StatusCode::SEE_OTHER, "{}", self.body);
        self.location()
            .and_then(|l| l.strip_prefix("/task/"))
            .and_then(|l| l.strip_suffix("?enqueued=1"))
            .expect("the task page")
            .parse()
            .expect("a task id")
    }

    /// The body as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The content type.
    pub(crate) fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

impl App {
    /// A running pipeline (offline model, the default sandbox) and its router.
    pub(crate) async fn start(settings: WebSettings) -> Self {
        let app = Self::stopped(settings).await;
        let running = app.pipeline.start().await.expect("the services start");
        Self {
            running: Some(running),
            ..app
        }
    }

    /// The same without any service running: nothing enqueued is handled.
    pub(crate) async fn stopped(settings: WebSettings) -> Self {
        Self::stopped_with(settings, |builder| builder).await
    }

    /// A running pipeline built by `configure` from the defaults of [`App::start`] (offline
    /// model, the default sandbox, a temporary data directory), and its router: e.g. with an
    /// agent or a model that fails.
    pub(crate) async fn start_with(
        settings: WebSettings,
        configure: impl FnOnce(PipelineBuilder) -> PipelineBuilder,
    ) -> Self {
        let app = Self::stopped_with(settings, configure).await;
        let running = app.pipeline.start().await.expect("the services start");
        Self {
            running: Some(running),
            ..app
        }
    }

    /// The same as [`App::start_with`] without any service running.
    pub(crate) async fn stopped_with(
        settings: WebSettings,
        configure: impl FnOnce(PipelineBuilder) -> PipelineBuilder,
    ) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let builder = Pipeline::builder()
            .data_dir(dir.path())
            .llm(Arc::new(OfflineLlm::new()));
        let pipeline = configure(builder).build().await.expect("a pipeline");
        let state = WebState::new(pipeline.clone(), settings);
        let router = router(state.clone());
        Self {
            dir,
            pipeline,
            state,
            router,
            running: None,
        }
    }

    /// Sends `request` to the router.
    pub(crate) async fn send(&self, request: Request<Body>) -> Answer {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router answers");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// `GET path`.
    pub(crate) async fn get(&self, path: &str) -> Answer {
        self.send(Request::get(path).body(Body::empty()).expect("a request"))
            .await
    }

    /// `POST path` with a form; `fields` are percent-encoded here.
    pub(crate) async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        self.send(
            Request::post(path)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(body.join("&")))
                .expect("a request"),
        )
        .await
    }

    /// `POST path` with a JSON body.
    pub(crate) async fn post_json(&self, path: &str, body: &serde_json::Value) -> Answer {
        self.send(
            Request::post(path)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .expect("a request"),
        )
        .await
    }

    /// Enqueues the hello task through the library and waits for its `done` or `error`.
    pub(crate) async fn run_hello(&self) -> (TaskId, ReportEvent) {
        let task_id = self.pipeline.submit(HELLO).await.expect("submitted");
        let last = tokio::time::timeout(Duration::from_secs(60), self.pipeline.wait(task_id))
            .await
            .expect("the task ends within a minute")
            .expect("its reports");
        // The mirror writes reports.jsonl after the bus delivers; give it a moment.
        self.wait_for_report_file(task_id, last.status.as_str())
            .await;
        (task_id, last)
    }

    /// Waits until `reports.jsonl` holds an event of `task_id` with `status`.
    pub(crate) async fn wait_for_report_file(&self, task_id: TaskId, status: &str) {
        for _ in 0..200 {
            let events = self
                .pipeline
                .report_log()
                .read_all()
                .await
                .unwrap_or_default();
            if events
                .iter()
                .any(|e| e.task_id == task_id && e.status.as_str() == status)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("reports.jsonl never got {status} of {task_id}");
    }

    /// Stops the services (the mirrors last, so the files are complete).
    pub(crate) async fn shutdown(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }
}

/// Percent-encodes a form value.
pub(crate) fn encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else if byte == b' ' {
            out.push('+');
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
