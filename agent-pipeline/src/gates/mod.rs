//! Gates: what a change must pass before it is published and its task is `done`.
//!
//! After the review of each round the orchestrator checks every gate. When all pass, the
//! change is published; when one fails, what failed goes back to Implement as feedback for
//! another round, up to the configured number of rounds; after that the task ends in `error`
//! with the failing gates named. The defaults are [`TestsPassed`], [`ReviewApproved`] and
//! [`NoSecrets`]; add your own (lint, coverage) with
//! [`PipelineBuilder::gate`](crate::PipelineBuilder::gate).

pub mod secrets;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::execution::sandbox::Sandbox;
use crate::execution::{CommitId, TaskWorkspace};
use crate::ids::TaskId;
use crate::output::{Review, TestReport};
use crate::store::Artifact;

/// Everything a gate may look at.
#[derive(Debug, Clone, Copy)]
pub struct GateInput<'a> {
    /// The task.
    pub task_id: TaskId,
    /// The round, from 1.
    pub round: u32,
    /// The task's workspace.
    pub workspace: &'a TaskWorkspace,
    /// The commit that was tested and reviewed (implementation and tests), the one that
    /// would be published.
    pub commit: &'a CommitId,
    /// The files of that commit, path and content.
    pub files: &'a [(String, Vec<u8>)],
    /// The canonical artifacts of the round: design, implement, test and review.
    pub artifacts: &'a [Artifact],
    /// The sandbox, for gates that run a command (a linter, a coverage tool).
    pub sandbox: &'a dyn Sandbox,
}

impl GateInput<'_> {
    /// The artifact of `stage`, if the round has one.
    pub fn artifact(&self, stage: crate::Stage) -> Option<&Artifact> {
        self.artifacts.iter().find(|a| a.step.stage() == stage)
    }
}

/// What one gate decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateVerdict {
    /// The gate's name.
    pub gate: String,
    /// Whether the change passed it.
    pub passed: bool,
    /// Why, in words the implementer can act on when it failed.
    pub detail: String,
}

impl GateVerdict {
    /// A passed gate.
    pub fn pass(gate: &str, detail: impl Into<String>) -> Self {
        Self {
            gate: gate.to_owned(),
            passed: true,
            detail: detail.into(),
        }
    }

    /// A failed gate.
    pub fn fail(gate: &str, detail: impl Into<String>) -> Self {
        Self {
            gate: gate.to_owned(),
            passed: false,
            detail: detail.into(),
        }
    }
}

/// One check a change must pass.
///
/// ```
/// use agent_pipeline::gates::{Gate, GateInput, GateVerdict};
///
/// /// Refuses changes with more than 20 files.
/// #[derive(Debug)]
/// struct SmallChange;
///
/// #[async_trait::async_trait]
/// impl Gate for SmallChange {
///     fn name(&self) -> &str {
///         "small-change"
///     }
///
///     async fn check(&self, input: &GateInput<'_>) -> GateVerdict {
///         match input.files.len() {
///             n if n <= 20 => GateVerdict::pass(self.name(), format!("{n} files")),
///             n => GateVerdict::fail(self.name(), format!("{n} files; keep the change under 20")),
///         }
///     }
/// }
/// ```
#[async_trait]
pub trait Gate: Send + Sync + fmt::Debug + 'static {
    /// The gate's name, shown in reports (`tests`, `review`, `secrets`).
    fn name(&self) -> &str;

    /// Checks the change. A gate that cannot decide (a missing tool, say) fails with the
    /// reason: a change is never published on a check that did not run.
    async fn check(&self, input: &GateInput<'_>) -> GateVerdict;
}

/// The default gates: tests ran and passed, the review approved, no secrets in the files.
pub fn default_gates() -> Vec<Arc<dyn Gate>> {
    vec![
        Arc::new(TestsPassed),
        Arc::new(ReviewApproved),
        Arc::new(NoSecrets),
    ]
}

/// Passes when the tests ran in the sandbox, were counted, at least one ran, and none failed.
#[derive(Debug, Clone, Copy, Default)]
pub struct TestsPassed;

