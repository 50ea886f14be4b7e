//! `GitHubPublisher` against a local HTTP server that speaks the part of GitHub's REST API it
//! uses (refs, commits, blobs, trees, pull requests), with in-memory state.
#![cfg(feature = "github")]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use agent_pipeline::TaskId;
use agent_pipeline::execution::{CommitId, TaskWorkspace, WorkspaceLimits};
use agent_pipeline::llm::ApiKey;
use agent_pipeline::machine::RetryPolicy;
use agent_pipeline::output::FileContent;
use agent_pipeline::publish::{
    Change, GitHubPublisher, GitHubSettings, PublishError, Published, Publisher,
};
use agent_pipeline::wire::Repository;
use axum::Router;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

const TOKEN: &str = "test-token-5f1d3b7a9c";
const OWNER: &str = "octo-org";
const REPO: &str = "calculator";
const WEB: &str = "https://github.example/octo-org/calculator";

/// One request the server received.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    /// The path below `/api/v3/repos/{owner}/{repo}/`, with the query.
    path: String,
    headers: HeaderMap,
    body: Value,
}

/// A pull request.
#[derive(Debug, Clone)]
struct Pull {
    number: u64,
    head: String,
    base: String,
    title: String,
    body: String,
}

/// A tree: its base tree and its (path, blob) entries.
type Tree = (Option<String>, Vec<(String, String)>);
/// A commit: its tree, parents and message.
type Commit = (String, Vec<String>, String);

/// The fake repository.
#[derive(Debug, Default)]
struct Repo {
    next_id: u64,
    /// `heads/main` → commit.
    refs: HashMap<String, String>,
    blobs: HashMap<String, Vec<u8>>,
    /// tree → (base tree, [(path, blob)]).
    trees: HashMap<String, Tree>,
    /// commit → (tree, parents, message).
    commits: HashMap<String, Commit>,
    /// path → the mode of its last tree entry (`100644`, or `100755` for an executable).
    modes: HashMap<String, String>,
    pulls: Vec<Pull>,
    seen: Vec<Seen>,
    /// Statuses to answer the next requests with, before looking at them.
    fail_next: VecDeque<u16>,
}

impl Repo {
    fn new_sha(&mut self) -> String {
        self.next_id += 1;
        format!("{:040x}", 0xab00_0000_u64 + self.next_id)
    }
}

#[derive(Clone, Default)]
struct Server {
    repo: Arc<Mutex<Repo>>,
}

impl Server {
    fn repo(&self) -> MutexGuard<'_, Repo> {
        self.repo.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn answer(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn not_found() -> Response {
    answer(
        StatusCode::NOT_FOUND,
        json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}),
    )
}

fn pull_json(pull: &Pull) -> Value {
    json!({
        "number": pull.number,
        "state": "open",
        "html_url": format!("{WEB}/pull/{}", pull.number),
        "title": pull.title,
        "head": {"ref": pull.head},
        "base": {"ref": pull.base, "repo": {"full_name": format!("{OWNER}/{REPO}"), "html_url": WEB}},
    })
}

