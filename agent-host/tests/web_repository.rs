//! A task on an existing repository in the UI: the enqueue form's repository fields (checked
//! as the API checks them), and the task page's repository, diff from the base, the
//! repository's own tests before and after, and what the code memory showed each model.

mod common;

use std::time::Duration;

use agent_host::web::WebSettings;
use agent_pipeline::store::TaskStatus;
use agent_pipeline::{Stage, TaskId};
use axum::http::StatusCode;
use common::repository::{CART_PROMPT as PROMPT, source_repository};
use common::web::App;

/// Waits until the task has ended, and its reports are in `reports.jsonl`.
async fn wait_ended(app: &App, task_id: TaskId) -> TaskStatus {
    let last = tokio::time::timeout(Duration::from_secs(120), app.pipeline.wait(task_id))
        .await
        .expect("the task ends within two minutes")
        .expect("its reports");
    app.wait_for_report_file(task_id, last.status.as_str())
        .await;
    let record = app
        .pipeline
        .state()
        .task(task_id)
        .await
        .expect("the state store reads")
        .expect("the task is recorded");
    record.status
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_task_from_the_form_shows_its_diff_tests_and_what_the_models_saw() {
    let source = tempfile::tempdir().expect("a temporary directory");
    let base = source_repository(source.path());
    let url = source.path().display().to_string();
    let app = App::start(WebSettings::default()).await;

    let answer = app
        .post_form(
            "/",
            &[
                ("prompt", PROMPT),
                ("repository_url", &url),
                ("base_ref", "main"),
                ("test_command", "python3 -m unittest discover -v"),
                ("csrf", app.state.csrf_token()),
            ],
        )
        .await;
    let task_id = answer.enqueued_task();
    let status = wait_ended(&app, task_id).await;
    let task_file = app
        .pipeline
        .artifacts()
        .read_task(task_id)
        .await
        .expect("the artifact store reads")
        .expect("task.json");
    let repository = task_file.repository.expect("the task names its repository");
    assert_eq!(repository.url, url);
    assert_eq!(repository.base_ref.as_deref(), Some("main"));
    assert_eq!(
        repository.test_command.as_deref(),
        Some("python3 -m unittest discover -v")
    );

    let page = app.get(&format!("/task/{task_id}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let body = &page.body;
    // The header names the repository and its base ref.
    assert!(
        body.contains(&format!(
            "<dd id=\"task-repository\"><code class=\"path\"><bdi>{url}</bdi></code></dd>"
        )),
        "{body}"
    );
    assert!(
        body.contains("<dd id=\"task-base-ref\"><code><bdi>main</bdi></code></dd>"),
        "{body}"
    );

    // The implementation's change, as a diff from the base, no longer as raw fields.
    let implement = section(body, Stage::Implement);
    assert!(
        implement.contains("<table class=\"diff unified-diff\">"),
        "{implement}"
    );
    assert!(
        implement.contains(&format!(
            "From the base <code class=\"commit-id\" title=\"{base}\"><bdi>{}</bdi></code>",
            &base[..12]
        )),
        "{implement}"
    );
    assert!(
        implement.contains("<tr class=\"diff-file\">"),
        "{implement}"
    );
    assert!(
        implement.contains("<tr class=\"diff-added\">"),
        "{implement}"
    );
    assert!(!implement.contains("workspace:"), "{implement}");

    // The repository's own tests, before and after the change, with their outputs folded.
    let test = section(body, Stage::Test);
    assert!(test.contains("id=\"repository-tests\""), "{test}");
    assert!(
        test.contains("<code><bdi>python3 -m unittest discover -v</bdi></code>"),
        "{test}"
    );
    // Before: the repository's one test; after: the tester's test beside it.
    for (run, passed) in [("before", 1), ("after", 2)] {
        assert!(
            test.contains(&format!(
                "<tr class=\"run-passed\"><th scope=\"row\">{run}</th>\
                 <td class=\"count-passed\">{passed}</td><td class=\"count-failed\">0</td>"
            )),
            "{run}: {test}"
        );
        assert!(
            test.contains(&format!(
                "<details class=\"repository-test-output\"><summary>Output {run} the change"
            )),
            "{test}"
        );
    }
    assert!(!test.contains("repository_tests:"), "{test}");

    // Every step shows what the code memory put before its model: the cart among it.
    for stage in Stage::ALL {
        let section = section(body, stage);
        assert!(
            section.contains("What the model saw of the repository"),
            "{stage}: {section}"
        );
        assert!(!section.contains("retrieved:"), "{stage}: {section}");
    }
    assert!(
        section(body, Stage::Implement).contains("<code class=\"path\"><bdi>shop/cart.py</bdi>:1–"),
        "{body}"
    );
    assert_eq!(status, TaskStatus::Done, "{body}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_in_the_repository_url_is_never_shown() {
    let app = App::start(WebSettings::default()).await;
    // Nothing listens on port 1: the clone fails, and the task ends in error.
    let answer = app
        .post_form(
            "/",
            &[
                ("prompt", PROMPT),
                ("repository_url", "http://bot:s3cret@127.0.0.1:1/shop.git"),
                ("csrf", app.state.csrf_token()),
            ],
        )
        .await;
    let task_id = answer.enqueued_task();
    let status = wait_ended(&app, task_id).await;
    assert_eq!(status, TaskStatus::Error);
    let page = app.get(&format!("/task/{task_id}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body
            .contains("<bdi>http://bot:***@127.0.0.1:1/shop.git</bdi>"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("the repository's default branch"),
        "{}",
        page.body
    );
    let task_json = format!("/api/task/{task_id}");
    for path in [
        "/tasks",
        "/reports",
        "/",
        "/api/tasks",
        "/api/reports",
        &task_json,
    ] {
        let page = app.get(path).await;
        assert!(!page.body.contains("s3cret"), "{path}: {}", page.body);
    }
    let page = app.get(&format!("/task/{task_id}")).await;
    assert!(!page.body.contains("s3cret"), "{}", page.body);
    app.shutdown().await;
}

#[tokio::test]
async fn a_repository_the_api_would_refuse_comes_back_as_typed_with_the_reason() {
    let app = App::stopped(WebSettings::default()).await;
    let home = app.get("/").await;
    // Folded away: the usual task starts from nothing.
    assert!(
        home.body
            .contains(r#"<details class="enqueue-options" id="enqueue-repository"><summary>"#),
        "{}",
        home.body
    );
    for name in ["repository_url", "base_ref", "test_command"] {
        assert!(
            home.body
                .contains(&format!(r#"<input id="{name}" name="{name}" type="text""#)),
            "{name}: {}",
            home.body
        );
        assert!(home.body.contains(&format!(r#"<label for="{name}">"#)));
    }

    for (fields, expected) in [
        (
            [
                ("repository_url", "ext::sh -c touch% /tmp/x"),
                ("base_ref", "main"),
            ],
            "the repository cannot be used: the repository's url &quot;ext::sh -c touch% /tmp/x&quot; names a git remote helper, which is refused",
        ),
        (
            [("repository_url", "/srv/git/shop.git"), ("base_ref", "-x")],
            "the repository cannot be used: the base ref &quot;-x&quot; is not a branch, tag or commit id",
        ),
        (
            [("repository_url", ""), ("base_ref", "main")],
            "the repository's URL is empty",
        ),
        (
            [("repository_url", ""), ("push", "1")],
            "the repository's URL is empty",
        ),
    ] {
        let mut form = vec![("prompt", PROMPT), ("csrf", app.state.csrf_token())];
        form.extend(fields);
        let refused = app.post_form("/", &form).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
        assert!(refused.body.contains(r#"class="flash error""#));
        assert!(
            refused.body.contains(expected),
            "{expected}: {}",
            refused.body
        );
        // The form comes back as typed, unfolded.
        assert!(
            refused
                .body
                .contains(r#"<details class="enqueue-options" id="enqueue-repository" open>"#),
            "{}",
            refused.body
        );
        for (name, value) in fields {
            if name == "push" {
                assert!(
                    refused.body.contains(r#"name="push" value="1" checked>"#),
                    "push stays checked: {}",
                    refused.body
                );
                continue;
            }
            assert!(
                refused.body.contains(&format!(
                    r#"<input id="{name}" name="{name}" type="text" value="{}""#,
                    value.replace('&', "&amp;").replace('"', "&quot;")
                )),
                "{name}={value}: {}",
                refused.body
            );
        }
    }
}
