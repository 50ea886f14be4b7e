//! Publishing a workspace commit to a local bare repository, and checking a branch out again.

use std::path::Path;

use agent_pipeline::TaskId;
use agent_pipeline::execution::{CommitId, TaskWorkspace, WorkspaceLimits, clone_at};
use agent_pipeline::output::FileContent;
use agent_pipeline::publish::{Change, LocalGitPublisher, Publisher, branch_name};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn file(path: &str, content: &str) -> FileContent {
    FileContent {
        path: path.into(),
        content: content.into(),
    }
}

/// Runs git in `dir` and returns its trimmed output.
fn git(dir: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("git {args:?} could not run: {e}"));
    assert!(output.status.success(), "git {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn change<'a>(task_id: TaskId, workspace: &'a TaskWorkspace, commit: &'a CommitId) -> Change<'a> {
    Change {
        task_id,
        workspace,
        commit,
        title: "add answer",
        body: "the body",
    }
}

#[tokio::test]
async fn publishing_creates_and_moves_the_branch() -> TestResult {
    let data = tempfile::tempdir()?;
    let task = TaskId::new();
    let workspace = TaskWorkspace::open(data.path(), task).await?;
    let limits = WorkspaceLimits::default();
    let implementation = workspace
        .commit_files(None, &[file("src/lib.rs", "v1\n")], "implement@v1", &limits)
        .await?;
    let tests = workspace
        .commit_files(
            Some(&implementation.id),
            &[file("tests/it.rs", "t\n")],
            "test@v1",
            &limits,
        )
        .await?;

    let bare = data.path().join("published.git");
    let publisher = LocalGitPublisher::new(&bare);
    assert_eq!(publisher.name(), "git");
    assert_eq!(publisher.local_repository(), Some(bare.as_path()));

    let first = publisher
        .publish(&change(task, &workspace, &tests.id))
        .await?;
    assert_eq!(first.branch, branch_name(task));
    assert_eq!(first.branch, format!("agent/{task}"));
    assert_eq!(first.commit, tests.id.to_string());
    assert_eq!(first.repository, bare.display().to_string());
    assert_eq!(first.url, None);
    assert_eq!(git(&bare, &["rev-parse", "--is-bare-repository"]), "true");

    // Publishing the same change again is harmless.
    let again = publisher
        .publish(&change(task, &workspace, &tests.id))
        .await?;
    assert_eq!(again, first);

    let branch = format!("agent/{task}");
    assert_eq!(git(&bare, &["rev-parse", &branch]), tests.id.as_str());
    let subjects = git(&bare, &["log", "--format=%s", &branch]);
    assert_eq!(
        subjects.lines().collect::<Vec<_>>(),
        [
            "test@v1".to_string(),
            "implement@v1".to_string(),
            format!("workspace created for task {task}"),
        ]
    );

    // A newer commit moves the branch.
    let fixed = workspace
        .commit_files(
            Some(&implementation.id),
            &[file("tests/it.rs", "t2\n")],
            "test@v2",
            &limits,
        )
        .await?;
    let moved = publisher
        .publish(&change(task, &workspace, &fixed.id))
        .await?;
    assert_eq!(moved.commit, fixed.id.to_string());
    assert_eq!(git(&bare, &["rev-parse", &branch]), fixed.id.as_str());
    assert_eq!(
        git(&bare, &["log", "-1", "--format=%s", &branch]),
        "test@v2"
    );

    // Publishing an older commit moves the branch back (force).
    publisher
        .publish(&change(task, &workspace, &implementation.id))
        .await?;
    assert_eq!(
        git(&bare, &["rev-parse", &branch]),
        implementation.id.as_str()
    );
    Ok(())
}

#[tokio::test]
async fn a_published_branch_can_be_checked_out() -> TestResult {
    let data = tempfile::tempdir()?;
    let task = TaskId::new();
    let workspace = TaskWorkspace::open(data.path(), task).await?;
    let commit = workspace
        .commit_files(
            None,
            &[
                file("src/lib.rs", "pub fn f() {}\n"),
                file("tests/it.rs", "#[test] fn t() {}\n"),
            ],
            "change",
            &WorkspaceLimits::default(),
        )
        .await?;
    let bare = data.path().join("repos").join("published.git");
    let publisher = LocalGitPublisher::new(&bare);
    publisher
        .publish(&change(task, &workspace, &commit.id))
        .await?;

    // By branch name.
    let checkout = data.path().join("checkout");
    let checked_out = clone_at(&bare, &branch_name(task), &checkout).await?;
    assert_eq!(checked_out, commit.id);
    assert_eq!(
        std::fs::read_to_string(checkout.join("src/lib.rs"))?,
        "pub fn f() {}\n"
    );
    assert_eq!(
        std::fs::read_to_string(checkout.join("tests/it.rs"))?,
        "#[test] fn t() {}\n"
    );
    assert_eq!(git(&checkout, &["rev-parse", "HEAD"]), commit.id.as_str());

    // By commit id, straight from the workspace.
    let by_id = data.path().join("by-id");
    assert_eq!(
        clone_at(workspace.dir(), commit.id.as_str(), &by_id).await?,
        commit.id
    );
    assert!(by_id.join("src/lib.rs").is_file());

    // An existing destination, an option-like or unknown revision are refused.
    assert!(
        clone_at(&bare, &branch_name(task), &checkout)
            .await
            .is_err()
    );
    for rev in ["--upload-pack=touch /tmp/x", "-b", "", "main@{1}", "a..b"] {
        let dest = data.path().join("refused");
        assert!(clone_at(&bare, rev, &dest).await.is_err(), "{rev:?}");
        assert!(!dest.exists(), "{rev:?}");
    }
    let missing = data.path().join("missing");
    assert!(clone_at(&bare, "agent/nothing", &missing).await.is_err());
    assert!(!missing.exists(), "a failed checkout leaves nothing behind");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_publishing_at_once_share_the_repository_they_create() -> TestResult {
    let data = tempfile::tempdir()?;
    let bare = data.path().join("published.git");
    let limits = WorkspaceLimits::default();
    let mut tasks = Vec::new();
    for n in 0..8 {
        let task = TaskId::new();
        let workspace = TaskWorkspace::open(data.path(), task).await?;
        let commit = workspace
            .commit_files(
                None,
                &[file("a.txt", &format!("{n}\n"))],
                "implement@v1",
                &limits,
            )
            .await?;
        tasks.push((task, workspace, commit.id));
    }
    let mut publishing = tokio::task::JoinSet::new();
    for (task, workspace, commit) in tasks {
        // Each with a publisher of its own, as separate processes would have.
        let publisher = LocalGitPublisher::new(&bare);
        publishing.spawn(async move {
            let outcome = publisher.publish(&change(task, &workspace, &commit)).await;
            outcome.map(|published| (task, published.commit, commit))
        });
    }
    while let Some(joined) = publishing.join_next().await {
        let (task, published, commit) = joined??;
        assert_eq!(published, commit.to_string());
        let branch = format!("refs/heads/{}", branch_name(task));
        assert_eq!(git(&bare, &["rev-parse", &branch]), commit.to_string());
    }
    let leftovers: Vec<_> = std::fs::read_dir(data.path())?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    Ok(())
}