fn str_field(body: &Value, field: &str) -> String {
    body.get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The whole API: one handler that dispatches on method and path.
async fn handle(
    axum::extract::State(server): axum::extract::State<Server>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&body).unwrap_or(Value::String(body))
    };
    let prefix = format!("/api/v3/repos/{OWNER}/{REPO}/");
    let Some(path) = uri.path().strip_prefix(&prefix) else {
        return not_found();
    };
    let path = path.to_owned();
    let query = uri.query().unwrap_or_default().to_owned();
    let mut repo = server.repo();
    repo.seen.push(Seen {
        method: method.clone(),
        path: if query.is_empty() {
            path.clone()
        } else {
            format!("{path}?{query}")
        },
        headers: headers.clone(),
        body: body.clone(),
    });

    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(format!("Bearer {TOKEN}").as_str())
    {
        return answer(
            StatusCode::UNAUTHORIZED,
            json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"}),
        );
    }
    if let Some(status) = repo.fail_next.pop_front() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return answer(status, json!({"message": "Server Error"}));
    }

    let segments: Vec<&str> = path.split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["git", "ref", "heads", branch @ ..]) => {
            let name = format!("heads/{}", branch.join("/"));
            match repo.refs.get(&name) {
                Some(sha) => answer(
                    StatusCode::OK,
                    json!({"ref": format!("refs/{name}"), "object": {"sha": sha, "type": "commit"}}),
                ),
                None => not_found(),
            }
        }
        ("GET", ["git", "commits", sha]) => match repo.commits.get(*sha) {
            Some((tree, parents, message)) => answer(
                StatusCode::OK,
                json!({
                    "sha": sha,
                    "message": message,
                    "tree": {"sha": tree},
                    "parents": parents.iter().map(|p| json!({"sha": p})).collect::<Vec<_>>(),
                }),
            ),
            None => not_found(),
        },
        ("POST", ["git", "blobs"]) => {
            if str_field(&body, "encoding") != "base64" {
                return answer(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"message": "bad encoding"}),
                );
            }
            let Ok(content) = BASE64.decode(str_field(&body, "content")) else {
                return answer(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"message": "bad base64"}),
                );
            };
            let sha = repo.new_sha();
            repo.blobs.insert(sha.clone(), content);
            answer(StatusCode::CREATED, json!({"sha": sha, "url": "blob"}))
        }
        ("POST", ["git", "trees"]) => {
            let base = body
                .get("base_tree")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let mut entries = Vec::new();
            for entry in body
                .get("tree")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let sha = str_field(entry, "sha");
                let mode = str_field(entry, "mode");
                if !matches!(mode.as_str(), "100644" | "100755")
                    || str_field(entry, "type") != "blob"
                    || !repo.blobs.contains_key(&sha)
                {
                    return answer(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        json!({"message": "bad tree entry"}),
                    );
                }
                repo.modes.insert(str_field(entry, "path"), mode);
                entries.push((str_field(entry, "path"), sha));
            }
            let sha = repo.new_sha();
            repo.trees.insert(sha.clone(), (base, entries));
            answer(StatusCode::CREATED, json!({"sha": sha}))
        }
        ("POST", ["git", "commits"]) => {
            let tree = str_field(&body, "tree");
            let parents: Vec<String> = body
                .get("parents")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect();
            if !repo.trees.contains_key(&tree)
                || parents.iter().any(|p| !repo.commits.contains_key(p))
            {
                return answer(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"message": "bad commit"}),
                );
            }
            let sha = repo.new_sha();
            let message = str_field(&body, "message");
            repo.commits.insert(sha.clone(), (tree, parents, message));
            answer(StatusCode::CREATED, json!({"sha": sha}))
        }
        ("POST", ["git", "refs"]) => {
            let full = str_field(&body, "ref");
            let sha = str_field(&body, "sha");
            let Some(name) = full.strip_prefix("refs/").map(str::to_owned) else {
                return answer(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"message": "bad ref"}),
                );
            };
            if repo.refs.contains_key(&name) {
                return answer(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"message": "Reference already exists"}),
                );
            }
            repo.refs.insert(name, sha.clone());
            answer(
                StatusCode::CREATED,
                json!({"ref": full, "object": {"sha": sha}}),
            )
        }
        ("PATCH", ["git", "refs", "heads", branch @ ..]) => {
            let name = format!("heads/{}", branch.join("/"));
            let sha = str_field(&body, "sha");
            let force = body.get("force").and_then(Value::as_bool) == Some(true);
            match repo.refs.get(&name).cloned() {
                None => not_found(),
                Some(old) => {
                    let parents = repo
                        .commits
                        .get(&sha)
                        .map(|c| c.1.clone())
                        .unwrap_or_default();
                    if !force && !parents.contains(&old) {
                        return answer(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            json!({"message": "Update is not a fast forward"}),
                        );
                    }
                    repo.refs.insert(name.clone(), sha.clone());
                    answer(
                        StatusCode::OK,
                        json!({"ref": format!("refs/{name}"), "object": {"sha": sha}}),
                    )
                }
            }
        }
        ("POST", ["pulls"]) => {
            let head = str_field(&body, "head");
            if !repo.refs.contains_key(&format!("heads/{head}")) {
                return answer(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"message": "Validation Failed", "errors": [{"resource": "PullRequest", "field": "head", "code": "invalid"}]}),
                );
            }
            if repo.pulls.iter().any(|p| p.head == head) {
                return answer(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"message": "Validation Failed", "errors": [{"resource": "PullRequest", "code": "custom", "message": format!("A pull request already exists for {OWNER}:{head}.")}]}),
                );
            }
            let pull = Pull {
                number: repo.pulls.len() as u64 + 1,
                head,
                base: str_field(&body, "base"),
                title: str_field(&body, "title"),
                body: str_field(&body, "body"),
            };
            let json = pull_json(&pull);
            repo.pulls.push(pull);
            answer(StatusCode::CREATED, json)
        }
        ("GET", ["pulls"]) => {
            let pairs: HashMap<String, String> = query
                .split('&')
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.replace("%3A", ":").replace("%2F", "/")))
                .collect();
            let wanted = pairs.get("head").cloned().unwrap_or_default();
            let open: Vec<Value> = repo
                .pulls
                .iter()
                .filter(|p| format!("{OWNER}:{}", p.head) == wanted)
                .filter(|_| pairs.get("state").map(String::as_str) == Some("open"))
                .map(pull_json)
                .collect();
            answer(StatusCode::OK, Value::Array(open))
        }
        _ => not_found(),
    }
}

