//! The per-task git workspace, against the real `git`: linear history, tree replacement, base
//! restore, diffs, refused paths and limits, and no writes outside DATA_DIR.

use std::path::Path;

use agent_pipeline::TaskId;
use agent_pipeline::execution::{
    CommitId, TaskWorkspace, WorkspaceError, WorkspaceLimits, check_files,
};
use agent_pipeline::output::FileContent;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn file(path: &str, content: &str) -> FileContent {
    FileContent {
        path: path.into(),
        content: content.into(),
    }
}

fn limits() -> WorkspaceLimits {
    WorkspaceLimits::default()
}

/// The paths of a commit's files.
async fn paths_at(workspace: &TaskWorkspace, commit: &CommitId) -> Vec<String> {
    workspace
        .files_at(commit)
        .await
        .unwrap_or_else(|e| panic!("files_at {commit}: {e}"))
        .into_iter()
        .map(|(path, _)| path)
        .collect()
}

/// Every entry under `dir`, relative, sorted; `.git` is left out.
fn tree(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_name() == ".git" {
                continue;
            }
            let path = entry.path();
            if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                pending.push(path.clone());
            }
            found.push(
                path.strip_prefix(dir)
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            );
        }
    }
    found.sort();
    found
}

/// The commits from HEAD back to the root, newest first.
fn log(dir: &Path) -> Vec<String> {
    let output = std::process::Command::new("git")
        .args(["-C"])
        .arg(dir)
        .args(["log", "--format=%H %P %s"])
        .output()
        .expect("git log runs");
    assert!(output.status.success(), "git log: {output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn opening_twice_keeps_the_same_root() -> TestResult {
    let data = tempfile::tempdir()?;
    let task = TaskId::new();
    let first = TaskWorkspace::open(data.path(), task).await?;
    let root = first.root().await?;
    assert_eq!(first.head().await?, root);
    assert_eq!(
        first.dir(),
        data.path().join(task.to_string()).join("workspace")
    );

    let second = TaskWorkspace::open(data.path(), task).await?;
    assert_eq!(second.root().await?, root);
    assert_eq!(second.head().await?, root);
    assert!(
        paths_at(&second, &root).await.is_empty(),
        "the root is empty"
    );
    let history = log(second.dir());
    assert_eq!(history.len(), 1);
    assert!(
        history[0].ends_with(&format!("workspace created for task {task}")),
        "{history:?}"
    );
    Ok(())
}

#[tokio::test]
async fn each_commit_has_the_previous_head_as_parent() -> TestResult {
    let data = tempfile::tempdir()?;
    let workspace = TaskWorkspace::open(data.path(), TaskId::new()).await?;
    let root = workspace.root().await?;

    let first = workspace
        .commit_files(
            None,
            &[file("src/lib.rs", "one\n")],
            "implement@v1",
            &limits(),
        )
        .await?;
    assert_eq!(first.parent, root);
    assert_eq!(workspace.head().await?, first.id);

    let second = workspace
        .commit_files(
            None,
            &[file("src/lib.rs", "two\n")],
            "implement@v2",
            &limits(),
        )
        .await?;
    assert_eq!(second.parent, first.id);
    assert_eq!(workspace.head().await?, second.id);
    assert_eq!(workspace.root().await?, root);

    let history = log(workspace.dir());
    assert_eq!(history.len(), 3, "{history:?}");
    assert_eq!(
        history[0],
        format!("{} {} implement@v2", second.id, first.id)
    );
    assert_eq!(history[1], format!("{} {} implement@v1", first.id, root));
    Ok(())
}

#[tokio::test]
async fn a_commit_goes_through_the_locks_of_a_worker_killed_mid_commit() -> TestResult {
    let data = tempfile::tempdir()?;
    let workspace = TaskWorkspace::open(data.path(), TaskId::new()).await?;
    let git_dir = workspace.dir().join(".git");
    let branch = std::fs::read_to_string(git_dir.join("HEAD"))?
        .trim()
        .strip_prefix("ref: ")
        .map(str::to_owned)
        .ok_or("HEAD is not a symbolic reference")?;
    // What `git update-index` and `git update-ref` leave when their process is SIGKILLed.
    let locks = [
        git_dir.join("index.lock"),
        git_dir.join("HEAD.lock"),
        git_dir.join(format!("{branch}.lock")),
    ];
    for lock in &locks {
        std::fs::write(lock, "")?;
    }
    let commit = workspace
        .commit_files(
            None,
            &[file("main.py", "print('hi')\n")],
            "implement@v1",
            &limits(),
        )
        .await?;
    assert_eq!(workspace.head().await?, commit.id);
    for lock in &locks {
        assert!(!lock.exists(), "{} is still there", lock.display());
    }
    Ok(())
}

#[tokio::test]
async fn a_new_attempt_replaces_the_whole_tree() -> TestResult {
    let data = tempfile::tempdir()?;
    let workspace = TaskWorkspace::open(data.path(), TaskId::new()).await?;
    let first = workspace
        .commit_files(
            None,
            &[
                file("src/lib.rs", "v1\n"),
                file("src/old.rs", "dropped later\n"),
            ],
            "implement@v1",
            &limits(),
        )
        .await?;
    assert_eq!(
        paths_at(&workspace, &first.id).await,
        ["src/lib.rs", "src/old.rs"]
    );
    // Leftovers of a test run are cleaned away too.
    std::fs::write(workspace.dir().join("target.log"), "leftover")?;

    let second = workspace
        .commit_files(
            None,
            &[file("src/lib.rs", "v2\n")],
            "implement@v2",
            &limits(),
        )
        .await?;
    assert_eq!(second.parent, first.id, "history stays linear");
    assert_eq!(
        workspace.files_at(&second.id).await?,
        vec![("src/lib.rs".to_string(), b"v2\n".to_vec())]
    );
    assert_eq!(tree(workspace.dir()), ["src", "src/lib.rs"]);
    assert_eq!(
        std::fs::read_to_string(workspace.dir().join("src/lib.rs"))?,
        "v2\n"
    );
    let status = std::process::Command::new("git")
        .arg("-C")
        .arg(workspace.dir())
        .args(["status", "--porcelain", "--untracked-files=all"])
        .output()?;
    assert!(status.status.success(), "{status:?}");
    assert!(
        status.stdout.is_empty(),
        "work tree and index match the commit: {status:?}"
    );
    Ok(())
}

#[tokio::test]
async fn tests_are_committed_on_top_of_the_implementation() -> TestResult {
    let data = tempfile::tempdir()?;
    let workspace = TaskWorkspace::open(data.path(), TaskId::new()).await?;
    let implementation = workspace
        .commit_files(
            None,
            &[
                file("src/lib.rs", "pub fn f() {}\n"),
                file("README.md", "f\n"),
            ],
            "implement@v1",
            &limits(),
        )
        .await?;

    let tests = workspace
        .commit_files(
            Some(&implementation.id),
            &[file("tests/first.rs", "#[test] fn a() {}\n")],
            "test@v1",
            &limits(),
        )
        .await?;
    assert_eq!(tests.parent, implementation.id);
    assert_eq!(
        paths_at(&workspace, &tests.id).await,
        ["README.md", "src/lib.rs", "tests/first.rs"]
    );
    assert_eq!(
        tree(workspace.dir()),
        ["README.md", "src", "src/lib.rs", "tests", "tests/first.rs"]
    );

    // A second test attempt starts again from the implementation: the first tests are gone.
    let retry = workspace
        .commit_files(
            Some(&implementation.id),
            &[file("tests/second.rs", "#[test] fn b() {}\n")],
            "test@v2",
            &limits(),
        )
        .await?;
    assert_eq!(retry.parent, tests.id, "history stays linear");
    let files = workspace.files_at(&retry.id).await?;
    assert_eq!(
        files,
        vec![
            ("README.md".to_string(), b"f\n".to_vec()),
            ("src/lib.rs".to_string(), b"pub fn f() {}\n".to_vec()),
            (
                "tests/second.rs".to_string(),
                b"#[test] fn b() {}\n".to_vec()
            ),
        ]
    );
    assert!(!workspace.dir().join("tests/first.rs").exists());

    // A file given replaces the base's file, and a clash of file and directory goes to the
    // new files.
    let over = workspace
        .commit_files(
            Some(&implementation.id),
            &[file("src/lib.rs", "changed\n"), file("README.md/x", "y")],
            "test@v3",
            &limits(),
        )
        .await?;
    assert_eq!(
        workspace.files_at(&over.id).await?,
        vec![
            ("README.md/x".to_string(), b"y".to_vec()),
            ("src/lib.rs".to_string(), b"changed\n".to_vec()),
        ]
    );

    // The root (an empty tree) works as a base too.
    let root = workspace.root().await?;
    let on_root = workspace
        .commit_files(Some(&root), &[file("a.txt", "a")], "from root", &limits())
        .await?;
    assert_eq!(paths_at(&workspace, &on_root.id).await, ["a.txt"]);
    assert_eq!(log(workspace.dir()).len(), 6);
    Ok(())
}

#[tokio::test]
async fn files_are_committed_byte_for_byte() -> TestResult {
    let data = tempfile::tempdir()?;
    let workspace = TaskWorkspace::open(data.path(), TaskId::new()).await?;
    let files = [
        file(".gitattributes", "* text eol=crlf\n"),
        file(".gitignore", "*.log\n"),
        file("build.log", "ignored, but given\n"),
        file("dos.txt", "a\r\nb\n"),
        file("empty", ""),
    ];
    let commit = workspace
        .commit_files(None, &files, "bytes", &limits())
        .await?;
    let stored = workspace.files_at(&commit.id).await?;
    let expected: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|f| (f.path.clone(), f.content.clone().into_bytes()))
        .collect();
    assert_eq!(stored, expected);
    Ok(())
}

