//! The typed output of each stage: what the LLM is asked to fill, parsed and validated.
//!
//! The field names are the public contract of `contracts.md`; richer fields sit beside them.

mod retrieved;
mod strict;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::execution::CommitId;
use crate::execution::sandbox::RunOutput;
use crate::ids::Stage;

pub use retrieved::Retrieved;
pub use strict::{StrictSchema, strict_schema, strictness_violations};

/// The typed output of one stage.
///
/// Implement it for a custom agent's output to get strict schema generation, parsing and
/// validation from [`crate::agent::LlmAgent`].
pub trait StageOutput:
    Serialize + DeserializeOwned + JsonSchema + Send + Sync + std::fmt::Debug + 'static
{
    /// The stage this output belongs to.
    const STAGE: Stage;

    /// The schema's name as handed to the LLM (letters, digits, `_` and `-`).
    const SCHEMA_NAME: &'static str;

    /// Checks that go beyond the types (non-empty summaries, relative file paths, …).
    ///
    /// The message of an error is fed back to the LLM, so it says what to change.
    fn validate(&self) -> Result<(), String>;

    /// One line for the stage's report event.
    fn summary(&self) -> String;
}

/// The architect's design of the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Design {
    /// What will be built and how, in a few sentences.
    pub design_summary: String,
    /// The files the change creates or modifies, relative to the project root.
    pub files_touched: Vec<String>,
}

/// One file written by the implementer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FileContent {
    /// Path relative to the project root, with `/` separators.
    pub path: String,
    /// The whole content of the file.
    pub content: String,
}

/// The implementer's change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Implementation {
    /// What the change does, in a few sentences.
    pub diff_summary: String,
    /// The most important pieces of code, for a quick read.
    pub code_snippets: Vec<String>,
    /// Every file of the change, with its whole content.
    pub files: Vec<FileContent>,
    /// The files the change deletes, relative to the project root: only on a task that
    /// changes an existing repository (anything else is kept from its base).
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub deleted_files: Vec<String>,
}

impl Implementation {
    /// The field of an implement artifact where the pipeline records the workspace commit
    /// of the change (`commit`, `parent`) and, on a repository, its `base` and `diff`.
    pub const WORKSPACE_FIELD: &'static str = "workspace";
}

/// A list that may be given as `null` (strict mode's way to leave out an optional field).
fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

/// The tester's plan: the tests it wrote and the command that runs them.
///
/// This is what the Test stage's agent produces. The pipeline writes the test files into the
/// task's workspace, runs the command in the sandbox and stores a [`TestReport`] whose numbers
/// come from that run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TestPlan {
    /// What the tests check, in a sentence or two.
    pub summary: String,
    /// The test files, each with its whole content, relative to the project root.
    pub test_files: Vec<FileContent>,
    /// The shell command that runs the tests from the project root, e.g. `python3 -m unittest -v`.
    pub command: String,
    /// The JUnit XML report the command writes, relative to the project root, if it writes one.
    pub junit_xml: Option<String>,
}

/// The Test stage's artifact: what really happened when the tests ran.
///
/// `tests_added`, `passed` and `failed` (the contract's fields) are counted from the run's
/// JUnit XML report or the test runner's printed summary, never taken from the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TestReport {
    /// How many tests the run counted (passed, failed, errors and skipped).
    pub tests_added: u32,
    /// How many tests passed.
    pub passed: u32,
    /// How many tests failed or raised an error.
    pub failed: u32,
    /// How many of the failed tests raised an error rather than failing an assertion.
    #[serde(default)]
    pub errors: u32,
    /// How many tests were skipped.
    #[serde(default)]
    pub skipped: u32,
    /// Where the counts come from (`junit`, `pytest`, `unittest`, `cargo`, `tap`); `None` when
    /// the run printed no summary the pipeline can read.
    #[serde(default)]
    pub counted_from: Option<String>,
    /// The tester's description of its tests.
    #[serde(default)]
    pub summary: String,
    /// The test files the tester wrote.
    #[serde(default)]
    pub test_files: Vec<String>,
    /// The workspace commit that was tested (implementation and tests).
    #[serde(default)]
    pub commit: Option<CommitId>,
    /// The run: command, exit code, duration and captured output.
    pub run: RunOutput,
    /// The repository's own tests before and after the change, on a task that changes an
    /// existing repository whose test command is given or detected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_tests: Option<RepositoryTests>,
}

