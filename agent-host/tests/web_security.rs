//! The security rules, route by route: with `WEB_TOKEN` set every protected route refuses a
//! request without the token (or with a wrong one) and does nothing; every form refuses a
//! missing or wrong CSRF token; hostile text is shown escaped on every page; a body over the
//! limit is refused with 413. The routes are listed once, in [`ROUTES`], checked against the
//! router's source.

mod common;

use std::time::Duration;

use agent_host::views;
use agent_host::web::WebSettings;
use agent_pipeline::store::TaskStatus;
use agent_pipeline::wire::NewTask;
use agent_pipeline::{PipelineBuilder, TaskId};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::web::{Answer, App, HELLO, encode};
use tower::ServiceExt;

/// The `WEB_TOKEN` of the tests that set one.
const TOKEN: &str = "s3cret-t0ken-for-tests";

/// Who may call a route when `WEB_TOKEN` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// The token, as a bearer header or the login cookie: the API answers 401 without it, a
    /// page redirects to the login page.
    Protected,
    /// The token as a bearer header only; 401 without it (`/metrics`, for scrapers).
    BearerOnly,
    /// Anyone: the probes, the login page and the static files.
    Public,
}

use Access::{BearerOnly, Protected, Public};

/// Every route of `agent_host::web::router`: method, path as written in `web/mod.rs`, access.
const ROUTES: &[(&str, &str, Access)] = &[
    ("GET", "/", Protected),
    ("POST", "/", Protected),
    ("GET", "/reports", Protected),
    ("GET", "/tasks", Protected),
    ("GET", "/task/{task_id}", Protected),
    ("GET", "/task/{task_id}/diff/{step}", Protected),
    ("POST", "/task/{task_id}/replay", Protected),
    ("POST", "/task/{task_id}/approve", Protected),
    ("POST", "/task/{task_id}/reject", Protected),
    ("POST", "/task/{task_id}/cancel", Protected),
    ("GET", "/dlq", Protected),
    ("POST", "/dlq/{id}/redrive", Protected),
    ("GET", "/api", Protected),
    ("GET", "/api/reports", Protected),
    ("GET", "/api/tasks", Protected),
    ("POST", "/api/tasks", Protected),
    ("GET", "/api/task/{task_id}", Protected),
    ("GET", "/api/task/{task_id}/diff/{step}", Protected),
    ("POST", "/api/task/{task_id}/replay", Protected),
    ("POST", "/api/task/{task_id}/approve", Protected),
    ("POST", "/api/task/{task_id}/reject", Protected),
    ("POST", "/api/task/{task_id}/cancel", Protected),
    ("GET", "/api/providers", Protected),
    ("GET", "/api/schemas", Protected),
    ("GET", "/api/schemas/{name}", Protected),
    ("GET", "/api/dlq", Protected),
    ("POST", "/api/dlq/{id}/redrive", Protected),
    ("GET", "/api/events", Protected),
    ("GET", "/login", Public),
    ("POST", "/login", Public),
    ("GET", "/healthz", Public),
    ("GET", "/readyz", Public),
    ("GET", "/metrics", BearerOnly),
    ("GET", "/static/{file}", Public),
];

/// Text that would run script, break out of an attribute or a textarea, or smuggle a link,
/// if a page did not escape it; the last one reverses the text after it.
const PAYLOADS: &[&str] = &[
    "<script>alert(1)</script>",
    "\"><img src=x onerror=alert(1)>",
    "</textarea><b>out</b>",
    "javascript:alert(1)",
    "\u{202E}gpj.exe",
];

/// What must never be in a page that showed [`PAYLOADS`]: the markup they would make.
const RAW: &[&str] = &[
    "<script>",
    "<img src=x",
    "<b>out</b>",
    "href=\"javascript:",
    "src=\"javascript:",
    "action=\"javascript:",
];

