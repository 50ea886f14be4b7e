//! The task page and the compare (diff) page: what a user sees of one task, replaying a step
//! from the page (as a variant with another model, provider, prompt or input), approving,
//! rejecting and cancelling, what it cost, and how refusals and unknown tasks are answered.

mod common;

use std::sync::Arc;
use std::time::Duration;

use agent_host::web::WebSettings;
use agent_pipeline::llm::{InstantLlm, PriceTable, TokenPrices};
use agent_pipeline::store::{Artifact, TaskStatus};
use agent_pipeline::{Stage, StepId, TaskId};
use axum::http::StatusCode;
use common::web::{Answer, App, HELLO};

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
        body.contains(&format!(
            "<pre class=\"prompt\"><bdi>{}</bdi></pre>",
            escaped(HELLO)
        )),
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
        implement_section.contains(&format!(
            "<code class=\"path\"><bdi>{}</bdi></code>",
            escaped(&file)
        )),
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
            "<pre class=\"test-output\"><bdi>{}</bdi></pre>",
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
            review_section.contains(&format!("<li><bdi>{}</bdi></li>", escaped(comment))),
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

/// Polls until the state store says the task is in `status`.
async fn wait_status(app: &App, task_id: TaskId, status: TaskStatus) {
    let mut last = None;
    for _ in 0..2400 {
        let task = app
            .pipeline
            .state()
            .task(task_id)
            .await
            .expect("the state store reads");
        if let Some(task) = task {
            if task.status == status {
                return;
            }
            last = Some(task.status);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{task_id} never reached {status}; last {last:?}");
}

/// Enqueues the hello task through the home page's form, asking for approval; gives its id
/// once it waits for the approval.
async fn enqueue_awaiting_approval(app: &App) -> TaskId {
    let answer = app
        .post_form(
            "/",
            &[
                ("prompt", HELLO),
                ("require_approval", "1"),
                ("csrf", app.state.csrf_token()),
            ],
        )
        .await;
    let task_id = answer.enqueued_task();
    wait_status(app, task_id, TaskStatus::AwaitingApproval).await;
    task_id
}

/// Sends a decision from the task page's forms.
async fn decide(app: &App, task_id: TaskId, action: &str, fields: &[(&str, &str)]) -> Answer {
    let mut all = fields.to_vec();
    if !fields.iter().any(|(name, _)| *name == "csrf") {
        all.push(("csrf", app.state.csrf_token()));
    }
    app.post_form(&format!("/task/{task_id}/{action}"), &all)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_and_reject_show_only_while_the_task_awaits_approval() {
    let app = App::start(WebSettings::default()).await;
    // A task without approval never shows them, and once done not even Cancel.
    let (done, _) = app.run_hello().await;
    let page = app.get(&format!("/task/{done}")).await;
    assert!(tag_with_id(&page.body, "task-actions").contains("data-live"));
    for id in ["approve", "reject", "cancel", "approval-form"] {
        assert!(
            !page.body.contains(&format!(" id=\"{id}\"")),
            "#{id} on a done task: {}",
            page.body
        );
    }

    let task_id = enqueue_awaiting_approval(&app).await;
    let page = app.get(&format!("/task/{task_id}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains(
            "<span id=\"task-status\" class=\"badge status-awaiting_approval\">awaiting approval</span>"
        ),
        "{}",
        page.body
    );
    assert!(page.body.contains("required before publishing"));
    let form = tag_with_id(&page.body, "approval-form");
    assert!(
        form.contains(&format!(
            "method=\"post\" action=\"/task/{task_id}/approve\""
        )),
        "{form}"
    );
    let approve = tag_with_id(&page.body, "approve");
    assert!(
        approve.contains("type=\"submit\"") && !approve.contains("disabled"),
        "{approve}"
    );
    // Reject sends the same form (one comment for both) to its own route.
    let reject = tag_with_id(&page.body, "reject");
    assert!(
        reject.contains(&format!("formaction=\"/task/{task_id}/reject\"")),
        "{reject}"
    );
    let cancel = tag_with_id(&page.body, "cancel-form");
    assert!(
        cancel.contains(&format!("action=\"/task/{task_id}/cancel\"")),
        "{cancel}"
    );
    assert!(tag_with_id(&page.body, "cancel").contains("type=\"submit\""));
    assert!(tag_with_id(&page.body, "decision-comment").starts_with("<textarea"));

    // Without the page's token nothing is decided; nor with a comment past the limit.
    let stale = decide(&app, task_id, "approve", &[("csrf", "stale")]).await;
    assert_eq!(stale.status, StatusCode::FORBIDDEN, "{}", stale.body);
    let too_long = "x".repeat(2001);
    let refused = decide(&app, task_id, "approve", &[("comment", &too_long)]).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(
        refused.body.contains("the comment has 2001 characters"),
        "{}",
        refused.body
    );

    let approved = decide(
        &app,
        task_id,
        "approve",
        &[("comment", "ship <it>"), ("by", "ada")],
    )
    .await;
    assert_eq!(approved.status, StatusCode::SEE_OTHER, "{}", approved.body);
    assert_eq!(
        approved.location(),
        Some(format!("/task/{task_id}?decided=approve#task-header").as_str())
    );
    let last = tokio::time::timeout(Duration::from_secs(60), app.pipeline.wait(task_id))
        .await
        .expect("the approved task ends within a minute")
        .expect("its reports");
    assert_eq!(last.status.as_str(), "done", "{last:?}");
    wait_status(&app, task_id, TaskStatus::Done).await;

    let page = app.get(&format!("/task/{task_id}?decided=approve")).await;
    assert!(page.body.contains("Approval sent"), "{}", page.body);
    assert!(
        page.body
            .contains("id=\"task-status\" class=\"badge status-done\""),
        "{}",
        page.body
    );
    let decision = &page.body[page
        .body
        .find("<p class=\"decision-record\" id=\"task-decision\">")
        .expect("the decision")..];
    assert!(
        decision
            .contains("id=\"task-decision\"><strong>Approved</strong> by <bdi>ada</bdi> at <time"),
        "{decision}"
    );
    assert!(
        decision.contains("<q><bdi>ship &lt;it&gt;</bdi></q>"),
        "{decision}"
    );
    for id in ["approve", "reject", "cancel"] {
        assert!(
            !page.body.contains(&format!(" id=\"{id}\"")),
            "{}",
            page.body
        );
    }

    // A decision that no longer applies is refused on the page, with its status.
    let again = decide(&app, task_id, "reject", &[]).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    assert!(
        again.body.contains("class=\"flash error\""),
        "{}",
        again.body
    );
    assert!(again.body.contains("id=\"task-header\""), "{}", again.body);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejecting_ends_the_task_in_error_and_cancelling_cancels_it() {
    let app = App::start(WebSettings::default()).await;
    let rejected = enqueue_awaiting_approval(&app).await;
    let cancelled = enqueue_awaiting_approval(&app).await;

    let answer = decide(&app, rejected, "reject", &[("comment", "not now")]).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    let answer = decide(&app, cancelled, "cancel", &[]).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    assert_eq!(
        answer.location(),
        Some(format!("/task/{cancelled}?decided=cancel#task-header").as_str())
    );
    wait_status(&app, rejected, TaskStatus::Error).await;
    wait_status(&app, cancelled, TaskStatus::Cancelled).await;
    app.wait_for_report_file(rejected, "error").await;
    app.wait_for_report_file(cancelled, "error").await;

    let page = app.get(&format!("/task/{rejected}")).await;
    assert!(
        page.body.contains(
            "class=\"badge status-error\">error</span> <span class=\"badge reason reason-rejected\""
        ),
        "{}",
        page.body
    );
    assert!(tag_with_id(&page.body, "task-ending").contains("class=\"ending\""));
    assert!(
        page.body.contains("change rejected: not now"),
        "{}",
        page.body
    );
    assert!(!page.body.contains(" id=\"cancel\""), "{}", page.body);

    let page = app.get(&format!("/task/{cancelled}")).await;
    assert!(
        page.body
            .contains("<span id=\"task-status\" class=\"badge status-cancelled\">cancelled</span>"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("<strong>Cancelled</strong>"),
        "{}",
        page.body
    );
    assert!(!page.body.contains(" id=\"cancel\""), "{}", page.body);

    // The tasks list shows both with their badges.
    let tasks = app.get("/tasks").await;
    assert!(
        tasks
            .body
            .contains("<span class=\"badge status-cancelled\">cancelled</span>"),
        "{}",
        tasks.body
    );
    app.shutdown().await;
}

/// A pipeline whose `instant` provider reports 1,000 + 250 tokens a call, priced so that a
/// call costs $0.0040.
async fn app_with_a_priced_provider() -> App {
    App::start_with(WebSettings::default(), |builder| {
        let mut prices = PriceTable::default();
        prices.set(
            "instant",
            TokenPrices {
                input_per_mtok: Some(2.0),
                output_per_mtok: Some(8.0),
            },
        );
        builder
            .llm_provider(
                "instant",
                Arc::new(InstantLlm::new().with_usage(1_000, 250)),
            )
            .prices(prices)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_with_another_model_and_provider_is_a_variant_to_compare() {
    let app = app_with_a_priced_provider().await;
    let (task_id, _) = app.run_hello().await;
    let step = StepId::v1(Stage::Implement);

    let page = app.get(&format!("/task/{task_id}")).await;
    let implement = section(&page.body, Stage::Implement);
    // The provider select offers the registered providers beside the default.
    assert!(
        implement.contains("<option value=\"\" selected>the default LLM</option>"),
        "{implement}"
    );
    assert!(
        implement.contains("<option value=\"instant\">instant</option>"),
        "{implement}"
    );
    assert!(
        implement.contains("name=\"input_step\""),
        "implement has an upstream step to edit: {implement}"
    );
    assert!(
        !section(&page.body, Stage::Design).contains("name=\"input_step\""),
        "design has none"
    );
    assert!(
        !section(&page.body, Stage::Review).contains("name=\"continue_downstream\""),
        "review has no later stage"
    );

    let since = chrono::Utc::now();
    let answer = app
        .post_form(
            &format!("/task/{task_id}/replay"),
            &[
                ("step", "implement@v1"),
                ("reason", "try a cheaper model"),
                ("model", "gpt-4o-mini"),
                ("provider", "instant"),
                ("prompt", ""),
                ("input_step", ""),
                ("input_json", ""),
                ("csrf", app.state.csrf_token()),
            ],
        )
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        app.pipeline.wait_replay(task_id, step, since),
    )
    .await
    .expect("the replay ends within a minute")
    .expect("its report");
    assert_eq!(outcome.status.as_str(), "replayed", "{outcome:?}");
    app.wait_for_report_file(task_id, "replayed").await;

    let page = app.get(&format!("/task/{task_id}")).await;
    let implement = section(&page.body, Stage::Implement);
    let second = &implement[implement
        .find("data-attempt=\"2\"")
        .expect("attempt 2 is listed")..];
    assert!(
        second.contains("asked for <bdi>gpt-4o-mini</bdi>"),
        "{second}"
    );
    assert!(
        second.contains("model <code><bdi>gpt-4o-mini</bdi></code>")
            && second.contains("provider <code><bdi>instant</bdi></code>"),
        "{second}"
    );
    assert!(second.contains("1,000 + 250 tokens"), "{second}");
    assert!(second.contains("$0.0040"), "{second}");
    assert!(
        second.contains(&format!(
            "href=\"/task/{task_id}/diff/implement@v1?from=1&amp;to=2\""
        )),
        "{second}"
    );
    // The task's total counts the replay's call.
    let cost = tag_with_id(&page.body, "task-cost");
    assert!(cost.starts_with("<dd"), "{cost}");
    assert!(page.body.contains("$0.0040</span>"), "{}", page.body);

    let compare = app
        .get(&format!("/task/{task_id}/diff/implement@v1?from=1&to=2"))
        .await;
    assert_eq!(compare.status, StatusCode::OK, "{}", compare.body);
    let table = &compare.body[compare
        .body
        .find(" id=\"compare\"")
        .expect("the side-by-side table")..];
    let row = |key: &str| -> &str {
        let start = table
            .find(&format!("<tr data-row=\"{key}\">"))
            .unwrap_or_else(|| panic!("no {key} row in {table}"));
        let rest = &table[start..];
        &rest[..rest.find("</tr>").expect("the row ends")]
    };
    assert!(
        row("model").contains(
            "<td class=\"compare-from\"><code class=\"model\"><bdi>offline</bdi></code></td>"
        ),
        "{}",
        row("model")
    );
    assert!(
        row("model").contains("<code class=\"model\"><bdi>instant</bdi></code> <span class=\"asked-model\">(asked for <code><bdi>gpt-4o-mini</bdi></code>)</span>"),
        "{}",
        row("model")
    );
    assert!(
        row("provider").contains(
            "<td class=\"compare-from\"><bdi>default</bdi></td><td class=\"compare-to\"><bdi>instant</bdi></td>"
        ),
        "{}",
        row("provider")
    );
    assert!(row("tokens").contains("0 / 0"), "{}", row("tokens"));
    assert!(row("tokens").contains("1,000 / 250"), "{}", row("tokens"));
    assert!(row("cost").contains("$0.0040"), "{}", row("cost"));
    assert!(row("edited").contains("nothing"), "{}", row("edited"));
    assert!(
        row("duration").matches("<td").count() == 2,
        "{}",
        row("duration")
    );
    assert!(
        row("mode").contains("try a cheaper model"),
        "{}",
        row("mode")
    );
    // The output diff is still below it.
    assert!(compare.body.contains("id=\"diff-summary\""));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_upstream_output_must_be_a_json_object_and_is_recorded() {
    let app = App::start(WebSettings::default()).await;
    let (task_id, _) = app.run_hello().await;
    let replay = format!("/task/{task_id}/replay");
    let csrf = app.state.csrf_token().to_owned();
    for (fields, expected) in [
        (
            vec![("input_step", "design@v1"), ("input_json", "{not json")],
            "the edited output of design@v1 is not valid JSON",
        ),
        (
            vec![("input_step", "design@v1"), ("input_json", "[1, 2]")],
            "must be a JSON object",
        ),
        (vec![("input_json", "{}")], "no upstream step"),
        (
            vec![("input_step", "review@v1"), ("input_json", "{}")],
            "review@v1 is not an upstream step of implement@v1",
        ),
        (vec![("provider", "nobody")], "unknown provider"),
    ] {
        let mut all = vec![("step", "implement@v1"), ("csrf", csrf.as_str())];
        all.extend(fields);
        let answer = app.post_form(&replay, &all).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
        assert!(
            answer.body.contains("class=\"flash error\""),
            "{}",
            answer.body
        );
        assert!(
            answer.body.contains(&escaped(expected)),
            "{expected:?} not in {}",
            answer.body
        );
    }

    let since = chrono::Utc::now();
    let design = serde_json::json!({
        "design_summary": "One file, hello.py, that prints Hello Earthling.",
        "files_touched": ["hello.py"]
    })
    .to_string();
    let answer = app
        .post_form(
            &replay,
            &[
                ("step", "implement@v1"),
                ("input_step", "design@v1"),
                ("input_json", &design),
                ("prompt", "Write hello.py that prints 'Hello Earthling'"),
                ("continue_downstream", "1"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    assert_eq!(
        answer.location(),
        Some(format!("/task/{task_id}?replayed=implement@v1&continued=1#step-implement").as_str())
    );
    tokio::time::timeout(
        Duration::from_secs(60),
        app.pipeline
            .wait_replay(task_id, StepId::v1(Stage::Implement), since),
    )
    .await
    .expect("the replay ends within a minute")
    .expect("its report");
    app.wait_for_report_file(task_id, "replayed").await;
    let page = app
        .get(&format!(
            "/task/{task_id}?replayed=implement@v1&continued=1"
        ))
        .await;
    assert!(
        page.body
            .contains("the later stages then run again from it"),
        "{}",
        page.body
    );
    let implement = section(&page.body, Stage::Implement);
    let second = &implement[implement.find("data-attempt=\"2\"").expect("attempt 2")..];
    for item in [
        "edited prompt",
        "edited input <code>design@v1</code>",
        "later stages run again",
        "What was edited",
    ] {
        assert!(second.contains(item), "{item:?} not in {second}");
    }
    app.shutdown().await;
}
