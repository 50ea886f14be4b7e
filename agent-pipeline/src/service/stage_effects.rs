//! What the worker does around the agents of Implement, Test and Review: writes the files into
//! the task's workspace, runs the tests in the sandbox and counts them, and shows the reviewer
//! the diff. The models propose; everything recorded here happened.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::Deps;
use crate::Result;
use crate::execution::results::{TestCounts, counts_from_junit, counts_from_output};
use crate::execution::sandbox::{RunOutput, Sandbox, SandboxError, SandboxLimits, SandboxRun};
use crate::execution::{
    CommitId, TaskWorkspace, WorkspaceError, WorkspaceLimits, detect_test_command,
};
use crate::gates::Gate;
use crate::ids::{Stage, StepId};
use crate::output::{CountedRun, Implementation, RepositoryTests, TestPlan, TestReport};
use crate::publish::Publisher;
use crate::store::Artifact;
use crate::wire::{Repository, StepRequest};

/// The file in `DATA_DIR/<task_id>/` (beside the workspace, out of the sandbox's reach) that
/// keeps the repository's test run on the base, see [`Deps::run_repository_tests`].
const BASELINE_FILE: &str = "repository-tests-before.json";

/// The largest JUnit XML report read.
const JUNIT_LIMIT: u64 = 16 * 1024 * 1024;

/// The largest diff shown to the reviewer or kept in an implement artifact; the workspace
/// keeps the whole of it.
const DIFF_LIMIT: usize = 48 * 1024;

/// How the pipeline executes, checks and publishes the code of its tasks.
#[derive(Debug, Clone)]
pub(crate) struct Execution {
    pub(crate) sandbox: Arc<dyn Sandbox>,
    pub(crate) sandbox_limits: SandboxLimits,
    pub(crate) workspace_limits: WorkspaceLimits,
    pub(crate) gates: Vec<Arc<dyn Gate>>,
    pub(crate) gate_rounds: u32,
    pub(crate) publisher: Arc<dyn Publisher>,
    pub(crate) ci_check_command: Option<String>,
    /// Whether code is written, run, gated and published at all (see
    /// `PipelineBuilder::execute_code`).
    pub(crate) execute_code: bool,
}

/// A step that cannot succeed as it is, with whether trying again may help.
#[derive(Debug)]
pub(crate) struct StepFailure {
    pub(crate) error: String,
    pub(crate) retryable: bool,
}

impl StepFailure {
    fn permanent(error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            retryable: false,
        }
    }
}

impl From<WorkspaceError> for StepFailure {
    fn from(error: WorkspaceError) -> Self {
        // A refused path or an exceeded limit is in the model's answer: the same answer
        // would fail again. A git or disk failure may pass.
        let retryable = matches!(
            error,
            WorkspaceError::Git { .. } | WorkspaceError::Io { .. }
        );
        Self {
            error: format!("workspace: {error}"),
            retryable,
        }
    }
}

pub(crate) type StepOutput = std::result::Result<Map<String, Value>, StepFailure>;

/// The workspace commit an implement artifact records.
pub(crate) fn implementation_commit(artifact: &Artifact) -> Option<CommitId> {
    workspace_commit(artifact, &[Implementation::WORKSPACE_FIELD, "commit"])
}

/// The workspace commit a test artifact records (implementation and tests).
pub(crate) fn tested_commit(artifact: &Artifact) -> Option<CommitId> {
    workspace_commit(artifact, &["commit"])
}

/// The workspace commit a review artifact records.
pub(crate) fn reviewed_commit(artifact: &Artifact) -> Option<CommitId> {
    workspace_commit(artifact, &["reviewed_commit"])
}

fn workspace_commit(artifact: &Artifact, pointer: &[&str]) -> Option<CommitId> {
    let mut value = artifact.output.get(pointer[0])?;
    for key in &pointer[1..] {
        value = value.get(key)?;
    }
    CommitId::try_from(value.as_str()?.to_owned()).ok()
}

impl Deps {
    /// The task's workspace, cloned from the repository it changes (when it names one) the
    /// first time it is opened.
    pub(crate) async fn workspace(
        &self,
        task_id: crate::TaskId,
    ) -> std::result::Result<TaskWorkspace, WorkspaceError> {
        Ok(self.repository_workspace(task_id).await?.1)
    }

    /// The repository the task changes (when it names one) and the task's workspace, with
    /// one read of the task.
    async fn repository_workspace(
        &self,
        task_id: crate::TaskId,
    ) -> std::result::Result<(Option<Repository>, TaskWorkspace), WorkspaceError> {
        let repository = self.repository(task_id).await?;
        let workspace =
            TaskWorkspace::open_with(&self.data_dir, task_id, repository.as_ref()).await?;
        Ok((repository, workspace))
    }