/// What maud makes of text: `&`, `<`, `>` and `"` escaped.
fn escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The routes `web/mod.rs` builds, read from its `.route("path", get(…).post(…))` calls.
fn routes_in_the_router_source() -> Vec<(String, String)> {
    let source = include_str!("../src/web/mod.rs");
    let start = source
        .find("pub fn router(")
        .expect("fn router in web/mod.rs");
    let end = start + source[start..].find("\n}\n").expect("the end of fn router");
    let body = &source[start..end];
    let mut routes = Vec::new();
    for call in body.split(".route(").skip(1) {
        let path = call
            .split('"')
            .nth(1)
            .expect("a route's path is a string literal");
        // The handlers, up to the closing parenthesis of `.route(`.
        let mut depth = 1;
        let handlers: String = call
            .chars()
            .take_while(|c| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth > 0
            })
            .collect();
        for method in [
            "get", "post", "put", "patch", "delete", "head", "options", "any",
        ] {
            let needle = format!("{method}(");
            let mut rest = handlers.as_str();
            while let Some(at) = rest.find(&needle) {
                let before = rest[..at].chars().next_back();
                if !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                    routes.push((method.to_uppercase(), path.to_owned()));
                }
                rest = &rest[at + needle.len()..];
            }
        }
    }
    routes.sort();
    routes
}

#[test]
fn the_route_list_is_the_routers() {
    let mut listed: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(method, path, _)| ((*method).to_owned(), (*path).to_owned()))
        .collect();
    listed.sort();
    let built = routes_in_the_router_source();
    assert!(
        built.len() > 20,
        "the parser found too few routes: {built:?}"
    );
    assert_eq!(
        listed, built,
        "ROUTES of tests/web_security.rs and the routes of web/mod.rs differ"
    );
}

/// The tasks, the dead letter and the CSRF token the requests name.
struct Fixtures {
    /// A finished task: replayed, diffed.
    done: TaskId,
    /// Tasks awaiting approval: approved, rejected, cancelled (by the page, then the API).
    waiting: Vec<TaskId>,
    /// The CSRF token of the server's forms.
    csrf: String,
}

impl Fixtures {
    /// `waiting` tasks awaiting approval, a finished task and dead letter 1, all settled.
    async fn new(app: &App, waiting: usize) -> Self {
        let (done, last) = app.run_hello().await;
        assert_eq!(last.status.as_str(), "done", "{last:?}");
        let mut tasks = Vec::new();
        for _ in 0..waiting {
            let task = NewTask {
                require_approval: Some(true),
                ..NewTask::new(HELLO)
            };
            tasks.push(app.pipeline.enqueue(task).await.expect("enqueued"));
        }
        for task_id in &tasks {
            wait_status(app, *task_id, TaskStatus::AwaitingApproval).await;
        }
        app.pipeline
            .publish_raw_task_message("k", b"{not json".to_vec())
            .await
            .expect("published");
        wait_for_dead_letters(app, 1).await;
        Self {
            done,
            waiting: tasks,
            csrf: app.state.csrf_token().to_owned(),
        }
    }

    /// The task a route acts on: a waiting one for the decisions (`nth` of the three kinds
    /// of decision, page first), else the finished one.
    fn task_for(&self, path: &str) -> TaskId {
        let decision = ["approve", "reject", "cancel"]
            .iter()
            .position(|action| path.ends_with(&format!("/{action}")));
        match decision {
            Some(n) if !self.waiting.is_empty() => {
                let offset = if path.starts_with("/api/") { 3 } else { 0 };
                self.waiting[(n + offset) % self.waiting.len()]
            }
            _ => self.done,
        }
    }

    /// A request to `method path` that would succeed with the token: the placeholders filled
    /// in, a well-formed body with the right CSRF token for a POST.
    fn request(&self, method: &str, path: &str) -> Request<Body> {
        let task_id = self.task_for(path).to_string();
        let mut uri = path
            .replace("{task_id}", &task_id)
            .replace("{step}", "implement@v1")
            .replace("{id}", "1")
            .replace("{name}", "step_result")
            .replace("{file}", "app.css");
        if path.contains("/diff/") {
            uri.push_str("?from=1&to=1");
        }
        let (content_type, body) = match (method, path) {
            ("GET", _) => (None, String::new()),
            (_, "/login") => (Some(FORM), form(&[("token", TOKEN), ("next", "/tasks")])),
            (_, "/") => (Some(FORM), form(&[("prompt", HELLO), ("csrf", &self.csrf)])),
            (_, p) if p.ends_with("/replay") && !p.starts_with("/api/") => (
                Some(FORM),
                form(&[
                    ("step", "implement@v1"),
                    ("reason", "again"),
                    ("csrf", &self.csrf),
                ]),
            ),
            (_, p) if !p.starts_with("/api/") => (
                Some(FORM),
                form(&[("comment", "why"), ("csrf", &self.csrf)]),
            ),
            (_, "/api/tasks") => (
                Some(JSON),
                serde_json::json!({ "prompt": HELLO }).to_string(),
            ),
            (_, p) if p.ends_with("/replay") => (
                Some(JSON),
                serde_json::json!({ "step": "implement@v1", "reason": "again" }).to_string(),
            ),
            (_, _) => (
                Some(JSON),
                serde_json::json!({ "comment": "why" }).to_string(),
            ),
        };
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        request.body(Body::from(body)).expect("a request")
    }
}

