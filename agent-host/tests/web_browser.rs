//! The web UI in a real headless Chromium, driven through ChromeDriver against the real binary
//! (`agent-host run` on port 0, offline model): a user enqueues a task through the form,
//! watches it reach `done` without reloading, replays `implement@v1`, sees attempt 2 and the
//! diff of the two attempts; then enqueues a task that needs approval, approves it when the
//! page shows it waiting, replays a step with another model and compares the two variants
//! side by side; enqueues a task on a local git repository through the form's repository
//! fields and sees its diff from the base and what the models saw of the repository. It takes
//! the screenshots the README shows.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`scripts/test-all` installs them). Without
//! them the test says so loudly and passes, except under `CI=true`, where it fails.
//! `AGENT_PIPELINE_SCREENSHOTS=<dir>` keeps the screenshots there (the docs use
//! `docs/images`); otherwise they go to a temporary directory.

mod browser;
mod common;

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::time::Duration;

use futures_util::FutureExt as _;
use serde_json::json;

use browser::{Driver, Session};
use common::repository::{CART_PROMPT, source_repository};
use common::{HELLO, Sandbox};

/// A dead letter as the mirror writes it: a task message that was not JSON. The page must
/// show it, and re-driving it sends it back to the task topic, where it fails again.
const DEAD_LETTER: &str = r#"{"reason":"not valid JSON: key must be a string at line 1 column 2","source_topic":"agent_tasks","key":"a-broken-producer","payload":"{not json","failed_at":"2026-11-24T09:30:00Z"}"#;

/// How long a task (or a replay) may take to finish, seen from the page.
const TASK_TIMEOUT: Duration = Duration::from_secs(90);

/// How long a page may take to show what a click asked for.
const PAGE_TIMEOUT: Duration = Duration::from_secs(20);

/// Markup in the prompt: the pages must show it as text and never run it.
const MARKUP: &str = "<script>alert(1)</script>";

/// The desktop viewport.
const DESKTOP: (u32, u32) = (1280, 900);

/// A phone's viewport.
const PHONE: (u32, u32) = (390, 844);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_enqueues_watches_it_finish_live_replays_a_step_and_diffs_the_attempts() {
    if !browser::installed() {
        let missing = format!(
            "{} or {} is missing (Debian packages chromium and chromium-driver; \
             scripts/test-all installs them)",
            browser::CHROMIUM,
            browser::CHROMEDRIVER
        );
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the browser test cannot run under CI: {missing}"
        );
        eprintln!(
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !! SKIPPED the browser test: {missing}\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
        return;
    }
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.data_dir()).expect("the data directory");
    std::fs::write(
        sandbox.data_dir().join("dead_letters.jsonl"),
        format!("{DEAD_LETTER}\n"),
    )
    .expect("a dead letter");
    let host = sandbox.start_host(&[]);
    let driver = Driver::start().await;
    let profile = tempfile::tempdir().expect("a browser profile directory");
    let own_shots = tempfile::tempdir().expect("a screenshot directory");
    let shots = browser::screenshot_dir(own_shots.path());
    let session = driver.session(profile.path(), DESKTOP.0, DESKTOP.1).await;

    // The browser is closed whatever happens, so that no Chromium outlives the test.
    let walk = AssertUnwindSafe(walk_through(&session, &host.url, &shots))
        .catch_unwind()
        .await;
    session.close().await;
    drop(driver);
    if let Err(panic) = walk {
        std::panic::resume_unwind(panic);
    }
    let stopped = host.interrupt();
    assert!(
        stopped.status.is_some_and(|status| status.success()),
        "`agent-host run` did not stop cleanly on Ctrl-C:\n{}\n{}",
        stopped.stdout,
        stopped.stderr
    );
}

