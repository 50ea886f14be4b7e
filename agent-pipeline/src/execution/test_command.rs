//! The test command of an existing repository, told from the files at its root.

use std::path::Path;

/// What `npm init` writes as the test script: no tests.
const NPM_NO_TESTS: &str = "no test specified";

/// The command that runs the tests of the repository whose work tree is `root`, told from
/// the files at its root; `None` when nothing says how.
///
/// In order: `Cargo.toml` → `cargo test`; `go.mod` → `go test ./...`; a `package.json` with a
/// `test` script (other than the one `npm init` writes) → `npm test`; Python (`pyproject.toml`,
/// `setup.py`, `setup.cfg`, `requirements.txt`, a `tests/` or `test/` directory or a
/// `test_*.py` at the root) → `python3 -m pytest -q` where pytest is configured (`pytest.ini`,
/// `conftest.py`, `[tool.pytest.ini_options]` in `pyproject.toml`, `[tool:pytest]` in
/// `setup.cfg`), `python3 -m unittest discover -v` otherwise; a `Makefile` with a `test:`
/// target → `make test`. The command runs in the sandbox, which sees only what is
/// installed under `/usr`. Symbolic links at the root are not followed.
///
/// ```
/// let repository = tempfile::tempdir()?;
/// std::fs::write(repository.path().join("setup.py"), "from setuptools import setup\n")?;
/// assert_eq!(
///     agent_pipeline::execution::detect_test_command(repository.path()).as_deref(),
///     Some("python3 -m unittest discover -v")
/// );
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn detect_test_command(root: &Path) -> Option<String> {
    let file = |name: &str| {
        std::fs::symlink_metadata(root.join(name)).is_ok_and(|metadata| metadata.is_file())
    };
    let dir = |name: &str| {
        std::fs::symlink_metadata(root.join(name)).is_ok_and(|metadata| metadata.is_dir())
    };
    let text = |name: &str| {
        file(name)
            .then(|| std::fs::read_to_string(root.join(name)).ok())
            .flatten()
            .unwrap_or_default()
    };
    if file("Cargo.toml") {
        return Some("cargo test".to_owned());
    }
    if file("go.mod") {
        return Some("go test ./...".to_owned());
    }
    if file("package.json") && has_npm_test_script(&text("package.json")) {
        return Some("npm test".to_owned());
    }
    let python = [
        "pyproject.toml",
        "setup.py",
        "setup.cfg",
        "requirements.txt",
    ]
    .iter()
    .any(|name| file(name))
        || dir("tests")
        || dir("test")
        || root_has_python_tests(root);
    if python {
        let pytest = file("pytest.ini")
            || file("conftest.py")
            || text("pyproject.toml").contains("[tool.pytest.ini_options]")
            || text("setup.cfg").contains("[tool:pytest]");
        return Some(if pytest {
            "python3 -m pytest -q".to_owned()
        } else {
            "python3 -m unittest discover -v".to_owned()
        });
    }
    if text("Makefile")
        .lines()
        .any(|line| line.starts_with("test:"))
    {
        return Some("make test".to_owned());
    }
    None
}

/// Whether a `package.json` has a real `test` script.
fn has_npm_test_script(package: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(package)
        .ok()
        .and_then(|package| {
            package
                .get("scripts")?
                .get("test")?
                .as_str()
                .map(|script| !script.trim().is_empty() && !script.contains(NPM_NO_TESTS))
        })
        .unwrap_or(false)
}

/// Whether the root holds a `test_*.py` or `*_test.py` file.
fn root_has_python_tests(root: &Path) -> bool {
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .any(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.ends_with(".py") && (name.starts_with("test_") || name.ends_with("_test.py"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files at the root (name, content), directories at the root, the command expected.
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], Option<&'a str>);

    fn detected(files: &[(&str, &str)], dirs: &[&str]) -> Option<String> {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        for dir in dirs {
            std::fs::create_dir(root.path().join(dir)).unwrap_or_else(|e| panic!("mkdir: {e}"));
        }
        for (name, content) in files {
            std::fs::write(root.path().join(name), content)
                .unwrap_or_else(|e| panic!("write: {e}"));
        }
        detect_test_command(root.path())
    }

    #[test]
    fn each_ecosystem_gets_its_command() {
        let cases: &[Case<'_>] = &[
            (&[("Cargo.toml", "[package]")], &[], Some("cargo test")),
            (&[("go.mod", "module x")], &[], Some("go test ./...")),
            (
                &[("package.json", r#"{"scripts":{"test":"jest"}}"#)],
                &[],
                Some("npm test"),
            ),
            (
                &[(
                    "package.json",
                    r#"{"scripts":{"test":"echo \"Error: no test specified\" && exit 1"}}"#,
                )],
                &[],
                None,
            ),
            (&[("package.json", "not json")], &[], None),
            (
                &[("setup.py", "")],
                &[],
                Some("python3 -m unittest discover -v"),
            ),
            (
                &[("pyproject.toml", "[tool.pytest.ini_options]\n")],
                &[],
                Some("python3 -m pytest -q"),
            ),
            (
                &[("setup.cfg", "[tool:pytest]\n")],
                &[],
                Some("python3 -m pytest -q"),
            ),
            (
                &[("conftest.py", "")],
                &["tests"],
                Some("python3 -m pytest -q"),
            ),
            (&[], &["tests"], Some("python3 -m unittest discover -v")),
            (
                &[("test_shop.py", "")],
                &[],
                Some("python3 -m unittest discover -v"),
            ),
            (
                &[("Makefile", "all:\n\ntest: all\n")],
                &[],
                Some("make test"),
            ),
            (&[("README.md", "# shop")], &[], None),
        ];
        for (files, dirs, expected) in cases {
            assert_eq!(
                detected(files, dirs).as_deref(),
                *expected,
                "{files:?} {dirs:?}"
            );
        }
    }

    #[test]
    fn a_linked_marker_is_not_followed() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let outside = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        std::fs::write(outside.path().join("Cargo.toml"), "[package]")
            .unwrap_or_else(|e| panic!("write: {e}"));
        std::os::unix::fs::symlink(
            outside.path().join("Cargo.toml"),
            root.path().join("Cargo.toml"),
        )
        .unwrap_or_else(|e| panic!("symlink: {e}"));
        assert_eq!(detect_test_command(root.path()), None);
    }
}