const FORM: &str = "application/x-www-form-urlencoded";
const JSON: &str = "application/json";

/// A form body; `fields` are percent-encoded here.
fn form(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `request` with `header` added.
fn with_header(mut request: Request<Body>, name: header::HeaderName, value: &str) -> Request<Body> {
    request
        .headers_mut()
        .insert(name, value.parse().expect("a header value"));
    request
}

/// The status and `Location` of the answer to `request`, without reading its body (the event
/// stream never ends).
async fn status_of(app: &App, request: Request<Body>) -> (StatusCode, Option<String>) {
    let response = app
        .router
        .clone()
        .oneshot(request)
        .await
        .expect("the router answers");
    let location = response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (response.status(), location)
}

/// Polls until the state store says the task is in `status`.
async fn wait_status(app: &App, task_id: TaskId, status: TaskStatus) {
    let mut last = None;
    for _ in 0..2400 {
        if let Some(task) = app.pipeline.state().task(task_id).await.expect("reads") {
            if task.status == status {
                return;
            }
            last = Some(task.status);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{task_id} never reached {status}; last {last:?}");
}

/// Waits until `dead_letters.jsonl` holds `count` entries.
async fn wait_for_dead_letters(app: &App, count: usize) {
    for _ in 0..400 {
        let page = views::dead_letters(app.pipeline.dead_letter_log())
            .await
            .expect("the dead-letter file reads");
        if page.entries.len() >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("dead_letters.jsonl never got {count} entries");
}

/// What a request could have changed: the messages on every topic, the status of every task
/// the requests name, the dead letters.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    messages: Vec<(String, usize)>,
    statuses: Vec<(TaskId, Option<TaskStatus>)>,
    dead_letters: usize,
    tasks: usize,
}

impl Snapshot {
    async fn take(app: &App, fixtures: &Fixtures) -> Self {
        let topics = app.pipeline.topics();
        let mut messages = Vec::new();
        for topic in [
            &topics.tasks,
            &topics.step_requests,
            &topics.step_results,
            &topics.reports,
            &topics.ci_watch,
            &topics.dlq,
        ] {
            messages.push((topic.clone(), count_messages(app, topic).await));
        }
        let mut statuses = Vec::new();
        for task_id in fixtures.waiting.iter().chain([&fixtures.done]) {
            let task = app.pipeline.state().task(*task_id).await.expect("reads");
            statuses.push((*task_id, task.map(|t| t.status)));
        }
        let dead_letters = views::dead_letters(app.pipeline.dead_letter_log())
            .await
            .expect("the dead-letter file reads")
            .entries
            .len();
        let tasks = app
            .pipeline
            .state()
            .tasks(10_000)
            .await
            .expect("reads")
            .len();
        Self {
            messages,
            statuses,
            dead_letters,
            tasks,
        }
    }

    /// Once nothing moves any more: two snapshots in a row are the same.
    async fn settled(app: &App, fixtures: &Fixtures) -> Self {
        let mut last = Self::take(app, fixtures).await;
        for _ in 0..50 {
            let now = Self::take(app, fixtures).await;
            if now == last {
                return now;
            }
            last = now;
        }
        panic!("the pipeline never settled: {last:?}");
    }
}

/// How many messages `topic` holds, read by a consumer group of its own.
async fn count_messages(app: &App, topic: &str) -> usize {
    let group = format!("probe-{}", TaskId::new());
    let subscription = app
        .pipeline
        .bus()
        .subscribe(topic, &group)
        .await
        .expect("a subscription");
    let mut count = 0;
    // The memory bus has every published message at once: a short wait only ends the loop.
    while let Ok(delivery) =
        tokio::time::timeout(Duration::from_millis(100), subscription.next()).await
    {
        let delivery = delivery.expect("a delivery");
        subscription.ack(delivery.receipt).await.expect("acked");
        count += 1;
    }
    count
}

fn with_token() -> WebSettings {
    WebSettings {
        token: Some(TOKEN.into()),
        ..WebSettings::default()
    }
}

/// Waits until a replay of design@v1 has recorded its attempt 2.
async fn wait_for_second_design(app: &App, task_id: TaskId) {
    for _ in 0..400 {
        let design = app
            .pipeline
            .artifacts()
            .read_artifact(task_id, "design@v1".parse().expect("a step"))
            .await
            .expect("the artifacts read");
        if design.is_some_and(|a| a.attempt.get() == 2) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the replay never recorded its attempt");
}

/// Enqueues `prompt` through the form, waiting for approval, and waits until it does.
async fn enqueue_awaiting_approval(app: &App, csrf: &str, prompt: &str) -> TaskId {
    let answer = app
        .post_form(
            "/",
            &[
                ("prompt", prompt),
                ("require_approval", "1"),
                ("csrf", csrf),
            ],
        )
        .await;
    let task_id = answer.enqueued_task();
    wait_status(app, task_id, TaskStatus::AwaitingApproval).await;
    task_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_every_protected_route_refuses_without_it_and_does_nothing() {
    let app = App::start(with_token()).await;
    let fixtures = Fixtures::new(&app, 1).await;
    let before = Snapshot::settled(&app, &fixtures).await;

    let wrong_bearer = "Bearer not-the-token".to_owned();
    let wrong_cookie = "agent_host_token=not-the-token".to_owned();
    // A cookie with the right token: enough for everything but `/metrics`.
    let right_cookie = format!("agent_host_token={TOKEN}");
    for (method, path, access) in ROUTES {
        let mut refused = vec![
            ("no token", fixtures.request(method, path)),
            (
                "a wrong bearer token",
                with_header(
                    fixtures.request(method, path),
                    header::AUTHORIZATION,
                    &wrong_bearer,
                ),
            ),
            (
                "a wrong cookie",
                with_header(
                    fixtures.request(method, path),
                    header::COOKIE,
                    &wrong_cookie,
                ),
            ),
        ];
        if *access == BearerOnly {
            refused.push((
                "the login cookie",
                with_header(
                    fixtures.request(method, path),
                    header::COOKIE,
                    &right_cookie,
                ),
            ));
        }
        match access {
            Public => {
                let answer = app.send(fixtures.request(method, path)).await;
                let expected = if *method == "POST" {
                    StatusCode::SEE_OTHER
                } else {
                    StatusCode::OK
                };
                assert_eq!(answer.status, expected, "{method} {path} is public");
                assert!(
                    !answer.location().is_some_and(|l| l.starts_with("/login?")),
                    "{method} {path} is public"
                );
            }
            Protected if !path.starts_with("/api") => {
                for (what, request) in refused {
                    let answer = app.send(request).await;
                    assert_eq!(
                        answer.status,
                        StatusCode::SEE_OTHER,
                        "{method} {path} with {what}: {}",
                        answer.body
                    );
                    let location = answer.location().unwrap_or_default();
                    assert!(
                        location.starts_with("/login?next=%2F"),
                        "{method} {path} with {what} goes to {location}"
                    );
                }
            }
            Protected | BearerOnly => {
                for (what, request) in refused {
                    let answer = app.send(request).await;
                    assert_eq!(
                        answer.status,
                        StatusCode::UNAUTHORIZED,
                        "{method} {path} with {what}: {}",
                        answer.body
                    );
                    if path.starts_with("/api") {
                        let error = answer.json()["error"].as_str().map(str::to_owned);
                        assert!(
                            error.is_some_and(|e| e.contains("Authorization: Bearer")),
                            "{method} {path} with {what}: {}",
                            answer.body
                        );
                    }
                }
            }
        }
    }
    let after = Snapshot::settled(&app, &fixtures).await;
    assert_eq!(before, after, "a refused request did something");

    // The same requests with the token get through (POSTs last: they change things, and a
    // replay under way may hide an artifact from a GET).
    let bearer = format!("Bearer {TOKEN}");
    let mut posts = 0;
    let gets = ROUTES.iter().filter(|(method, _, _)| *method == "GET");
    let posts_last = ROUTES.iter().filter(|(method, _, _)| *method != "GET");
    for (method, path, access) in gets.chain(posts_last).filter(|(_, _, a)| *a != Public) {
        let mut requests = vec![with_header(
            fixtures.request(method, path),
            header::AUTHORIZATION,
            &bearer,
        )];
        if *access == Protected {
            requests.push(with_header(
                fixtures.request(method, path),
                header::COOKIE,
                &right_cookie,
            ));
        }
        for request in requests {
            let (status, location) = status_of(&app, request).await;
            assert_ne!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
            assert!(
                !location.is_some_and(|l| l.starts_with("/login?")),
                "{method} {path}"
            );
            if *method == "GET" {
                assert_eq!(status, StatusCode::OK, "{method} {path}");
            } else {
                posts += 1;
            }
        }
    }
    assert!(posts > 0);
    let changed = Snapshot::settled(&app, &fixtures).await;
    assert_ne!(after, changed, "the accepted requests did something");
    app.shutdown().await;
}

/// The routes of the forms that change something: each needs the page's CSRF token.
fn form_routes() -> Vec<&'static str> {
    ROUTES
        .iter()
        .filter(|(method, path, _)| {
            *method == "POST" && !path.starts_with("/api") && *path != "/login"
        })
        .map(|(_, path, _)| *path)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_form_needs_its_csrf_token_and_works_with_it() {
    let app = App::start(with_token()).await;
    let fixtures = Fixtures::new(&app, 3).await;
    let routes = form_routes();
    assert_eq!(routes.len(), 6, "{routes:?}");
    let cookie = format!("agent_host_token={TOKEN}");
    let with_csrf = |path: &str, csrf: Option<&str>| {
        let request = fixtures.request("POST", path);
        let uri = request.uri().clone();
        let body = form_body_with_csrf(path, csrf);
        Request::post(uri)
            .header(header::CONTENT_TYPE, FORM)
            .header(header::COOKIE, &cookie)
            .body(Body::from(body))
            .expect("a request")
    };
    let before = Snapshot::settled(&app, &fixtures).await;
    for path in &routes {
        for (what, csrf) in [("no CSRF token", None), ("a wrong one", Some("0123abcd"))] {
            let answer = app.send(with_csrf(path, csrf)).await;
            assert_eq!(
                answer.status,
                StatusCode::FORBIDDEN,
                "POST {path} with {what}: {}",
                answer.body
            );
            assert!(
                answer.body.contains("CSRF token"),
                "POST {path}: {}",
                answer.body
            );
        }
    }
    let after = Snapshot::settled(&app, &fixtures).await;
    assert_eq!(before, after, "a form without its CSRF token did something");

    for path in &routes {
        let answer = app.send(with_csrf(path, Some(&fixtures.csrf))).await;
        assert_eq!(
            answer.status,
            StatusCode::SEE_OTHER,
            "POST {path} with its token: {}",
            answer.body
        );
        let location = answer.location().unwrap_or_default();
        assert!(!location.starts_with("/login"), "POST {path}: {location}");
    }
    wait_status(&app, fixtures.waiting[1], TaskStatus::Error).await;
    wait_status(&app, fixtures.waiting[2], TaskStatus::Cancelled).await;
    wait_status(&app, fixtures.waiting[0], TaskStatus::Done).await;
    assert_ne!(after, Snapshot::settled(&app, &fixtures).await);

    // The login form carries no CSRF token (it changes only the browser's own cookie), but a
    // cross-site login is refused like every cross-site POST.
    let cross_site = Request::post("/login")
        .header(header::HOST, "127.0.0.1:5000")
        .header(header::ORIGIN, "http://evil.example")
        .header(header::CONTENT_TYPE, FORM)
        .body(Body::from(form(&[("token", TOKEN), ("next", "/")])))
        .expect("a request");
    let answer = app.send(cross_site).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert!(answer.headers.get(header::SET_COOKIE).is_none());
    app.shutdown().await;
}

/// The fields [`Fixtures::request`] sends to the form at `path`, with `csrf` (or none) as
/// its token.
fn form_body_with_csrf(path: &str, csrf: Option<&str>) -> String {
    let mut fields: Vec<(&str, &str)> = match path {
        "/" => vec![("prompt", HELLO)],
        p if p.ends_with("/replay") => vec![("step", "implement@v1"), ("reason", "again")],
        _ => vec![("comment", "why")],
    };
    if let Some(csrf) = csrf {
        fields.push(("csrf", csrf));
    }
    form(&fields)
}

/// Asserts that `page` shows every payload escaped and none of the markup they would make.
fn assert_escaped(what: &str, page: &Answer, must_show: &[&str]) {
    assert_eq!(page.status, StatusCode::OK, "{what}: {}", page.body);
    for raw in RAW {
        assert!(
            !page.body.contains(raw),
            "{what} has {raw:?} raw: {}",
            page.body
        );
    }
    // Every `</textarea>` closes one of the page's own textareas.
    assert_eq!(
        page.body.matches("<textarea").count(),
        page.body.matches("</textarea>").count(),
        "{what} has a stray </textarea>"
    );
    for text in must_show {
        assert!(
            page.body.contains(&escaped(text)),
            "{what} does not show {text:?} escaped: {}",
            page.body
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_text_is_shown_escaped_on_every_page() {
    let app = App::start(WebSettings::default()).await;
    let csrf = app.state.csrf_token().to_owned();
    let hostile = PAYLOADS.concat();
    // The offline model makes a program that prints the quoted text: the artifacts of every
    // stage carry the payloads too.
    let prompt = format!("Write a tiny Python program that prints '{hostile}'");
    let task_id = enqueue_awaiting_approval(&app, &csrf, &prompt).await;

    // A variant whose reason and model name are hostile; each field has a marker of its own
    // to find it by.
    let reason = format!("{hostile}<script>reason()</script>");
    let model = "<script>model()</script>";
    let replay = app
        .post_form(
            &format!("/task/{task_id}/replay"),
            &[
                ("step", "design@v1"),
                ("reason", &reason),
                ("model", model),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(replay.status, StatusCode::SEE_OTHER, "{}", replay.body);
    wait_for_second_design(&app, task_id).await;
    // The payloads reached the artifacts: the code written, and the variant's model.
    let implement = app
        .pipeline
        .artifacts()
        .read_artifact(task_id, "implement@v1".parse().expect("a step"))
        .await
        .expect("the artifacts read")
        .expect("the implementation");
    let output = serde_json::Value::Object(implement.output).to_string();
    assert!(output.contains(PAYLOADS[0]), "{output}");
    let variant = app
        .pipeline
        .artifacts()
        .read_artifact(task_id, "design@v1".parse().expect("a step"))
        .await
        .expect("the artifacts read")
        .expect("the variant");
    assert_eq!(variant.attempt.get(), 2);

    // A rejection with a hostile comment and name.
    let comment = format!("{hostile}<script>comment()</script>");
    let by = "<script>by()</script>";
    let rejected = app
        .post_form(
            &format!("/task/{task_id}/reject"),
            &[("comment", &comment), ("by", by), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(rejected.status, StatusCode::SEE_OTHER, "{}", rejected.body);
    wait_status(&app, task_id, TaskStatus::Error).await;
    app.wait_for_report_file(task_id, "error").await;

    // A dead letter that is hostile text.
    app.pipeline
        .publish_raw_task_message("k", hostile.as_bytes().to_vec())
        .await
        .expect("published");
    wait_for_dead_letters(&app, 1).await;

    let task_page = app.get(&format!("/task/{task_id}")).await;
    let fields = [
        "<script>reason()</script>",
        model,
        "<script>comment()</script>",
        by,
    ];
    assert_escaped("the task page", &task_page, &[PAYLOADS, &fields].concat());
    let compare = app
        .get(&format!("/task/{task_id}/diff/design@v1?from=1&to=2"))
        .await;
    assert_escaped(
        "the compare page",
        &compare,
        &[PAYLOADS, &["<script>reason()</script>", model]].concat(),
    );
    for path in ["/", "/tasks", "/reports"] {
        assert_escaped(path, &app.get(path).await, &[PAYLOADS[0], PAYLOADS[1]]);
    }
    // A dead letter's payload is shown as it is, its bidirectional control as a marker.
    let dlq = app.get("/dlq").await;
    assert_escaped("/dlq", &dlq, &PAYLOADS[..4]);
    assert!(
        dlq.body.contains("&lt;U+202E&gt;</span>gpj.exe"),
        "{}",
        dlq.body
    );
    app.shutdown().await;
}

/// The bidirectional controls a test plants: U+202E RIGHT-TO-LEFT OVERRIDE reverses what
/// follows it, U+2066 LEFT-TO-RIGHT ISOLATE opens an isolate it never closes.
const BIDI: [char; 2] = ['\u{202E}', '\u{2066}'];

/// The marker a code view shows for `control`: `<U+202E>`, escaped.
fn bidi_marker(control: char) -> String {
    format!("&lt;U+{:04X}&gt;", u32::from(control))
}

/// Asserts that every bidirectional control laid out in `page` is inside a `<bdi>`, where it
/// cannot reorder the page's own text (one in an attribute, a tooltip, is not laid out).
fn assert_controls_isolated(what: &str, page: &Answer) {
    assert_eq!(page.status, StatusCode::OK, "{what}: {}", page.body);
    let body = &page.body;
    for (at, control) in body.char_indices().filter(|(_, c)| BIDI.contains(c)) {
        let before = &body[..at];
        let in_tag = before.rfind('<') > before.rfind('>');
        let in_bdi = before.rfind("<bdi>") > before.rfind("</bdi>");
        if !(in_tag || in_bdi) {
            let lead: String = before
                .chars()
                .rev()
                .take(160)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            panic!(
                "{what} has U+{:04X} outside an isolate: {lead}",
                u32::from(control)
            );
        }
    }
}

/// The text of the first `<{tag} class="{class}">` element of `body`.
fn element<'a>(body: &'a str, tag: &str, class: &str) -> &'a str {
    let open = format!("<{tag} class=\"{class}\">");
    let start = body
        .find(&open)
        .unwrap_or_else(|| panic!("no {open} in {body}"))
        + open.len();
    let rest = &body[start..];
    &rest[..rest.find(&format!("</{tag}>")).expect("the element ends")]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidi_controls_are_isolated_everywhere_and_shown_in_prompts_and_code() {
    let app = App::start(WebSettings::default()).await;
    let csrf = app.state.csrf_token().to_owned();
    let [rlo, lri] = BIDI;
    // The offline model writes a program that prints the quoted text: the controls reach the
    // code, the test run's output and the summaries.
    let quoted = format!("{rlo}dlrow olleh{lri} ok");
    let prompt = format!("Write a tiny Python program that prints '{quoted}'");
    let task_id = enqueue_awaiting_approval(&app, &csrf, &prompt).await;

    // A replay whose reason and model name carry the controls.
    let reason = format!("{rlo}nosaer{lri} then");
    let model = format!("{lri}gpt{rlo}-x");
    let replay = app
        .post_form(
            &format!("/task/{task_id}/replay"),
            &[
                ("step", "design@v1"),
                ("reason", &reason),
                ("model", &model),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(replay.status, StatusCode::SEE_OTHER, "{}", replay.body);
    wait_for_second_design(&app, task_id).await;
    let comment = format!("{rlo}tnemmoc");
    let rejected = app
        .post_form(
            &format!("/task/{task_id}/reject"),
            &[("comment", &comment), ("by", "ada"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(rejected.status, StatusCode::SEE_OTHER, "{}", rejected.body);
    wait_status(&app, task_id, TaskStatus::Error).await;
    app.wait_for_report_file(task_id, "error").await;
    app.pipeline
        .publish_raw_task_message("k", format!("{rlo}not json{lri}").into_bytes())
        .await
        .expect("published");
    wait_for_dead_letters(&app, 1).await;

    let task_page = app.get(&format!("/task/{task_id}")).await;
    assert_controls_isolated("the task page", &task_page);
    let body = &task_page.body;
    // The controls reached the page, isolated where they are text ...
    assert!(
        body.contains(&format!("<q><bdi>{reason}</bdi></q>")),
        "the replay's reason: {body}"
    );
    assert!(
        body.contains(&format!("<q><bdi>{comment}</bdi></q>")),
        "the rejection's comment: {body}"
    );
    assert!(
        body.contains(&format!("<span class=\"attempt-asked\" title=\"the model the replay asked for\">asked for <bdi>{model}</bdi></span>")),
        "the model asked for: {body}"
    );
    // ... and shown, not obeyed, in the prompt and the code.
    let shown_prompt = element(body, "pre", "prompt");
    let code = element(body, "pre", "code");
    for (what, text) in [("the prompt", shown_prompt), ("the code", code)] {
        for control in BIDI {
            assert!(
                text.contains(&bidi_marker(control)),
                "{what} does not show U+{:04X}: {text}",
                u32::from(control)
            );
            assert!(!text.contains(control), "{what} obeys its controls: {text}");
        }
    }
    assert!(body.contains("class=\"note bidi-warning\""), "{body}");

    let compare = app
        .get(&format!("/task/{task_id}/diff/design@v1?from=1&to=2"))
        .await;
    assert_controls_isolated("the compare page", &compare);
    assert!(
        compare.body.contains(&format!("<bdi>{model}</bdi>")),
        "{}",
        compare.body
    );
    for path in ["/", "/tasks", "/reports"] {
        let page = app.get(path).await;
        assert_controls_isolated(path, &page);
        assert!(
            page.body.contains(rlo),
            "{path} shows no control: {}",
            page.body
        );
    }
    let dlq = app.get("/dlq").await;
    assert_controls_isolated("/dlq", &dlq);
    let payload = element(&dlq.body, "pre", "payload");
    assert!(payload.contains(&bidi_marker(rlo)), "{payload}");
    app.shutdown().await;
}

/// The body limit of `docs/web.md` (Security): 2 MiB.
const BODY_LIMIT: usize = 2 * 1024 * 1024;

/// A request to `method path` whose `content_type` body is `size` bytes long, with a
/// `Content-Length` when `with_length`.
fn sized(
    fixtures: &Fixtures,
    path: &str,
    content_type: &str,
    size: usize,
    with_length: bool,
) -> Request<Body> {
    let uri = fixtures.request("POST", path).uri().clone();
    let body = if content_type == JSON {
        let filler = "a".repeat(size.saturating_sub(16));
        format!(r#"{{"prompt":"{filler}"}}"#)
    } else {
        format!(
            "csrf={}&prompt={}",
            fixtures.csrf,
            "a".repeat(size.saturating_sub(80))
        )
    };
    let mut request = Request::post(uri)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    if with_length {
        request = request.header(header::CONTENT_LENGTH, body.len());
    }
    request.body(Body::from(body)).expect("a request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_refused_on_every_post_route() {
    let app = App::start(with_token()).await;
    let fixtures = Fixtures::new(&app, 1).await;
    let before = Snapshot::settled(&app, &fixtures).await;
    let huge = BODY_LIMIT + 1024;
    for (_, path, _) in ROUTES.iter().filter(|(method, _, _)| *method == "POST") {
        let api = path.starts_with("/api");
        for content_type in [JSON, FORM] {
            let answer = app
                .send(sized(&fixtures, path, content_type, huge, true))
                .await;
            assert_eq!(
                answer.status,
                StatusCode::PAYLOAD_TOO_LARGE,
                "POST {path} with {content_type}: {}",
                answer.body
            );
            if api {
                assert!(answer.json()["error"].is_string(), "{}", answer.body);
            }
        }
        // Without a length, the body is cut off where the handler reads it. The API's
        // re-drive reads none; its refusal rests on the length alone.
        if *path != "/api/dlq/{id}/redrive" {
            let content_type = if api { JSON } else { FORM };
            let answer = app
                .send(sized(&fixtures, path, content_type, huge, false))
                .await;
            assert_eq!(
                answer.status,
                StatusCode::PAYLOAD_TOO_LARGE,
                "POST {path} streamed: {}",
                answer.body
            );
        }
    }
    let after = Snapshot::settled(&app, &fixtures).await;
    assert_eq!(before, after, "a refused body did something");

    // The longest prompt accepted (the library's limit), of four-byte characters, fits once
    // form-encoded; one character more is refused with the library's reason.
    let longest = PipelineBuilder::DEFAULT_MAX_PROMPT_CHARS;
    for (chars, status) in [
        (longest, StatusCode::SEE_OTHER),
        (longest + 1, StatusCode::BAD_REQUEST),
    ] {
        let prompt = "🦀".repeat(chars);
        let request = Request::post("/")
            .header(header::CONTENT_TYPE, FORM)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::from(form(&[
                ("prompt", &prompt),
                ("csrf", &fixtures.csrf),
            ])))
            .expect("a request");
        let answer = app.send(request).await;
        assert_eq!(answer.status, status, "{chars} characters: {}", answer.body);
        if status == StatusCode::BAD_REQUEST {
            assert!(
                answer.body.contains("at most 100000 are accepted"),
                "{}",
                answer.body
            );
        }
    }
    app.shutdown().await;
}
