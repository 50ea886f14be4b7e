//! The HTML pages other than the task and diff pages: the start page and its form, reports,
//! tasks, the dead-letter queue, login, 404s, static files and the security rules every page
//! follows. Each test drives the router directly (`tower::ServiceExt::oneshot`).

mod common;

use std::time::Duration;

use agent_host::views;
use agent_host::web::WebSettings;
use agent_pipeline::TaskId;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::web::{Answer, App, HELLO};

/// A prompt that would run script if a page did not escape it.
const HOSTILE: &str = "<script>alert(1)</script>";

/// What maud makes of text: `&`, `<`, `>` and `"` escaped.
fn escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The CSRF token the server's forms carry.
fn csrf(app: &App) -> String {
    app.state.csrf_token().to_owned()
}

/// The task id of a `/task/<id>?enqueued=1` redirect.
fn enqueued_task(answer: &Answer) -> TaskId {
    let location = answer.location().expect("a Location header");
    let id = location
        .strip_prefix("/task/")
        .and_then(|rest| rest.strip_suffix("?enqueued=1"))
        .unwrap_or_else(|| panic!("not a task page: {location}"));
    id.parse().expect("a task id")
}

/// How many messages the task topic holds, read by a consumer group of its own.
async fn task_messages(app: &App) -> usize {
    let group = format!("probe-{}", TaskId::new());
    let subscription = app
        .pipeline
        .bus()
        .subscribe(&app.pipeline.topics().tasks, &group)
        .await
        .expect("a subscription");
    let mut count = 0;
    // The memory bus has every published message at once: a short wait only ends the loop.
    while let Ok(delivery) =
        tokio::time::timeout(Duration::from_millis(200), subscription.next()).await
    {
        let delivery = delivery.expect("a delivery");
        subscription.ack(delivery.receipt).await.expect("acked");
        count += 1;
    }
    count
}

