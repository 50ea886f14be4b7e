//! Every route of the JSON API (and the probes), driven through the router
//! (`tower::ServiceExt::oneshot`) over a real pipeline in a temporary directory: what each
//! answers, and how it refuses what it cannot do, always as `{"error": …}` JSON.

mod common;

use std::sync::Arc;
use std::time::Duration;

use agent_host::web::WebSettings;
use agent_pipeline::llm::{ApiKey, LlmSettings, OpenAiLlm};
use agent_pipeline::machine::RetryPolicy;
use agent_pipeline::wire::ReportStatus;
use agent_pipeline::{PipelineBuilder, Stage, StepId, TaskId};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::web::{Answer, App, HELLO};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// How long a test waits for something that must happen.
const PATIENCE: Duration = Duration::from_secs(60);

/// Settings of a process that takes no work.
fn read_only() -> WebSettings {
    WebSettings {
        token: None,
        read_only: Some("this process serves the UI alone".into()),
    }
}

/// An app whose model cannot be reached and whose steps are tried once: every task fails at
/// design@v1 and its step is dead-lettered as exhausted.
async fn failing_app() -> App {
    // The binary installs ring at start-up; the HTTP client of the model needs a provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    App::start_with(WebSettings::default(), |builder: PipelineBuilder| {
        let llm = OpenAiLlm::new(LlmSettings {
            api_key: Some(ApiKey::new("sk-test")),
            // Nothing listens on the discard port.
            base_url: "http://127.0.0.1:9/v1".into(),
            max_attempts: 1,
            ..LlmSettings::default()
        })
        .expect("a model client");
        builder.llm(Arc::new(llm)).retry_policy(RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        })
    })
    .await
}

/// Checks that `answer` is a JSON error with `status`, and returns its message.
fn json_error(answer: &Answer, status: StatusCode) -> String {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert!(
        answer.content_type().starts_with("application/json"),
        "{answer:?}"
    );
    answer.json()["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message: {}", answer.body))
        .to_owned()
}