    /// The repository the task changes, when it names one.
    async fn repository(
        &self,
        task_id: crate::TaskId,
    ) -> std::result::Result<Option<Repository>, WorkspaceError> {
        match self.artifacts.read_task(task_id).await {
            Ok(task) => Ok(task.and_then(|task| task.repository)),
            Err(error) => Err(WorkspaceError::Io {
                action: "read the task of",
                path: self.data_dir.join(task_id.to_string()),
                source: std::io::Error::other(error.to_string()),
            }),
        }
    }

    /// The diff the reviewer sees: from the task's base (the empty root, or the base ref of
    /// the repository it changes) to the tested commit.
    pub(crate) async fn review_diff(&self, request: &StepRequest) -> Result<Option<String>> {
        let Some(test) = self
            .artifacts
            .read_artifact(request.task_id, StepId::v1(Stage::Test))
            .await?
        else {
            return Ok(None);
        };
        let Some(commit) = tested_commit(&test) else {
            return Ok(None);
        };
        let diff = async {
            let workspace = self.workspace(request.task_id).await?;
            let base = workspace.base().await?;
            workspace.diff(&base, &commit).await
        };
        match diff.await {
            Ok(diff) => Ok(Some(cut_diff(diff))),
            Err(error) => {
                tracing::warn!(task_id = %request.task_id, %error, "no diff for the reviewer");
                Ok(None)
            }
        }
    }

    /// Turns an agent's output into the step's artifact output, doing what the stage does
    /// for real.
    pub(crate) async fn execute(
        &self,
        request: &StepRequest,
        output: Map<String, Value>,
    ) -> Result<StepOutput> {
        if !self.execution.execute_code {
            return Ok(record_unexecuted(request.step_id.stage(), output));
        }
        match request.step_id.stage() {
            Stage::Design => Ok(Ok(output)),
            Stage::Implement => Ok(self.write_implementation(request, output).await),
            Stage::Test => self.run_tests(request, output).await,
            Stage::Review => self.record_reviewed_commit(request, output).await,
        }
    }

    async fn write_implementation(
        &self,
        request: &StepRequest,
        mut output: Map<String, Value>,
    ) -> StepOutput {
        let implementation: Implementation = serde_json::from_value(Value::Object(output.clone()))
            .map_err(|e| {
                StepFailure::permanent(format!("the output is not an implementation: {e}"))
            })?;
        // A change to an existing repository keeps the repository's other files; a new
        // program is exactly the files written.
        let (repository, workspace) = self.repository_workspace(request.task_id).await?;
        let base = match repository {
            Some(_) => Some(workspace.base().await?),
            None => None,
        };
        let commit = workspace
            .commit_change(
                base.as_ref(),
                &implementation.files,
                &implementation.deleted_files,
                &commit_message(request, &implementation.diff_summary),
                &self.execution.workspace_limits,
            )
            .await?;
        tracing::info!(task_id = %request.task_id, attempt = %request.attempt, commit = %commit.id, files = implementation.files.len(), "implementation committed");
        let mut recorded = json!({ "commit": commit.id, "parent": commit.parent });
        // On a repository the change is what matters: the artifact keeps it as a unified
        // diff from the base (a new program's diff would only repeat its files).
        if let Some(base) = base {
            let diff = workspace.diff(&base, &commit.id).await?;
            recorded["base"] = json!(base);
            recorded["diff"] = json!(cut_diff(diff));
        }
        output.insert(Implementation::WORKSPACE_FIELD.to_owned(), recorded);
        Ok(output)
    }

