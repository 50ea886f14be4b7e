//! The ci-monitor: checks out a published change, runs the check command on it in the
//! sandbox, records the run as `ci.json` and reports `ci`.

use async_trait::async_trait;
use chrono::Utc;
use serde::Serialize;

use super::{Deps, Handler};
use crate::Result;
use crate::bus::Delivery;
use crate::execution::sandbox::{RunOutput, SandboxRun};
use crate::execution::{CommitId, clone_at};
use crate::ids::{Stage, StepId};
use crate::output::TestReport;
use crate::publish::branch_name;
use crate::store::fs_util::confined;
use crate::wire::{CiWatch, ReportEvent, ReportStatus, decode};

/// How much of the check's output the `ci` report carries; `ci.json` keeps the whole capture.
const OUTPUT_IN_REPORT: usize = 4000;

#[derive(Debug, Clone)]
pub(crate) struct CiMonitor {
    pub(crate) deps: Deps,
}

/// `DATA_DIR/<task_id>/ci.json`: the last check of the task's published change.
#[derive(Debug, Serialize)]
struct CiRecord<'a> {
    passed: bool,
    branch: &'a str,
    commit: &'a str,
    checked_commit: Option<&'a CommitId>,
    url: Option<&'a str>,
    problem: Option<&'a str>,
    run: Option<&'a RunOutput>,
    checked_at: chrono::DateTime<Utc>,
}

#[async_trait]
impl Handler for CiMonitor {
    async fn handle(&self, delivery: &Delivery) -> Result<()> {
        let deps = &self.deps;
        let watch: CiWatch = match decode(&delivery.payload) {
            Ok(watch) => watch,
            Err(malformed) => return deps.dead_letter(delivery, &malformed.reason).await,
        };
        if deps.state.task(watch.task_id).await?.is_none() {
            let reason = format!("ci_watch for unknown task {}", watch.task_id);
            return deps.dead_letter(delivery, &reason).await;
        }
        let expected = branch_name(watch.task_id);
        if watch.branch != expected {
            let reason = format!(
                "ci_watch names branch {:?}; task {} publishes {expected}",
                watch.branch, watch.task_id
            );
            return deps.dead_letter(delivery, &reason).await;
        }
        let (checked, outcome) = self.check(&watch).await?;
        let (passed, run, problem) = match &outcome {
            Ok(run) => (run.exit_code == Some(0) && !run.timed_out, Some(run), None),
            Err(problem) => (false, None, Some(problem.as_str())),
        };
        let record = CiRecord {
            passed,
            branch: &watch.branch,
            commit: &watch.commit,
            checked_commit: checked.as_ref(),
            url: watch.url.as_deref(),
            problem,
            run,
            checked_at: Utc::now(),
        };
        deps.artifacts
            .write_record(watch.task_id, "ci.json", &record)
            .await?;
        let verdict = if passed { "passed" } else { "failed" };
        let summary = match (run, problem) {
            (Some(run), _) => format!(
                "CI {verdict} on {}: `{}` ({})",
                watch.branch,
                run.command,
                run.ending()
            ),
            (None, Some(problem)) => format!("CI {verdict} on {}: {problem}", watch.branch),
            (None, None) => format!("CI {verdict} on {}", watch.branch),
        };
        tracing::info!(task_id = %watch.task_id, branch = %watch.branch, passed, "ci checked");
        let mut event = ReportEvent::new(watch.task_id, ReportStatus::Ci, summary, Utc::now())
            .with_detail("passed", passed)
            .with_detail("branch", watch.branch.clone())
            .with_detail("commit", watch.commit.clone());
        if let Some(run) = run {
            event = event
                .with_detail("command", run.command.clone())
                .with_detail("exit_code", run.exit_code)
                .with_detail("timed_out", run.timed_out)
                .with_detail("duration_ms", run.duration_ms)
                .with_detail("output", run.output_tail(OUTPUT_IN_REPORT));
        }
        if let Some(problem) = problem {
            event = event.with_detail("problem", problem);
        }
        deps.report(&event).await
    }
}

impl CiMonitor {
    /// Checks the change out and runs the check command; gives the checked-out commit and the
    /// run, or why there is no run.
    async fn check(
        &self,
        watch: &CiWatch,
    ) -> Result<(Option<CommitId>, std::result::Result<RunOutput, String>)> {
        let deps = &self.deps;
        let Some(command) = self.check_command(watch).await? else {
            return Ok((
                None,
                Err("no check command: set CI_CHECK_COMMAND, or let the tests run first".into()),
            ));
        };
        let task = watch.task_id.to_string();
        let checkout = confined(&deps.data_dir, &[&task, "ci-checkout"])?;
        if tokio::fs::symlink_metadata(&checkout).await.is_ok() {
            remove(&checkout).await;
        }
        // From the repository the branch was pushed to when it is on this machine (so the
        // check sees what was published), else the workspace commit that was published.
        let cloned = match deps.execution.publisher.local_repository() {
            Some(repository) => clone_at(repository, &watch.branch, &checkout).await,
            None => match deps.workspace(watch.task_id).await {
                Ok(workspace) => {
                    clone_at(workspace.dir(), watch.source_commit.as_str(), &checkout).await
                }
                Err(error) => Err(error),
            },
        };
        let checked = match cloned {
            Ok(commit) => commit,
            Err(error) => {
                remove(&checkout).await;
                return Ok((
                    None,
                    Err(format!("could not check out the change: {error}")),
                ));
            }
        };
        let run = SandboxRun {
            workdir: checkout.clone(),
            command,
            env: Vec::new(),
            read_only: vec![".git".to_owned()],
            limits: deps.execution.sandbox_limits,
        };
        let outcome = deps
            .execution
            .sandbox
            .run(&run)
            .await
            .map_err(|error| error.to_string());
        remove(&checkout).await;
        Ok((Some(checked), outcome))
    }

    /// The configured check command, else the command that ran the task's tests.
    async fn check_command(&self, watch: &CiWatch) -> Result<Option<String>> {
        if let Some(command) = &self.deps.execution.ci_check_command {
            return Ok(Some(command.clone()));
        }
        let test = self
            .deps
            .artifacts
            .read_artifact(watch.task_id, StepId::v1(Stage::Test))
            .await?;
        Ok(test
            .and_then(|artifact| artifact.output_as::<TestReport>().ok())
            .map(|report| report.run.command))
    }
}

async fn remove(dir: &std::path::Path) {
    if let Err(error) = tokio::fs::remove_dir_all(dir).await
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), %error, "could not remove the ci checkout");
    }
}