/// Waits until `dead_letters.jsonl` holds `count` entries, and returns them, newest first.
async fn wait_for_dead_letters(app: &App, count: usize) -> Vec<views::DeadLetterEntry> {
    for _ in 0..400 {
        let page = views::dead_letters(app.pipeline.dead_letter_log())
            .await
            .expect("the dead-letter file reads");
        if page.entries.len() >= count {
            return page.entries;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("dead_letters.jsonl never got {count} entries");
}

/// `path` sent with extra headers.
async fn send_with(app: &App, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    app.send(request.body(Body::empty()).expect("a request"))
        .await
}

/// How many rows of the given class a page has.
fn rows(body: &str, class: &str) -> usize {
    body.matches(&format!("<tr class=\"{class}\"")).count()
}

#[tokio::test]
async fn the_start_page_has_the_form_and_then_the_reports_of_a_task() {
    let app = App::start(WebSettings::default()).await;
    let page = app.get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.content_type().starts_with("text/html"));
    assert!(
        page.body
            .contains(r#"id="enqueue-form" method="post" action="/""#),
        "{}",
        page.body
    );
    assert!(page.body.contains(r#"<textarea id="prompt" name="prompt""#));
    assert!(page.body.contains(&format!(
        r#"<input type="hidden" name="csrf" value="{}">"#,
        csrf(&app)
    )));
    assert!(
        page.body
            .contains(r#"<button id="enqueue" type="submit">Enqueue</button>"#)
    );
    assert!(page.body.contains(r#"id="recent-reports" data-live"#));
    assert!(page.body.contains("No reports yet"));
    assert!(page.body.contains(r#"data-events="/api/events""#));

    let (task_id, last) = app.run_hello().await;
    let page = app.get("/").await;
    assert!(page.body.contains(&format!(r#"href="/task/{task_id}""#)));
    assert!(
        page.body
            .contains(&format!(r#"class="badge status-{}""#, last.status))
    );
    assert!(page.body.contains("design@v1"));
    assert!(
        page.body
            .contains(&escaped(&format!("Task received: {HELLO}")))
    );
    assert!(!page.body.contains("No reports yet"));
    app.shutdown().await;
}

#[tokio::test]
async fn enqueueing_needs_the_forms_csrf_token() {
    let app = App::stopped(WebSettings::default()).await;
    let missing = app.post_form("/", &[("prompt", HELLO)]).await;
    assert_eq!(missing.status, StatusCode::FORBIDDEN);
    assert!(missing.body.contains(r#"class="flash error""#));
    assert!(missing.body.contains("CSRF token"));
    let wrong = app
        .post_form("/", &[("prompt", HELLO), ("csrf", "0123456789abcdef")])
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    // The refused prompt is still there to send again, with a token that works.
    assert!(wrong.body.contains(&escaped(HELLO)));
    assert_eq!(task_messages(&app).await, 0, "nothing was enqueued");
}

#[tokio::test]
async fn an_empty_prompt_is_refused_with_the_reason() {
    let app = App::stopped(WebSettings::default()).await;
    let answer = app
        .post_form("/", &[("prompt", "   "), ("csrf", &csrf(&app))])
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.body.contains(r#"class="flash error""#));
    assert!(answer.body.contains("the prompt is empty"));
    assert_eq!(task_messages(&app).await, 0);
}

#[tokio::test]
async fn a_valid_form_enqueues_and_goes_to_the_task_page() {
    let app = App::stopped(WebSettings::default()).await;
    let answer = app
        .post_form("/", &[("prompt", HELLO), ("csrf", &csrf(&app))])
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    enqueued_task(&answer);
    assert_eq!(task_messages(&app).await, 1);
}

#[tokio::test]
async fn a_hostile_prompt_is_shown_escaped_everywhere() {
    let app = App::start(WebSettings::default()).await;
    let answer = app
        .post_form("/", &[("prompt", HOSTILE), ("csrf", &csrf(&app))])
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    let task_id = enqueued_task(&answer);
    app.wait_for_report_file(task_id, "received").await;
    for path in ["/", "/tasks", "/reports"] {
        let page = app.get(path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert!(
            page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{path} does not show the prompt: {}",
            page.body
        );
        assert!(!page.body.contains(HOSTILE), "{path} has the raw prompt");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn reports_are_filtered_by_status_and_task_and_paginated() {
    let app = App::start(WebSettings::default()).await;
    let (first, _) = app.run_hello().await;
    let (second, _) = app.run_hello().await;

    let all = app.get("/reports").await;
    assert_eq!(all.status, StatusCode::OK);
    assert!(all.body.contains(r#"id="reports" data-live"#));
    assert!(all.body.contains(r#"id="reports-table""#));
    assert!(
        all.body
            .contains(r#"<option value="stage_done">stage_done</option>"#)
    );
    let total = rows(&all.body, "report-row");
    assert!(total >= 10, "two whole tasks give many events, got {total}");

    let done = app.get("/reports?status=done&task_id=").await;
    assert_eq!(done.status, StatusCode::OK);
    assert_eq!(rows(&done.body, "report-row"), 2);
    assert!(!done.body.contains("status-stage_done\""));
    assert!(
        done.body
            .contains(r#"<option value="done" selected>done</option>"#)
    );

    let logged = app.pipeline.report_log().read_all().await.expect("reports");
    let of_first = logged.iter().filter(|e| e.task_id == first).count();
    let one_task = app.get(&format!("/reports?status=&task_id={first}")).await;
    assert_eq!(one_task.status, StatusCode::OK);
    assert_eq!(rows(&one_task.body, "report-row"), of_first);
    assert!(one_task.body.contains(&format!("/task/{first}")));
    assert!(!one_task.body.contains(&format!("/task/{second}")));

    let stages_done = logged
        .iter()
        .filter(|e| e.status.as_str() == "stage_done")
        .count();
    let pages = stages_done.div_ceil(3);
    assert!(pages >= 3, "two tasks finish at least eight stages");
    let first_page = app.get("/reports?status=stage_done&per_page=3").await;
    assert_eq!(rows(&first_page.body, "report-row"), 3);
    assert!(first_page.body.contains(&format!("Page 1 of {pages}")));
    let next = r#"<a class="page-link" rel="next" href="/reports?status=stage_done&amp;per_page=3&amp;page=2">"#;
    assert!(first_page.body.contains(next), "{}", first_page.body);
    let second_page = app
        .get("/reports?status=stage_done&per_page=3&page=2")
        .await;
    assert!(second_page.body.contains(&format!("Page 2 of {pages}")));
    assert!(
        second_page
            .body
            .contains(r#"rel="prev" href="/reports?status=stage_done&amp;per_page=3&amp;page=1""#)
    );
    assert!(second_page.body.contains(r#"rel="next""#));

    let invalid = app.get("/reports?task_id=nope").await;
    assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
    assert!(invalid.body.contains("invalid task id"));
    assert!(invalid.body.contains(r#"class="error-page""#));
    app.shutdown().await;
}

#[tokio::test]
async fn the_tasks_page_lists_each_task_with_its_status() {
    let app = App::start(WebSettings::default()).await;
    let empty = app.get("/tasks").await;
    assert_eq!(empty.status, StatusCode::OK);
    assert!(empty.body.contains(r#"id="tasks" data-live"#));
    assert!(empty.body.contains("No tasks yet"));
    assert_eq!(rows(&empty.body, "task-row"), 0);

    let (task_id, last) = app.run_hello().await;
    let page = app.get("/tasks").await;
    assert_eq!(rows(&page.body, "task-row"), 1);
    assert!(page.body.contains(r#"id="tasks-table""#));
    assert!(page.body.contains(&format!(r#"href="/task/{task_id}""#)));
    assert_eq!(last.status.as_str(), "done");
    assert!(
        page.body
            .contains(r#"<span class="badge status-done">done</span>"#)
    );
    // The whole prompt is in the tooltip.
    assert!(
        page.body
            .contains(&format!(r#"title="{}""#, escaped(HELLO)))
    );
    app.shutdown().await;
}

#[tokio::test]
async fn dead_letters_are_shown_and_can_be_redriven() {
    let app = App::start(WebSettings::default()).await;
    let empty = app.get("/dlq").await;
    assert_eq!(empty.status, StatusCode::OK);
    assert!(empty.body.contains(r#"id="dead-letters" data-live"#));
    assert!(empty.body.contains("The dead-letter queue is empty"));

    let payload = "{not json <b>&</b>";
    app.pipeline
        .publish_raw_task_message("k", payload.as_bytes().to_vec())
        .await
        .expect("published");
    let entries = wait_for_dead_letters(&app, 1).await;
    let page = app.get("/dlq").await;
    assert!(
        page.body
            .contains(r#"<article class="dead-letter" id="dl-1">"#)
    );
    assert!(page.body.contains(&escaped(&entries[0].reason)));
    assert!(page.body.contains(&format!(
        r#"<pre class="payload"><bdi>{}</bdi></pre>"#,
        escaped(payload)
    )));
    assert!(!page.body.contains("<b>&</b>"));
    assert!(page.body.contains(r#"action="/dlq/1/redrive""#));
    assert!(!page.body.contains("The dead-letter queue is empty"));

    let no_csrf = app.post_form("/dlq/1/redrive", &[]).await;
    assert_eq!(no_csrf.status, StatusCode::FORBIDDEN);
    let redriven = app
        .post_form("/dlq/1/redrive", &[("csrf", &csrf(&app))])
        .await;
    assert_eq!(redriven.status, StatusCode::SEE_OTHER);
    assert_eq!(redriven.location(), Some("/dlq?redriven=1"));
    // Still malformed, so the planner dead-letters it again.
    let entries = wait_for_dead_letters(&app, 2).await;
    assert!(entries.iter().all(|entry| entry.payload == payload));
    let after = app.get("/dlq?redriven=1").await;
    assert!(after.body.contains(r#"class="flash success""#));
    assert!(after.body.contains("Dead letter 1 was re-driven"));
    assert!(after.body.contains(r#"id="dl-2""#));

    let unknown = app
        .post_form("/dlq/99/redrive", &[("csrf", &csrf(&app))])
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(unknown.body.contains("no dead letter 99"));
    let not_a_number = app
        .post_form("/dlq/abc/redrive", &[("csrf", &csrf(&app))])
        .await;
    assert_eq!(not_a_number.status, StatusCode::NOT_FOUND);
    app.shutdown().await;
}

#[tokio::test]
async fn a_read_only_server_shows_why_and_takes_no_work() {
    let reason = "no service runs in this process";
    let app = App::stopped(WebSettings {
        read_only: Some(reason.into()),
        ..WebSettings::default()
    })
    .await;
    let home = app.get("/").await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(
        home.body
            .contains(&format!("This server takes no work: {reason}"))
    );
    assert!(
        home.body
            .contains(r#"<button id="enqueue" type="submit" disabled>"#)
    );

    let refused = app
        .post_form("/", &[("prompt", HELLO), ("csrf", &csrf(&app))])
        .await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.body.contains(r#"class="flash error""#));
    assert_eq!(task_messages(&app).await, 0);

    let redrive = app
        .post_form("/dlq/1/redrive", &[("csrf", &csrf(&app))])
        .await;
    assert_eq!(redrive.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(redrive.body.contains(reason));
}

#[tokio::test]
async fn with_a_token_pages_need_a_login() {
    let app = App::stopped(WebSettings {
        token: Some("t0k3n".into()),
        ..WebSettings::default()
    })
    .await;
    let home = app.get("/").await;
    assert_eq!(home.status, StatusCode::SEE_OTHER);
    let location = home.location().expect("a redirect");
    assert!(location.starts_with("/login?next="), "{location}");
    assert_eq!(app.get("/api/tasks").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(app.get("/static/app.css").await.status, StatusCode::OK);

    let login = app.get("/login?next=%2Ftasks").await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(login.body.contains(r#"name="token""#));
    assert!(
        login
            .body
            .contains(r#"<input type="hidden" name="next" value="/tasks">"#)
    );

    let wrong = app
        .post_form("/login", &[("token", "guess"), ("next", "/tasks")])
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains(r#"class="flash error""#));
    assert!(wrong.headers.get(header::SET_COOKIE).is_none());

    let right = app
        .post_form("/login", &[("token", "t0k3n"), ("next", "/tasks")])
        .await;
    assert_eq!(right.status, StatusCode::SEE_OTHER);
    assert_eq!(right.location(), Some("/tasks"));
    let cookie = right
        .headers
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .expect("a cookie");
    assert!(cookie.starts_with("agent_host_token=t0k3n;"), "{cookie}");
    assert!(cookie.contains("HttpOnly"));
    assert!(cookie.contains("SameSite=Strict"));

    let with_cookie = send_with(&app, "GET", "/", &[("cookie", "agent_host_token=t0k3n")]).await;
    assert_eq!(with_cookie.status, StatusCode::OK);
    assert!(with_cookie.body.contains(r#"id="enqueue-form""#));

    // A login never sends the browser to another site.
    let elsewhere = app
        .post_form("/login", &[("token", "t0k3n"), ("next", "//evil.example/")])
        .await;
    assert_eq!(elsewhere.location(), Some("/"));
}

#[tokio::test]
async fn without_a_token_the_login_page_goes_home() {
    let app = App::stopped(WebSettings::default()).await;
    let login = app.get("/login").await;
    assert_eq!(login.status, StatusCode::SEE_OTHER);
    assert_eq!(login.location(), Some("/"));
}

#[tokio::test]
async fn unknown_paths_get_a_page_or_json() {
    let app = App::stopped(WebSettings::default()).await;
    let page = app.get("/nope").await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(page.content_type().starts_with("text/html"));
    assert!(page.body.contains(r#"class="error-page""#));
    assert!(page.body.contains("no page at /nope"));
    assert!(page.body.contains(r#"<main id="main">"#));

    let api = app.get("/api/nope").await;
    assert_eq!(api.status, StatusCode::NOT_FOUND);
    assert_eq!(api.json()["error"], "no such API route: /api/nope");
}

#[tokio::test]
async fn static_files_have_their_types_and_pages_their_policy() {
    let app = App::stopped(WebSettings::default()).await;
    for (path, content_type) in [
        ("/static/app.css", "text/css"),
        ("/static/app.js", "text/javascript"),
        ("/static/favicon.svg", "image/svg+xml"),
    ] {
        let file = app.get(path).await;
        assert_eq!(file.status, StatusCode::OK, "{path}");
        assert!(file.content_type().starts_with(content_type), "{path}");
        assert!(!file.body.is_empty(), "{path}");
    }
    for path in ["/", "/tasks", "/reports", "/dlq"] {
        let page = app.get(path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        let policy = page
            .headers
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{path} has no CSP"));
        assert!(policy.contains("script-src 'self'"), "{path}: {policy}");
        // The policy forbids inline styles: no page may rely on them.
        assert!(!page.body.contains("style="), "{path} has an inline style");
        for link in [r#"href="/tasks""#, r#"href="/reports""#, r#"href="/dlq""#] {
            assert!(page.body.contains(link), "{path} lacks {link}");
        }
    }
}

#[tokio::test]
async fn cross_site_posts_are_refused() {
    let app = App::stopped(WebSettings::default()).await;
    let body = format!("prompt=hello&csrf={}", csrf(&app));
    let request = Request::post("/")
        .header(header::HOST, "127.0.0.1:5000")
        .header(header::ORIGIN, "http://evil.example")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .expect("a request");
    let answer = app.send(request).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(task_messages(&app).await, 0);
}

#[tokio::test]
async fn the_enqueue_form_folds_away_a_budget_and_the_approval() {
    let app = App::stopped(WebSettings::default()).await;
    let page = app.get("/").await;
    // Collapsed: the simple form stays simple.
    assert!(
        page.body
            .contains(r#"<details class="enqueue-options" id="enqueue-options"><summary>"#),
        "{}",
        page.body
    );
    for name in [
        "max_cost_usd",
        "max_tokens",
        "max_wall_time_secs",
        "max_rounds",
    ] {
        assert!(
            page.body.contains(&format!(
                r#"<input id="{name}" name="{name}" type="number""#
            )),
            "{name}: {}",
            page.body
        );
        assert!(page.body.contains(&format!(r#"<label for="{name}">"#)));
    }
    assert!(
        page.body.contains(
            r#"<input id="require_approval" type="checkbox" name="require_approval" value="1">"#
        ),
        "{}",
        page.body
    );

    // A bad number is refused, naming the field, with everything typed kept and shown.
    let refused = app
        .post_form(
            "/",
            &[
                ("prompt", HELLO),
                ("max_cost_usd", "lots"),
                ("max_rounds", "2"),
                ("require_approval", "1"),
                ("csrf", &csrf(&app)),
            ],
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(refused.body.contains(r#"class="flash error""#));
    assert!(
        refused.body.contains(
            "Max cost must be US dollars of more than 0, such as 0.50, not &quot;lots&quot;"
        ),
        "{}",
        refused.body
    );
    assert!(
        refused
            .body
            .contains(r#"<details class="enqueue-options" id="enqueue-options" open>"#),
        "{}",
        refused.body
    );
    assert!(refused.body.contains(r#"value="lots""#), "{}", refused.body);
    assert!(refused.body.contains(r#"value="2""#), "{}", refused.body);
    assert!(
        refused.body.contains(r#"value="1" checked"#),
        "{}",
        refused.body
    );
    assert!(refused.body.contains(&escaped(HELLO)));
    for (field, value, expected) in [
        ("max_tokens", "-5", "Max tokens must be a whole number"),
        (
            "max_rounds",
            "0",
            "Max rounds must be a whole number of rounds of at least 1",
        ),
        (
            "max_wall_time_secs",
            "1.5",
            "Max wall time must be a whole number of seconds",
        ),
    ] {
        let refused = app
            .post_form(
                "/",
                &[("prompt", HELLO), (field, value), ("csrf", &csrf(&app))],
            )
            .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{field}");
        assert!(refused.body.contains(expected), "{}", refused.body);
    }
    assert_eq!(task_messages(&app).await, 0, "nothing was enqueued");

    // Good numbers go with the task.
    let answer = app
        .post_form(
            "/",
            &[
                ("prompt", HELLO),
                ("max_cost_usd", "0.25"),
                ("max_tokens", "50000"),
                ("max_wall_time_secs", ""),
                ("max_rounds", "2"),
                ("require_approval", "1"),
                ("csrf", &csrf(&app)),
            ],
        )
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    let task_id = enqueued_task(&answer);
    let subscription = app
        .pipeline
        .bus()
        .subscribe(&app.pipeline.topics().tasks, "probe-budget")
        .await
        .expect("a subscription");
    let delivery = tokio::time::timeout(Duration::from_secs(5), subscription.next())
        .await
        .expect("the task message")
        .expect("a delivery");
    let message: serde_json::Value =
        serde_json::from_slice(&delivery.payload).expect("a JSON task message");
    assert_eq!(message["task_id"], task_id.to_string());
    assert_eq!(
        message["budget"],
        serde_json::json!({"max_tokens": 50000, "max_cost_usd": 0.25, "max_rounds": 2})
    );
    assert_eq!(message["require_approval"], true);
}

#[tokio::test]
async fn the_tasks_page_shows_what_each_task_cost_and_the_total() {
    let app = App::start(WebSettings::default()).await;
    let empty = app.get("/tasks").await;
    assert!(
        empty.body.contains(r#"<th class="num">Cost</th>"#),
        "{}",
        empty.body
    );
    assert!(!empty.body.contains("tasks-total-cost"));

    let (task_id, _) = app.run_hello().await;
    let record = app
        .pipeline
        .state()
        .task(task_id)
        .await
        .expect("the state store reads")
        .expect("the task");
    assert!(record.spend.calls > 0, "{record:?}");
    let page = app.get("/tasks").await;
    // The offline model is free: its calls cost $0, which is not the same as no call.
    assert!(
        page.body.contains(&format!(
            r#"<td class="num cost" title="0 tokens in {} LLM calls"><span class="cost">$0.0000</span></td>"#,
            record.spend.calls
        )),
        "{}",
        page.body
    );
    assert!(
        page.body.contains(
            r#"<span id="tasks-total-cost"> · <span class="cost">$0.0000</span> in total</span>"#
        ),
        "{}",
        page.body
    );

    // A task that made no call yet has no cost: a dash, not $0.
    let quiet = TaskId::new();
    app.pipeline
        .state()
        .insert_task(quiet, "recorded, never run", chrono::Utc::now())
        .await
        .expect("recorded");
    let page = app.get("/tasks").await;
    assert_eq!(rows(&page.body, "task-row"), 2);
    assert!(
        page.body
            .contains(r#"<td class="num cost"><span class="muted">—</span></td>"#),
        "{}",
        page.body
    );
    app.shutdown().await;
}