/// The repository's own test command, run in the sandbox on the base (before the change) and
/// on the tested commit (after it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RepositoryTests {
    /// The command: given with the task, or detected from the repository's files.
    pub command: String,
    /// The run on the repository's base ref.
    pub before: CountedRun,
    /// The run on the tested commit: the change and the tester's tests.
    pub after: CountedRun,
    /// Whether `before` is the run an earlier Test attempt (or an earlier run of this task)
    /// made on the same base with the same command and sandbox limits, kept beside the
    /// task's workspace, rather than a new one: the base does not change within a task.
    #[serde(default)]
    pub before_reused: bool,
}

/// One run of a test command, with the counts read from its output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CountedRun {
    /// How many tests passed.
    pub passed: u32,
    /// How many tests failed or raised an error.
    pub failed: u32,
    /// How many tests were skipped.
    #[serde(default)]
    pub skipped: u32,
    /// Where the counts come from (`pytest`, `unittest`, `cargo`, `tap`); `None` when the run
    /// printed no summary the pipeline can read.
    #[serde(default)]
    pub counted_from: Option<String>,
    /// The run itself.
    pub run: RunOutput,
}

impl CountedRun {
    /// Whether the command ran to the end and exited 0 with no failed test counted.
    pub fn passed(&self) -> bool {
        !self.run.timed_out && self.run.exit_code == Some(0) && self.failed == 0
    }
}

impl TestReport {
    /// Whether the tests ran to the end, were counted, and all passed (at least one).
    pub fn all_passed(&self) -> bool {
        !self.run.timed_out
            && self.run.exit_code == Some(0)
            && self.counted_from.is_some()
            && self.passed > 0
            && self.failed == 0
    }

    /// One line for the stage's report event.
    pub fn summary_line(&self) -> String {
        let exit = self.run.ending();
        match &self.counted_from {
            Some(_) => format!(
                "Test completed: {} run, {} passed, {} failed (`{}`, {exit})",
                self.tests_added, self.passed, self.failed, self.run.command
            ),
            None => format!(
                "Test completed: no test summary could be read (`{}`, {exit})",
                self.run.command
            ),
        }
    }
}

/// The reviewer's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Review {
    /// Whether the change is approved.
    pub approved: bool,
    /// Review comments, one finding each.
    pub comments: Vec<String>,
}

/// Why a path proposed by the model is refused, if it is.
fn path_problem(path: &str) -> Option<&'static str> {
    if path.trim().is_empty() {
        Some("is empty")
    } else if path.starts_with('/') || path.starts_with('\\') || path.contains(':') {
        Some("is absolute; use a path relative to the project root")
    } else if path.split(['/', '\\']).any(|part| part == "..") {
        Some("contains '..'")
    } else {
        None
    }
}

fn check_paths<'a>(field: &str, paths: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
    for path in paths {
        if let Some(problem) = path_problem(path) {
            return Err(format!("{field}: path {path:?} {problem}"));
        }
    }
    Ok(())
}

fn non_empty(field: &str, value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        Err(format!("{field} must not be empty"))
    } else {
        Ok(())
    }
}

impl StageOutput for Design {
    const STAGE: Stage = Stage::Design;
    const SCHEMA_NAME: &'static str = "design";

    fn validate(&self) -> Result<(), String> {
        non_empty("design_summary", &self.design_summary)?;
        check_paths(
            "files_touched",
            self.files_touched.iter().map(String::as_str),
        )
    }

    fn summary(&self) -> String {
        format!(
            "Design completed: {} file(s) touched",
            self.files_touched.len()
        )
    }
}

impl StageOutput for Implementation {
    const STAGE: Stage = Stage::Implement;
    const SCHEMA_NAME: &'static str = "implementation";

    fn validate(&self) -> Result<(), String> {
        non_empty("diff_summary", &self.diff_summary)?;
        check_paths("files", self.files.iter().map(|f| f.path.as_str()))
    }

    fn summary(&self) -> String {
        format!("Implement completed: {} file(s) written", self.files.len())
    }
}

impl StageOutput for TestPlan {
    const STAGE: Stage = Stage::Test;
    const SCHEMA_NAME: &'static str = "test_plan";

    fn validate(&self) -> Result<(), String> {
        non_empty("command", &self.command)?;
        if self.test_files.is_empty() {
            return Err("test_files must contain at least one test file".to_owned());
        }
        check_paths(
            "test_files",
            self.test_files.iter().map(|f| f.path.as_str()),
        )?;
        check_paths("junit_xml", self.junit_xml.iter().map(String::as_str))
    }

    fn summary(&self) -> String {
        format!(
            "Test planned: {} test file(s), `{}`",
            self.test_files.len(),
            self.command
        )
    }
}