    async fn run_tests(
        &self,
        request: &StepRequest,
        output: Map<String, Value>,
    ) -> Result<StepOutput> {
        let plan: TestPlan = match serde_json::from_value(Value::Object(output)) {
            Ok(plan) => plan,
            Err(e) => {
                return Ok(Err(StepFailure::permanent(format!(
                    "the output is not a test plan: {e}"
                ))));
            }
        };
        let implement = StepId::v1(Stage::Implement);
        let implementation = self
            .artifacts
            .read_artifact(request.task_id, implement)
            .await?;
        let Some((base, implemented)) = implementation.as_ref().and_then(|artifact| {
            let files = artifact.output_as::<Implementation>().ok()?.files;
            Some((implementation_commit(artifact)?, files))
        }) else {
            return Ok(Err(StepFailure::permanent(format!(
                "{implement} has no workspace commit to test; run or replay {implement} first"
            ))));
        };
        let (repository, workspace) = match self.repository_workspace(request.task_id).await {
            Ok(opened) => opened,
            Err(error) => return Ok(Err(error.into())),
        };
        let protected =
            match untouchable(&workspace, repository.is_some(), &base, implemented).await {
                Ok(paths) => paths,
                Err(error) => return Ok(Err(error.into())),
            };
        if let Some(clash) = plan
            .test_files
            .iter()
            .find(|test| protected.contains(&test.path))
        {
            return Ok(Err(StepFailure::permanent(format!(
                "test file {:?} would replace a file of the implementation; tests must not \
                 change the implementation or the repository's files",
                clash.path
            ))));
        }
        Ok(self
            .run_plan(request, &plan, &base, &workspace, repository.as_ref())
            .await)
    }

    async fn run_plan(
        &self,
        request: &StepRequest,
        plan: &TestPlan,
        base: &CommitId,
        workspace: &TaskWorkspace,
        repository: Option<&Repository>,
    ) -> StepOutput {
        let commit = workspace
            .commit_files(
                Some(base),
                &plan.test_files,
                &commit_message(request, &plan.summary),
                &self.execution.workspace_limits,
            )
            .await?;
        let run = self.sandboxed(workspace, &plan.command).await?;
        tracing::info!(task_id = %request.task_id, attempt = %request.attempt, exit_code = ?run.exit_code, timed_out = run.timed_out, duration_ms = run.duration_ms, "tests ran");
        let counts = count_tests(workspace, plan, &run.output).await;
        let repository_tests = match repository {
            Some(repository) => {
                self.run_repository_tests(workspace, repository, &commit.id)
                    .await?
            }
            None => None,
        };
        let report = TestReport {
            tests_added: counts.map_or(0, |c| c.total),
            passed: counts.map_or(0, |c| c.passed),
            failed: counts.map_or(0, |c| c.failed + c.errors),
            errors: counts.map_or(0, |c| c.errors),
            skipped: counts.map_or(0, |c| c.skipped),
            counted_from: counts.map(|c| c.source.to_owned()),
            summary: plan.summary.clone(),
            test_files: plan.test_files.iter().map(|f| f.path.clone()).collect(),
            commit: Some(commit.id),
            run,
            repository_tests,
        };
        match serde_json::to_value(&report) {
            Ok(Value::Object(output)) => Ok(output),
            _ => Err(StepFailure::permanent(
                "the test report could not be encoded",
            )),
        }
    }

    /// Runs `command` in the sandbox in the workspace's work tree (its `.git` read-only).
    async fn sandboxed(
        &self,
        workspace: &TaskWorkspace,
        command: &str,
    ) -> std::result::Result<RunOutput, StepFailure> {
        let run = SandboxRun {
            workdir: workspace.dir().to_path_buf(),
            command: command.to_owned(),
            env: Vec::new(),
            read_only: vec![".git".to_owned()],
            limits: self.execution.sandbox_limits,
        };
        match self.execution.sandbox.run(&run).await {
            Ok(run) => Ok(run),
            Err(SandboxError::Unavailable(why)) => Err(StepFailure::permanent(why)),
            Err(error) => Err(StepFailure {
                error: format!("the tests could not be run: {error}"),
                retryable: true,
            }),
        }
    }

    /// The repository's own test command (given, or detected from its files) run on the
    /// tested commit, then on the base, the work tree being put back to the tested commit
    /// after; `None` when there is no command.
    ///
    /// The run on the base is kept in [`BASELINE_FILE`] beside the workspace and reused, without
    /// checking out the base, by the task's later Test attempts while the base, the command and
    /// the sandbox limits are the same.
    async fn run_repository_tests(
        &self,
        workspace: &TaskWorkspace,
        repository: &Repository,
        tested: &CommitId,
    ) -> std::result::Result<Option<RepositoryTests>, StepFailure> {
        let command = match &repository.test_command {
            Some(command) => Some(command.clone()),
            None => {
                let root = workspace.dir().to_path_buf();
                tokio::task::spawn_blocking(move || detect_test_command(&root))
                    .await
                    .ok()
                    .flatten()
            }
        };
        let Some(command) = command else {
            tracing::info!(repository = %repository.redacted_url(), "no test command given or detected for the repository");
            return Ok(None);
        };
        let after = self.counted_run(workspace, &command).await?;
        let base = workspace.base().await?;
        let key = BaselineKey::new(&base, &command, &self.execution.sandbox_limits);
        let cache = workspace
            .dir()
            .parent()
            .map(|task_dir| task_dir.join(BASELINE_FILE));
        if let Some(before) = match &cache {
            Some(cache) => read_baseline(cache, &key).await,
            None => None,
        } {
            tracing::info!(%command, base = %base, failed_before = before.failed, failed_after = after.failed, "the repository's tests ran after the change; the run before it is reused");
            return Ok(Some(RepositoryTests {
                command,
                before,
                after,
                before_reused: true,
            }));
        }
        workspace.check_out(&base).await?;
        let before = self.counted_run(workspace, &command).await;
        workspace.check_out(tested).await?;
        let before = before?;
        if let Some(cache) = cache {
            write_baseline(cache, key, before.clone()).await;
        }
        tracing::info!(%command, failed_before = before.failed, failed_after = after.failed, "the repository's tests ran before and after the change");
        Ok(Some(RepositoryTests {
            command,
            before,
            after,
            before_reused: false,
        }))
    }