/// Everything a user does, with a screenshot of each page.
async fn walk_through(session: &Session, base: &str, shots: &Path) {
    session.set_viewport(DESKTOP.0, DESKTOP.1).await;

    // Enqueue through the form, with markup in the prompt that must stay text.
    session.goto(&format!("{base}/")).await;
    // The markup comes first, so that a page that shortens long prompts still shows it.
    let prompt = format!("{MARKUP} {HELLO}");
    let textarea = session
        .expect("#enqueue-form textarea#prompt[name=prompt]")
        .await;
    session.click(&textarea).await;
    session.type_text(&textarea, &prompt).await;
    let enqueue = session.expect("#enqueue-form button#enqueue").await;
    session.click(&enqueue).await;

    let task_path = session
        .wait_for(
            "the task page after enqueueing (`/task/<id>?enqueued=1`)",
            PAGE_TIMEOUT,
            "return /^\\/task\\/[^/]+$/.test(location.pathname) \
                 && location.search === '?enqueued=1' \
                 && document.readyState === 'complete' ? location.pathname : null;",
        )
        .await;
    let task_path = task_path.as_str().expect("a path").to_owned();
    let task_id = task_path.trim_start_matches("/task/").to_owned();
    let banner = session
        .wait_for(
            "the visible `#enqueued` banner",
            PAGE_TIMEOUT,
            "const b = document.querySelector('#enqueued.flash.success'); \
             return b && b.getClientRects().length > 0 ? b.innerText : null;",
        )
        .await;
    let banner = banner.as_str().unwrap_or_default();
    assert!(
        banner.contains(&task_id),
        "the banner does not name the task {task_id}: {banner:?}"
    );
    // Set on this very document: still there at the end means the page was never reloaded.
    let first_status = session
        .execute(
            "window.__marker = 1; \
             const s = document.querySelector('#task-status'); \
             return s ? s.textContent.trim() : null;",
            json!([]),
        )
        .await;
    eprintln!("the task page first showed status {first_status}");
    assert!(
        first_status.is_string(),
        "no `#task-status` on the task page\n{}",
        session.describe().await
    );

    // Watch it finish without reloading.
    let status = final_status(session, "`#task-status` to read done (or error), live").await;
    assert_eq!(
        status,
        json!("done"),
        "the task ended in error\n{}",
        session.describe().await
    );
    let live = session
        .execute(
            "return { marker: window.__marker === 1, \
                      refreshes: Number(document.body.dataset.liveRefreshes || 0), \
                      badge: document.querySelector('#task-status').className };",
            json!([]),
        )
        .await;
    assert_eq!(
        live["marker"],
        json!(true),
        "the task page was reloaded instead of updated in place"
    );
    assert!(
        live["refreshes"].as_f64().unwrap_or_default() > 0.0,
        "the task page never refreshed a live region: {live}"
    );
    assert!(
        live["badge"]
            .as_str()
            .is_some_and(|c| c.split(' ').any(|c| c == "status-done")),
        "the status badge is not styled as done: {live}"
    );
    assert_markup_not_run(session, "the task page", true).await;
    session.screenshot(&shots.join("task.png")).await;

    // The same page on a phone.
    session.set_viewport(PHONE.0, PHONE.1).await;
    let width = session
        .execute("return window.innerWidth;", json!([]))
        .await;
    assert_eq!(
        width,
        json!(PHONE.0),
        "the viewport did not shrink to a phone's width"
    );
    session.screenshot(&shots.join("task-phone.png")).await;
    session.set_viewport(DESKTOP.0, DESKTOP.1).await;

    replay_and_diff(session, &task_path, shots).await;
    approve_then_compare_variants(session, base, shots).await;

    // The start page lists the recent reports.
    session.goto(&format!("{base}/")).await;
    session
        .wait_for(
            "the task among `#recent-reports`",
            PAGE_TIMEOUT,
            &format!(
                "const r = document.querySelector('#recent-reports[data-live]'); \
                 return r && r.innerHTML.includes('{task_id}');"
            ),
        )
        .await;
    session.screenshot(&shots.join("home.png")).await;

    tasks_page_is_live(session, base, &task_id).await;
    session.screenshot(&shots.join("tasks.png")).await;

    session.goto(&format!("{base}/reports")).await;
    session
        .wait_for(
            "the task's events in `#reports-table`",
            PAGE_TIMEOUT,
            &format!(
                "const t = document.querySelector('#reports[data-live] table#reports-table'); \
                 return t && t.innerHTML.includes('{task_id}') && t.innerText.includes('done');"
            ),
        )
        .await;
    session.screenshot(&shots.join("reports.png")).await;

    // The dead letter is shown with its reason and raw payload; re-driving it sends it back
    // to the task topic, where it is dead-lettered again: a second entry appears live.
    session.goto(&format!("{base}/dlq")).await;
    session
        .expect("#dead-letters[data-live] #dl-1 pre.payload")
        .await;
    session.screenshot(&shots.join("dlq.png")).await;
    // The form is inside the live region: wait for the refresh that follows the stream's
    // `ready`, so that the button clicked is the one on the page.
    session
        .wait_for(
            "the dead-letter page's first live refresh",
            PAGE_TIMEOUT,
            "return Number(document.body.dataset.liveRefreshes || 0) >= 1;",
        )
        .await;
    let redrive = session.expect("#dl-1 .redrive-button").await;
    session.click(&redrive).await;
    session
        .wait_for(
            "the re-driven message dead-lettered again, as a second entry",
            PAGE_TIMEOUT,
            "return location.search === '?redriven=1' \
                 && document.querySelectorAll('#dead-letters article.dead-letter').length === 2;",
        )
        .await;

    // Last, so that its many reports do not push the first task off the start page's list.
    repository_task(session, base, shots).await;

    // A user clicks around: every page has the same navigation, and each click opens its
    // page promptly however many live pages came before.
    for round in 1..=2 {
        for href in ["/", "/tasks", "/reports", "/dlq"] {
            let link = session.expect(&format!("nav a[href=\"{href}\"]")).await;
            session.click(&link).await;
            session
                .wait_for(
                    &format!("{href} (round {round} through the navigation)"),
                    PAGE_TIMEOUT,
                    &format!(
                        "return location.pathname === '{href}' \
                             && document.readyState === 'complete' \
                             && document.querySelector('main#main') !== null;"
                    ),
                )
                .await;
        }
    }
}

