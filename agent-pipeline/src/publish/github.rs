//! Publishing a task's change as a branch and pull request on GitHub, through the REST API
//! only (no `git push`, no git credentials on disk).
//!
//! One [`Publisher::publish`] call:
//!
//! 1. reads the base branch's commit and its tree
//!    (`GET /repos/{o}/{r}/git/ref/heads/{base}`, `GET …/git/commits/{sha}`);
//! 2. uploads every file of the workspace commit as a blob (`POST …/git/blobs`);
//! 3. makes a tree on top of the base tree (`POST …/git/trees`) and a commit whose parent is
//!    the base commit (`POST …/git/commits`);
//! 4. creates the branch `agent/<task_id>` (`POST …/git/refs`), or force-moves it when it
//!    exists (`PATCH …/git/refs/heads/agent/<task_id>`);
//! 5. opens a pull request (`POST …/pulls`), or finds the open one of the branch
//!    (`GET …/pulls?head=<owner>:<branch>&state=open`).
//!
//! Answers 429 and 5xx, and requests that did not get through, are retried with backoff.

use crate::http::{body_message, error_chain};
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER, USER_AGENT};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};

use super::{Change, PublishError, Published, Publisher, branch_name};
use crate::llm::ApiKey;
use crate::machine::{RetryPolicy, random_jitter};

/// The service named in [`PublishError::Http`].
const SERVICE: &str = "GitHub";
/// The REST API version asked for.
const API_VERSION: &str = "2022-11-28";
/// How long one HTTP request may take (blobs can be a few megabytes).
const TIMEOUT: Duration = Duration::from_secs(60);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The default retries: 4 requests in all, 500 ms doubling, at most 10 s, with jitter.
const RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 4,
    base_delay: Duration::from_millis(500),
    max_delay: Duration::from_secs(10),
};
/// The longest wait a server's `Retry-After` may impose on one retry.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(60);
/// How much of an error body goes into an error message, in characters.
const MESSAGE_LIMIT: usize = 300;

/// Where and as whom to publish on GitHub.
///
/// `Debug` shows everything but the token, which is an [`ApiKey`].
///
/// ```
/// use agent_pipeline::publish::GitHubSettings;
///
/// let env = |name: &str| match name {
///     "GITHUB_REPOSITORY" => Some("octo-org/calculator".to_owned()),
///     "GITHUB_TOKEN" => Some("token-from-the-environment".to_owned()),
///     _ => None,
/// };
/// let settings = GitHubSettings::from_lookup(env)?.expect("GITHUB_REPOSITORY is set");
/// assert_eq!(settings.api_url, "https://api.github.com");
/// assert_eq!(settings.base_branch, "main");
/// assert!(!format!("{settings:?}").contains("token-from-the-environment"));
/// # Ok::<(), agent_pipeline::publish::PublishError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitHubSettings {
    /// `GITHUB_API_URL`, default `https://api.github.com` (GitHub Enterprise Server:
    /// `https://<host>/api/v3`).
    pub api_url: String,
    /// `GITHUB_REPOSITORY`, `owner/name`.
    pub repository: String,
    /// `GITHUB_TOKEN`: a token that may write contents and pull requests.
    pub token: ApiKey,
    /// `GITHUB_BASE_BRANCH`, default `main`: what branches start from and pull requests
    /// merge into.
    pub base_branch: String,
}

impl GitHubSettings {
    /// The default of [`GitHubSettings::api_url`].
    pub const DEFAULT_API_URL: &'static str = "https://api.github.com";
    /// The default of [`GitHubSettings::base_branch`].
    pub const DEFAULT_BASE_BRANCH: &'static str = "main";

    /// Settings for `repository` (`owner/name`) on github.com with the default base branch.
    pub fn new(repository: impl Into<String>, token: ApiKey) -> Self {
        Self {
            api_url: Self::DEFAULT_API_URL.to_owned(),
            repository: repository.into(),
            token,
            base_branch: Self::DEFAULT_BASE_BRANCH.to_owned(),
        }
    }