    /// `command` run in the sandbox, with the counts its output shows.
    async fn counted_run(
        &self,
        workspace: &TaskWorkspace,
        command: &str,
    ) -> std::result::Result<CountedRun, StepFailure> {
        let run = self.sandboxed(workspace, command).await?;
        let counts = counts_from_output(&run.output);
        Ok(CountedRun {
            passed: counts.map_or(0, |c| c.passed),
            failed: counts.map_or(0, |c| c.failed + c.errors),
            skipped: counts.map_or(0, |c| c.skipped),
            counted_from: counts.map(|c| c.source.to_owned()),
            run,
        })
    }

    async fn record_reviewed_commit(
        &self,
        request: &StepRequest,
        mut output: Map<String, Value>,
    ) -> Result<StepOutput> {
        let test = self
            .artifacts
            .read_artifact(request.task_id, StepId::v1(Stage::Test))
            .await?;
        if let Some(commit) = test.as_ref().and_then(tested_commit) {
            output.insert("reviewed_commit".to_owned(), json!(commit));
        }
        Ok(Ok(output))
    }
}

/// A step's artifact when code execution is off: the model's answer as it is, except the
/// test plan, recorded as not run (the counts the contract asks for are zero, and
/// `executed: false` says why).
fn record_unexecuted(stage: Stage, mut output: Map<String, Value>) -> StepOutput {
    if stage == Stage::Test {
        serde_json::from_value::<TestPlan>(Value::Object(output.clone()))
            .map_err(|e| StepFailure::permanent(format!("the output is not a test plan: {e}")))?;
        output.insert("executed".to_owned(), Value::Bool(false));
        for count in ["tests_added", "passed", "failed"] {
            output.insert(count.to_owned(), json!(0));
        }
    }
    Ok(output)
}

/// The paths a tester may not write: tests only add files, so on a repository none of the
/// implementation commit's files (the repository's own tests included), and otherwise none of
/// the implementation's files.
async fn untouchable(
    workspace: &TaskWorkspace,
    on_repository: bool,
    implementation_commit: &CommitId,
    implemented: Vec<crate::output::FileContent>,
) -> std::result::Result<Vec<String>, WorkspaceError> {
    if !on_repository {
        return Ok(implemented.into_iter().map(|file| file.path).collect());
    }
    workspace.paths_at(implementation_commit).await
}

/// The counts of a run: from the JUnit XML report the plan names when it is there and
/// readable, else from the runner's printed summary.
async fn count_tests(
    workspace: &TaskWorkspace,
    plan: &TestPlan,
    output: &str,
) -> Option<TestCounts> {
    if let Some(report) = &plan.junit_xml
        && let Some(xml) = workspace.read_run_file(report, JUNIT_LIMIT).await
    {
        match counts_from_junit(&xml) {
            Ok(counts) => return Some(counts),
            Err(error) => tracing::warn!(%error, report = %report, "unreadable JUnit report"),
        }
    }
    counts_from_output(output)
}

/// `implement@v1 attempt 2: <the first line of what the step says it did>`.
fn commit_message(request: &StepRequest, summary: &str) -> String {
    let first_line = summary.lines().next().unwrap_or_default().trim();
    format!(
        "{} attempt {}: {first_line}",
        request.step_id, request.attempt
    )
}

fn cut_diff(mut diff: String) -> String {
    if diff.len() > DIFF_LIMIT {
        let mut end = DIFF_LIMIT;
        while !diff.is_char_boundary(end) {
            end -= 1;
        }
        let omitted = diff.len() - end;
        diff.truncate(end);
        diff.push_str(&format!("\n[… {omitted} more bytes of diff …]"));
    }
    diff
}