impl StageOutput for Review {
    const STAGE: Stage = Stage::Review;
    const SCHEMA_NAME: &'static str = "review";

    fn validate(&self) -> Result<(), String> {
        if !self.approved && self.comments.is_empty() {
            return Err("a review that does not approve must say why in comments".to_owned());
        }
        Ok(())
    }

    fn summary(&self) -> String {
        let verdict = if self.approved {
            "approved"
        } else {
            "changes requested"
        };
        format!("Review completed: {verdict}")
    }
}

/// Parses `text` as `T` and runs its [`StageOutput::validate`] checks.
///
/// The error says what is wrong in words the LLM can act on.
pub fn parse_output<T: StageOutput>(text: &str) -> Result<T, String> {
    let output: T =
        serde_json::from_str(text).map_err(|e| format!("the answer is not valid: {e}"))?;
    output.validate()?;
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn assert_strict<T: StageOutput>() {
        let schema = strict_schema::<T>();
        let violations = strictness_violations(&schema);
        assert!(violations.is_empty(), "{}: {violations:?}", T::SCHEMA_NAME);
        assert_eq!(schema["type"], "object");
    }

    #[test]
    fn every_stage_schema_is_strict() {
        assert_strict::<Design>();
        assert_strict::<Implementation>();
        assert_strict::<TestPlan>();
        assert_strict::<Review>();
    }

    #[test]
    fn schemas_keep_declared_field_order_and_drop_integer_formats() {
        let schema = strict_schema::<TestPlan>();
        assert_eq!(
            schema["required"],
            json!(["summary", "test_files", "command", "junit_xml"])
        );
        assert_eq!(
            schema["properties"]["junit_xml"]["type"],
            json!(["string", "null"])
        );
        let implementation = strict_schema::<Implementation>();
        assert_eq!(
            implementation["properties"]["files"]["items"]["additionalProperties"],
            false
        );
    }

    #[test]
    fn optional_fields_become_required_and_nullable() {
        #[derive(Debug, Serialize, Deserialize, JsonSchema)]
        struct WithOptional {
            name: String,
            nickname: Option<String>,
            #[serde(default)]
            tags: Vec<String>,
            inner: Option<Inner>,
        }
        #[derive(Debug, Serialize, Deserialize, JsonSchema)]
        #[allow(dead_code)]
        enum Inner {
            A { x: u8 },
            B { y: u8 },
        }
        let schema = strict_schema::<WithOptional>();
        assert!(strictness_violations(&schema).is_empty(), "{schema:#}");
        assert_eq!(
            schema["required"],
            json!(["name", "nickname", "tags", "inner"])
        );
        let tags = &schema["properties"]["tags"]["type"];
        assert_eq!(tags, &json!(["array", "null"]));
    }

    #[test]
    fn the_checker_finds_loose_schemas() {
        let loose = json!({
            "type": "object",
            "properties": { "a": { "type": "integer", "format": "uint32" } },
            "required": []
        });
        assert_eq!(strictness_violations(&loose).len(), 3);
    }

    #[test]
    fn answers_are_parsed_and_validated() {
        let design: Result<Design, _> =
            parse_output(r#"{"design_summary":"hello","files_touched":["hello.py"]}"#);
        assert!(design.is_ok());
        let empty = parse_output::<Design>(r#"{"design_summary":" ","files_touched":[]}"#);
        assert_eq!(
            empty.err().as_deref(),
            Some("design_summary must not be empty")
        );
        let escaping = parse_output::<Implementation>(
            r#"{"diff_summary":"x","code_snippets":[],"files":[{"path":"../x","content":""}]}"#,
        );
        assert!(escaping.err().is_some_and(|e| e.contains("'..'")));
        let missing = parse_output::<TestPlan>(r#"{"summary":"x","test_files":[]}"#);
        assert!(missing.err().is_some_and(|e| e.contains("missing field")));
        let no_tests = parse_output::<TestPlan>(
            r#"{"summary":"x","test_files":[],"command":"python3 -m unittest","junit_xml":null}"#,
        );
        assert!(no_tests.err().is_some_and(|e| e.contains("at least one")));
        let escaping_report = parse_output::<TestPlan>(
            r#"{"summary":"x","test_files":[{"path":"t.py","content":""}],"command":"true","junit_xml":"/tmp/r.xml"}"#,
        );
        assert!(
            escaping_report
                .err()
                .is_some_and(|e| e.contains("absolute"))
        );
    }
}