/// Serves the fake API on a random local port, with `main` at a commit that has a README.
async fn start() -> (Server, SocketAddr, String) {
    let server = Server::default();
    let base = {
        let mut repo = server.repo();
        let blob = repo.new_sha();
        repo.blobs.insert(blob.clone(), b"# Calculator\n".to_vec());
        let tree = repo.new_sha();
        repo.trees
            .insert(tree.clone(), (None, vec![("README.md".to_owned(), blob)]));
        let commit = repo.new_sha();
        repo.commits
            .insert(commit.clone(), (tree, Vec::new(), "initial".to_owned()));
        repo.refs.insert("heads/main".to_owned(), commit.clone());
        commit
    };
    let app = Router::new().fallback(handle).with_state(server.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a local port");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (server, addr, base)
}

fn settings(addr: SocketAddr, token: &str) -> GitHubSettings {
    GitHubSettings {
        api_url: format!("http://{addr}/api/v3/"),
        repository: format!("{OWNER}/{REPO}"),
        token: ApiKey::new(token),
        base_branch: "main".to_owned(),
    }
}

/// Quick retries, so that the tests do not wait.
fn publisher(addr: SocketAddr, token: &str) -> GitHubPublisher {
    GitHubPublisher::new(settings(addr, token))
        .expect("a publisher")
        .with_retry_policy(RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
        })
}

fn file(path: &str, content: &str) -> FileContent {
    FileContent {
        path: path.to_owned(),
        content: content.to_owned(),
    }
}

/// A real task workspace with one commit of `files`.
struct Workspace {
    _temp: tempfile::TempDir,
    task_id: TaskId,
    workspace: TaskWorkspace,
}

impl Workspace {
    async fn new() -> Self {
        let temp = tempfile::tempdir().expect("a temporary directory");
        let task_id = TaskId::new();
        let workspace = TaskWorkspace::open(temp.path(), task_id)
            .await
            .expect("a workspace");
        Self {
            _temp: temp,
            task_id,
            workspace,
        }
    }

    async fn commit(&self, files: &[FileContent]) -> CommitId {
        let head = self.workspace.head().await.expect("a head");
        self.workspace
            .commit_files(
                Some(&head),
                files,
                "implementation",
                &WorkspaceLimits::default(),
            )
            .await
            .expect("a commit")
            .id
    }