#[tokio::test]
async fn diff_shows_the_changed_line() -> TestResult {
    let data = tempfile::tempdir()?;
    let workspace = TaskWorkspace::open(data.path(), TaskId::new()).await?;
    let root = workspace.root().await?;
    let first = workspace
        .commit_files(
            None,
            &[file("src/lib.rs", "fn a() {}\nfn b() { 1 }\n")],
            "v1",
            &limits(),
        )
        .await?;
    let second = workspace
        .commit_files(
            None,
            &[file("src/lib.rs", "fn a() {}\nfn b() { 2 }\n")],
            "v2",
            &limits(),
        )
        .await?;
    let diff = workspace.diff(&first.id, &second.id).await?;
    assert!(
        diff.contains("diff --git a/src/lib.rs b/src/lib.rs"),
        "{diff}"
    );
    assert!(diff.contains("\n-fn b() { 1 }\n"), "{diff}");
    assert!(diff.contains("\n+fn b() { 2 }\n"), "{diff}");
    assert!(!diff.contains('\u{1b}'), "no color codes: {diff}");

    let whole = workspace.diff(&root, &second.id).await?;
    assert!(whole.contains("new file mode 100644"), "{whole}");
    assert!(workspace.diff(&second.id, &second.id).await?.is_empty());
    Ok(())
}

