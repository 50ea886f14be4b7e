//! Reading rows and decoding them into records; the stored form of times and stages.
//!
//! A value that does not decode is [`StoreError::Corrupt`], naming the database file and
//! the column or the reason.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::types::FromSql;
use rusqlite::{Connection, Params, Row};

use crate::ids::Attempt;
use crate::store::sqlite_writer::database;
use crate::store::state::{AttemptRecord, Lease, TaskRecord};
use crate::store::stored::{self, StoredAttempt, StoredLease, StoredTask};
use crate::store::{StoreError, StoreResult};

/// Turns rows of one database into records; cheap to clone into a query.
#[derive(Debug, Clone)]
pub(super) struct Decoder {
    /// The database file, named in errors about its content.
    path: Arc<Path>,
}

impl Decoder {
    /// A decoder for the database at `path`.
    pub(super) fn new(path: &Path) -> Self {
        Self { path: path.into() }
    }

    /// The error for content that is not what this program wrote.
    pub(super) fn corrupt(&self, reason: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            path: self.path.to_path_buf(),
            reason: reason.into(),
        }
    }

    /// A task from a row of [`stored::task_columns`].
    pub(super) fn task(&self, row: &Row<'_>) -> StoreResult<TaskRecord> {
        StoredTask {
            task_id: self.column(row, "task_id")?,
            prompt: self.column(row, "prompt")?,
            status: self.column(row, "status")?,
            current_step: self.column(row, "current_step")?,
            created_at: self.time(row, "created_at")?,
            updated_at: self.time(row, "updated_at")?,
            prompt_tokens: self.column(row, "prompt_tokens")?,
            completion_tokens: self.column(row, "completion_tokens")?,
            cost_usd: self.column(row, "cost_usd")?,
            llm_calls: self.column(row, "llm_calls")?,
            unpriced_calls: self.column(row, "unpriced_calls")?,
        }
        .decode()
        .map_err(|reason| self.corrupt(reason))
    }

    /// An attempt from a row of `request, status, error, model, finished_at, duration_ms,
    /// calls`.
    pub(super) fn attempt(&self, row: &Row<'_>) -> StoreResult<AttemptRecord> {
        let finished_at: Option<String> = self.column(row, "finished_at")?;
        StoredAttempt {
            request: self.column(row, "request")?,
            status: self.column(row, "status")?,
            error: self.column(row, "error")?,
            model: self.column(row, "model")?,
            finished_at: finished_at
                .map(|text| self.parse_time("attempts.finished_at", &text))
                .transpose()?,
            duration_ms: self.column(row, "duration_ms")?,
            calls: self.column(row, "calls")?,
        }
        .decode()
        .map_err(|reason| self.corrupt(reason))
    }

    /// A lease from a row of `resource, holder, epoch, expires_at`.
    pub(super) fn lease(&self, row: &Row<'_>) -> StoreResult<Lease> {
        StoredLease {
            resource: self.column(row, "resource")?,
            holder: self.column(row, "holder")?,
            epoch: self.column(row, "epoch")?,
            expires_at: self.time(row, "expires_at")?,
        }
        .decode()
        .map_err(|reason| self.corrupt(reason))
    }

    /// An attempt number as stored.
    pub(super) fn attempt_number(&self, stored: i64) -> StoreResult<Attempt> {
        stored::attempt_number(stored).map_err(|reason| self.corrupt(reason))
    }

    /// One column by name.
    pub(super) fn column<T: FromSql>(&self, row: &Row<'_>, name: &str) -> StoreResult<T> {
        row.get(name)
            .map_err(|e| self.corrupt(format!("column {name}: {e}")))
    }

    fn time(&self, row: &Row<'_>, name: &str) -> StoreResult<DateTime<Utc>> {
        let text: String = self.column(row, name)?;
        self.parse_time(name, &text)
    }

    fn parse_time(&self, name: &str, text: &str) -> StoreResult<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| self.corrupt(format!("{name} {text:?}: {e}")))
    }
}

/// Every row `sql` returns, decoded.
pub(super) fn fetch_all<T>(
    connection: &Connection,
    sql: &str,
    params: impl Params,
    decode: impl Fn(&Row<'_>) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let mut statement = connection.prepare_cached(sql).map_err(database)?;
    let mut rows = statement.query(params).map_err(database)?;
    let mut records = Vec::new();
    while let Some(row) = rows.next().map_err(database)? {
        records.push(decode(row)?);
    }
    Ok(records)
}

/// The first row `sql` returns, decoded, if there is one.
pub(super) fn fetch_optional<T>(
    connection: &Connection,
    sql: &str,
    params: impl Params,
    decode: impl FnOnce(&Row<'_>) -> StoreResult<T>,
) -> StoreResult<Option<T>> {
    let mut statement = connection.prepare_cached(sql).map_err(database)?;
    let mut rows = statement.query(params).map_err(database)?;
    rows.next().map_err(database)?.map(decode).transpose()
}

/// A time as stored: RFC 3339 in UTC with six fractional digits, so that text order is time
/// order.
pub(super) fn time_text(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn stored_times_sort_as_times() {
        let earlier = Utc.timestamp_opt(1_700_000_000, 5_000).single();
        let later = Utc.timestamp_opt(1_700_000_000, 120_000_000).single();
        let (Some(earlier), Some(later)) = (earlier, later) else {
            panic!("the test's times are valid");
        };
        assert_eq!(time_text(earlier), "2023-11-14T22:13:20.000005Z");
        assert!(time_text(earlier) < time_text(later));
    }

    #[test]
    fn a_bad_value_is_corrupt_and_names_the_file() -> Result<(), Box<dyn std::error::Error>> {
        let connection = rusqlite::Connection::open_in_memory()?;
        let decoder = Decoder::new(Path::new("data/state.sqlite"));
        let error = connection.query_row("SELECT 'yesterday' AS created_at", [], |row| {
            Ok(decoder.time(row, "created_at"))
        })?;
        match error {
            Err(StoreError::Corrupt { path, reason }) => {
                assert_eq!(path, Path::new("data/state.sqlite"));
                assert!(reason.contains("yesterday"), "{reason}");
            }
            other => panic!("a bad time must be corrupt, got {other:?}"),
        }
        Ok(())
    }
}