/// Replays `implement@v1` from the task page, waits for attempt 2 and opens the diff.
async fn replay_and_diff(session: &Session, task_path: &str, shots: &Path) {
    let reason = session
        .expect("#step-implement form.replay-form input[name=reason]")
        .await;
    session.click(&reason).await;
    session
        .type_text(&reason, "try the implementation again")
        .await;
    let replay = session
        .expect("#step-implement form.replay-form button.replay-button")
        .await;
    session.click(&replay).await;
    session
        .wait_for(
            "the task page after the replay (`?replayed=implement@v1`)",
            PAGE_TIMEOUT,
            &format!(
                "return location.pathname === '{task_path}' \
                     && decodeURIComponent(location.search).includes('replayed=implement@v1') \
                     && document.readyState === 'complete';"
            ),
        )
        .await;
    let refused = session
        .execute(
            "const e = document.querySelector('.flash.error'); return e ? e.innerText : null;",
            json!([]),
        )
        .await;
    assert!(refused.is_null(), "the replay was refused: {refused}");

    session
        .wait_for(
            "attempt 2 of implement@v1 to succeed",
            TASK_TIMEOUT,
            "const a = document.querySelector(\
                 '#step-implement-body[data-live] li.attempt[data-attempt=\"2\"]'); \
             return a && (a.querySelector('.status-succeeded') !== null \
                          || a.textContent.includes('succeeded'));",
        )
        .await;
    let diff_button = session
        .wait_for(
            "the diff form of implement@v1",
            PAGE_TIMEOUT,
            "return document.querySelector(\
                 '#step-implement form.diff-form select[name=from]') !== null \
                 && document.querySelector('#step-implement form.diff-form select[name=to]') !== null \
                 && document.querySelector('#step-implement form.diff-form .diff-button') !== null;",
        )
        .await;
    assert_eq!(diff_button, json!(true));
    let button = session
        .expect("#step-implement form.diff-form .diff-button")
        .await;
    session.click(&button).await;
    let summary = session
        .wait_for(
            "the diff page with `#diff` and `#diff-summary`",
            PAGE_TIMEOUT,
            &format!(
                "const onPage = location.pathname.startsWith('{task_path}/diff/'); \
                 const t = document.querySelector('table#diff.diff'); \
                 const s = document.querySelector('#diff-summary'); \
                 return onPage && t && t.querySelector('tr') && s ? s.innerText : null;"
            ),
        )
        .await;
    let summary = summary.as_str().unwrap_or_default();
    assert!(
        summary.contains('+') && (summary.contains('−') || summary.contains('-')),
        "the diff summary does not say +N −M: {summary:?}"
    );
    let url = session.current_url().await;
    assert!(
        url.contains("from=1") && url.contains("to=2"),
        "the diff form did not default to attempts 1 and 2: {url}"
    );
    session.screenshot(&shots.join("diff.png")).await;
}

