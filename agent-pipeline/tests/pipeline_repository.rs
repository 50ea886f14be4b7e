//! Tasks on an existing git repository: the workspace starts as a clone at the base ref, a
//! change keeps the repository's other files and may delete some, the reviewer's diff starts
//! at the base, and hostile repositories are refused with the reason.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use agent_pipeline::execution::{TaskWorkspace, WorkspaceError, WorkspaceLimits};
use agent_pipeline::output::FileContent;
use agent_pipeline::wire::{NewTask, ReportStatus, Repository};
use agent_pipeline::{Stage, TaskId};
use common::{TestResult, Tweaked, finish, git, start_with};
use serde_json::json;

/// A bug in the repository: the total is one short.
const BUGGY_CART: &str = "def total(prices):\n    return sum(prices) - 1\n";
const FIXED_CART: &str = "def total(prices):\n    return sum(prices)\n";
const CART_TEST: &str = "import unittest\n\nfrom shop.cart import total\n\n\nclass TotalTest(unittest.TestCase):\n    def test_total(self):\n        self.assertEqual(total([1, 2]), 3)\n\n\nif __name__ == \"__main__\":\n    unittest.main()\n";

/// A small Python package with a failing test, committed on `main`; a second commit on
/// `release`. Returns the commit of `main`.
fn source_repository(dir: &Path) -> Result<String, Box<dyn std::error::Error>> {
    git(dir, &["init", "--quiet", "--initial-branch=main"])?;
    std::fs::create_dir_all(dir.join("shop"))?;
    std::fs::write(dir.join("shop/__init__.py"), "")?;
    std::fs::write(dir.join("shop/cart.py"), BUGGY_CART)?;
    std::fs::write(dir.join("test_cart.py"), CART_TEST)?;
    std::fs::write(dir.join("README.md"), "# shop\n")?;
    std::fs::write(dir.join("OLD.txt"), "to be deleted\n")?;
    git(dir, &["add", "."])?;
    commit(dir, "shop")?;
    let main = git(dir, &["rev-parse", "HEAD"])?;
    git(dir, &["checkout", "--quiet", "-b", "release"])?;
    std::fs::write(dir.join("RELEASE.md"), "1.0\n")?;
    git(dir, &["add", "."])?;
    commit(dir, "release")?;
    git(dir, &["checkout", "--quiet", "main"])?;
    Ok(main.trim().to_owned())
}

/// What the scripted model answers to "make the failing test pass": the implementer fixes
/// the cart and deletes `OLD.txt`, the tester adds `test_more.py` and runs every test.
fn fix_the_cart(schema: &str, value: &mut serde_json::Value) {
    match schema {
        "implementation" => {
            value["files"] = json!([{ "path": "shop/cart.py", "content": FIXED_CART }]);
            value["deleted_files"] = json!(["OLD.txt"]);
        }
        "test_plan" => {
            value["test_files"] = json!([{
                "path": "test_more.py",
                "content": "import unittest\n\nfrom shop.cart import total\n\n\nclass MoreTest(unittest.TestCase):\n    def test_empty(self):\n        self.assertEqual(total([]), 0)\n",
            }]);
            value["command"] = json!("python3 -m unittest discover -v");
        }
        _ => {}
    }
}

/// What a scripted model that does not fix the cart answers: the implementer writes notes,
/// the tester adds a test of its own that passes and runs only that.
fn leave_the_bug(schema: &str, value: &mut serde_json::Value) {
    match schema {
        "implementation" => {
            value["files"] = json!([{ "path": "NOTES.md", "content": "looked at it\n" }]);
        }
        "test_plan" => {
            value["test_files"] = json!([{
                "path": "test_notes.py",
                "content": "import unittest\n\n\nclass NotesTest(unittest.TestCase):\n    def test_nothing(self):\n        self.assertTrue(True)\n",
            }]);
            value["command"] = json!("python3 -m unittest test_notes -v");
        }
        _ => {}
    }
}

