//! Publishing a change that passed its gates: the branch `agent/<task_id>` with a title and a
//! description made of the task's artifacts, the `pr` report and the ci-monitor's `ci_watch`.
//! The orchestrator publishes when the gates pass; the planner when a person approves.

use chrono::{DateTime, Utc};

use super::Deps;
use super::stage_effects::tested_commit;
use crate::Result;
use crate::execution::{CommitId, TaskWorkspace};
use crate::ids::{Stage, StepId, TaskId};
use crate::machine::{Context, Transition, on_publish_failed};
use crate::output::{Design, Implementation, Review, TestReport};
use crate::publish::Change;
use crate::store::Artifact;
use crate::wire::{CiWatch, ReportEvent, ReportStatus};

/// The round's canonical artifacts, in stage order.
pub(crate) async fn round_artifacts(deps: &Deps, task_id: TaskId) -> Result<Vec<Artifact>> {
    let mut artifacts = Vec::new();
    for stage in Stage::ALL {
        let step = StepId::v1(stage);
        if let Some(artifact) = deps.artifacts.read_artifact(task_id, step).await? {
            artifacts.push(artifact);
        }
    }
    Ok(artifacts)
}

/// What came of publishing a task's change.
pub(crate) enum Publication {
    /// Published: the `pr` report and the ci-monitor's message.
    Published {
        /// The `pr` report.
        pr: Box<ReportEvent>,
        /// The ci-monitor's `ci_watch`.
        watch: CiWatch,
    },
    /// Not published: what that leads to (the task ends `error` with the reason).
    Failed(Transition),
}

/// Publishes the change of the round's `artifacts` (the task's current step is `step`), at the
/// time of `context`.
pub(crate) async fn publish(
    deps: &Deps,
    task_id: TaskId,
    step: Option<StepId>,
    artifacts: &[Artifact],
    context: Context<'_>,
) -> Result<Publication> {
    Ok(
        match publish_change(deps, task_id, artifacts, context.now).await? {
            Ok((pr, watch)) => Publication::Published {
                pr: Box::new(pr),
                watch,
            },
            Err(error) => {
                tracing::warn!(%task_id, %error, "publishing failed");
                Publication::Failed(on_publish_failed(task_id, step, &error, context))
            }
        },
    )
}

/// Publishes the tested commit; gives the `pr` report and the `ci_watch` message, or why
/// it could not be published.
async fn publish_change(
    deps: &Deps,
    task_id: TaskId,
    artifacts: &[Artifact],
    now: DateTime<Utc>,
) -> Result<std::result::Result<(ReportEvent, CiWatch), String>> {
    let Some(commit) = artifacts
        .iter()
        .find(|a| a.step.stage() == Stage::Test)
        .and_then(tested_commit)
    else {
        return Ok(Err("no tested commit to publish".to_owned()));
    };
    let (prompt, repository) = deps
        .artifacts
        .read_task(task_id)
        .await?
        .map(|task| (task.prompt, task.repository))
        .unwrap_or_default();
    let workspace =
        match TaskWorkspace::open_with(&deps.data_dir, task_id, repository.as_ref()).await {
            Ok(workspace) => workspace,
            Err(error) => return Ok(Err(error.to_string())),
        };
    let title = change_title(&prompt);
    let body = change_body(&prompt, artifacts, &commit);
    let change = Change {
        task_id,
        workspace: &workspace,
        commit: &commit,
        title: &title,
        body: &body,
    };
    let published = match deps.execution.publisher.publish(&change).await {
        Ok(published) => published,
        Err(error) => return Ok(Err(error.to_string())),
    };
    tracing::info!(task_id = %task_id, branch = %published.branch, commit = %published.commit, repository = %published.repository, "change published");
    // The task asked for its branch on its own repository too.
    let pushed_to = match repository.filter(|repository| repository.push) {
        Some(repository) => {
            if let Err(error) = workspace
                .push_to_repository(&repository, &commit, &published.branch)
                .await
            {
                return Ok(Err(format!(
                    "published as {}, but not pushed to the task's repository: {error}",
                    published.branch
                )));
            }
            Some(repository.redacted_url())
        }
        None => None,
    };
    let place = published.url.as_deref().unwrap_or(&published.repository);
    let also = pushed_to
        .as_deref()
        .map(|url| format!(", and pushed to {url}"))
        .unwrap_or_default();
    let mut pr = ReportEvent::new(
        task_id,
        ReportStatus::Pr,
        format!("Change published as {} ({place}){also}", published.branch),
        now,
    )
    .with_detail("branch", published.branch.clone())
    .with_detail("commit", published.commit.clone())
    .with_detail("repository", published.repository.clone())
    .with_detail("publisher", deps.execution.publisher.name());
    if let Some(url) = &published.url {
        pr = pr.with_detail("url", url.clone());
    }
    if let Some(url) = pushed_to {
        pr = pr.with_detail("pushed_to", url);
    }
    let watch = CiWatch {
        task_id,
        branch: published.branch,
        commit: published.commit,
        source_commit: commit,
        url: published.url,
        requested_at: now,
    };
    Ok(Ok((pr, watch)))
}

/// The change's one-line title: the task's prompt, shortened.
fn change_title(prompt: &str) -> String {
    let line = prompt.lines().next().unwrap_or_default().trim();
    let mut title: String = line.chars().take(72).collect();
    if title.len() < line.len() {
        title.push('…');
    }
    if title.is_empty() {
        "agent-pipeline change".to_owned()
    } else {
        title
    }
}

/// The change's description: the task, the design, the tests that ran and the review.
fn change_body(prompt: &str, artifacts: &[Artifact], commit: &CommitId) -> String {
    let typed = |stage: Stage| artifacts.iter().find(|a| a.step.stage() == stage);
    let mut body = format!("## Task\n{}\n", prompt.trim());
    if let Some(Ok(design)) = typed(Stage::Design).map(Artifact::output_as::<Design>) {
        body.push_str(&format!("\n## Design\n{}\n", design.design_summary));
    }
    if let Some(Ok(implementation)) =
        typed(Stage::Implement).map(Artifact::output_as::<Implementation>)
    {
        body.push_str(&format!("\n## Change\n{}\n", implementation.diff_summary));
    }
    if let Some(Ok(tests)) = typed(Stage::Test).map(Artifact::output_as::<TestReport>) {
        body.push_str(&format!("\n## Tests\n{}\n", tests.summary_line()));
    }
    if let Some(Ok(review)) = typed(Stage::Review).map(Artifact::output_as::<Review>) {
        body.push_str("\n## Review\n");
        for comment in &review.comments {
            body.push_str(&format!("- {comment}\n"));
        }
    }
    body.push_str(&format!(
        "\nWorkspace commit {commit}; published by agent-pipeline.\n"
    ));
    body
}