/// Enqueues a task that needs approval through the form's folded options, approves it once
/// its page shows it waiting, sees it finish, replays `implement@v1` with another model and
/// compares the two variants side by side.
async fn approve_then_compare_variants(session: &Session, base: &str, shots: &Path) {
    session.goto(&format!("{base}/")).await;
    let textarea = session.expect("#enqueue-form textarea#prompt").await;
    session.click(&textarea).await;
    session
        .type_text(
            &textarea,
            "Write a tiny Python program that prints 'Hello approver'",
        )
        .await;
    // The options are folded away; open them to tick the box.
    let options = session
        .expect("#enqueue-form details#enqueue-options > summary")
        .await;
    session.click(&options).await;
    let approval = session
        .expect("#enqueue-form details#enqueue-options[open] input#require_approval[type=checkbox]")
        .await;
    session.click(&approval).await;
    let ticked = session
        .execute(
            "return document.querySelector('#require_approval').checked;",
            json!([]),
        )
        .await;
    assert_eq!(ticked, json!(true), "the approval box did not tick");
    session.screenshot(&shots.join("enqueue-options.png")).await;
    let enqueue = session.expect("#enqueue-form button#enqueue").await;
    session.click(&enqueue).await;
    let task_path = session
        .wait_for(
            "the page of the task that needs approval",
            PAGE_TIMEOUT,
            "return /^\\/task\\/[^/]+$/.test(location.pathname) \
                 && location.search === '?enqueued=1' \
                 && document.readyState === 'complete' ? location.pathname : null;",
        )
        .await;
    let task_path = task_path.as_str().expect("a path").to_owned();

    // It runs, passes its gates and waits: the page says so, live, with the buttons.
    session
        .wait_for(
            "`#task-status` to read awaiting approval, with Approve and Reject, live",
            TASK_TIMEOUT,
            "const s = document.querySelector('#task-header[data-live] #task-status'); \
             const t = s ? s.textContent.trim() : ''; \
             if (t === 'done' || t === 'error') { return 'ended ' + t; } \
             return t === 'awaiting approval' \
                 && s.classList.contains('status-awaiting_approval') \
                 && document.querySelector('#task-actions[data-live] #approval-form #approve') \
                 && document.querySelector('#task-actions #approval-form #reject') \
                 && document.querySelector('#task-actions #cancel-form #cancel') ? 'waiting' : null;",
        )
        .await
        .as_str()
        .filter(|seen| *seen == "waiting")
        .unwrap_or_else(|| panic!("the task did not wait for approval"));
    session.screenshot(&shots.join("task-approval.png")).await;

    // Typing holds the focus in the region, so that no live update swaps the form meanwhile.
    let comment = session
        .expect("#approval-form textarea#decision-comment")
        .await;
    session.click(&comment).await;
    session.type_text(&comment, "Looks right to me").await;
    let approve = session.expect("#approval-form button#approve").await;
    session.click(&approve).await;
    session
        .wait_for(
            "the task page after approving (`?decided=approve`)",
            PAGE_TIMEOUT,
            &format!(
                "return location.pathname === '{task_path}' \
                     && location.search === '?decided=approve' \
                     && document.readyState === 'complete';"
            ),
        )
        .await;
    let refused = session
        .execute(
            "const e = document.querySelector('.flash.error'); return e ? e.innerText : null;",
            json!([]),
        )
        .await;
    assert!(refused.is_null(), "the approval was refused: {refused}");
    let status = final_status(
        session,
        "`#task-status` to read done after the approval, live",
    )
    .await;
    assert_eq!(
        status,
        json!("done"),
        "the approved task did not finish\n{}",
        session.describe().await
    );
    session
        .wait_for(
            "the decision recorded in the header, and no button left",
            PAGE_TIMEOUT,
            "const d = document.querySelector('#task-header #task-decision'); \
             return d && d.innerText.includes('Approved') \
                 && d.innerText.includes('Looks right to me') \
                 && !document.querySelector('#approve') && !document.querySelector('#cancel');",
        )
        .await;

    // A second variant: implement@v1 again, asking for another model.
    let variant = session
        .expect("#step-implement form.replay-form details#replay-implement-variant > summary")
        .await;
    session.click(&variant).await;
    let model = session
        .expect("#step-implement details[open] input#replay-implement-model[name=model]")
        .await;
    session.click(&model).await;
    session.type_text(&model, "gpt-4o-mini").await;
    let reason = session
        .expect("#step-implement form.replay-form input[name=reason]")
        .await;
    session.click(&reason).await;
    session.type_text(&reason, "try a cheaper model").await;
    let replay = session
        .expect("#step-implement form.replay-form button.replay-button")
        .await;
    session.click(&replay).await;
    session
        .wait_for(
            "attempt 2 of implement@v1 to succeed, showing the model it asked for",
            TASK_TIMEOUT,
            "const a = document.querySelector(\
                 '#step-implement-body[data-live] li.attempt[data-attempt=\"2\"]'); \
             return a && a.querySelector('.status-succeeded') !== null \
                 && a.querySelector('.attempt-variant') !== null \
                 && a.innerText.includes('gpt-4o-mini') \
                 && a.querySelector('a.attempt-compare') !== null;",
        )
        .await;
    // For the docs: the two variants in the step, and the variant options of its form.
    let variant = session
        .expect("#step-implement form.replay-form details#replay-implement-variant > summary")
        .await;
    session.click(&variant).await;
    session
        .execute(
            "document.querySelector('#step-implement').scrollIntoView(); return null;",
            json!([]),
        )
        .await;
    session.screenshot(&shots.join("task-variant.png")).await;
    session
        .execute(
            "document.querySelector('#step-implement form.replay-form')\
                 .scrollIntoView({ block: 'end' }); return null;",
            json!([]),
        )
        .await;
    session.screenshot(&shots.join("replay-variant.png")).await;
    let compare = session
        .expect("#step-implement-body li.attempt[data-attempt=\"2\"] a.attempt-compare")
        .await;
    session.click(&compare).await;
    let columns = session
        .wait_for(
            "the side-by-side table of the two variants",
            PAGE_TIMEOUT,
            &format!(
                "if (!location.pathname.startsWith('{task_path}/diff/implement@v1')) {{ return null; }} \
                 const t = document.querySelector('table#compare'); \
                 if (!t) {{ return null; }} \
                 const cells = (row) => Array.from(t.querySelectorAll(\
                     'tr[data-row=\"' + row + '\"] td')).map((c) => c.innerText.trim()); \
                 const heads = Array.from(t.querySelectorAll('thead th[data-attempt]'))\
                     .map((h) => h.textContent.trim()); \
                 return {{ heads: heads, model: cells('model'), provider: cells('provider'), \
                          tokens: cells('tokens'), cost: cells('cost'), \
                          duration: cells('duration'), mode: cells('mode') }};"
            ),
        )
        .await;
    eprintln!("the compare view shows {columns}");
    assert_eq!(
        columns["heads"],
        json!(["Attempt 1", "Attempt 2"]),
        "{columns}"
    );
    for row in ["model", "provider", "tokens", "cost", "duration"] {
        let cells = columns[row].as_array().cloned().unwrap_or_default();
        assert_eq!(
            cells.len(),
            2,
            "the {row} row has not two columns: {columns}"
        );
        assert!(
            cells.iter().all(|cell| cell
                .as_str()
                .is_some_and(|text| !text.is_empty() && text != "—")),
            "the {row} row has an empty side: {columns}"
        );
    }
    let model = |side: usize| {
        columns["model"][side]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        model(0).contains("offline") && !model(0).contains("gpt-4o-mini"),
        "the first variant's model: {columns}"
    );
    assert!(
        model(1).contains("gpt-4o-mini"),
        "the second variant does not show the model it asked for: {columns}"
    );
    assert!(
        columns["cost"][0]
            .as_str()
            .is_some_and(|c| c.starts_with('$')),
        "{columns}"
    );
    assert!(
        columns["tokens"][1]
            .as_str()
            .is_some_and(|t| t.contains(" / ")),
        "{columns}"
    );
    assert!(
        columns["mode"][1]
            .as_str()
            .is_some_and(|m| m.contains("replay") && m.contains("try a cheaper model")),
        "{columns}"
    );
    session.expect("table#diff.diff").await;
    session.screenshot(&shots.join("compare.png")).await;
}