    async fn publish(
        &self,
        publisher: &GitHubPublisher,
        commit: &CommitId,
    ) -> Result<Published, PublishError> {
        publisher
            .publish(&Change {
                task_id: self.task_id,
                workspace: &self.workspace,
                commit,
                title: "Add a calculator",
                body: "## Design\nadd() and sub()\n\n## Tests\n3 passed",
            })
            .await
    }
}

fn requests(server: &Server) -> Vec<(Method, String)> {
    server
        .repo()
        .seen
        .iter()
        .map(|s| (s.method.clone(), s.path.clone()))
        .collect()
}

#[tokio::test]
async fn first_publish_creates_blobs_tree_commit_branch_and_pull_request() {
    let (server, addr, base) = start().await;
    let ws = Workspace::new().await;
    let commit = ws
        .commit(&[
            file("calc.py", "def add(a, b):\n    return a + b\n"),
            file(
                "tests/test_calc.py",
                "from calc import add\n\ndef test_add():\n    assert add(1, 2) == 3\n",
            ),
        ])
        .await;
    let publisher = publisher(addr, TOKEN);

    let published = ws.publish(&publisher, &commit).await.expect("published");

    let branch = format!("agent/{}", ws.task_id);
    assert_eq!(published.branch, branch);
    assert_eq!(
        published.url.as_deref(),
        Some(format!("{WEB}/pull/1").as_str())
    );
    assert_eq!(published.repository, WEB);

    let files = ws.workspace.files_at(&commit).await.expect("the files");
    let repo = server.repo();
    // The branch points to the new commit, whose parent is the base commit.
    assert_eq!(
        repo.refs.get(&format!("heads/{branch}")),
        Some(&published.commit)
    );
    let (tree, parents, message) = repo.commits.get(&published.commit).expect("the commit");
    assert_eq!(parents, &vec![base.clone()]);
    assert_eq!(
        message,
        "Add a calculator\n\n## Design\nadd() and sub()\n\n## Tests\n3 passed"
    );
    // The tree is on top of the base tree and holds the workspace's files, byte for byte.
    let (base_tree, entries) = repo.trees.get(tree).expect("the tree");
    assert_eq!(base_tree.as_ref(), Some(&repo.commits[&base].0));
    let uploaded: Vec<(String, Vec<u8>)> = entries
        .iter()
        .map(|(path, blob)| (path.clone(), repo.blobs[blob].clone()))
        .collect();
    assert_eq!(uploaded, files);
    assert_eq!(files.len(), 2);
    // The pull request.
    assert_eq!(repo.pulls.len(), 1);
    let pull = &repo.pulls[0];
    assert_eq!(
        (pull.head.as_str(), pull.base.as_str()),
        (branch.as_str(), "main")
    );
    assert_eq!(pull.title, "Add a calculator");
    assert!(pull.body.contains("3 passed"));
    // Every request carried the API's headers.
    for seen in &repo.seen {
        let header = |name: &str| seen.headers.get(name).and_then(|v| v.to_str().ok());
        assert_eq!(header("accept"), Some("application/vnd.github+json"));
        assert_eq!(header("x-github-api-version"), Some("2022-11-28"));
        assert!(header("user-agent").is_some_and(|ua| ua.starts_with("agent-pipeline/")));
    }
    drop(repo);

    let blob_path = "git/blobs".to_owned();
    assert_eq!(
        requests(&server),
        vec![
            (Method::GET, "git/ref/heads/main".to_owned()),
            (Method::GET, format!("git/commits/{base}")),
            (Method::POST, blob_path.clone()),
            (Method::POST, blob_path),
            (Method::POST, "git/trees".to_owned()),
            (Method::POST, "git/commits".to_owned()),
            (Method::POST, "git/refs".to_owned()),
            (Method::POST, "pulls".to_owned()),
        ]
    );
}