    /// Reads `GITHUB_REPOSITORY`, `GITHUB_TOKEN`, `GITHUB_API_URL` and `GITHUB_BASE_BRANCH`
    /// from the environment; see [`GitHubSettings::from_lookup`].
    ///
    /// # Errors
    ///
    /// As [`GitHubSettings::from_lookup`].
    pub fn from_env() -> Result<Option<Self>, PublishError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup` (the environment, or a configuration file layered
    /// over it). Empty values count as unset; `GITHUB_API_URL` and `GITHUB_BASE_BRANCH` have
    /// defaults.
    ///
    /// Returns `Ok(None)` when `GITHUB_REPOSITORY` is unset: publishing to GitHub is off.
    ///
    /// # Errors
    ///
    /// [`PublishError::Config`] when `GITHUB_REPOSITORY` is not `owner/name` or
    /// `GITHUB_TOKEN` is unset.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, PublishError> {
        let var = |name: &str| {
            lookup(name)
                .map(|value| value.trim().to_owned())
                .filter(|value| !value.is_empty())
        };
        let Some(repository) = var("GITHUB_REPOSITORY") else {
            return Ok(None);
        };
        split_repository(&repository)?;
        let token = var("GITHUB_TOKEN").ok_or_else(|| {
            PublishError::Config(format!(
                "GITHUB_TOKEN is not set; it is needed to publish to the GitHub repository {repository}"
            ))
        })?;
        Ok(Some(Self {
            api_url: var("GITHUB_API_URL").unwrap_or_else(|| Self::DEFAULT_API_URL.to_owned()),
            repository,
            token: ApiKey::new(token),
            base_branch: var("GITHUB_BASE_BRANCH")
                .unwrap_or_else(|| Self::DEFAULT_BASE_BRANCH.to_owned()),
        }))
    }
}

/// `owner/name` split in two, or a configuration error.
fn split_repository(repository: &str) -> Result<(&str, &str), PublishError> {
    let valid = |part: &str| {
        !part.is_empty()
            && part != "."
            && part != ".."
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    match repository.split_once('/') {
        Some((owner, name)) if valid(owner) && valid(name) => Ok((owner, name)),
        _ => Err(PublishError::Config(format!(
            "GITHUB_REPOSITORY must be \"owner/name\", not {repository:?}"
        ))),
    }
}

/// Publishes changes as branches `agent/<task_id>` and pull requests of a GitHub repository.
///
/// The client uses rustls with the ring provider, installs it as the process default when
/// none is (as [`OpenAiLlm`](crate::llm::OpenAiLlm) does), and sends the token only in the
/// `Authorization` header, marked sensitive. `Debug` never shows the token.
///
/// ```no_run
/// use std::sync::Arc;
/// use agent_pipeline::publish::{GitHubPublisher, GitHubSettings, Publisher};
///
/// if let Some(settings) = GitHubSettings::from_env()? {
///     let publisher: Arc<dyn Publisher> = Arc::new(GitHubPublisher::new(settings)?);
///     // Pipeline::builder().publisher(publisher) …
/// #   let _ = publisher;
/// }
/// # Ok::<(), agent_pipeline::publish::PublishError>(())
/// ```
#[derive(Clone)]
pub struct GitHubPublisher {
    settings: GitHubSettings,
    owner: String,
    name: String,
    /// The API's root, `settings.api_url` parsed.
    api: Url,
    /// `Bearer <token>`, marked sensitive so that HTTP libraries do not print it either.
    authorization: HeaderValue,
    client: reqwest::Client,
    retry: RetryPolicy,
}

impl fmt::Debug for GitHubPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Written by hand so that the token cannot leak through a field added later: the
        // settings' `ApiKey` redacts itself and the header value is left out.
        f.debug_struct("GitHubPublisher")
            .field("settings", &self.settings)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl GitHubPublisher {
    /// A publisher to the repository of `settings`.
    ///
    /// # Errors
    ///
    /// [`PublishError::Config`] when the repository is not `owner/name`, the token is empty
    /// or cannot be sent in a header, or the API URL is not an `http(s)` URL;
    /// [`PublishError::Transport`] when the HTTP client cannot be built.
    pub fn new(settings: GitHubSettings) -> Result<Self, PublishError> {
        let (owner, name) = split_repository(&settings.repository)?;
        let (owner, name) = (owner.to_owned(), name.to_owned());
        let token = settings.token.expose().trim();
        if token.is_empty() {
            return Err(PublishError::Config("GITHUB_TOKEN is empty".to_owned()));
        }
        let mut authorization =
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                PublishError::Config(
                    "GITHUB_TOKEN contains characters that cannot be sent in an HTTP header"
                        .to_owned(),
                )
            })?;
        authorization.set_sensitive(true);
        if settings.base_branch.trim().is_empty() {
            return Err(PublishError::Config(
                "GITHUB_BASE_BRANCH is empty".to_owned(),
            ));
        }

