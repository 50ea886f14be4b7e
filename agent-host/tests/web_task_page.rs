//! The task page and the diff page: what a user sees of one task, replaying a step from the
//! page, and how refusals and unknown tasks are answered.

mod common;

use std::time::Duration;

use agent_host::web::WebSettings;
use agent_pipeline::store::Artifact;
use agent_pipeline::{Stage, StepId, TaskId};
use axum::http::StatusCode;
use common::web::{App, HELLO};

/// Text as maud writes it into the page.
fn escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The canonical artifact of a stage of the task.
async fn artifact(app: &App, task_id: TaskId, stage: Stage) -> Artifact {
    app.pipeline
        .artifacts()
        .read_artifact(task_id, StepId::v1(stage))
        .await
        .expect("the artifact store reads")
        .unwrap_or_else(|| panic!("{stage} has an artifact"))
}

/// The part of the page from the section of `stage` to the next section.
fn section(body: &str, stage: Stage) -> &str {
    let start = body
        .find(&format!("<section class=\"step\" id=\"step-{stage}\""))
        .unwrap_or_else(|| panic!("the page has a section for {stage}"));
    let rest = &body[start..];
    let end = rest[1..].find("<section").map_or(rest.len(), |i| i + 1);
    &rest[..end]
}

/// A form field's value out of an artifact's output.
fn text_field(artifact: &Artifact, name: &str) -> String {
    artifact
        .output
        .get(name)
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("{name} is a text"))
        .to_owned()
}

/// The opening tag of the element with `id`.
fn tag_with_id<'a>(body: &'a str, id: &str) -> &'a str {
    let at = body
        .find(&format!(" id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element #{id} in {body}"));
    let start = body[..at].rfind('<').expect("a tag starts before the id");
    let end = at + body[at..].find('>').expect("the tag ends");
    &body[start..=end]
}

