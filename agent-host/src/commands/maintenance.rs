//! `prune` and `migrate`: looking after the stores while, or before, the services run.

use std::process::ExitCode;

use agent_pipeline::retention::RetentionPolicy;
use agent_pipeline::store::{ArtifactStore, PostgresStateStore, Pruning, copy_stores};
use anyhow::{Context, Result, bail};

use super::{build_pipeline, open_existing_stores};
use crate::cli::{MigrateArgs, PruneArgs};
use crate::config::{Config, days_duration};
use crate::database::{ArtifactPlace, StateDatabase};

/// `agent-host prune`: applies the retention policy once and says what it pruned.
pub(crate) async fn prune(config: &Config, args: &PruneArgs) -> Result<ExitCode> {
    let policy = match (args.older_than_days, config.retention) {
        (Some(days), _) => {
            RetentionPolicy::after(days_duration(days).context("--older-than-days")?)
        }
        (None, Some(policy)) => policy,
        (None, None) => bail!("nothing to prune by: set RETENTION_DAYS, or give --older-than-days"),
    };
    let delete = args.delete_tasks
        || config
            .retention
            .is_some_and(|p| p.pruning == Pruning::WholeTask);
    let policy = if delete {
        policy.deleting_tasks()
    } else {
        policy
    };
    let pipeline = build_pipeline(config, false).await?;
    let pruned = pipeline.prune(&policy).await.context("retention failed")?;
    let what = if delete { "deleted" } else { "pruned" };
    println!(
        "{what} {} task(s) that ended before {}: {} attempt document(s), {} report event(s)",
        pruned.tasks,
        policy
            .cutoff(chrono::Utc::now())
            .format("%Y-%m-%d %H:%M:%S UTC"),
        pruned.documents,
        pruned.report_events
    );
    Ok(ExitCode::SUCCESS)
}

/// `agent-host migrate --to postgres://…`: copies the tasks of this configuration's stores to
/// the PostgreSQL database.
pub(crate) async fn migrate(config: &Config, args: &MigrateArgs) -> Result<ExitCode> {
    let target = StateDatabase::from_url(Some(&args.to), &config.data_dir).context("--to")?;
    let StateDatabase::Postgres(url) = &target else {
        bail!("--to must be a PostgreSQL database (postgres://…), not {target}");
    };
    if target == config.database {
        bail!("--to names the database the tasks are already in ({target})");
    }
    let Some(from) = open_existing_stores(config).await? else {
        bail!(
            "there is nothing to copy: {} does not exist",
            config.database
        );
    };
    if args.with_artifacts && config.artifacts == ArtifactPlace::Database {
        bail!("--with-artifacts copies artifact files, and ARTIFACT_STORE=database has none");
    }
    let to = PostgresStateStore::connect(url)
        .await
        .with_context(|| format!("cannot open {target}"))?;
    let documents = to.artifact_store();
    let to_artifacts: Option<&dyn ArtifactStore> = args.with_artifacts.then_some(&documents);
    eprintln!(
        "copying the tasks of {} to {target}{}",
        config.database,
        if args.with_artifacts {
            " (with their documents)"
        } else {
            ""
        }
    );
    let copied = copy_stores(
        (from.state.as_ref(), from.artifacts.as_ref()),
        (&to, to_artifacts),
    )
    .await
    .with_context(|| format!("copying to {target} failed; it can run again"))?;
    println!(
        "copied {} task(s), {} attempt(s), {} document(s), {} consumer position(s) to {target}",
        copied.tasks, copied.attempts, copied.documents, copied.consumer_offsets
    );
    let artifacts = if args.with_artifacts {
        " ARTIFACT_STORE=database"
    } else {
        ""
    };
    println!("start the services with DATABASE_URL={target}{artifacts}");
    Ok(ExitCode::SUCCESS)
}