/// Enqueues a task on a local git repository through the form's folded repository fields,
/// watches it finish, and reads its page: the repository in the header, the change as a diff
/// from the base, and the chunks of the repository the models saw.
async fn repository_task(session: &Session, base: &str, shots: &Path) {
    let source = tempfile::tempdir().expect("a repository directory");
    let commit = source_repository(source.path());
    let url = source.path().display().to_string();

    session.goto(&format!("{base}/")).await;
    let textarea = session.expect("#enqueue-form textarea#prompt").await;
    session.click(&textarea).await;
    session.type_text(&textarea, CART_PROMPT).await;
    let fields = session
        .expect("#enqueue-form details#enqueue-repository > summary")
        .await;
    session.click(&fields).await;
    for (id, value) in [("repository_url", url.as_str()), ("base_ref", "main")] {
        let input = session
            .expect(&format!(
                "#enqueue-form details#enqueue-repository[open] input#{id}[name={id}]"
            ))
            .await;
        session.click(&input).await;
        session.type_text(&input, value).await;
    }
    session
        .screenshot(&shots.join("enqueue-repository.png"))
        .await;
    let enqueue = session.expect("#enqueue-form button#enqueue").await;
    session.click(&enqueue).await;
    session
        .wait_for(
            "the page of the task on the repository",
            PAGE_TIMEOUT,
            "return /^\\/task\\/[^/]+$/.test(location.pathname) \
                 && location.search === '?enqueued=1' \
                 && document.readyState === 'complete' ? location.pathname : null;",
        )
        .await;
    let status = final_status(session, "the repository task to end, live").await;
    assert_eq!(
        status,
        json!("done"),
        "the repository task ended in error\n{}",
        session.describe().await
    );

    let header = session
        .wait_for(
            "the repository and its base ref in the task header",
            PAGE_TIMEOUT,
            "const r = document.querySelector('#task-header #task-repository'); \
             const b = document.querySelector('#task-header #task-base-ref'); \
             return r && b ? { repository: r.innerText, base_ref: b.innerText } : null;",
        )
        .await;
    assert_eq!(header["repository"], json!(url), "{header}");
    assert_eq!(header["base_ref"], json!("main"), "{header}");

    // The change, as a diff from the base whose short id it names.
    let change = session
        .wait_for(
            "the implementation's diff from the base",
            PAGE_TIMEOUT,
            "const s = document.querySelector('#step-implement-body .change-summary'); \
             const t = document.querySelector('#step-implement-body table.diff.unified-diff'); \
             if (!s || !t) { return null; } \
             const added = t.querySelectorAll('tr.diff-added'); \
             return { summary: s.innerText, files: t.querySelectorAll('tr.diff-file').length, \
                      added: added.length, \
                      visible: added.length > 0 && added[0].getClientRects().length > 0, \
                      base: s.querySelector('code.commit-id').getAttribute('title') };",
        )
        .await;
    assert_eq!(change["base"], json!(commit), "{change}");
    assert!(
        change["summary"]
            .as_str()
            .is_some_and(|s| s.contains(&commit[..12])),
        "{change}"
    );
    assert!(change["files"].as_u64().is_some_and(|n| n > 0), "{change}");
    assert!(change["added"].as_u64().is_some_and(|n| n > 0), "{change}");
    assert_eq!(change["visible"], json!(true), "{change}");

    // What the implementer saw of the repository: folded, then opened.
    let summary = session
        .expect("#step-implement-body details.retrieved > summary")
        .await;
    session
        .execute(
            "document.querySelector('#step-implement-body details.retrieved')\
                 .scrollIntoView(); return null;",
            json!([]),
        )
        .await;
    session.click(&summary).await;
    let rows = session
        .wait_for(
            "the retrieved chunks of implement@v1, opened",
            PAGE_TIMEOUT,
            "const d = document.querySelector('#step-implement-body details.retrieved[open]'); \
             if (!d) { return null; } \
             const rows = Array.from(d.querySelectorAll('table.retrieved-table tbody tr')); \
             return rows.length > 0 && rows[0].getClientRects().length > 0 \
                 ? rows.map((r) => r.innerText) : null;",
        )
        .await;
    assert!(
        rows.as_array().is_some_and(|rows| rows
            .iter()
            .any(|r| r.as_str().is_some_and(|r| r.contains("shop/cart.py:1–")))),
        "the implementer did not see shop/cart.py: {rows}"
    );
    session
        .execute(
            "document.querySelector('#step-implement-body .change-summary')\
                 .scrollIntoView(); window.scrollBy(0, -60); return null;",
            json!([]),
        )
        .await;
    session.screenshot(&shots.join("task-repository.png")).await;
}

