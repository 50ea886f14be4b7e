//! The typed output of each stage: what the LLM is asked to fill, parsed and validated.
//!
//! The field names are the public contract of `contracts.md`; richer fields sit beside them.

mod strict;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ids::Stage;

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
}

/// The tester's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TestReport {
    /// How many tests were added.
    pub tests_added: u32,
    /// How many tests passed.
    pub passed: u32,
    /// How many tests failed.
    pub failed: u32,
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

impl StageOutput for TestReport {
    const STAGE: Stage = Stage::Test;
    const SCHEMA_NAME: &'static str = "test_report";

    fn validate(&self) -> Result<(), String> {
        Ok(())
    }

    fn summary(&self) -> String {
        format!(
            "Test completed: {} added, {} passed, {} failed",
            self.tests_added, self.passed, self.failed
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
        assert_strict::<TestReport>();
        assert_strict::<Review>();
    }

    #[test]
    fn schemas_keep_declared_field_order_and_drop_integer_formats() {
        let schema = strict_schema::<TestReport>();
        assert_eq!(
            schema["required"],
            json!(["tests_added", "passed", "failed"])
        );
        assert!(schema["properties"]["passed"].get("format").is_none());
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
        let missing = parse_output::<TestReport>(r#"{"tests_added":1}"#);
        assert!(missing.err().is_some_and(|e| e.contains("missing field")));
        let negative = parse_output::<TestReport>(r#"{"tests_added":-1,"passed":0,"failed":0}"#);
        assert!(negative.is_err());
    }
}