        // The URL is not echoed back: it may carry a proxy's credentials.
        let api = Url::parse(settings.api_url.trim())
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
            .ok_or_else(|| {
                PublishError::Config("GITHUB_API_URL is not an http(s) URL".to_owned())
            })?;

        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/vnd.github+json"),
        );
        headers.insert(
            "x-github-api-version",
            HeaderValue::from_static(API_VERSION),
        );
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("agent-pipeline/", env!("CARGO_PKG_VERSION"))),
        );
        // reqwest is built without a default TLS provider; the workspace uses ring. Another
        // part of the process may have installed it already, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .default_headers(headers)
            .build()
            .map_err(|e| {
                PublishError::Transport(format!("cannot build the HTTP client: {}", error_chain(e)))
            })?;

        Ok(Self {
            settings,
            owner,
            name,
            api,
            authorization,
            client,
            retry: RETRY,
        })
    }

    /// The same publisher with another retry policy for failed requests (429, 5xx, no
    /// connection); `max_attempts` counts every request, the first included.
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The settings the publisher was made with.
    pub fn settings(&self) -> &GitHubSettings {
        &self.settings
    }

    /// `{api}/repos/{owner}/{name}/{segments…}`, each segment percent-encoded as needed.
    fn endpoint<'a>(&self, segments: impl IntoIterator<Item = &'a str>) -> Url {
        let mut url = self.api.clone();
        // `new` checked that the URL has a host, so it can be a base.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty()
                .extend(["repos", self.owner.as_str(), self.name.as_str()])
                .extend(segments);
        }
        url
    }

    /// The repository's web address when the API does not say: github.com for
    /// `api.github.com`, else the API's host.
    fn web_url(&self) -> String {
        let repository = &self.settings.repository;
        match self.api.host_str() {
            Some("api.github.com") | None => format!("https://github.com/{repository}"),
            Some(host) => match self.api.port() {
                Some(port) => format!("{}://{host}:{port}/{repository}", self.api.scheme()),
                None => format!("{}://{host}/{repository}", self.api.scheme()),
            },
        }
    }

    /// Makes a request, retrying as the policy allows, and returns the answer's JSON
    /// (`null` for an empty body). `what` says what the request is for, in errors and logs.
    async fn call(
        &self,
        what: &str,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<Value, PublishError> {
        let max_attempts = self.retry.max_attempts.max(1);
        let mut attempt: u32 = 1;
        loop {
            tracing::debug!(method = %method, path = url.path(), attempt, "calling GitHub: {what}");
            let (error, wait_hint) = match self.attempt(what, &method, &url, body).await {
                Attempt::Done(value) => return Ok(value),
                Attempt::Fail(error) => return Err(error),
                Attempt::Retry(error, wait_hint) => (error, wait_hint),
            };
            if attempt >= max_attempts {
                tracing::warn!(method = %method, path = url.path(), attempt, %error, "GitHub request failed, no attempts left");
                return Err(error);
            }
            let wait = wait_hint.unwrap_or_else(|| self.retry.backoff(attempt, random_jitter()));
            tracing::warn!(
                method = %method,
                path = url.path(),
                attempt,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                %error,
                "GitHub request failed, retrying"
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// Makes one HTTP request and sorts its outcome.
    async fn attempt(
        &self,
        what: &str,
        method: &Method,
        url: &Url,
        body: Option<&Value>,
    ) -> Attempt {
        let mut request = self
            .client
            .request(method.clone(), url.clone())
            .header(AUTHORIZATION, self.authorization.clone());
        if let Some(body) = body {
            request = request.json(body);
        }
        let transport = |e: reqwest::Error| {
            PublishError::Transport(format!(
                "GitHub could not be reached ({what}): {}",
                error_chain(e)
            ))
        };
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return Attempt::Retry(transport(e), None),
        };
        let status = response.status();
        let headers = response.headers().clone();
        let text = match response.text().await {
            Ok(text) => text,
            Err(e) => return Attempt::Retry(transport(e), None),
        };
        tracing::debug!(method = %method, path = url.path(), status = status.as_u16(), "GitHub answered");

        if status.is_success() {
            if text.trim().is_empty() {
                return Attempt::Done(Value::Null);
            }
            return match serde_json::from_str(&text) {
                Ok(value) => Attempt::Done(value),
                Err(e) => Attempt::Fail(PublishError::Transport(format!(
                    "GitHub's answer ({what}) is not JSON: {e}"
                ))),
            };
        }
        let code = status.as_u16();
        let mut message = format!("{} ({what})", error_message(&text));
        if status == StatusCode::UNAUTHORIZED {
            message.push_str("; check GITHUB_TOKEN");
        }
        let error = PublishError::Http {
            service: SERVICE,
            status: code,
            message,
        };
        let rate_limited = status == StatusCode::FORBIDDEN
            && (headers.contains_key(RETRY_AFTER)
                || headers
                    .get("x-ratelimit-remaining")
                    .is_some_and(|v| v.as_bytes() == b"0"));
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() || rate_limited {
            Attempt::Retry(error, retry_after(&headers))
        } else {
            Attempt::Fail(error)
        }
    }
}

/// What one HTTP request came to.
enum Attempt {
    /// A successful answer's JSON.
    Done(Value),
    /// An error that another request would not fix.
    Fail(PublishError),
    /// An error that another request may fix, with the server's wish of how long to wait.
    Retry(PublishError, Option<Duration>),
}

#[async_trait]
impl Publisher for GitHubPublisher {
    fn name(&self) -> &str {
        "github"
    }

    async fn publish(&self, change: &Change<'_>) -> Result<Published, PublishError> {
        let branch = branch_name(change.task_id);
        let base = self.settings.base_branch.trim();
        let repository = &self.settings.repository;
        let files = change.workspace.files_at(change.commit).await?;
        let executable = change.workspace.executables_at(change.commit).await?;
        tracing::info!(
            task_id = %change.task_id,
            repository = %repository,
            branch = %branch,
            files = files.len(),
            "publishing to GitHub"
        );

        // 1. The base branch's commit and tree.
        let what = format!("reading branch {base} of {repository}");
        let url = self.endpoint(["git", "ref", "heads"].into_iter().chain(base.split('/')));
        let base_ref = self.call(&what, Method::GET, url, None).await?;
        let base_sha = string_at(&base_ref, "/object/sha", &what)?;
        let what = format!("reading commit {base_sha}");
        let url = self.endpoint(["git", "commits", base_sha.as_str()]);
        let base_commit = self.call(&what, Method::GET, url, None).await?;
        let base_tree = string_at(&base_commit, "/tree/sha", &what)?;

        // 2. The files, as blobs.
        let mut entries = Vec::with_capacity(files.len());
        for (path, content) in &files {
            let what = format!("uploading {path}");
            let body = json!({"content": BASE64.encode(content), "encoding": "base64"});
            let blob = self
                .call(
                    &what,
                    Method::POST,
                    self.endpoint(["git", "blobs"]),
                    Some(&body),
                )
                .await?;
            let sha = string_at(&blob, "/sha", &what)?;
            let mode = if executable.contains(path) {
                "100755"
            } else {
                "100644"
            };
            entries.push(json!({"path": path, "mode": mode, "type": "blob", "sha": sha}));
        }

        // 3. The tree and the commit.
        let tree = if entries.is_empty() {
            base_tree
        } else {
            let what = "creating the tree";
            let body = json!({"base_tree": base_tree, "tree": entries});
            let tree = self
                .call(
                    what,
                    Method::POST,
                    self.endpoint(["git", "trees"]),
                    Some(&body),
                )
                .await?;
            string_at(&tree, "/sha", what)?
        };
        let message = if change.body.trim().is_empty() {
            change.title.to_owned()
        } else {
            format!("{}\n\n{}", change.title, change.body)
        };
        let what = "creating the commit";
        let body = json!({"message": message, "tree": tree, "parents": [base_sha]});
        let commit = self
            .call(
                what,
                Method::POST,
                self.endpoint(["git", "commits"]),
                Some(&body),
            )
            .await?;
        let commit = string_at(&commit, "/sha", what)?;

        // 4. The branch: created, or moved when it exists.
        let what = format!("creating branch {branch}");
        let body = json!({"ref": format!("refs/heads/{branch}"), "sha": commit});
        match self
            .call(
                &what,
                Method::POST,
                self.endpoint(["git", "refs"]),
                Some(&body),
            )
            .await
        {
            Ok(_) => {}
            Err(PublishError::Http { status: 422, .. }) => {
                let what = format!("moving branch {branch}");
                let url = self.endpoint(
                    ["git", "refs", "heads"]
                        .into_iter()
                        .chain(branch.split('/')),
                );
                let body = json!({"sha": commit, "force": true});
                self.call(&what, Method::PATCH, url, Some(&body)).await?;
            }
            Err(error) => return Err(error),
        }

        // 5. The pull request: opened, or the open one of the branch.
        let what = format!("opening a pull request from {branch} into {base}");
        let title = if change.title.trim().is_empty() {
            branch.as_str()
        } else {
            change.title
        };
        let body = json!({"title": title, "head": branch, "base": base, "body": change.body});
        let pull = match self
            .call(&what, Method::POST, self.endpoint(["pulls"]), Some(&body))
            .await
        {
            Ok(pull) => pull,
            Err(error @ PublishError::Http { status: 422, .. }) => {
                let mut url = self.endpoint(["pulls"]);
                url.query_pairs_mut()
                    .append_pair("head", &format!("{}:{branch}", self.owner))
                    .append_pair("state", "open");
                let what = format!("finding the open pull request of {branch}");
                let pulls = self.call(&what, Method::GET, url, None).await?;
                match pulls.as_array().and_then(|pulls| pulls.first()) {
                    Some(pull) => pull.clone(),
                    // Not because one exists (e.g. nothing to merge): the first error says why.
                    None => return Err(error),
                }
            }
            Err(error) => return Err(error),
        };
        let url = pull
            .get("html_url")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let web = pull
            .pointer("/base/repo/html_url")
            .and_then(Value::as_str)
            .map_or_else(|| self.web_url(), str::to_owned);
        tracing::info!(
            task_id = %change.task_id,
            repository = %repository,
            branch = %branch,
            commit = %commit,
            pull_request = url.as_deref().unwrap_or("-"),
            "published to GitHub"
        );
        Ok(Published {
            branch,
            commit,
            repository: web,
            url,
        })
    }
}

/// The string at `pointer` in an answer, or an error that says the answer is not what GitHub
/// sends.
fn string_at(value: &Value, pointer: &str, what: &str) -> Result<String, PublishError> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| {
            PublishError::Transport(format!(
                "GitHub's answer ({what}) has no {}",
                pointer.trim_start_matches('/').replace('/', ".")
            ))
        })
}