/// Opens `/tasks`, enqueues a second task through the API, and waits for its row to appear
/// without a reload: the page cannot have known the task when it loaded.
async fn tasks_page_is_live(session: &Session, base: &str, first_task: &str) {
    session.goto(&format!("{base}/tasks")).await;
    session
        .wait_for(
            "the first task's row in `#tasks-table`, and the live stream connected",
            PAGE_TIMEOUT,
            &format!(
                "const t = document.querySelector('#tasks[data-live] table#tasks-table'); \
                 return t && t.querySelector('tr.task-row a[href=\"/task/{first_task}\"]') \
                     && Number(document.body.dataset.liveRefreshes || 0) > 0;"
            ),
        )
        .await;
    session
        .execute("window.__marker = 2; return null;", json!([]))
        .await;
    assert_markup_not_run(session, "the tasks page", false).await;

    let enqueued: serde_json::Value = browser::http_client()
        .post(format!("{base}/api/tasks"))
        .json(&json!({ "prompt": "Write a tiny Python program that prints 'Hello again'" }))
        .send()
        .await
        .expect("POST /api/tasks answers")
        .json()
        .await
        .expect("POST /api/tasks answers JSON");
    let second = enqueued["task_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no task_id in {enqueued}"))
        .to_owned();
    session
        .wait_for(
            "the task enqueued through the API to appear done in `#tasks-table`, live",
            TASK_TIMEOUT,
            &format!(
                "const a = document.querySelector('#tasks-table tr.task-row a[href=\"/task/{second}\"]'); \
                 const row = a && a.closest('tr.task-row'); \
                 return window.__marker === 2 && row && row.textContent.includes('done');"
            ),
        )
        .await;
}

