//! The schema, embedded in the program and brought up to date when a store connects.
//!
//! Each migration runs once per database, in order, in the same transaction as the record of
//! it. Processes that start together take turns through an advisory lock, so that exactly one
//! applies each migration; a database migrated by a newer program is refused rather than
//! misread.

use sqlx::PgPool;

use super::database;
use crate::store::{StoreError, StoreResult};

/// One step of the schema.
struct Migration {
    version: i64,
    name: &'static str,
    sql: &'static str,
}

/// Every migration, oldest first.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "state",
        sql: include_str!("migrations/0001_state.sql"),
    },
    Migration {
        version: 2,
        name: "leases",
        sql: include_str!("migrations/0002_leases.sql"),
    },
    Migration {
        version: 3,
        name: "outbox",
        sql: include_str!("migrations/0003_outbox.sql"),
    },
    Migration {
        version: 4,
        name: "documents",
        sql: include_str!("migrations/0004_documents.sql"),
    },
    Migration {
        version: 5,
        name: "spend",
        sql: include_str!("migrations/0005_spend.sql"),
    },
];

/// The advisory lock the migrating process holds (any constant unlikely to be used by
/// another program on the same database: "agentpip" in ASCII).
const MIGRATION_LOCK: i64 = 0x6167_656e_7470_6970;

/// The version of the newest migration this program knows.
pub(super) fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Applies the migrations the database lacks; returns how many ran.
pub(super) async fn migrate(pool: &PgPool) -> StoreResult<usize> {
    let mut transaction = pool.begin().await.map_err(database)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *transaction)
        .await
        .map_err(database)?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS agent_pipeline_migrations (
             version BIGINT PRIMARY KEY,
             name TEXT NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .execute(&mut *transaction)
    .await
    .map_err(database)?;
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM agent_pipeline_migrations ORDER BY version")
            .fetch_all(&mut *transaction)
            .await
            .map_err(database)?;
    if let Some(newest) = applied.last().copied()
        && newest > latest_version()
    {
        return Err(StoreError::Database(format!(
            "the database's schema is at version {newest}, newer than this program's {}: \
             run a newer agent-pipeline against it",
            latest_version()
        )));
    }
    let mut ran = 0;
    for migration in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        sqlx::raw_sql(migration.sql)
            .execute(&mut *transaction)
            .await
            .map_err(|e| {
                StoreError::Database(format!(
                    "migration {} ({}) failed: {e}",
                    migration.version, migration.name
                ))
            })?;
        sqlx::query("INSERT INTO agent_pipeline_migrations (version, name) VALUES ($1, $2)")
            .bind(migration.version)
            .bind(migration.name)
            .execute(&mut *transaction)
            .await
            .map_err(database)?;
        ran += 1;
    }
    transaction.commit().await.map_err(database)?;
    Ok(ran)
}