#[test]
fn check_files_refuses_bad_paths_and_names_them() {
    let refused = [
        "../../etc/x",
        "/etc/passwd",
        "a/../../b",
        ".git/hooks/pre-commit",
        "src/.GIT/config",
        "C:\\x",
        "C:x",
        "\\x",
        "a\\b",
        "a//b",
        "./a",
        "a/./b",
        "a/",
        "a\0b",
        "a\nb",
    ];
    for path in refused {
        match check_files(&[file(path, "x")], &limits()) {
            Err(WorkspaceError::Path {
                path: named,
                problem,
            }) => {
                assert_eq!(named, path);
                assert!(!problem.is_empty());
                let message = WorkspaceError::Path {
                    path: named,
                    problem,
                }
                .to_string();
                assert!(message.contains(&format!("{path:?}")), "{message}");
            }
            other => panic!("{path:?} was not refused as a path: {other:?}"),
        }
    }
    match check_files(&[file("", "x")], &limits()) {
        Err(WorkspaceError::Path { problem, .. }) => assert!(problem.contains("empty")),
        other => panic!("the empty path was not refused: {other:?}"),
    }
    let long = "a/".repeat(100) + "b";
    assert!(matches!(
        check_files(&[file(&long, "x")], &limits()),
        Err(WorkspaceError::Path { .. })
    ));
    let fine = [
        file("src/main.rs", "x"),
        file(".github/workflows/ci.yml", "x"),
        file("a..b/c.txt", "x"),
        file(".gitignore", "x"),
    ];
    assert!(check_files(&fine, &limits()).is_ok());
}