/// Polls `GET path` until `check` holds for its JSON.
async fn eventually_json(
    app: &App,
    path: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let answer = app.get(path).await;
        if answer.status == StatusCode::OK && check(&answer.json()) {
            return answer.json();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "GET {path} never got there: {}",
            answer.body
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `POST path` with `body` as it is, and a content type.
async fn post_raw(app: &App, path: &str, content_type: &str, body: &str) -> Answer {
    app.send(
        Request::post(path)
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body.to_owned()))
            .expect("a request"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_has_the_recent_reports_and_says_whether_work_is_taken() {
    let app = App::start(WebSettings::default()).await;
    let (task_id, _) = app.run_hello().await;
    let index = app.get("/api").await;
    assert_eq!(index.status, StatusCode::OK, "{}", index.body);
    let index = index.json();
    assert_eq!(index["accepts_work"], true);
    let recent = index["recent_reports"].as_array().expect("a list");
    assert!(
        recent
            .iter()
            .any(|e| e["task_id"] == task_id.to_string() && e["status"] == "done"),
        "{index}"
    );
    assert!(recent.len() <= 20, "{index}");
    app.shutdown().await;

    let read_only = App::stopped(read_only()).await;
    let index = read_only.get("/api").await.json();
    assert_eq!(index["accepts_work"], false);
    assert_eq!(index["read_only"], "this process serves the UI alone");
    assert_eq!(index["recent_reports"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_filtered_by_status_and_task_and_paginated() {
    let app = App::start(WebSettings::default()).await;
    let (first, _) = app.run_hello().await;
    let (second, _) = app.run_hello().await;

    let page = app
        .get(&format!(
            "/api/reports?status=stage_done&task_id={first}&per_page=3"
        ))
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let page = page.json();
    assert_eq!(page["total"], 4, "one stage_done per stage: {page}");
    assert_eq!(page["pages"], 2);
    assert_eq!(page["page"], 1);
    assert_eq!(page["per_page"], 3);
    let events = page["events"].as_array().expect("a list");
    assert_eq!(events.len(), 3);
    assert!(
        events
            .iter()
            .all(|e| e["task_id"] == first.to_string() && e["status"] == "stage_done"),
        "{page}"
    );
    // Newest first: the review comes before the design.
    assert_eq!(events[0]["stage"], "review@v1");
    let statuses = page["statuses"].as_array().expect("a list");
    assert!(statuses.contains(&"done".into()) && statuses.contains(&"received".into()));

    let last = app
        .get(&format!(
            "/api/reports?status=stage_done&task_id={first}&per_page=3&page=2"
        ))
        .await
        .json();
    assert_eq!(last["page"], 2);
    assert_eq!(last["events"].as_array().map(Vec::len), Some(1));
    assert_eq!(last["events"][0]["stage"], "design@v1");

    let done = app.get("/api/reports?status=done").await.json();
    assert_eq!(done["total"], 2, "{done}");
    let all = app.get("/api/reports").await.json();
    let tasks: Vec<&str> = all["events"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|e| e["task_id"].as_str())
        .collect();
    assert!(
        tasks.contains(&first.to_string().as_str()) && tasks.contains(&second.to_string().as_str())
    );

    let bad = app.get("/api/reports?task_id=not-a-task").await;
    json_error(&bad, StatusCode::BAD_REQUEST);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_are_listed_and_enqueued() {
    let app = App::start(WebSettings::default()).await;
    let (task_id, _) = app.run_hello().await;
    let tasks = app.get("/api/tasks").await;
    assert_eq!(tasks.status, StatusCode::OK, "{}", tasks.body);
    let tasks = tasks.json();
    assert_eq!(tasks["tasks"][0]["task_id"], task_id.to_string());
    assert_eq!(tasks["tasks"][0]["status"], "done");
    assert_eq!(tasks["tasks"][0]["attempts"], 4);
    assert_eq!(tasks["tasks"][0]["prompt"], HELLO);

    let enqueued = app
        .post_json("/api/tasks", &serde_json::json!({ "prompt": HELLO }))
        .await;
    assert_eq!(enqueued.status, StatusCode::ACCEPTED, "{}", enqueued.body);
    let enqueued = enqueued.json();
    let new_task: TaskId = enqueued["task_id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("a task id");
    assert_eq!(enqueued["topic"], app.pipeline.topics().tasks.as_str());
    assert_eq!(enqueued["url"], format!("/task/{new_task}"));
    let last = tokio::time::timeout(PATIENCE, app.pipeline.wait(new_task))
        .await
        .expect("the enqueued task ends")
        .expect("its reports");
    assert_eq!(last.status, ReportStatus::Done, "the task really ran");

    let empty = app
        .post_json("/api/tasks", &serde_json::json!({ "prompt": "   " }))
        .await;
    assert!(json_error(&empty, StatusCode::BAD_REQUEST).contains("the prompt is empty"));
    let malformed = post_raw(&app, "/api/tasks", "application/json", "{\"prompt\": ").await;
    json_error(&malformed, StatusCode::BAD_REQUEST);
    let missing = app.post_json("/api/tasks", &serde_json::json!({})).await;
    json_error(&missing, StatusCode::BAD_REQUEST);
    let form = post_raw(
        &app,
        "/api/tasks",
        "application/x-www-form-urlencoded",
        "prompt=hello",
    )
    .await;
    assert!(
        matches!(
            form.status,
            StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE
        ),
        "a form is not JSON: {form:?}"
    );
    json_error(&form, form.status);

    // A repository that cannot be cloned as given is refused before anything is enqueued;
    // one that can is carried to the task.
    let helper = app
        .post_json(
            "/api/tasks",
            &serde_json::json!({ "prompt": HELLO, "repository": { "url": "ext::sh -c x" } }),
        )
        .await;
    assert!(
        json_error(&helper, StatusCode::BAD_REQUEST).contains("invalid repository"),
        "{helper:?}"
    );
    let source = tempfile::tempdir().expect("a temporary directory");
    for args in [
        &["init", "--quiet", "--initial-branch=main"][..],
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@localhost",
            "commit",
            "--quiet",
            "--allow-empty",
            "-m",
            "empty",
        ],
    ] {
        let status = std::process::Command::new("git")
            .arg("-C")
            .arg(source.path())
            .args(args)
            .status()
            .expect("git runs");
        assert!(status.success(), "git {args:?}");
    }
    let on_repository = app
        .post_json(
            "/api/tasks",
            &serde_json::json!({
                "prompt": HELLO,
                "repository": { "url": source.path(), "base_ref": "main" },
            }),
        )
        .await;
    assert_eq!(
        on_repository.status,
        StatusCode::ACCEPTED,
        "{}",
        on_repository.body
    );
    let task_id: TaskId = on_repository.json()["task_id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("a task id");
    let last = tokio::time::timeout(PATIENCE, app.pipeline.wait(task_id))
        .await
        .expect("the task on the repository ends")
        .expect("its reports");
    assert_eq!(last.status, ReportStatus::Done, "{last:?}");
    let task = app
        .pipeline
        .artifacts()
        .read_task(task_id)
        .await
        .expect("the task file")
        .expect("it exists");
    assert_eq!(
        task.repository.and_then(|repository| repository.base_ref),
        Some("main".to_owned())
    );
    app.shutdown().await;

    let read_only = App::stopped(read_only()).await;
    let refused = read_only
        .post_json("/api/tasks", &serde_json::json!({ "prompt": HELLO }))
        .await;
    assert_eq!(
        json_error(&refused, StatusCode::SERVICE_UNAVAILABLE),
        "this process serves the UI alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_has_its_four_steps_and_unknown_or_bad_ids_are_refused() {
    let app = App::start(WebSettings::default()).await;
    let (task_id, _) = app.run_hello().await;
    let task = app.get(&format!("/api/task/{task_id}")).await;
    assert_eq!(task.status, StatusCode::OK, "{}", task.body);
    let task = task.json();
    assert_eq!(task["task"]["task_id"], task_id.to_string());
    assert_eq!(task["task"]["status"], "done");
    assert_eq!(task["task"]["prompt"], HELLO);
    let steps = task["steps"].as_array().expect("a list");
    let names: Vec<&str> = steps.iter().filter_map(|s| s["step"].as_str()).collect();
    assert_eq!(names, ["design@v1", "implement@v1", "test@v1", "review@v1"]);
    for step in steps {
        assert_eq!(step["attempts"].as_array().map(Vec::len), Some(1), "{step}");
        assert_eq!(step["attempts"][0]["status"], "succeeded");
        assert!(step["file"].is_string(), "{step}");
    }
    assert_eq!(steps[3]["artifact"]["approved"], true);

    let unknown = TaskId::new();
    let missing = app.get(&format!("/api/task/{unknown}")).await;
    assert!(json_error(&missing, StatusCode::NOT_FOUND).contains(&unknown.to_string()));
    let bad = app.get("/api/task/nope").await;
    assert!(json_error(&bad, StatusCode::BAD_REQUEST).contains("invalid task id"));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_is_accepted_and_its_attempt_can_be_diffed() {
    let app = App::start(WebSettings::default()).await;
    let (task_id, _) = app.run_hello().await;
    let step = StepId::v1(Stage::Implement);
    let since = chrono::Utc::now();
    let replay = app
        .post_json(
            &format!("/api/task/{task_id}/replay"),
            &serde_json::json!({ "step": "implement@v1", "reason": "once more" }),
        )
        .await;
    assert_eq!(replay.status, StatusCode::ACCEPTED, "{}", replay.body);
    assert_eq!(replay.json()["task_id"], task_id.to_string());
    assert_eq!(replay.json()["step"], "implement@v1");
    let outcome = tokio::time::timeout(PATIENCE, app.pipeline.wait_replay(task_id, step, since))
        .await
        .expect("the replay ends")
        .expect("its reports");
    assert_eq!(
        outcome.status,
        ReportStatus::Replayed,
        "{}",
        outcome.summary
    );

    let diff = app
        .get(&format!(
            "/api/task/{task_id}/diff/implement@v1?from=1&to=2"
        ))
        .await;
    assert_eq!(diff.status, StatusCode::OK, "{}", diff.body);
    let diff = diff.json();
    assert_eq!(diff["step"], "implement@v1");
    assert_eq!(
        (diff["from"].clone(), diff["to"].clone()),
        (1.into(), 2.into())
    );
    let lines = diff["lines"].as_array().expect("a list");
    let count = |kind: &str| lines.iter().filter(|l| l["kind"] == kind).count();
    assert_eq!(diff["added"], count("added"), "{diff}");
    assert_eq!(diff["removed"], count("removed"), "{diff}");
    // The replay committed anew in the task's workspace: at least its commit differs.
    assert!(count("added") > 0 && count("removed") > 0, "{diff}");
    assert!(
        lines.iter().any(|l| l["kind"] == "added"
            && l["text"].as_str().is_some_and(|t| t.contains("\"commit\""))),
        "{diff}"
    );

    let the_same = app
        .get(&format!(
            "/api/task/{task_id}/diff/implement@v1?from=2&to=2"
        ))
        .await
        .json();
    assert_eq!(
        (the_same["added"].clone(), the_same["removed"].clone()),
        (0.into(), 0.into())
    );

    let no_artifact = app
        .get(&format!(
            "/api/task/{task_id}/diff/implement@v1?from=1&to=3"
        ))
        .await;
    assert!(json_error(&no_artifact, StatusCode::NOT_FOUND).contains("no artifact"));
    let zero = app
        .get(&format!(
            "/api/task/{task_id}/diff/implement@v1?from=0&to=2"
        ))
        .await;
    json_error(&zero, StatusCode::BAD_REQUEST);
    let no_query = app
        .get(&format!("/api/task/{task_id}/diff/implement@v1"))
        .await;
    json_error(&no_query, StatusCode::BAD_REQUEST);
    let bad_step = app
        .get(&format!("/api/task/{task_id}/diff/deploy@v1?from=1&to=2"))
        .await;
    json_error(&bad_step, StatusCode::BAD_REQUEST);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_that_cannot_run_is_refused_with_the_reason() {
    let app = failing_app().await;
    let task_id = app.pipeline.submit(HELLO).await.expect("submitted");
    let last = tokio::time::timeout(PATIENCE, app.pipeline.wait(task_id))
        .await
        .expect("the task ends")
        .expect("its reports");
    assert_eq!(last.status, ReportStatus::Error, "{}", last.summary);

    let path = format!("/api/task/{task_id}/replay");
    let refused = app
        .post_json(&path, &serde_json::json!({ "step": "implement@v1" }))
        .await;
    assert_eq!(
        json_error(&refused, StatusCode::CONFLICT),
        format!(
            "cannot replay implement@v1 of task {task_id}: design@v1 has no artifact yet (its inputs are missing)"
        )
    );
    for step in ["deploy@v1", "design@v2", ""] {
        let bad = app
            .post_json(&path, &serde_json::json!({ "step": step }))
            .await;
        json_error(&bad, StatusCode::BAD_REQUEST);
    }
    let unknown = TaskId::new();
    let missing = app
        .post_json(
            &format!("/api/task/{unknown}/replay"),
            &serde_json::json!({ "step": "design@v1" }),
        )
        .await;
    assert_eq!(
        json_error(&missing, StatusCode::NOT_FOUND),
        format!("no task {unknown}")
    );
    let malformed = post_raw(&app, &path, "application/json", "step=design@v1").await;
    json_error(&malformed, StatusCode::BAD_REQUEST);
    app.shutdown().await;

    let read_only = App::stopped(read_only()).await;
    let refused = read_only
        .post_json(&path, &serde_json::json!({ "step": "design@v1" }))
        .await;
    json_error(&refused, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_sent_back_where_they_can_go() {
    let app = App::start(WebSettings::default()).await;
    let empty = app.get("/api/dlq").await;
    assert_eq!(empty.status, StatusCode::OK, "{}", empty.body);
    assert_eq!(empty.json()["entries"], serde_json::json!([]));

    // A task message nobody can read is dead-lettered by the planner.
    app.pipeline
        .publish_raw_task_message("garbled", b"this is not a task".to_vec())
        .await
        .expect("published");
    let queue = eventually_json(&app, "/api/dlq", |q| {
        q["entries"].as_array().is_some_and(|e| e.len() == 1)
    })
    .await;
    let entry = &queue["entries"][0];
    assert_eq!(
        entry["letter"]["source_topic"],
        app.pipeline.topics().tasks.as_str()
    );
    assert_eq!(entry["payload"], "this is not a task");
    let id = entry["id"].as_u64().expect("an id");

    let redriven = app
        .post_json(&format!("/api/dlq/{id}/redrive"), &serde_json::json!({}))
        .await;
    assert_eq!(redriven.status, StatusCode::ACCEPTED, "{}", redriven.body);
    assert_eq!(redriven.json()["outcome"], "republished");
    assert_eq!(
        redriven.json()["topic"],
        app.pipeline.topics().tasks.as_str()
    );
    // Back on the task topic, it is handled anew, and dead-lettered again.
    let queue = eventually_json(&app, "/api/dlq", |q| {
        q["entries"].as_array().is_some_and(|e| e.len() == 2)
    })
    .await;
    assert_eq!(queue["entries"][0]["payload"], "this is not a task");

    // A report nobody can read is dead-lettered by the mirror, and cannot go back.
    let reports = app.pipeline.topics().reports.clone();
    app.pipeline
        .bus()
        .publish(&reports, "garbled", b"not a report".to_vec())
        .await
        .expect("published");
    let queue = eventually_json(&app, "/api/dlq", |q| {
        q["entries"].as_array().is_some_and(|e| e.len() == 3)
    })
    .await;
    let from_reports = &queue["entries"][0];
    assert_eq!(from_reports["letter"]["source_topic"], reports.as_str());
    let id = from_reports["id"].as_u64().expect("an id");
    let refused = app
        .post_json(&format!("/api/dlq/{id}/redrive"), &serde_json::json!({}))
        .await;
    assert!(json_error(&refused, StatusCode::CONFLICT).contains("cannot re-drive"));

    let unknown = app
        .post_json("/api/dlq/999/redrive", &serde_json::json!({}))
        .await;
    json_error(&unknown, StatusCode::NOT_FOUND);
    app.shutdown().await;

    let read_only = App::stopped(read_only()).await;
    let refused = read_only
        .post_json("/api/dlq/1/redrive", &serde_json::json!({}))
        .await;
    json_error(&refused, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_step_is_redriven_as_a_new_attempt() {
    let app = failing_app().await;
    let task_id = app.pipeline.submit(HELLO).await.expect("submitted");
    let queue = eventually_json(&app, "/api/dlq", |q| {
        q["entries"].as_array().is_some_and(|e| e.len() == 1)
    })
    .await;
    let entry = &queue["entries"][0];
    assert_eq!(entry["letter"]["step_id"], "design@v1");
    assert_eq!(entry["letter"]["task_id"], task_id.to_string());
    let id = entry["id"].as_u64().expect("an id");

    let redriven = app
        .post_json(&format!("/api/dlq/{id}/redrive"), &serde_json::json!({}))
        .await;
    assert_eq!(redriven.status, StatusCode::ACCEPTED, "{}", redriven.body);
    let redriven = redriven.json();
    assert_eq!(redriven["outcome"], "replayed");
    assert_eq!(redriven["task_id"], task_id.to_string());
    assert_eq!(redriven["step"], "design@v1");

    // The step runs again as attempt 2 (and, the model still unreachable, fails again).
    let task = eventually_json(&app, &format!("/api/task/{task_id}"), |t| {
        t["steps"][0]["attempts"]
            .as_array()
            .is_some_and(|a| a.len() == 2)
    })
    .await;
    assert_eq!(task["steps"][0]["attempts"][1]["attempt"], 2);
    assert_eq!(task["steps"][0]["attempts"][1]["mode"], "replay");
    app.shutdown().await;
}

/// An open event stream: the body of `GET /api/events`, read frame by frame.
struct EventStream {
    body: Body,
    /// What was read so far.
    text: String,
    /// How much of `text` [`EventStream::until`] has looked at (whole events only).
    looked_at: usize,
}

impl EventStream {
    /// Opens `GET path`, checking that it is an event stream.
    async fn open(app: &App, path: &str) -> Self {
        let response = app
            .router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).expect("a request"))
            .await
            .expect("the router answers");
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        Self {
            body: response.into_body(),
            text: String::new(),
            looked_at: 0,
        }
    }

    /// The next data frame, as text.
    async fn frame(&mut self) -> String {
        loop {
            let frame = tokio::time::timeout(PATIENCE, self.body.frame())
                .await
                .unwrap_or_else(|_| panic!("no event within {PATIENCE:?}; so far:\n{}", self.text))
                .expect("the stream goes on")
                .expect("a frame");
            if let Ok(data) = frame.into_data() {
                let text = String::from_utf8_lossy(&data).into_owned();
                self.text.push_str(&text);
                return text;
            }
        }
    }

    /// Reads until an event whose text contains every one of `needles`, and returns it.
    async fn until(&mut self, needles: &[&str]) -> String {
        loop {
            // Events end with an empty line; a frame may hold several, or part of one.
            while let Some(end) = self.text[self.looked_at..].find("\n\n") {
                let event = self.text[self.looked_at..self.looked_at + end].to_owned();
                self.looked_at += end + 2;
                if needles.iter().all(|needle| event.contains(needle)) {
                    return event;
                }
            }
            self.frame().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_says_ready_then_sends_each_report() {
    let app = App::start(WebSettings::default()).await;
    let mut all = EventStream::open(&app, "/api/events").await;
    let first = all.frame().await;
    assert!(first.contains("event: ready"), "{first}");

    let task_id = app.pipeline.submit(HELLO).await.expect("submitted");
    let id = task_id.to_string();
    let received = all
        .until(&["event: report", &id, "\"status\":\"received\""])
        .await;
    assert!(received.contains("data: {"), "{received}");
    // Each report event is already in reports.jsonl when it is sent.
    let logged = app
        .pipeline
        .report_log()
        .read_all()
        .await
        .expect("reports.jsonl");
    assert!(
        logged
            .iter()
            .any(|e| e.task_id == task_id && e.status == ReportStatus::Received)
    );
    all.until(&["event: report", &id, "\"status\":\"done\""])
        .await;

    // A stream of one task leaves the others out.
    let mut one = EventStream::open(&app, &format!("/api/events?task_id={task_id}")).await;
    assert!(one.frame().await.contains("event: ready"));
    let (other, _) = app.run_hello().await;
    let replay = app
        .post_json(
            &format!("/api/task/{task_id}/replay"),
            &serde_json::json!({ "step": "review@v1" }),
        )
        .await;
    assert_eq!(replay.status, StatusCode::ACCEPTED, "{}", replay.body);
    // The other task's events all went by before the replay's: had the filter let them
    // through, they would be read first.
    one.until(&["event: report", &id, "\"status\":\"replayed\""])
        .await;
    assert!(!one.text.contains(&other.to_string()), "{}", one.text);

    let bad = app.get("/api/events?task_id=nope").await;
    json_error(&bad, StatusCode::BAD_REQUEST);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probes_answer_even_with_a_token() {
    for token in [None, Some("probe-token".to_owned())] {
        let app = App::stopped(WebSettings {
            token,
            read_only: None,
        })
        .await;
        let health = app.get("/healthz").await;
        assert_eq!(health.status, StatusCode::OK);
        assert_eq!(health.body.trim(), "ok");
        let ready = app.get("/readyz").await;
        assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
        assert_eq!(ready.json(), serde_json::json!({ "status": "ready" }));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_web_token_the_api_wants_the_bearer_header() {
    let app = App::stopped(WebSettings {
        token: Some("t0ken-for-tests".into()),
        read_only: None,
    })
    .await;
    let bare = app.get("/api/tasks").await;
    assert!(json_error(&bare, StatusCode::UNAUTHORIZED).contains("Authorization: Bearer"));
    let get = |token: &str| {
        Request::get("/api/tasks")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .expect("a request")
    };
    let wrong = app.send(get("not-the-token")).await;
    json_error(&wrong, StatusCode::UNAUTHORIZED);
    let right = app.send(get("t0ken-for-tests")).await;
    assert_eq!(right.status, StatusCode::OK, "{}", right.body);
    assert_eq!(right.json(), serde_json::json!({ "tasks": [] }));
    let post = app
        .post_json("/api/tasks", &serde_json::json!({ "prompt": HELLO }))
        .await;
    json_error(&post, StatusCode::UNAUTHORIZED);
    let events = app.get("/api/events").await;
    json_error(&events, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_posts_are_refused_as_json() {
    let app = App::stopped(WebSettings::default()).await;
    let post = |headers: &[(&str, &str)]| {
        let mut request = Request::post("/api/tasks")
            .header(header::HOST, "127.0.0.1:5000")
            .header(header::CONTENT_TYPE, "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request
            .body(Body::from(
                serde_json::json!({ "prompt": HELLO }).to_string(),
            ))
            .expect("a request")
    };
    let evil = app.send(post(&[("origin", "http://evil.example")])).await;
    assert!(json_error(&evil, StatusCode::FORBIDDEN).contains("cross-site"));
    let fetch = app.send(post(&[("sec-fetch-site", "cross-site")])).await;
    json_error(&fetch, StatusCode::FORBIDDEN);
    let replay = app
        .send(
            Request::post(format!("/api/task/{}/replay", TaskId::new()))
                .header(header::HOST, "127.0.0.1:5000")
                .header(header::ORIGIN, "http://evil.example")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(r#"{"step":"design@v1"}"#))
                .expect("a request"),
        )
        .await;
    json_error(&replay, StatusCode::FORBIDDEN);

    let same_site = app.send(post(&[("origin", "http://127.0.0.1:5000")])).await;
    assert_eq!(same_site.status, StatusCode::ACCEPTED, "{}", same_site.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_may_bring_its_own_budget_and_wait_for_approval_which_the_api_gives() {
    let app = App::start_with(WebSettings::default(), |builder| {
        builder.execute_code(false)
    })
    .await;
    let enqueued = app
        .post_json(
            "/api/tasks",
            &serde_json::json!({
                "prompt": HELLO,
                "budget": { "max_cost_usd": 2.5, "max_wall_time_secs": 600 },
                "require_approval": true,
            }),
        )
        .await;
    assert_eq!(enqueued.status, StatusCode::ACCEPTED, "{}", enqueued.body);
    let task_id = enqueued.json()["task_id"]
        .as_str()
        .expect("a task id")
        .to_owned();
    let path = format!("/api/task/{task_id}");
    let waiting = eventually_json(&app, &path, |task| {
        task["task"]["status"] == "awaiting_approval"
    })
    .await;
    assert_eq!(waiting["task"]["require_approval"], true);
    assert_eq!(waiting["task"]["budget"]["max_cost_usd"], 2.5);
    assert_eq!(waiting["task"]["budget"]["max_wall_time_secs"], 600);
    assert_eq!(waiting["task"]["spend"]["calls"], 4, "{waiting}");
    assert_eq!(waiting["providers"], serde_json::json!(["offline"]));
    let design = &waiting["steps"][0];
    assert_eq!(design["attempts"][0]["calls"][0]["model"], "offline");
    assert_eq!(design["attempts"][0]["spend"]["calls"], 1);
    assert_eq!(design["spend"]["calls"], 1);

    // Rejected: the task ends in error; a decision that no longer applies is a 409 saying
    // where the task stands.
    let reject = app
        .post_json(&format!("{path}/reject"), &serde_json::json!({}))
        .await;
    assert_eq!(reject.status, StatusCode::ACCEPTED, "{}", reject.body);
    let rejected = eventually_json(&app, &path, |task| task["task"]["status"] == "error").await;
    assert_eq!(rejected["task"]["status"], "error");
    let again = app
        .post_json(&format!("{path}/approve"), &serde_json::json!({}))
        .await;
    assert_eq!(
        json_error(&again, StatusCode::CONFLICT),
        format!("cannot approve task {task_id}: it is error")
    );

    // Approval, with who and why, and without a body at all.
    for body in [
        Some(serde_json::json!({"by": "ada", "comment": "ship it"})),
        None,
    ] {
        let task_id = enqueue_waiting(&app).await;
        let path = format!("/api/task/{task_id}/approve");
        let answer = match &body {
            Some(body) => app.post_json(&path, body).await,
            None => {
                app.send(Request::post(&path).body(Body::empty()).expect("a request"))
                    .await
            }
        };
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
        assert_eq!(
            answer.json(),
            serde_json::json!({ "task_id": task_id, "action": "approve" })
        );
        eventually_json(&app, &format!("/api/task/{task_id}"), |task| {
            task["task"]["status"] == "done"
        })
        .await;
    }
    let approved = app
        .pipeline
        .report_log()
        .read_all()
        .await
        .unwrap_or_default()
        .into_iter()
        .any(|e| e.status == ReportStatus::Approved && e.summary.contains("by ada: ship it"));
    assert!(approved, "the approval is reported with who and why");

    let unknown = TaskId::new();
    for action in ["approve", "reject", "cancel"] {
        let missing = app
            .post_json(
                &format!("/api/task/{unknown}/{action}"),
                &serde_json::json!({}),
            )
            .await;
        assert_eq!(
            json_error(&missing, StatusCode::NOT_FOUND),
            format!("no task {unknown}")
        );
        let bad = app
            .post_json(&format!("/api/task/nope/{action}"), &serde_json::json!({}))
            .await;
        json_error(&bad, StatusCode::BAD_REQUEST);
    }
    let malformed = post_raw(
        &app,
        &format!("/api/task/{task_id}/cancel"),
        "application/json",
        "{not json",
    )
    .await;
    json_error(&malformed, StatusCode::BAD_REQUEST);
    let ended = app
        .post_json(
            &format!("/api/task/{task_id}/cancel"),
            &serde_json::json!({}),
        )
        .await;
    json_error(&ended, StatusCode::CONFLICT);

    // Limits that cannot be used are refused before anything is enqueued.
    for budget in [
        serde_json::json!({ "max_cost_usd": -1 }),
        serde_json::json!({ "max_rounds": 0 }),
    ] {
        let refused = app
            .post_json(
                "/api/tasks",
                &serde_json::json!({ "prompt": HELLO, "budget": budget }),
            )
            .await;
        assert!(
            json_error(&refused, StatusCode::BAD_REQUEST).contains("invalid budget"),
            "{budget}"
        );
    }
    let wrong_type = app
        .post_json(
            "/api/tasks",
            &serde_json::json!({ "prompt": HELLO, "budget": { "max_tokens": "lots" } }),
        )
        .await;
    json_error(&wrong_type, StatusCode::BAD_REQUEST);
    app.shutdown().await;
}

/// Enqueues the hello task with approval required through the API and waits until it
/// awaits approval; returns its id.
async fn enqueue_waiting(app: &App) -> String {
    let enqueued = app
        .post_json(
            "/api/tasks",
            &serde_json::json!({ "prompt": HELLO, "require_approval": true }),
        )
        .await;
    assert_eq!(enqueued.status, StatusCode::ACCEPTED, "{}", enqueued.body);
    let task_id = enqueued.json()["task_id"]
        .as_str()
        .expect("a task id")
        .to_owned();
    eventually_json(app, &format!("/api/task/{task_id}"), |task| {
        task["task"]["status"] == "awaiting_approval"
    })
    .await;
    task_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_task_and_the_late_answer_changes_nothing() {
    let server = common::openai::ChatServer::start().await;
    server.hold();
    let llm = server.llm("model-a");
    let app = App::start_with(WebSettings::default(), move |builder| {
        builder.llm(llm).execute_code(false)
    })
    .await;
    let task_id = app.pipeline.submit(HELLO).await.expect("submitted");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while server.requests().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the model was never called"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cancel = app
        .post_json(
            &format!("/api/task/{task_id}/cancel"),
            &serde_json::json!({ "by": "ops", "comment": "wrong prompt" }),
        )
        .await;
    assert_eq!(cancel.status, StatusCode::ACCEPTED, "{}", cancel.body);
    assert_eq!(cancel.json()["action"], "cancel");
    let last = tokio::time::timeout(PATIENCE, app.pipeline.wait(task_id))
        .await
        .expect("the task ends")
        .expect("its reports");
    assert_eq!(last.status, ReportStatus::Error);
    assert_eq!(last.reason.as_deref(), Some("cancelled"));
    server.release();
    let task = eventually_json(&app, &format!("/api/task/{task_id}"), |task| {
        task["task"]["status"] == "cancelled"
    })
    .await;
    assert_eq!(
        task["steps"][1]["attempts"],
        serde_json::json!([]),
        "nothing ran after"
    );
    let again = app
        .post_json(
            &format!("/api/task/{task_id}/cancel"),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(
        json_error(&again, StatusCode::CONFLICT),
        format!("cannot cancel task {task_id}: it is cancelled")
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_variants_are_checked_and_their_diff_names_both_sides() {
    let server = common::openai::ChatServer::start().await;
    let llm = server.llm("model-a");
    let app = App::start_with(WebSettings::default(), move |builder| {
        builder.llm(llm).execute_code(false)
    })
    .await;
    let providers = app.get("/api/providers").await;
    assert_eq!(providers.status, StatusCode::OK, "{}", providers.body);
    let providers = providers.json();
    assert_eq!(providers["providers"], serde_json::json!(["offline"]));
    let priced = providers["prices"].as_array().expect("a list");
    assert!(
        priced
            .iter()
            .any(|p| p["model"] == "gpt-4o-mini" && p["input_per_mtok"].is_number()),
        "{providers}"
    );
    assert_eq!(
        app.get("/api").await.json()["providers"],
        serde_json::json!(["offline"])
    );

    let (task_id, last) = app.run_hello().await;
    assert_eq!(last.status, ReportStatus::Done, "{}", last.summary);
    let path = format!("/api/task/{task_id}/replay");
    let since = chrono::Utc::now();
    let variant = app
        .post_json(
            &path,
            &serde_json::json!({
                "step": "design@v1",
                "model": "model-x",
                "prompt": "Print HELLO in capitals",
                "reason": "compare models",
            }),
        )
        .await;
    assert_eq!(variant.status, StatusCode::ACCEPTED, "{}", variant.body);
    let step = StepId::v1(Stage::Design);
    let outcome = tokio::time::timeout(PATIENCE, app.pipeline.wait_replay(task_id, step, since))
        .await
        .expect("the replay ends")
        .expect("its reports");
    assert_eq!(
        outcome.status,
        ReportStatus::Replayed,
        "{}",
        outcome.summary
    );
    let diff = app
        .get(&format!("/api/task/{task_id}/diff/design@v1?from=1&to=2"))
        .await;
    assert_eq!(diff.status, StatusCode::OK, "{}", diff.body);
    let diff = diff.json();
    assert_eq!(diff["from_side"]["model"], "model-a");
    assert_eq!(diff["from_side"]["variant"], serde_json::Value::Null);
    assert_eq!(diff["to_side"]["model"], "model-x");
    assert_eq!(
        diff["to_side"]["variant"]["prompt"],
        "Print HELLO in capitals"
    );
    assert_eq!(diff["to_side"]["replay_reason"], "compare models");
    assert!(
        diff["to_side"]["usage"]["total_tokens"]
            .as_u64()
            .is_some_and(|t| t > 0)
    );
    assert!(diff["to_side"]["duration_ms"].is_number() && diff["to_side"]["cost_usd"].is_number());
    let task = app.get(&format!("/api/task/{task_id}")).await.json();
    assert_eq!(
        task["steps"][0]["attempts"][1]["variant"]["model"],
        "model-x"
    );
    assert_eq!(task["steps"][0]["attempts"][1]["reason"], "compare models");

    for (body, expected) in [
        (
            serde_json::json!({ "step": "design@v1", "provider": "nowhere" }),
            "unknown provider \"nowhere\"",
        ),
        (
            serde_json::json!({ "step": "design@v1", "inputs": { "review@v1": {} } }),
            "review@v1 is not an upstream step of design@v1",
        ),
        (
            serde_json::json!({ "step": "implement@v1", "inputs": { "design@v1": "text" } }),
            "",
        ),
    ] {
        let refused = app.post_json(&path, &body).await;
        let message = json_error(&refused, StatusCode::BAD_REQUEST);
        assert!(message.contains(expected), "{body}: {message}");
    }
    app.shutdown().await;
}