/// A repository's executable script is published executable; the files a model wrote are not.
#[tokio::test]
async fn an_executable_file_is_published_as_executable() {
    use std::os::unix::fs::PermissionsExt;
    let (server, addr, _) = start().await;
    let source = tempfile::tempdir().expect("a directory");
    let git = |args: &[&str]| {
        let status = std::process::Command::new("git")
            .arg("-C")
            .arg(source.path())
            .args(["-c", "user.name=t", "-c", "user.email=t@localhost"])
            .args(args)
            .status()
            .expect("git runs");
        assert!(status.success(), "git {args:?}");
    };
    git(&["init", "--quiet", "--initial-branch=main"]);
    let script = source.path().join("run_tests.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").expect("written");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    git(&["add", "."]);
    git(&["commit", "--quiet", "-m", "script"]);
    let temp = tempfile::tempdir().expect("a directory");
    let task_id = TaskId::new();
    let repository = Repository::new(source.path().display().to_string());
    let workspace = TaskWorkspace::open_with(temp.path(), task_id, Some(&repository))
        .await
        .expect("a clone");
    let base = workspace.base().await.expect("a base");
    let commit = workspace
        .commit_files(
            Some(&base),
            &[file("calc.py", "def add(a, b):\n    return a + b\n")],
            "implementation",
            &WorkspaceLimits::default(),
        )
        .await
        .expect("a commit")
        .id;
    let ws = Workspace {
        _temp: temp,
        task_id,
        workspace,
    };
    ws.publish(&publisher(addr, TOKEN), &commit)
        .await
        .expect("published");
    let repo = server.repo();
    assert_eq!(
        repo.modes.get("run_tests.sh").map(String::as_str),
        Some("100755")
    );
    assert_eq!(
        repo.modes.get("calc.py").map(String::as_str),
        Some("100644")
    );
}

#[tokio::test]
async fn a_second_publish_moves_the_branch_and_reuses_the_pull_request() {
    let (server, addr, base) = start().await;
    let ws = Workspace::new().await;
    let publisher = publisher(addr, TOKEN);
    let first = ws
        .commit(&[file("calc.py", "def add(a, b):\n    return a - b\n")])
        .await;
    let first = ws.publish(&publisher, &first).await.expect("first publish");
    let second = ws
        .commit(&[file("calc.py", "def add(a, b):\n    return a + b\n")])
        .await;

    let published = ws
        .publish(&publisher, &second)
        .await
        .expect("second publish");

    assert_ne!(published.commit, first.commit);
    assert_eq!(published.url, first.url);
    let branch = format!("agent/{}", ws.task_id);
    let repo = server.repo();
    assert_eq!(
        repo.refs.get(&format!("heads/{branch}")),
        Some(&published.commit)
    );
    // The new commit starts from the base branch again, not from the first commit.
    assert_eq!(repo.commits[&published.commit].1, vec![base]);
    assert_eq!(repo.pulls.len(), 1);
    let patch = repo
        .seen
        .iter()
        .find(|s| s.method == Method::PATCH)
        .expect("the branch was moved");
    assert_eq!(patch.path, format!("git/refs/heads/{branch}"));
    assert_eq!(patch.body, json!({"sha": published.commit, "force": true}));
    let lookup = repo
        .seen
        .iter()
        .find(|s| s.method == Method::GET && s.path.starts_with("pulls?"))
        .expect("the open pull request was looked up");
    assert!(lookup.path.contains("state=open"), "{}", lookup.path);
    assert!(
        lookup
            .path
            .contains(&format!("head={OWNER}%3Aagent%2F{}", ws.task_id)),
        "{}",
        lookup.path
    );
}