/// The section of a prompt that holds the repository's retrieved code.
fn retrieved_section(prompt: &str) -> String {
    let Some((_, rest)) = prompt.split_once("## The repository's code that matters") else {
        return String::new();
    };
    rest.split("\n## The change (git diff)")
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Commits what is staged in `dir`, whatever the machine's git identity.
fn commit(dir: &Path, message: &str) -> Result<String, Box<dyn std::error::Error>> {
    git(
        dir,
        &[
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@localhost",
            "commit",
            "--quiet",
            "-m",
            message,
        ],
    )
}

fn paths(files: &[(String, Vec<u8>)]) -> Vec<&str> {
    files.iter().map(|(path, _)| path.as_str()).collect()
}

/// The owner's execute bit of `path`.
fn is_executable(path: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::symlink_metadata(path)?.permissions().mode() & 0o100 != 0)
}

/// A repository's executable script (`./run_tests.sh` as its test command, say) stays
/// executable in the work tree and in the commits, through changes and checkouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repository_s_executables_stay_executable() -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    let source = tempfile::tempdir()?;
    source_repository(source.path())?;
    let script = source.path().join("run_tests.sh");
    std::fs::write(&script, "#!/bin/sh\nexec python3 -m unittest -v\n")?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    git(source.path(), &["add", "run_tests.sh"])?;
    commit(source.path(), "a test script")?;
    let data = tempfile::tempdir()?;
    let repository = Repository::new(source.path().display().to_string());
    let workspace = TaskWorkspace::open_with(data.path(), TaskId::new(), Some(&repository)).await?;
    let base = workspace.base().await?;
    let in_tree = workspace.dir().join("run_tests.sh");
    assert!(is_executable(&in_tree)?, "cloned executable");

    let change = workspace
        .commit_change(
            Some(&base),
            &[FileContent {
                path: "shop/cart.py".into(),
                content: FIXED_CART.into(),
            }],
            &[],
            "fix",
            &WorkspaceLimits::default(),
        )
        .await?;
    assert!(is_executable(&in_tree)?, "still executable after a change");
    let listed = git(
        workspace.dir(),
        &["ls-tree", change.id.as_str(), "run_tests.sh"],
    )?;
    assert!(listed.starts_with("100755 "), "{listed}");
    assert!(
        !is_executable(&workspace.dir().join("shop/cart.py"))?,
        "a written file is not executable"
    );

    // A run takes the bit away: a checkout puts it back.
    std::fs::set_permissions(&in_tree, std::fs::Permissions::from_mode(0o644))?;
    workspace.check_out(&base).await?;
    assert!(is_executable(&in_tree)?, "restored by a checkout");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_starts_as_a_clone_at_the_base_ref() -> TestResult {
    let source = tempfile::tempdir()?;
    let main = source_repository(source.path())?;
    let data = tempfile::tempdir()?;
    let url = source.path().display().to_string();

    // The default branch, then a named one.
    let on_main = TaskId::new();
    let workspace =
        TaskWorkspace::open_with(data.path(), on_main, Some(&Repository::new(&url))).await?;
    assert_eq!(workspace.base().await?.as_str(), main);
    assert_eq!(workspace.head().await?.as_str(), main);
    assert_eq!(
        std::fs::read_to_string(workspace.dir().join("shop/cart.py"))?,
        BUGGY_CART
    );
    let on_release = TaskId::new();
    let release = TaskWorkspace::open_with(
        data.path(),
        on_release,
        Some(&Repository::new(&url).at("release")),
    )
    .await?;
    assert!(release.dir().join("RELEASE.md").is_file());
    assert_ne!(release.base().await?.as_str(), main);

    // A change keeps the other files, replaces one and deletes one.
    let base = workspace.base().await?;
    let fixed = [FileContent {
        path: "shop/cart.py".into(),
        content: FIXED_CART.into(),
    }];
    let commit = workspace
        .commit_change(
            Some(&base),
            &fixed,
            &["OLD.txt".to_owned()],
            "fix the total",
            &WorkspaceLimits::default(),
        )
        .await?;
    assert_eq!(commit.parent, base);
    let files = workspace.files_at(&commit.id).await?;
    assert_eq!(
        paths(&files),
        [
            "README.md",
            "shop/__init__.py",
            "shop/cart.py",
            "test_cart.py"
        ]
    );
    assert!(!workspace.dir().join("OLD.txt").exists());
    let diff = workspace.diff(&base, &commit.id).await?;
    assert!(diff.contains("-    return sum(prices) - 1"), "{diff}");
    assert!(diff.contains("deleted file mode"), "{diff}");
    assert!(!diff.contains("README"), "{diff}");

    // Opened again (another step), it is not cloned again.
    let again =
        TaskWorkspace::open_with(data.path(), on_main, Some(&Repository::new(&url))).await?;
    assert_eq!(again.head().await?, commit.id);
    assert_eq!(again.base().await?, base);
    assert!(
        !data
            .path()
            .join(on_main.to_string())
            .join(".workspace.clone")
            .exists()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_repositories_and_deletions_are_refused_with_the_reason() -> TestResult {
    let source = tempfile::tempdir()?;
    source_repository(source.path())?;
    let data = tempfile::tempdir()?;
    let url = source.path().display().to_string();

    let refused = |result: Result<TaskWorkspace, WorkspaceError>| match result {
        Ok(_) => panic!("not refused"),
        Err(error) => error.to_string(),
    };
    let task = TaskId::new();
    let missing_ref = refused(
        TaskWorkspace::open_with(data.path(), task, Some(&Repository::new(&url).at("nope"))).await,
    );
    assert!(
        missing_ref.contains("no branch or commit \"nope\""),
        "{missing_ref}"
    );
    let helper = refused(
        TaskWorkspace::open_with(
            data.path(),
            TaskId::new(),
            Some(&Repository::new("ext::sh -c touch% /tmp/pwned")),
        )
        .await,
    );
    assert!(helper.contains("remote helper"), "{helper}");
    assert!(!Path::new("/tmp/pwned").exists());
    // A password in the url never shows in the error (nothing listens on port 1).
    let secret = refused(
        TaskWorkspace::open_with(
            data.path(),
            TaskId::new(),
            Some(&Repository::new("http://bot:s3cret@127.0.0.1:1/shop.git")),
        )
        .await,
    );
    assert!(!secret.contains("s3cret"), "{secret}");
    assert!(secret.contains("127.0.0.1"), "{secret}");

    // After a failed clone the same task clones fine: nothing half-made is reused.
    let workspace =
        TaskWorkspace::open_with(data.path(), task, Some(&Repository::new(&url))).await?;
    assert!(workspace.dir().join("shop/cart.py").is_file());

    let base = workspace.base().await?;
    let limits = WorkspaceLimits::default();
    for (deleted, expected) in [
        ("NOPE.txt", "not a file of the base"),
        ("../OLD.txt", "refused path"),
        ("shop/cart.py", "both written and deleted"),
    ] {
        let written = [FileContent {
            path: "shop/cart.py".into(),
            content: FIXED_CART.into(),
        }];
        let result = workspace
            .commit_change(Some(&base), &written, &[deleted.to_owned()], "x", &limits)
            .await;
        let message = result.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains(expected), "{deleted}: {message:?}");
    }
    assert_eq!(workspace.head().await?, base, "nothing was committed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_on_a_repository_changes_it_and_the_tests_run_on_the_change() -> TestResult {
    let source = tempfile::tempdir()?;
    let main = source_repository(source.path())?;
    // The implementer fixes the bug and deletes a file; the tester runs the repository's own
    // test next to its own. The implementer is shown the repository's buggy code.
    let saw_the_bug = Arc::new(AtomicBool::new(false));
    let saw = Arc::clone(&saw_the_bug);
    // The reviewer's retrieved code is the code as the attempts left it.
    let reviewer_saw = Arc::new(std::sync::Mutex::new(String::new()));
    let reviewer = Arc::clone(&reviewer_saw);
    let llm = Tweaked::new(move |request, value| match request.schema_name.as_str() {
        "review" => {
            if let Ok(mut seen) = reviewer.lock() {
                *seen = request
                    .messages
                    .iter()
                    .map(|message| retrieved_section(&message.content))
                    .collect();
            }
        }
        "implementation" => {
            let shown = request.messages.iter().any(|message| {
                message.content.contains("repository's code that matters")
                    && message.content.contains("return sum(prices) - 1")
            });
            saw.fetch_or(shown, Ordering::Relaxed);
            fix_the_cart(&request.schema_name, value);
        }
        other => fix_the_cart(other, value),
    });
    let mut harness = start_with(|b| b.llm(llm)).await?;
    let task = NewTask::new("Make the failing test in test_cart.py pass")
        .on_repository(Repository::new(source.path().display().to_string()).at("main"));
    let task_id = harness.pipeline.enqueue(task).await?;
    let last = finish(&harness.pipeline, task_id).await?;
    assert_eq!(last.status, ReportStatus::Done, "{last:?}");

    let workspace = TaskWorkspace::open(&harness.data_dir(), task_id).await?;
    assert_eq!(workspace.base().await?.as_str(), main);
    let head = workspace.head().await?;
    let files = workspace.files_at(&head).await?;
    assert_eq!(
        paths(&files),
        [
            "README.md",
            "shop/__init__.py",
            "shop/cart.py",
            "test_cart.py",
            "test_more.py"
        ]
    );
    // What the agents saw of the repository is recorded: the file with the bug among it.
    assert!(
        saw_the_bug.load(Ordering::Relaxed),
        "the implementer saw the code"
    );
    let design = common::artifact(&harness, task_id, Stage::Design)
        .await?
        .output;
    let retrieved = design["retrieved"].as_array().cloned().unwrap_or_default();
    assert!(
        retrieved
            .iter()
            .any(|chunk| chunk["path"] == "shop/cart.py" && chunk["start_line"] == 1),
        "{retrieved:?}"
    );
    assert_eq!(design["retrieved_from"], main.as_str());
    let review = common::artifact(&harness, task_id, Stage::Review)
        .await?
        .output;
    assert_eq!(review["retrieved_from"], head.as_str(), "{review:?}");
    let seen = reviewer_saw.lock().map(|s| s.clone()).unwrap_or_default();
    assert!(seen.contains("return sum(prices)\n"), "{seen}");
    assert!(
        !seen.contains("sum(prices) - 1"),
        "the index holds the change: {seen}"
    );
    assert!(
        seen.contains("test_more.py"),
        "and the tester's file: {seen}"
    );
    let indexes: Vec<_> = std::fs::read_dir(harness.data_dir().join("memory"))?
        .flatten()
        .collect();
    assert_eq!(indexes.len(), 1, "one index for the repository");
    assert!(indexes[0].path().join(&main).join("index").is_dir());
    let test = common::artifact(&harness, task_id, Stage::Test)
        .await?
        .output;
    assert_eq!(test["passed"], 2, "{test:?}");
    assert_eq!(test["failed"], 0, "{test:?}");
    // The change is published as a branch on top of the repository's base.
    let published = harness.data_dir().join("published.git");
    let branch = format!("agent/{task_id}");
    assert_eq!(
        git(&published, &["rev-parse", &branch])?.trim(),
        head.as_str()
    );
    git(&published, &["merge-base", "--is-ancestor", &main, &branch])?;
    let diff = workspace.diff(&workspace.base().await?, &head).await?;
    assert!(diff.contains("+    return sum(prices)\n"), "{diff}");
    assert!(diff.contains("OLD.txt"), "{diff}");
    assert!(!diff.contains("README"), "{diff}");
    // The implement artifact keeps the change as a unified diff from the base.
    let implement = common::artifact(&harness, task_id, Stage::Implement)
        .await?
        .output;
    assert_eq!(implement["workspace"]["base"], main.as_str());
    let recorded = implement["workspace"]["diff"].as_str().unwrap_or_default();
    assert!(
        recorded.contains("-    return sum(prices) - 1\n"),
        "{implement:?}"
    );
    assert!(
        recorded.contains("+    return sum(prices)\n"),
        "{implement:?}"
    );
    assert!(recorded.contains("deleted file mode"), "{implement:?}");
    assert!(
        !recorded.contains("test_more.py"),
        "the tester's files come later"
    );
    harness.stop().await;
    Ok(())
}

/// A change that leaves the repository's own test failing does not pass the gates, even when
/// the tester's own tests pass; a tester that rewrites the repository's test is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repository_s_own_failing_tests_hold_the_change_back() -> TestResult {
    let source = tempfile::tempdir()?;
    source_repository(source.path())?;
    let url = source.path().display().to_string();
    let unfixed = Tweaked::new(|request, value| leave_the_bug(&request.schema_name, value));
    let mut harness = start_with(|b| b.llm(unfixed).gate_rounds(1)).await?;
    let task = NewTask::new("Make the failing test pass")
        .on_repository(Repository::new(&url).with_test_command("python3 -m unittest test_cart -v"));
    let task_id = harness.pipeline.enqueue(task).await?;
    let last = finish(&harness.pipeline, task_id).await?;
    assert_eq!(last.status, ReportStatus::Error, "{last:?}");
    let test = common::artifact(&harness, task_id, Stage::Test)
        .await?
        .output;
    assert_eq!(test["passed"], 1, "the tester's own test passed: {test:?}");
    assert_eq!(test["repository_tests"]["after"]["failed"], 1, "{test:?}");
    assert!(
        last.summary.contains(
            "the repository's own tests (`python3 -m unittest test_cart -v`) fail after the change"
        ),
        "{}",
        last.summary
    );
    harness.stop().await;

    let rewrites = Tweaked::new(|request, value| {
        if request.schema_name == "test_plan" {
            value["test_files"] = json!([{ "path": "test_cart.py", "content": "" }]);
        }
    });
    let mut harness = start_with(|b| b.llm(rewrites)).await?;
    let task_id = harness
        .pipeline
        .enqueue(NewTask::new("Make the failing test pass").on_repository(Repository::new(&url)))
        .await?;
    let last = finish(&harness.pipeline, task_id).await?;
    assert_eq!(last.status, ReportStatus::Error, "{last:?}");
    assert!(
        last.summary
            .contains("test file \"test_cart.py\" would replace a file"),
        "{}",
        last.summary
    );
    harness.stop().await;
    Ok(())
}

/// A task that asks for it has its branch pushed to its own repository too, on top of the
/// base; a push that fails ends the task `error` with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_is_pushed_to_the_task_s_own_repository_when_asked() -> TestResult {
    let source = tempfile::tempdir()?;
    let main = source_repository(source.path())?;
    let url = source.path().display().to_string();
    let llm = Tweaked::new(|request, value| fix_the_cart(&request.schema_name, value));
    let mut harness = start_with(|b| b.llm(llm)).await?;
    let task = NewTask::new("Make the failing test in test_cart.py pass")
        .on_repository(Repository::new(&url).at("main").with_push());
    let task_id = harness.pipeline.enqueue(task).await?;
    let last = finish(&harness.pipeline, task_id).await?;
    assert_eq!(last.status, ReportStatus::Done, "{last:?}");
    let head = TaskWorkspace::open(&harness.data_dir(), task_id)
        .await?
        .head()
        .await?;
    let branch = format!("agent/{task_id}");
    assert_eq!(
        git(source.path(), &["rev-parse", &branch])?.trim(),
        head.as_str()
    );
    git(
        source.path(),
        &["merge-base", "--is-ancestor", &main, &branch],
    )?;
    assert_eq!(
        git(source.path(), &["rev-parse", "main"])?.trim(),
        main,
        "the base branch is left alone"
    );
    let reports = common::mirrored_reports(&harness, task_id).await?;
    let pr = reports
        .iter()
        .find(|event| event.status == ReportStatus::Pr)
        .ok_or("no pr report")?;
    assert_eq!(pr.details["pushed_to"], url.as_str(), "{pr:?}");
    assert!(
        pr.summary.contains(&format!("pushed to {url}")),
        "{}",
        pr.summary
    );
    harness.stop().await;

    // The repository is gone by the time the change is published: the push fails.
    let gone = tempfile::tempdir()?;
    source_repository(gone.path())?;
    let gone_path = gone.path().to_path_buf();
    let llm = Tweaked::new(move |request, value| {
        if request.schema_name == "review" {
            let _ = std::fs::remove_dir_all(&gone_path);
        }
        fix_the_cart(&request.schema_name, value);
    });
    let mut harness = start_with(|b| b.llm(llm)).await?;
    let task = NewTask::new("Make the failing test in test_cart.py pass").on_repository(
        Repository::new(gone.path().display().to_string())
            .at("main")
            .with_push(),
    );
    let task_id = harness.pipeline.enqueue(task).await?;
    let last = finish(&harness.pipeline, task_id).await?;
    assert_eq!(last.status, ReportStatus::Error, "{last:?}");
    assert!(
        last.summary.contains("not pushed to the task's repository"),
        "{}",
        last.summary
    );
    harness.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repository_s_tests_run_on_the_base_once_per_task() -> TestResult {
    let source = tempfile::tempdir()?;
    source_repository(source.path())?;
    let url = source.path().display().to_string();
    // The implementation leaves the bug, so the gate sends the task round again and the
    // Test step runs twice.
    let unfixed = Tweaked::new(|request, value| leave_the_bug(&request.schema_name, value));
    let mut harness = start_with(|b| b.llm(unfixed).gate_rounds(2)).await?;
    // Each run prints the time in nanoseconds: a run made again prints another.
    let command = "python3 -m unittest test_cart -v; status=$?; date +%s%N; exit $status";
    let task = NewTask::new("Make the failing test pass")
        .on_repository(Repository::new(&url).with_test_command(command));
    let task_id = harness.pipeline.enqueue(task).await?;
    let last = finish(&harness.pipeline, task_id).await?;
    assert_eq!(last.status, ReportStatus::Error, "{last:?}");

    let step = agent_pipeline::StepId::v1(Stage::Test);
    let latest = common::artifact(&harness, task_id, Stage::Test).await?;
    assert!(latest.attempt.get() >= 2, "Test ran again: {latest:?}");
    let first = harness
        .pipeline
        .artifacts()
        .read_attempt(task_id, step, agent_pipeline::Attempt::FIRST)
        .await?
        .ok_or("no first Test attempt")?;
    let first = &first.output["repository_tests"];
    let latest = &latest.output["repository_tests"];
    assert_eq!(first["before_reused"], false, "{first}");
    assert_eq!(first["before"]["failed"], 1, "{first}");
    assert_eq!(latest["before_reused"], true, "{latest}");
    assert_eq!(
        latest["before"], first["before"],
        "the run on the base is the first attempt's, not a new one"
    );
    assert_ne!(
        latest["after"]["run"]["output"], first["after"]["run"]["output"],
        "the run after the change is made again"
    );
    assert!(
        harness
            .task_dir(task_id)
            .join("repository-tests-before.json")
            .is_file(),
        "the run on the base is kept beside the workspace"
    );
    harness.stop().await;
    Ok(())
}
