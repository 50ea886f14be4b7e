//! Opening the connections of a store: their settings, the schema and its version.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::rows::Decoder;
use crate::store::StoreResult;
use crate::store::sqlite_writer::database;

/// The schema version this code reads and writes: [`SCHEMA`] creates version 1, and each
/// step of [`MIGRATIONS`] brings it one version further.
const SCHEMA_VERSION: i64 = 2;

// Every version after the first has its migration.
const _: () = assert!(MIGRATIONS.len() as i64 + 1 == SCHEMA_VERSION);

/// How long a connection waits for another one's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long to wait before trying again to switch a file to WAL mode.
const WAL_RETRY: Duration = Duration::from_millis(5);

/// How many statements each connection keeps prepared (the store uses about twenty).
const STATEMENT_CACHE: usize = 64;

/// The schema, created idempotently at open. Plain SQL that PostgreSQL also accepts, so that
/// both stores can share the shape. Times are RFC 3339 text with a fixed number of digits,
/// so that text order is time order.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL
);
INSERT INTO schema_version (version)
    SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM schema_version);
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    prompt TEXT NOT NULL,
    status TEXT NOT NULL,
    current_step TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_by_created_at ON tasks (created_at);
CREATE TABLE IF NOT EXISTS attempts (
    task_id TEXT NOT NULL,
    step_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    stage_order INTEGER NOT NULL,
    status TEXT NOT NULL,
    request TEXT NOT NULL,
    error TEXT,
    model TEXT,
    requested_at TEXT NOT NULL,
    finished_at TEXT,
    duration_ms BIGINT,
    PRIMARY KEY (task_id, step_id, attempt)
);
CREATE INDEX IF NOT EXISTS attempts_unfinished ON attempts (requested_at)
    WHERE status = 'requested';
CREATE TABLE IF NOT EXISTS consumer_offsets (
    group_name TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition_id INTEGER NOT NULL,
    next_offset BIGINT NOT NULL,
    committed_at TEXT NOT NULL,
    PRIMARY KEY (group_name, topic, partition_id)
);
CREATE TABLE IF NOT EXISTS outbox (
    task_id TEXT NOT NULL,
    step_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    topic TEXT NOT NULL,
    message_key TEXT NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (task_id, step_id, attempt, seq)
);
CREATE TABLE IF NOT EXISTS leases (
    resource TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    expires_at TEXT NOT NULL
);
";

/// The steps from one schema version to the next: `MIGRATIONS[n]` moves version `n + 1` to
/// `n + 2`. Added columns have defaults, so that rows written before read as they did (no
/// LLM calls, nothing spent) and a program that writes without them still works.
const MIGRATIONS: &[&str] = &[
    // 2: the LLM calls of each attempt (a JSON array) and what each task spent.
    "ALTER TABLE attempts ADD COLUMN calls TEXT;
     ALTER TABLE tasks ADD COLUMN prompt_tokens INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE tasks ADD COLUMN completion_tokens INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE tasks ADD COLUMN cost_usd REAL NOT NULL DEFAULT 0;
     ALTER TABLE tasks ADD COLUMN llm_calls INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE tasks ADD COLUMN unpriced_calls INTEGER NOT NULL DEFAULT 0;",
];

/// The writing connection to the file at `path` (created if missing), in WAL mode with
/// durable commits, with the schema in place. Blocks: call it off the async threads.
pub(super) fn open_writer(path: &Path, decoder: &Decoder) -> StoreResult<Connection> {
    let connection = Connection::open(path).map_err(database)?;
    // The wait comes first: another process may be creating the same file right now.
    connection.busy_timeout(BUSY_TIMEOUT).map_err(database)?;
    use_wal(&connection)?;
    connection
        .execute_batch("PRAGMA synchronous = FULL;")
        .map_err(database)?;
    prepare(&connection, decoder)?;
    Ok(connection)
}

/// Switches the file to WAL mode (it stays so), waiting up to [`BUSY_TIMEOUT`] for others.
///
/// The switch reads the file before it takes the write lock, and SQLite refuses such an
/// upgrade at once, without its busy handler, while another connection is switching too (two
/// processes opening a new file together): so the wait is here.
fn use_wal(connection: &Connection) -> StoreResult<()> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        let switched = connection
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0));
        match switched {
            Ok(mode) => {
                if !mode.eq_ignore_ascii_case("wal") {
                    tracing::warn!(%mode, "SQLite could not switch the state database to WAL mode");
                }
                return Ok(());
            }
            Err(error)
                if error.sqlite_error_code() == Some(ErrorCode::DatabaseBusy)
                    && Instant::now() < deadline =>
            {
                thread::sleep(WAL_RETRY);
            }
            Err(error) => return Err(database(error)),
        }
    }
}

/// A connection to the existing file at `path` that only reads.
pub(super) fn open_reader(path: &Path) -> StoreResult<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(path, flags).map_err(database)?;
    connection.busy_timeout(BUSY_TIMEOUT).map_err(database)?;
    // Read-write only so that it can take part in WAL's shared memory; it never writes.
    connection
        .execute_batch("PRAGMA query_only = ON;")
        .map_err(database)?;
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(connection)
}

/// The one connection of a new, private database in memory, with the schema in place.
pub(super) fn open_in_memory(decoder: &Decoder) -> StoreResult<Connection> {
    let connection = Connection::open_in_memory().map_err(database)?;
    prepare(&connection, decoder)?;
    Ok(connection)
}

/// Settings every writing connection shares, then the schema, brought up to date, and the
/// check of its version.
fn prepare(connection: &Connection, decoder: &Decoder) -> StoreResult<()> {
    connection
        .execute_batch("PRAGMA foreign_keys = ON;")
        .map_err(database)?;
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // One transaction, so that two processes creating or migrating the same file do not
    // interleave: the second waits for the lock and then finds the schema up to date.
    connection
        .execute_batch("BEGIN IMMEDIATE")
        .map_err(database)?;
    let prepared = create_and_migrate(connection, decoder)
        .and_then(|()| connection.execute_batch("COMMIT").map_err(database));
    if prepared.is_err() && !connection.is_autocommit() {
        // Nothing of a failed migration may stay; the error that matters is the first one.
        let _ = connection.execute_batch("ROLLBACK");
    }
    prepared
}

/// Creates the schema (version 1) when it is missing and applies the migrations the file
/// lacks, inside the transaction [`prepare`] holds.
fn create_and_migrate(connection: &Connection, decoder: &Decoder) -> StoreResult<()> {
    connection.execute_batch(SCHEMA).map_err(database)?;
    let version: i64 = connection
        .query_row("SELECT MAX(version) FROM schema_version", [], |row| {
            Ok(row.get(0))
        })
        .map_err(database)?
        .map_err(|e| decoder.corrupt(format!("schema_version: {e}")))?;
    // Newer than this program (its columns may mean things this one does not know), or no
    // version at all: reading or migrating it could only do harm.
    if !(1..=SCHEMA_VERSION).contains(&version) {
        return Err(decoder.corrupt(format!(
            "schema version {version}, this program knows version {SCHEMA_VERSION}"
        )));
    }
    for (from, migration) in (1..)
        .zip(MIGRATIONS)
        .skip_while(|(from, _)| *from < version)
    {
        connection.execute_batch(migration).map_err(|e| {
            decoder.corrupt(format!(
                "migrating the schema from version {from} to {}: {e}",
                from + 1
            ))
        })?;
        connection
            .execute("UPDATE schema_version SET version = ?1", [from + 1])
            .map_err(database)?;
    }
    Ok(())
}