#[tokio::test]
async fn server_errors_are_retried() {
    let (server, addr, _) = start().await;
    let ws = Workspace::new().await;
    let commit = ws.commit(&[file("calc.py", "x = 1\n")]).await;
    server.repo().fail_next.extend([500, 502]);

    let published = ws
        .publish(&publisher(addr, TOKEN), &commit)
        .await
        .expect("published after retries");

    assert!(published.url.is_some());
    let requests = requests(&server);
    let base_reads = requests
        .iter()
        .filter(|(method, path)| *method == Method::GET && path == "git/ref/heads/main")
        .count();
    assert_eq!(base_reads, 3, "{requests:?}");
}

#[tokio::test]
async fn server_errors_give_up_after_the_last_attempt() {
    let (server, addr, _) = start().await;
    let ws = Workspace::new().await;
    let commit = ws.commit(&[file("calc.py", "x = 1\n")]).await;
    server.repo().fail_next.extend([503, 503, 503, 503]);

    let error = ws
        .publish(&publisher(addr, TOKEN), &commit)
        .await
        .expect_err("the server keeps failing");

    assert!(
        matches!(
            error,
            PublishError::Http {
                service: "GitHub",
                status: 503,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.is_retryable());
    assert_eq!(requests(&server).len(), 3);
}

#[tokio::test]
async fn a_bad_token_is_a_clear_error_without_the_token() {
    let (server, addr, _) = start().await;
    let ws = Workspace::new().await;
    let commit = ws.commit(&[file("calc.py", "x = 1\n")]).await;
    let wrong = "wrong-token-8e2c4a6b0d";

    let error = ws
        .publish(&publisher(addr, wrong), &commit)
        .await
        .expect_err("the token is refused");

    let text = error.to_string();
    assert!(
        matches!(error, PublishError::Http { status: 401, .. }),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert!(
        text.contains("GitHub answered 401: Bad credentials"),
        "{text}"
    );
    assert!(text.contains("GITHUB_TOKEN"), "{text}");
    assert!(
        !text.contains(wrong) && !format!("{error:?}").contains(wrong),
        "{text}"
    );
    // Not retried, and the wrong token was what was sent.
    let repo = server.repo();
    assert_eq!(repo.seen.len(), 1);
    assert_eq!(
        repo.seen[0]
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok()),
        Some(format!("Bearer {wrong}").as_str())
    );
}

#[tokio::test]
async fn a_missing_base_branch_is_reported() {
    let (_server, addr, _) = start().await;
    let ws = Workspace::new().await;
    let commit = ws.commit(&[file("calc.py", "x = 1\n")]).await;
    let mut settings = settings(addr, TOKEN);
    settings.base_branch = "release/2.0".to_owned();
    let publisher = GitHubPublisher::new(settings).expect("a publisher");

    let error = ws
        .publish(&publisher, &commit)
        .await
        .expect_err("there is no such branch");

    assert!(
        matches!(error, PublishError::Http { status: 404, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("release/2.0"), "{error}");
}

#[tokio::test]
async fn unreachable_server_is_a_transport_error() {
    // A port that was free a moment ago: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a local port");
    let addr = listener.local_addr().expect("local address");
    drop(listener);
    let ws = Workspace::new().await;
    let commit = ws.commit(&[file("calc.py", "x = 1\n")]).await;

    let error = ws
        .publish(&publisher(addr, TOKEN), &commit)
        .await
        .expect_err("nothing listens");

    assert!(matches!(error, PublishError::Transport(_)), "{error:?}");
    assert!(error.is_retryable());
    assert!(!error.to_string().contains(TOKEN));
}

#[test]
fn the_token_never_shows_in_debug_output() {
    let addr: SocketAddr = ([127, 0, 0, 1], 9).into();
    let settings = settings(addr, TOKEN);
    let debug = format!("{settings:?}");
    assert!(!debug.contains(TOKEN), "{debug}");
    assert!(debug.contains("octo-org/calculator"), "{debug}");
    let publisher = GitHubPublisher::new(settings).expect("a publisher");
    let debug = format!("{publisher:?}");
    assert!(!debug.contains(TOKEN), "{debug}");
    assert_eq!(publisher.name(), "github");
}