#[test]
fn check_files_enforces_the_limits() {
    let small = WorkspaceLimits {
        max_files: 2,
        max_file_bytes: 10,
        max_total_bytes: 15,
        max_path_bytes: 20,
    };
    let too_many = [file("a", ""), file("b", ""), file("c", "")];
    match check_files(&too_many, &small) {
        Err(WorkspaceError::Limit(message)) => {
            assert!(
                message.contains("3 files") && message.contains('2'),
                "{message}"
            )
        }
        other => panic!("too many files accepted: {other:?}"),
    }
    match check_files(&[file("big.txt", "01234567890")], &small) {
        Err(WorkspaceError::Limit(message)) => {
            assert!(
                message.contains("big.txt") && message.contains("11 bytes"),
                "{message}"
            )
        }
        other => panic!("a too large file accepted: {other:?}"),
    }
    match check_files(&[file("a", "0123456789"), file("b", "012345")], &small) {
        Err(WorkspaceError::Limit(message)) => assert!(message.contains("16 bytes"), "{message}"),
        other => panic!("too many bytes accepted: {other:?}"),
    }
    match check_files(&[file("a/b/c/d/e/f/g/h/i/j/k", "")], &small) {
        Err(WorkspaceError::Path { problem, .. }) => {
            assert!(problem.contains("limit"), "{problem}")
        }
        other => panic!("a too long path accepted: {other:?}"),
    }
    assert!(check_files(&[file("a", "0123456789"), file("b", "01234")], &small).is_ok());
}

#[test]
fn check_files_refuses_duplicates_and_file_directory_clashes() {
    match check_files(&[file("src/a.rs", "1"), file("src/a.rs", "2")], &limits()) {
        Err(WorkspaceError::Path { path, problem }) => {
            assert_eq!(path, "src/a.rs");
            assert!(problem.contains("more than once"), "{problem}");
        }
        other => panic!("a duplicate accepted: {other:?}"),
    }
    for files in [
        [file("a", "1"), file("a/b", "2")],
        [file("a/b", "2"), file("a", "1")],
    ] {
        match check_files(&files, &limits()) {
            Err(WorkspaceError::Path { path, problem }) => {
                assert_eq!(path, "a/b");
                assert!(problem.contains("\"a\""), "{problem}");
            }
            other => panic!("a file-directory clash accepted: {other:?}"),
        }
    }
}

#[tokio::test]
async fn refused_files_change_nothing() -> TestResult {
    let data = tempfile::tempdir()?;
    let workspace = TaskWorkspace::open(data.path(), TaskId::new()).await?;
    let good = workspace
        .commit_files(None, &[file("keep.txt", "kept")], "good", &limits())
        .await?;
    let bad: [&[FileContent]; 4] = [
        &[file("../../etc/x", "x")],
        &[file("/etc/passwd", "x")],
        &[file("ok.txt", "x"), file(".git/hooks/pre-commit", "x")],
        &[file("ok.txt", "x"), file("ok.txt", "y")],
    ];
    for files in bad {
        let refused = workspace.commit_files(None, files, "bad", &limits()).await;
        assert!(
            matches!(refused, Err(WorkspaceError::Path { .. })),
            "{files:?}: {refused:?}"
        );
    }
    let big = "x".repeat(2 * 1024 * 1024);
    let refused = workspace
        .commit_files(None, &[file("big.txt", &big)], "big", &limits())
        .await;
    assert!(
        matches!(refused, Err(WorkspaceError::Limit(_))),
        "{refused:?}"
    );
    assert_eq!(workspace.head().await?, good.id);
    assert_eq!(tree(workspace.dir()), ["keep.txt"]);
    assert!(!workspace.dir().join(".git/hooks/pre-commit").exists());
    Ok(())
}