/// How much of a failing run's output goes into the feedback.
const OUTPUT_IN_FEEDBACK: usize = 2000;

#[async_trait]
impl Gate for TestsPassed {
    fn name(&self) -> &str {
        "tests"
    }

    async fn check(&self, input: &GateInput<'_>) -> GateVerdict {
        let Some(artifact) = input.artifact(crate::Stage::Test) else {
            return GateVerdict::fail(self.name(), "the tests did not run: no test artifact");
        };
        let report = match artifact.output_as::<TestReport>() {
            Ok(report) => report,
            Err(e) => {
                return GateVerdict::fail(
                    self.name(),
                    format!("the test artifact is not a test run: {e}"),
                );
            }
        };
        if report.commit.as_ref() != Some(input.commit) {
            return GateVerdict::fail(
                self.name(),
                "the tests ran on another commit than the one to publish",
            );
        }
        if let Some(repository) = &report.repository_tests
            && !repository.after.passed()
        {
            let (after, before) = (&repository.after, &repository.before);
            return GateVerdict::fail(
                self.name(),
                format!(
                    "the repository's own tests (`{}`) fail after the change: {} passed, {} \
                     failed, {} (before the change: {} passed, {} failed); output:\n{}",
                    repository.command,
                    after.passed,
                    after.failed,
                    after.run.ending(),
                    before.passed,
                    before.failed,
                    after.run.output_tail(OUTPUT_IN_FEEDBACK)
                ),
            );
        }
        if report.all_passed() {
            return GateVerdict::pass(
                self.name(),
                format!(
                    "{} passed, 0 failed (`{}`)",
                    report.passed, report.run.command
                ),
            );
        }
        let (command, ending) = (&report.run.command, report.run.ending());
        let why = if report.run.timed_out {
            format!("the test command `{command}` was {ending}")
        } else if report.counted_from.is_none() {
            format!(
                "the test command `{command}` printed no test summary the pipeline can read \
                 ({ending})"
            )
        } else if report.passed == 0 && report.failed == 0 {
            format!("the test command `{command}` ran no tests ({ending})")
        } else {
            format!(
                "{} passed, {} failed (`{command}`, {ending})",
                report.passed, report.failed
            )
        };
        GateVerdict::fail(
            self.name(),
            format!(
                "{why}; output:\n{}",
                report.run.output_tail(OUTPUT_IN_FEEDBACK)
            ),
        )
    }
}

/// Passes when the reviewer approved the change.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReviewApproved;

#[async_trait]
impl Gate for ReviewApproved {
    fn name(&self) -> &str {
        "review"
    }

    async fn check(&self, input: &GateInput<'_>) -> GateVerdict {
        let review = input
            .artifact(crate::Stage::Review)
            .map(Artifact::output_as::<Review>);
        match review {
            Some(Ok(review)) if review.approved => {
                GateVerdict::pass(self.name(), "the reviewer approved")
            }
            Some(Ok(review)) => GateVerdict::fail(
                self.name(),
                format!(
                    "the reviewer asked for changes: {}",
                    review.comments.join("; ")
                ),
            ),
            Some(Err(e)) => GateVerdict::fail(self.name(), format!("no readable review: {e}")),
            None => GateVerdict::fail(self.name(), "the change was not reviewed"),
        }
    }
}

/// Passes when the secret scan finds no key, token or private key in the change's files.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSecrets;

#[async_trait]
impl Gate for NoSecrets {
    fn name(&self) -> &str {
        "secrets"
    }

    async fn check(&self, input: &GateInput<'_>) -> GateVerdict {
        let findings = secrets::scan_files(input.files);
        if findings.is_empty() {
            return GateVerdict::pass(
                self.name(),
                format!("no secrets in {} file(s)", input.files.len()),
            );
        }
        let list: Vec<String> = findings
            .iter()
            .map(|f| format!("{}:{} {} ({})", f.path, f.line, f.rule, f.excerpt))
            .collect();
        GateVerdict::fail(
            self.name(),
            format!(
                "the secret scan found {} secret(s); read them from the environment instead: {}",
                findings.len(),
                list.join("; ")
            ),
        )
    }
}