/// Checks that the prompt's markup ran nowhere on the current page (no dialog, no script in
/// `#main`) and, when `shown`, that the page shows it literally.
/// Waits until the live task header says `done` or `error`, without a reload; gives which.
async fn final_status(session: &Session, what: &str) -> serde_json::Value {
    session
        .wait_for(
            what,
            TASK_TIMEOUT,
            "const s = document.querySelector('#task-header[data-live] #task-status'); \
             const t = s ? s.textContent.trim() : ''; \
             return t === 'done' || t === 'error' ? t : null;",
        )
        .await
}

async fn assert_markup_not_run(session: &Session, page: &str, shown: bool) {
    assert_eq!(
        session.open_dialog().await,
        None,
        "{page} opened a dialog: the prompt's markup ran"
    );
    let seen = session
        .execute(
            "const m = document.querySelector('#main'); \
             return { text: m ? m.innerText.includes(arguments[0]) : false, \
                      scripts: document.querySelectorAll('#main script').length };",
            json!([MARKUP]),
        )
        .await;
    assert_eq!(
        seen["scripts"],
        json!(0),
        "{page} holds a script in `#main`\n{}",
        session.describe().await
    );
    assert!(
        !shown || seen["text"] == json!(true),
        "{page} does not show {MARKUP} literally\n{}",
        session.describe().await
    );
}