#[cfg(unix)]
#[tokio::test]
async fn a_planted_symlink_never_leads_outside() -> TestResult {
    let root = tempfile::tempdir()?;
    let data = root.path().join("data");
    let outside = root.path().join("outside");
    std::fs::create_dir(&outside)?;
    let workspace = TaskWorkspace::open(&data, TaskId::new()).await?;

    // A test run leaves links to outside in the work tree: a directory and a file.
    std::os::unix::fs::symlink(&outside, workspace.dir().join("out"))?;
    std::fs::write(outside.join("victim.txt"), "untouched")?;
    std::os::unix::fs::symlink(
        outside.join("victim.txt"),
        workspace.dir().join("victim.txt"),
    )?;

    let commit = workspace
        .commit_files(
            None,
            &[file("out/x", "inside"), file("victim.txt", "replaced")],
            "through links",
            &limits(),
        )
        .await?;
    let entries: Vec<_> = std::fs::read_dir(&outside)?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(entries, ["victim.txt"], "nothing new outside");
    assert_eq!(
        std::fs::read_to_string(outside.join("victim.txt"))?,
        "untouched"
    );
    let out = workspace.dir().join("out");
    assert!(
        std::fs::symlink_metadata(&out)?.is_dir(),
        "the link was replaced by a directory"
    );
    assert_eq!(std::fs::read_to_string(out.join("x"))?, "inside");
    assert_eq!(
        workspace.files_at(&commit.id).await?,
        vec![
            ("out/x".to_string(), b"inside".to_vec()),
            ("victim.txt".to_string(), b"replaced".to_vec()),
        ]
    );
    Ok(())
}

#[cfg(unix)]
#[tokio::test]
async fn nothing_is_written_outside_the_data_dir() -> TestResult {
    let root = tempfile::tempdir()?;
    let data = root.path().join("data");
    let sibling = root.path().join("sibling");
    std::fs::create_dir(&sibling)?;
    let workspace = TaskWorkspace::open(&data, TaskId::new()).await?;
    let hostile = [
        file("../../sibling/x", "x"),
        file("../sibling/x", "x"),
        file("/tmp/x", "x"),
        file(".git/../../sibling/x", "x"),
        file("a/../../../sibling/x", "x"),
    ];
    for hostile in hostile {
        assert!(
            workspace
                .commit_files(None, std::slice::from_ref(&hostile), "hostile", &limits())
                .await
                .is_err(),
            "{hostile:?}"
        );
    }
    workspace
        .commit_files(None, &[file("fine.txt", "x")], "fine", &limits())
        .await?;
    assert_eq!(
        std::fs::read_dir(&sibling)?.count(),
        0,
        "the sibling stays empty"
    );
    let top: Vec<_> = std::fs::read_dir(root.path())?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(top.len(), 2, "only data and sibling: {top:?}");
    Ok(())
}

#[cfg(unix)]
#[tokio::test]
async fn a_symlinked_task_or_workspace_dir_is_refused() -> TestResult {
    let root = tempfile::tempdir()?;
    let data = root.path().join("data");
    let outside = root.path().join("outside");
    std::fs::create_dir_all(&data)?;
    std::fs::create_dir(&outside)?;

    let task = TaskId::new();
    std::os::unix::fs::symlink(&outside, data.join(task.to_string()))?;
    let refused = TaskWorkspace::open(&data, task).await;
    assert!(
        matches!(refused, Err(WorkspaceError::Io { .. })),
        "{refused:?}"
    );
    assert!(
        refused.is_err_and(|e| e.to_string().contains("symbolic link")),
        "the error says why"
    );

    let task = TaskId::new();
    std::fs::create_dir(data.join(task.to_string()))?;
    std::os::unix::fs::symlink(&outside, data.join(task.to_string()).join("workspace"))?;
    assert!(TaskWorkspace::open(&data, task).await.is_err());

    assert_eq!(
        std::fs::read_dir(&outside)?.count(),
        0,
        "nothing written outside"
    );
    Ok(())
}

#[cfg(unix)]
#[tokio::test]
async fn a_task_dir_swapped_for_a_symlink_later_is_refused() -> TestResult {
    let root = tempfile::tempdir()?;
    let data = root.path().join("data");
    let outside = root.path().join("outside");
    std::fs::create_dir(&outside)?;
    let task = TaskId::new();
    let workspace = TaskWorkspace::open(&data, task).await?;
    let task_dir = data.join(task.to_string());
    std::fs::rename(&task_dir, root.path().join("moved"))?;
    std::os::unix::fs::symlink(&outside, &task_dir)?;
    let refused = workspace
        .commit_files(None, &[file("x", "x")], "x", &limits())
        .await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(
        std::fs::read_dir(&outside)?.count(),
        0,
        "nothing written outside"
    );
    Ok(())
}