/// What the repository's test run on the base depends on: the same key, the same run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct BaselineKey {
    base: CommitId,
    command: String,
    timeout_ms: u128,
    memory_bytes: u64,
    output_bytes: usize,
    max_processes: Option<u32>,
    disk_bytes: Option<u64>,
}

impl BaselineKey {
    fn new(base: &CommitId, command: &str, limits: &SandboxLimits) -> Self {
        Self {
            base: base.clone(),
            command: command.to_owned(),
            timeout_ms: limits.timeout.as_millis(),
            memory_bytes: limits.memory_bytes,
            output_bytes: limits.output_bytes,
            max_processes: limits.max_processes,
            disk_bytes: limits.disk_bytes,
        }
    }
}

/// The content of [`BASELINE_FILE`].
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Baseline {
    key: BaselineKey,
    before: CountedRun,
}

/// The kept run on the base for `key`, when there is one; a missing, unreadable or other
/// key's file is no run (the run is made again).
async fn read_baseline(path: &std::path::Path, key: &BaselineKey) -> Option<CountedRun> {
    let bytes = match tokio::fs::read(path).await {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot read the kept run of the repository's tests on the base");
            return None;
        }
    };
    match serde_json::from_slice::<Baseline>(&bytes) {
        Ok(kept) if &kept.key == key => Some(kept.before),
        Ok(_) => None,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "the kept run of the repository's tests on the base is unreadable");
            None
        }
    }
}

/// Keeps `before` for `key` in `path`, replacing it atomically; a failure is logged (the
/// next attempt runs the tests on the base again).
async fn write_baseline(path: std::path::PathBuf, key: BaselineKey, before: CountedRun) {
    let bytes = match serde_json::to_vec_pretty(&Baseline { key, before }) {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::warn!(%error, "cannot encode the run of the repository's tests on the base");
            return;
        }
    };
    let written = tokio::task::spawn_blocking(move || {
        crate::store::fs_util::write_replacing(&path, &bytes, false)
            .map_err(|error| format!("{}: {error}", path.display()))
    })
    .await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::warn!(%error, "cannot keep the run of the repository's tests on the base");
        }
        Err(error) => {
            tracing::warn!(%error, "cannot keep the run of the repository's tests on the base");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(digit: char) -> CommitId {
        match CommitId::try_from(digit.to_string().repeat(40)) {
            Ok(id) => id,
            Err(problem) => panic!("{problem}"),
        }
    }

    fn counted(output: &str) -> CountedRun {
        CountedRun {
            passed: 2,
            failed: 1,
            skipped: 0,
            counted_from: Some("unittest".into()),
            run: RunOutput {
                sandbox: "bubblewrap".into(),
                command: "make test".into(),
                exit_code: Some(1),
                timed_out: false,
                duration_ms: 12,
                output: output.into(),
                output_omitted_bytes: 0,
            },
        }
    }

    #[tokio::test]
    async fn the_kept_run_on_the_base_is_reused_only_for_the_same_base_command_and_limits() {
        let dir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(error) => panic!("{error}"),
        };
        let path = dir.path().join(BASELINE_FILE);
        let limits = SandboxLimits::default();
        let key = BaselineKey::new(&commit('a'), "make test", &limits);
        assert_eq!(read_baseline(&path, &key).await, None, "nothing kept yet");

        write_baseline(path.clone(), key.clone(), counted("first")).await;
        assert_eq!(read_baseline(&path, &key).await, Some(counted("first")));

        let other_base = BaselineKey::new(&commit('b'), "make test", &limits);
        let other_command = BaselineKey::new(&commit('a'), "make check", &limits);
        let other_limits = BaselineKey::new(
            &commit('a'),
            "make test",
            &SandboxLimits {
                timeout: limits.timeout * 2,
                ..limits
            },
        );
        for other in [other_base, other_command, other_limits] {
            assert_eq!(read_baseline(&path, &other).await, None, "{other:?}");
        }

        // A newer run for another key replaces the kept one.
        let newer = BaselineKey::new(&commit('b'), "make test", &limits);
        write_baseline(path.clone(), newer.clone(), counted("second")).await;
        assert_eq!(read_baseline(&path, &newer).await, Some(counted("second")));
        assert_eq!(read_baseline(&path, &key).await, None);

        std::fs::write(&path, "not json").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            read_baseline(&path, &newer).await,
            None,
            "unreadable: run again"
        );
    }
}