/// The explanation in an error body: GitHub's `message`, with the `message`s of its
/// `errors` list, else the body itself, shortened.
fn error_message(body: &str) -> String {
    let from_json = serde_json::from_str::<Value>(body).ok().and_then(|value| {
        let message = value.get("message")?.as_str()?.to_owned();
        let details: Vec<&str> = value
            .get("errors")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|error| error.get("message").and_then(Value::as_str))
            .collect();
        Some(if details.is_empty() {
            message
        } else {
            format!("{message}: {}", details.join("; "))
        })
    });
    body_message(from_json, body, MESSAGE_LIMIT)
}

/// The wait a server asks for in `Retry-After` (whole seconds; HTTP dates are ignored), at
/// most [`RETRY_AFTER_CAP`].
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|seconds| Duration::from_secs(seconds).min(RETRY_AFTER_CAP))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn no_repository_means_no_github() {
        let settings = GitHubSettings::from_lookup(lookup(&[("GITHUB_TOKEN", "t0ken-value")]));
        assert!(matches!(settings, Ok(None)));
        let blank = GitHubSettings::from_lookup(lookup(&[("GITHUB_REPOSITORY", "  ")]));
        assert!(matches!(blank, Ok(None)));
    }

    #[test]
    fn reads_all_four_variables() {
        let settings = GitHubSettings::from_lookup(lookup(&[
            ("GITHUB_REPOSITORY", "octo-org/calc.rs"),
            ("GITHUB_TOKEN", " t0ken-value\n"),
            ("GITHUB_API_URL", "https://ghe.example.com/api/v3"),
            ("GITHUB_BASE_BRANCH", "develop"),
        ]))
        .expect("valid settings")
        .expect("GITHUB_REPOSITORY is set");
        assert_eq!(settings.repository, "octo-org/calc.rs");
        assert_eq!(settings.token.expose(), "t0ken-value");
        assert_eq!(settings.api_url, "https://ghe.example.com/api/v3");
        assert_eq!(settings.base_branch, "develop");

        let defaults = GitHubSettings::from_lookup(lookup(&[
            ("GITHUB_REPOSITORY", "o/r"),
            ("GITHUB_TOKEN", "t0ken-value"),
            ("GITHUB_API_URL", ""),
        ]))
        .expect("valid settings")
        .expect("GITHUB_REPOSITORY is set");
        assert_eq!(
            defaults,
            GitHubSettings::new("o/r", ApiKey::new("t0ken-value"))
        );
    }

    #[test]
    fn configuration_errors() {
        for repository in [
            "calc",
            "o/r/x",
            "/r",
            "o/",
            "o/..",
            "o r/calc",
            "https://github.com/o/r",
        ] {
            let result = GitHubSettings::from_lookup(lookup(&[
                ("GITHUB_REPOSITORY", repository),
                ("GITHUB_TOKEN", "t0ken-value"),
            ]));
            match result {
                Err(PublishError::Config(message)) => {
                    assert!(message.contains("owner/name"), "{message}");
                }
                other => panic!("{repository:?}: {other:?}"),
            }
        }
        match GitHubSettings::from_lookup(lookup(&[("GITHUB_REPOSITORY", "o/r")])) {
            Err(PublishError::Config(message)) => {
                assert!(message.starts_with("GITHUB_TOKEN is not set"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn publisher_checks_its_settings() {
        let token = ApiKey::new("t0ken-value");
        let mut settings = GitHubSettings::new("o/r", token.clone());
        settings.api_url = "not a url".to_owned();
        assert!(matches!(
            GitHubPublisher::new(settings),
            Err(PublishError::Config(_))
        ));
        let settings = GitHubSettings::new("o/r", ApiKey::new(" "));
        assert!(matches!(
            GitHubPublisher::new(settings),
            Err(PublishError::Config(_))
        ));
        let settings = GitHubSettings::new("o/r", ApiKey::new("bad\ntoken"));
        match GitHubPublisher::new(settings) {
            Err(PublishError::Config(message)) => assert!(!message.contains("bad")),
            other => panic!("{other:?}"),
        }
        let publisher =
            GitHubPublisher::new(GitHubSettings::new("o/r", token)).expect("a publisher");
        assert!(!format!("{publisher:?}").contains("t0ken-value"));
        assert_eq!(publisher.web_url(), "https://github.com/o/r");
        assert_eq!(
            publisher
                .endpoint(["git", "ref", "heads", "agent", "x y"])
                .as_str(),
            "https://api.github.com/repos/o/r/git/ref/heads/agent/x%20y"
        );
    }

    #[test]
    fn enterprise_urls() {
        let mut settings = GitHubSettings::new("o/r", ApiKey::new("t0ken-value"));
        settings.api_url = "https://ghe.example.com:8443/api/v3/".to_owned();
        let publisher = GitHubPublisher::new(settings).expect("a publisher");
        assert_eq!(publisher.web_url(), "https://ghe.example.com:8443/o/r");
        assert_eq!(
            publisher.endpoint(["pulls"]).as_str(),
            "https://ghe.example.com:8443/api/v3/repos/o/r/pulls"
        );
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            error_message(r#"{"message":"Bad credentials"}"#),
            "Bad credentials"
        );
        assert_eq!(
            error_message(
                r#"{"message":"Validation Failed","errors":[{"resource":"PullRequest","code":"custom","message":"A pull request already exists for o:agent/x."}]}"#
            ),
            "Validation Failed: A pull request already exists for o:agent/x."
        );
        assert_eq!(error_message(""), "(empty body)");
        assert_eq!(error_message("<html>502</html>"), "<html>502</html>");
    }
}
