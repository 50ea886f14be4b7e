//! The existing git repository a task changes, as a task message names it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The transports a repository may be cloned over; git's own `ext::` and `fd::` (which run
/// commands) and anything unknown are refused.
const SCHEMES: &[&str] = &["https://", "http://", "ssh://", "git://", "file://"];

/// An existing git repository a task changes: the task's workspace starts as a clone of it
/// at `base_ref`, and its change is published as a branch on top of that commit.
///
/// ```
/// use agent_pipeline::wire::Repository;
/// let repository = Repository::new("/srv/git/shop.git").at("main");
/// assert!(repository.check().is_ok());
/// assert!(Repository::new("ext::sh -c touch% /tmp/x").check().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Repository {
    /// Where to clone it from: a path on the host that runs the worker, or a URL
    /// (`https://`, `http://`, `ssh://`, `git://`, `file://`, or scp-like `user@host:path`).
    pub url: String,
    /// The branch, tag or commit id the task starts from; `None`: the repository's default
    /// branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ref: Option<String>,
    /// The repository's own test command, run in the sandbox from its root; `None`: detected
    /// from its files (see [`crate::execution::detect_test_command`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_command: Option<String>,
    /// Whether the change is also pushed to this repository, as the branch
    /// `agent/<task_id>` on top of `base_ref`, when it is published (the host needs write
    /// access to it: a path on the host, or a URL whose credentials it has). Default: no, the
    /// branch goes only to the pipeline's publisher.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub push: bool,
}

impl Repository {
    /// The repository at `url`, from its default branch, with its test command detected.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            base_ref: None,
            test_command: None,
            push: false,
        }
    }

    /// The same repository from `base_ref` (a branch, tag or commit id).
    pub fn at(mut self, base_ref: impl Into<String>) -> Self {
        self.base_ref = Some(base_ref.into());
        self
    }

    /// The same repository, with the published change also pushed to it as the branch
    /// `agent/<task_id>`.
    pub fn with_push(mut self) -> Self {
        self.push = true;
        self
    }

    /// The same repository with its test command given.
    pub fn with_test_command(mut self, command: impl Into<String>) -> Self {
        self.test_command = Some(command.into());
        self
    }

    /// Why the repository cannot be cloned as given, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        let url = self.url.trim();
        if url.is_empty() {
            return Err("the repository's url is empty".to_owned());
        }
        if url != self.url || url.chars().any(char::is_control) {
            return Err("the repository's url has spaces around it or control characters".into());
        }
        if url.starts_with('-') {
            return Err(format!("the repository's url {url:?} looks like an option"));
        }
        if let Some((scheme, _)) = url.split_once("://") {
            if !SCHEMES.iter().any(|known| url.starts_with(known)) {
                return Err(format!(
                    "the repository's url has the transport {scheme:?}; use one of {}",
                    SCHEMES.join(", ")
                ));
            }
        } else if url.contains("::") {
            return Err(format!(
                "the repository's url {url:?} names a git remote helper, which is refused"
            ));
        }
        if let Some(base_ref) = &self.base_ref
            && !crate::execution::is_plain_rev(base_ref)
        {
            return Err(format!(
                "the base ref {base_ref:?} is not a branch, tag or commit id"
            ));
        }
        if self
            .test_command
            .as_deref()
            .is_some_and(|command| command.trim().is_empty())
        {
            return Err("the repository's test command is empty".to_owned());
        }
        Ok(())
    }

    /// The url without a password, for logs and pages: `https://user:secret@host/x` becomes
    /// `https://user:***@host/x`.
    pub fn redacted_url(&self) -> String {
        let Some((scheme, rest)) = self.url.split_once("://") else {
            return self.url.clone();
        };
        let authority_end = rest.find('/').unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        match authority.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
                if userinfo.contains(':') {
                    format!("{scheme}://{user}:***@{host}{path}")
                } else {
                    self.url.clone()
                }
            }
            None => self.url.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_known_transports_are_accepted() {
        for url in [
            "/srv/git/shop.git",
            "../shop",
            "https://example.com/shop.git",
            "ssh://git@example.com/shop.git",
            "git@example.com:team/shop.git",
            "file:///srv/git/shop.git",
        ] {
            assert_eq!(Repository::new(url).check(), Ok(()), "{url}");
        }
        assert_eq!(Repository::new("/srv/shop").at("v1.2.0").check(), Ok(()));
        assert_eq!(
            Repository::new("/srv/shop")
                .at("0123456789abcdef0123456789abcdef01234567")
                .check(),
            Ok(())
        );
    }

    #[test]
    fn hostile_values_are_refused_with_the_reason() {
        for (repository, expected) in [
            (Repository::new(""), "empty"),
            (Repository::new(" /srv/shop"), "spaces"),
            (Repository::new("/srv/shop\n--upload-pack=x"), "control"),
            (Repository::new("--upload-pack=touch /tmp/x"), "option"),
            (Repository::new("ext::sh -c touch% /tmp/x"), "remote helper"),
            (Repository::new("fd::17"), "remote helper"),
            (Repository::new("gopher://example.com/x"), "transport"),
            (Repository::new("/srv/shop").at("--orphan"), "base ref"),
            (Repository::new("/srv/shop").at("main..evil"), "base ref"),
            (
                Repository::new("/srv/shop").with_test_command("  "),
                "test command",
            ),
        ] {
            let problem = repository.check().err().unwrap_or_default();
            assert!(problem.contains(expected), "{repository:?}: {problem:?}");
        }
    }

    #[test]
    fn passwords_are_not_shown() {
        let secret = Repository::new("https://bot:s3cret@example.com/shop.git");
        assert_eq!(
            secret.redacted_url(),
            "https://bot:***@example.com/shop.git"
        );
        for url in ["/srv/shop", "https://example.com/a@b", "git@example.com:x"] {
            assert_eq!(Repository::new(url).redacted_url(), url);
        }
    }
}