#[tokio::test]
async fn a_relative_data_dir_works() -> TestResult {
    let data = tempfile::tempdir_in(".")?;
    let relative = data
        .path()
        .file_name()
        .map(std::path::PathBuf::from)
        .expect("a temp dir has a name");
    let workspace = TaskWorkspace::open(&relative, TaskId::new()).await?;
    assert!(workspace.dir().is_absolute());
    let commit = workspace
        .commit_files(None, &[file("a", "a")], "relative", &limits())
        .await?;
    assert_eq!(paths_at(&workspace, &commit.id).await, ["a"]);
    Ok(())
}

#[tokio::test]
async fn a_file_left_by_a_run_is_read_only_when_reached_without_links() -> TestResult {
    let data = tempfile::tempdir()?;
    let outside = tempfile::tempdir()?;
    std::fs::write(outside.path().join("secret.xml"), "outside")?;
    let workspace = TaskWorkspace::open(data.path(), TaskId::new()).await?;
    std::fs::create_dir_all(workspace.dir().join("reports"))?;
    std::fs::write(workspace.dir().join("reports/junit.xml"), "<testsuite/>")?;
    std::os::unix::fs::symlink(outside.path(), workspace.dir().join("linked"))?;
    std::os::unix::fs::symlink(
        outside.path().join("secret.xml"),
        workspace.dir().join("report.xml"),
    )?;
    assert_eq!(
        workspace
            .read_run_file("reports/junit.xml", 1024)
            .await
            .as_deref(),
        Some("<testsuite/>")
    );
    for refused in [
        "linked/secret.xml",
        "report.xml",
        "../secret.xml",
        "/etc/passwd",
    ] {
        assert_eq!(
            workspace.read_run_file(refused, 1024).await,
            None,
            "{refused}"
        );
    }
    assert_eq!(
        workspace.read_run_file("reports/junit.xml", 4).await,
        None,
        "too large"
    );
    Ok(())
}

/// The inode and modification time of `path`: what changes when a file is rewritten.
#[cfg(unix)]
fn identity(path: &Path) -> std::io::Result<(u64, std::time::SystemTime)> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::symlink_metadata(path)?;
    Ok((metadata.ino(), metadata.modified()?))
}

#[cfg(unix)]
#[tokio::test]
async fn only_what_differs_is_rewritten_and_what_a_run_changed_is_restored() -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    let data = tempfile::tempdir()?;
    let workspace = TaskWorkspace::open(data.path(), TaskId::new()).await?;
    let files = [
        file("src/lib.rs", "pub fn a() {}\n"),
        file("src/same_size.rs", "one\n"),
        file("src/grown.rs", "short\n"),
        file("scripts/run.sh", "echo run\n"),
        file("README.md", "unchanged\n"),
    ];
    let first = workspace
        .commit_files(None, &files, "implement@v1", &limits())
        .await?;
    let dir = workspace.dir();
    let unchanged = [dir.join("src/lib.rs"), dir.join("README.md")];
    let before: Vec<_> = unchanged
        .iter()
        .map(|path| identity(path))
        .collect::<Result<_, _>>()?;
    // File systems with coarse time stamps would not show a rewrite within the same tick.
    std::thread::sleep(std::time::Duration::from_millis(20));

    // A test run edits files: the same size with other bytes, a longer content, a mode.
    std::fs::write(dir.join("src/same_size.rs"), "two\n")?;
    std::fs::write(dir.join("src/grown.rs"), "much longer now\n")?;
    std::fs::set_permissions(
        dir.join("scripts/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )?;

    let removed = workspace.check_out(&first.id).await?;
    assert_eq!(removed, 3, "the three edited files are replaced");
    for (path, expected) in unchanged.iter().zip(&before) {
        assert_eq!(
            &identity(path)?,
            expected,
            "{} is not rewritten",
            path.display()
        );
    }
    for file in &files {
        assert_eq!(std::fs::read_to_string(dir.join(&file.path))?, file.content);
    }
    let mode = std::fs::metadata(dir.join("scripts/run.sh"))?
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0, "the execute bit a run set is gone");

    // A new attempt changes one file: the others stay as they are.
    let second = workspace
        .commit_files(
            None,
            &[
                file("src/lib.rs", "pub fn a() { changed() }\n"),
                file("src/same_size.rs", "one\n"),
                file("src/grown.rs", "short\n"),
                file("scripts/run.sh", "echo run\n"),
                file("README.md", "unchanged\n"),
            ],
            "implement@v2",
            &limits(),
        )
        .await?;
    assert_eq!(identity(&unchanged[1])?, before[1], "README.md is kept");
    assert_eq!(
        std::fs::read_to_string(&unchanged[0])?,
        "pub fn a() { changed() }\n"
    );
    assert_eq!(second.parent, first.id);
    Ok(())
}

