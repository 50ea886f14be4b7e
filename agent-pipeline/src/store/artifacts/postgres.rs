//! Artifacts as rows of the `documents` table, so that hosts need no shared disk.

use std::path::PathBuf;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::PgPool;

use super::{
    Artifact, ArtifactStore, Written, artifact_writes, canonical_document, check_document_name,
    encode,
};
use crate::ids::{Attempt, TaskId};
use crate::store::postgres::database;
use crate::store::{StoreError, StoreResult};

/// An [`ArtifactStore`] in the PostgreSQL database of a
/// [`PostgresStateStore`](crate::store::PostgresStateStore), sharing its connections: one row
/// per document (`task_id`, `name`, `body` as JSONB), named as the file would be. The writes
/// of one task are serialized by an advisory lock, so two processes storing attempts of the
/// same step keep both.
///
/// ```no_run
/// use agent_pipeline::store::{ArtifactStore, PostgresStateStore};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let state = PostgresStateStore::connect("postgres://agent@db.internal/agent").await?;
/// let artifacts = state.artifact_store();
/// let task_id = agent_pipeline::TaskId::new();
/// assert!(artifacts.documents(task_id).await?.is_empty());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PostgresArtifactStore {
    pool: PgPool,
    /// `postgres://host:port/database`, never the password.
    database: PathBuf,
}

impl PostgresArtifactStore {
    pub(in crate::store) fn new(pool: PgPool, database: PathBuf) -> Self {
        Self { pool, database }
    }
}

/// Stores document `$2` of task `$1` with the body `$3` (JSON text), replacing it.
const UPSERT: &str = "INSERT INTO documents (task_id, name, body, written_at)
     VALUES ($1, $2, $3::jsonb, now())
     ON CONFLICT (task_id, name) DO UPDATE SET body = EXCLUDED.body,
         written_at = EXCLUDED.written_at";

impl PostgresArtifactStore {
    async fn upsert(&self, task_id: TaskId, name: &str, body: String) -> StoreResult<String> {
        check_document_name(name)?;
        sqlx::query(UPSERT)
            .bind(task_id.to_string())
            .bind(name)
            .bind(body)
            .execute(&self.pool)
            .await
            .map_err(database)?;
        Ok(self.location(task_id, name))
    }
}

#[async_trait]
impl ArtifactStore for PostgresArtifactStore {
    fn task_location(&self, task_id: TaskId) -> String {
        format!("{}#{task_id}", self.database.display())
    }

    fn location(&self, task_id: TaskId, name: &str) -> String {
        format!("{}#{task_id}/{name}", self.database.display())
    }

    async fn write_artifact(&self, artifact: &Artifact) -> StoreResult<String> {
        let (task_id, step, attempt) = (artifact.task_id, artifact.step, artifact.attempt);
        let canonical = canonical_document(step);
        let body = encode(&self.location(task_id, &canonical), artifact)?.to_string();
        let task = task_id.to_string();
        let mut transaction = self.pool.begin().await.map_err(database)?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(&task)
            .execute(&mut *transaction)
            .await
            .map_err(database)?;
        let previous: Option<Option<i64>> = sqlx::query_scalar(
            "SELECT (body->>'attempt')::bigint FROM documents WHERE task_id = $1 AND name = $2",
        )
        .bind(&task)
        .bind(&canonical)
        .fetch_optional(&mut *transaction)
        .await
        .map_err(database)?;
        let previous = match previous {
            None => None,
            Some(number) => Some(
                number
                    .and_then(|n| u32::try_from(n).ok())
                    .and_then(|n| Attempt::new(n).ok())
                    .ok_or_else(|| StoreError::Corrupt {
                        path: self.location(task_id, &canonical).into(),
                        reason: "no attempt number".into(),
                    })?,
            ),
        };
        for (name, written) in artifact_writes(step, attempt, previous) {
            let query = match written {
                Written::New => sqlx::query(UPSERT).bind(&task).bind(name).bind(&body),
                Written::PreviousIfMissing => sqlx::query(
                    "INSERT INTO documents (task_id, name, body, written_at)
                     SELECT task_id, $2, body, written_at FROM documents
                     WHERE task_id = $1 AND name = $3
                     ON CONFLICT (task_id, name) DO NOTHING",
                )
                .bind(&task)
                .bind(name)
                .bind(&canonical),
            };
            query.execute(&mut *transaction).await.map_err(database)?;
        }
        transaction.commit().await.map_err(database)?;
        Ok(self.location(task_id, &canonical))
    }

    async fn write_document(
        &self,
        task_id: TaskId,
        name: &str,
        value: &Value,
    ) -> StoreResult<String> {
        self.upsert(task_id, name, value.to_string()).await
    }

    async fn read_document(&self, task_id: TaskId, name: &str) -> StoreResult<Option<Value>> {
        check_document_name(name)?;
        let body: Option<String> =
            sqlx::query_scalar("SELECT body::text FROM documents WHERE task_id = $1 AND name = $2")
                .bind(task_id.to_string())
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(database)?;
        body.map(|body| {
            serde_json::from_str(&body).map_err(|e| StoreError::Corrupt {
                path: self.location(task_id, name).into(),
                reason: e.to_string(),
            })
        })
        .transpose()
    }

    async fn documents(&self, task_id: TaskId) -> StoreResult<Vec<String>> {
        sqlx::query_scalar("SELECT name FROM documents WHERE task_id = $1 ORDER BY name")
            .bind(task_id.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(database)
    }

    async fn delete_documents(&self, task_id: TaskId, names: &[String]) -> StoreResult<usize> {
        let deleted = sqlx::query("DELETE FROM documents WHERE task_id = $1 AND name = ANY($2)")
            .bind(task_id.to_string())
            .bind(names)
            .execute(&self.pool)
            .await
            .map_err(database)?
            .rows_affected();
        Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
    }

    async fn delete_task(&self, task_id: TaskId) -> StoreResult<()> {
        sqlx::query("DELETE FROM documents WHERE task_id = $1")
            .bind(task_id.to_string())
            .execute(&self.pool)
            .await
            .map_err(database)?;
        Ok(())
    }
}