/// Polls until the task is recorded by the planner.
async fn wait_recorded(app: &App, task_id: TaskId) {
    for _ in 0..400 {
        if app
            .pipeline
            .state()
            .task(task_id)
            .await
            .expect("the state store reads")
            .is_some()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the planner never recorded {task_id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_task_reads_stage_by_stage() {
    let app = App::start(WebSettings::default()).await;
    let (task_id, last) = app.run_hello().await;
    assert_eq!(last.status.as_str(), "done", "{last:?}");

    let page = app.get(&format!("/task/{task_id}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let body = &page.body;
    assert!(
        body.contains(&format!("<pre class=\"prompt\">{}</pre>", escaped(HELLO))),
        "{body}"
    );
    assert!(
        body.contains("id=\"task-status\" class=\"badge status-done\""),
        "{body}"
    );
    assert!(body.contains(&format!("data-events=\"/api/events?task_id={task_id}\"")));

    for stage in Stage::ALL {
        let section = section(body, stage);
        assert!(
            section.contains(&format!("id=\"step-{stage}-body\" data-live")),
            "{section}"
        );
        // One attempt each, none replayed.
        assert_eq!(
            section.matches("<li class=\"attempt\"").count(),
            1,
            "{section}"
        );
        assert!(section.contains("data-attempt=\"1\""), "{section}");
        assert!(!section.contains("class=\"diff-form\""), "{section}");
        // Every step can be replayed, with the page's CSRF token.
        assert!(
            section.contains(&format!(
                "<form class=\"replay-form\" method=\"post\" action=\"/task/{task_id}/replay\">"
            )),
            "{section}"
        );
        assert!(section.contains(&format!("name=\"step\" value=\"{stage}@v1\"")));
        assert!(section.contains(&format!(
            "name=\"csrf\" value=\"{}\"",
            app.state.csrf_token()
        )));
        assert!(!section.contains("not run yet"), "{section}");
    }

    let design = artifact(&app, task_id, Stage::Design).await;
    let summary = text_field(&design, "design_summary");
    assert!(
        section(body, Stage::Design).contains(&escaped(&summary)),
        "the design summary is shown as text: {summary}"
    );

    let implement = artifact(&app, task_id, Stage::Implement).await;
    let file = implement.output["files"][0]["path"]
        .as_str()
        .expect("the implementation wrote a file")
        .to_owned();
    let implement_section = section(body, Stage::Implement);
    assert!(
        implement_section.contains(&format!("<code class=\"path\">{}</code>", escaped(&file))),
        "{implement_section}"
    );
    assert!(
        implement_section.contains("<span class=\"hl-"),
        "the code is highlighted: {implement_section}"
    );

    let test = artifact(&app, task_id, Stage::Test).await;
    let output = test.output["run"]["output"]
        .as_str()
        .expect("the test run has an output");
    let test_section = section(body, Stage::Test);
    assert!(output.contains("Ran 1 test"), "{output}");
    assert!(
        test_section.contains(&format!(
            "<pre class=\"test-output\">{}</pre>",
            escaped(output)
        )),
        "the real output of the run: {test_section}"
    );
    assert!(test_section.contains("1 passed"), "{test_section}");

    let review = artifact(&app, task_id, Stage::Review).await;
    let review_section = section(body, Stage::Review);
    let comments = review.output["comments"]
        .as_array()
        .expect("the review has comments");
    for comment in comments {
        let comment = comment.as_str().expect("a comment is a text");
        assert!(
            review_section.contains(&format!("<li>{}</li>", escaped(comment))),
            "{review_section}"
        );
    }
    assert!(
        review_section.contains("status-approved"),
        "{review_section}"
    );

    // A step with a single attempt has nothing to compare.
    let diff = app
        .get(&format!("/task/{task_id}/diff/implement@v1?from=1&to=2"))
        .await;
    assert_eq!(diff.status, StatusCode::NOT_FOUND, "{}", diff.body);
    let diff = app.get(&format!("/task/{task_id}/diff/implement@v1")).await;
    assert_eq!(diff.status, StatusCode::NOT_FOUND, "{}", diff.body);
    let diff = app
        .get(&format!("/task/{task_id}/diff/deploy@v1?from=1&to=2"))
        .await;
    assert_eq!(diff.status, StatusCode::BAD_REQUEST, "{}", diff.body);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prompt_is_escaped() {
    let app = App::start(WebSettings::default()).await;
    let task_id = app
        .pipeline
        .submit("<script>alert(1)</script> print hello")
        .await
        .expect("submitted");
    wait_recorded(&app, task_id).await;
    let page = app.get(&format!("/task/{task_id}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<script>alert(1)"), "{}", page.body);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_a_step_from_the_page_adds_an_attempt_to_compare() {
    let app = App::start(WebSettings::default()).await;
    let (task_id, _) = app.run_hello().await;
    let step = StepId::v1(Stage::Implement);
    let since = chrono::Utc::now();

    let answer = app
        .post_form(
            &format!("/task/{task_id}/replay"),
            &[
                ("step", "implement@v1"),
                ("reason", "try <again>"),
                ("csrf", app.state.csrf_token()),
            ],
        )
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    let location = answer.location().expect("a redirect").to_owned();
    assert_eq!(
        location,
        format!("/task/{task_id}?replayed=implement@v1#step-implement")
    );

    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        app.pipeline.wait_replay(task_id, step, since),
    )
    .await
    .expect("the replay ends within a minute")
    .expect("its report");
    assert_eq!(outcome.status.as_str(), "replayed", "{outcome:?}");
    app.wait_for_report_file(task_id, "replayed").await;

    // The redirect's page, without the fragment (the browser keeps that to itself).
    let path = location.split('#').next().expect("a path");
    let page = app.get(path).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains("Replay of implement@v1 requested"),
        "{}",
        page.body
    );
    let implement = section(&page.body, Stage::Implement);
    assert_eq!(
        implement.matches("<li class=\"attempt\"").count(),
        2,
        "{implement}"
    );
    assert!(implement.contains("data-attempt=\"2\""), "{implement}");
    assert!(implement.contains("replay"), "{implement}");
    assert!(
        implement.contains("try &lt;again&gt;"),
        "the reason is shown: {implement}"
    );
    assert!(
        implement.contains("class=\"attempt-artifact\""),
        "the older attempt's artifact can be opened: {implement}"
    );
    assert!(
        implement.contains(&format!(
            "<form class=\"diff-form\" method=\"get\" action=\"/task/{task_id}/diff/implement@v1\">"
        )),
        "{implement}"
    );
    assert!(
        implement.contains("<option value=\"1\" selected>"),
        "{implement}"
    );
    assert!(
        implement.contains("<option value=\"2\" selected>"),
        "{implement}"
    );
    // The other steps did not run again.
    let design = section(&page.body, Stage::Design);
    assert_eq!(
        design.matches("<li class=\"attempt\"").count(),
        1,
        "{design}"
    );

    let diff = app
        .get(&format!("/task/{task_id}/diff/implement@v1?from=1&to=2"))
        .await;
    assert_eq!(diff.status, StatusCode::OK, "{}", diff.body);
    let table = tag_with_id(&diff.body, "diff");
    assert!(
        table.starts_with("<table") && table.contains("class=\"diff\""),
        "{table}"
    );
    assert!(
        diff.body.contains("<tr class=\"diff-added\">"),
        "{}",
        diff.body
    );
    assert!(diff.body.contains("id=\"diff-summary\""), "{}", diff.body);
    assert!(
        diff.body
            .contains(&format!("href=\"/task/{task_id}#step-implement\""))
    );

    // Without a choice, the two newest attempts are compared.
    let default = app.get(&format!("/task/{task_id}/diff/implement@v1")).await;
    assert_eq!(default.status, StatusCode::OK, "{}", default.body);
    assert!(default.body.contains("attempt 1 → 2"), "{}", default.body);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_replays_show_the_page_with_the_reason_and_its_status() {
    let app = App::start(WebSettings::default()).await;
    let (task_id, _) = app.run_hello().await;
    let replay = format!("/task/{task_id}/replay");
    let csrf = app.state.csrf_token().to_owned();

    let stale = app
        .post_form(
            &replay,
            &[("step", "implement@v1"), ("csrf", "not-the-token")],
        )
        .await;
    assert_eq!(stale.status, StatusCode::FORBIDDEN, "{}", stale.body);
    assert!(
        stale.body.contains("class=\"flash error\""),
        "{}",
        stale.body
    );
    assert!(stale.body.contains("CSRF"), "{}", stale.body);
    let missing = app.post_form(&replay, &[("step", "implement@v1")]).await;
    assert_eq!(missing.status, StatusCode::FORBIDDEN, "{}", missing.body);

    let bad_step = app
        .post_form(&replay, &[("step", "deploy@v1"), ("csrf", &csrf)])
        .await;
    assert_eq!(
        bad_step.status,
        StatusCode::BAD_REQUEST,
        "{}",
        bad_step.body
    );
    assert!(
        bad_step.body.contains("id=\"task-header\""),
        "{}",
        bad_step.body
    );

    // Without the design, the implementation has nothing to start from.
    let design = app
        .dir
        .path()
        .join(task_id.to_string())
        .join("design@v1.json");
    std::fs::remove_file(&design).expect("the design file is there");
    let refused = app
        .post_form(&replay, &[("step", "implement@v1"), ("csrf", &csrf)])
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert!(
        refused.body.contains("class=\"flash error\""),
        "{}",
        refused.body
    );
    assert!(
        refused.body.contains(&format!(
            "cannot replay implement@v1 of task {task_id}: design@v1 has no artifact yet"
        )),
        "{}",
        refused.body
    );
    // It is the task page again, with its forms.
    assert!(
        refused.body.contains("id=\"step-implement-body\""),
        "{}",
        refused.body
    );
    assert_eq!(refused.body.matches("class=\"replay-form\"").count(), 4);

    let unknown = TaskId::new();
    let answer = app
        .post_form(
            &format!("/task/{unknown}/replay"),
            &[("step", "implement@v1"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.body);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_server_shows_the_replay_buttons_disabled_and_refuses() {
    let settings = WebSettings {
        read_only: Some("no service runs here".to_owned()),
        ..WebSettings::default()
    };
    let app = App::start(settings).await;
    let (task_id, _) = app.run_hello().await;
    let page = app.get(&format!("/task/{task_id}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(
        page.body
            .matches("<button class=\"replay-button\" type=\"submit\" disabled title=\"This server takes no work: no service runs here\">")
            .count(),
        4,
        "{}",
        page.body
    );
    let answer = app
        .post_form(
            &format!("/task/{task_id}/replay"),
            &[("step", "review@v1"), ("csrf", app.state.csrf_token())],
        )
        .await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.body
    );
    assert!(
        answer.body.contains("no service runs here"),
        "{}",
        answer.body
    );
    app.shutdown().await;
}

#[tokio::test]
async fn unknown_and_invalid_tasks_are_answered_with_their_status() {
    let app = App::stopped(WebSettings::default()).await;
    let unknown = TaskId::new();
    let page = app.get(&format!("/task/{unknown}")).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND, "{}", page.body);
    assert!(
        page.body.contains(&format!("no task {unknown}")),
        "{}",
        page.body
    );
    let page = app.get("/task/not-a-task").await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    assert!(page.body.contains("invalid task id"), "{}", page.body);
    let diff = app
        .get("/task/not-a-task/diff/implement@v1?from=1&to=2")
        .await;
    assert_eq!(diff.status, StatusCode::BAD_REQUEST, "{}", diff.body);
    let diff = app
        .get(&format!("/task/{unknown}/diff/implement@v1?from=0&to=2"))
        .await;
    assert_eq!(diff.status, StatusCode::BAD_REQUEST, "{}", diff.body);
}

#[tokio::test]
async fn a_task_enqueued_here_is_queued_until_the_planner_records_it() {
    // No service runs: the planner never takes the task.
    let app = App::stopped(WebSettings::default()).await;
    let answer = app
        .post_form("/", &[("prompt", HELLO), ("csrf", app.state.csrf_token())])
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    let location = answer.location().expect("a redirect").to_owned();
    assert!(location.ends_with("?enqueued=1"), "{location}");

    let page = app.get(&location).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body
            .contains("<span id=\"task-status\" class=\"badge status-queued\">queued</span>"),
        "{}",
        page.body
    );
    let banner = tag_with_id(&page.body, "enqueued");
    assert!(banner.contains("class=\"flash success\""), "{banner}");
    let topic = &app.pipeline.topics().tasks;
    assert!(
        page.body.contains(&format!("<code>{topic}</code>")),
        "{}",
        page.body
    );
    // The page is live and already has the steps' regions to fill in.
    assert!(tag_with_id(&page.body, "task-header").contains(" data-live"));
    for stage in Stage::ALL {
        assert!(
            page.body
                .contains(&format!("id=\"step-{stage}-body\" data-live"))
        );
    }
}