#[cfg(unix)]
#[tokio::test]
async fn leftovers_are_removed_at_every_depth_without_following_links() -> TestResult {
    let root = tempfile::tempdir()?;
    let outside = root.path().join("outside");
    std::fs::create_dir(&outside)?;
    std::fs::write(outside.join("keep.txt"), "outside")?;
    let workspace = TaskWorkspace::open(&root.path().join("data"), TaskId::new()).await?;
    let commit = workspace
        .commit_files(
            None,
            &[
                file("src/lib.rs", "lib\n"),
                file("src/deep/mod.rs", "mod\n"),
            ],
            "implement@v1",
            &limits(),
        )
        .await?;
    let dir = workspace.dir();
    // What a test run leaves: files and directories next to the commit's, and links, one of
    // them where a directory of the commit was.
    std::fs::write(dir.join("src/leftover.log"), "log")?;
    std::fs::create_dir_all(dir.join("src/deep/__pycache__/nested"))?;
    std::fs::write(dir.join("src/deep/__pycache__/nested/x.pyc"), "pyc")?;
    std::fs::create_dir(dir.join("target"))?;
    std::os::unix::fs::symlink(&outside, dir.join("src/outside"))?;
    std::os::unix::fs::symlink(outside.join("keep.txt"), dir.join("link.txt"))?;
    std::fs::remove_dir_all(dir.join("src/deep"))?;
    std::os::unix::fs::symlink(&outside, dir.join("src/deep"))?;

    workspace.check_out(&commit.id).await?;
    assert_eq!(
        tree(dir),
        ["src", "src/deep", "src/deep/mod.rs", "src/lib.rs"]
    );
    assert!(std::fs::symlink_metadata(dir.join("src/deep"))?.is_dir());
    let outside_entries: Vec<_> = std::fs::read_dir(&outside)?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(outside_entries, ["keep.txt"], "nothing written outside");
    assert_eq!(
        std::fs::read_to_string(outside.join("keep.txt"))?,
        "outside"
    );
    Ok(())
}

#[tokio::test]
async fn a_file_becomes_a_directory_and_back() -> TestResult {
    let data = tempfile::tempdir()?;
    let workspace = TaskWorkspace::open(data.path(), TaskId::new()).await?;
    let as_file = workspace
        .commit_files(None, &[file("config", "a file\n")], "file", &limits())
        .await?;
    let as_dir = workspace
        .commit_files(
            None,
            &[file("config/app.toml", "in a directory\n")],
            "directory",
            &limits(),
        )
        .await?;
    let dir = workspace.dir();
    assert_eq!(tree(dir), ["config", "config/app.toml"]);

    workspace.check_out(&as_file.id).await?;
    assert_eq!(tree(dir), ["config"]);
    assert_eq!(std::fs::read_to_string(dir.join("config"))?, "a file\n");

    // A test run swaps them itself: the file for a directory…
    std::fs::remove_file(dir.join("config"))?;
    std::fs::create_dir_all(dir.join("config/sub"))?;
    workspace.check_out(&as_file.id).await?;
    assert_eq!(tree(dir), ["config"]);
    assert_eq!(std::fs::read_to_string(dir.join("config"))?, "a file\n");

    workspace.check_out(&as_dir.id).await?;
    assert_eq!(tree(dir), ["config", "config/app.toml"]);
    // …and the directory for a file.
    std::fs::remove_dir_all(dir.join("config"))?;
    std::fs::write(dir.join("config"), "planted")?;
    workspace.check_out(&as_dir.id).await?;
    assert_eq!(tree(dir), ["config", "config/app.toml"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("config/app.toml"))?,
        "in a directory\n"
    );
    Ok(())
}
