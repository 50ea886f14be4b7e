//! Where the state of tasks and attempts lives: `DATABASE_URL` chooses SQLite (the embedded
//! default, `DATA_DIR/state.sqlite`) or PostgreSQL (one database for many hosts). Where the
//! tasks' documents live: `ARTIFACT_STORE` chooses files under `DATA_DIR` (the default) or
//! that PostgreSQL database (hosts then need no shared disk).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use agent_pipeline::store::{
    ArtifactStore, FileArtifactStore, PostgresStateStore, SqliteStateStore, StateStore,
};
use anyhow::{Context, Result, bail};

/// The variable that chooses the state database.
pub(crate) const DATABASE_URL: &str = "DATABASE_URL";

/// The variable that chooses where the tasks' documents live.
pub(crate) const ARTIFACT_STORE: &str = "ARTIFACT_STORE";

/// Where the tasks' documents (`task.json`, artifacts, records) live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArtifactPlace {
    /// Files under `DATA_DIR/<task_id>/`.
    Files,
    /// The `documents` table of the PostgreSQL state database.
    Database,
}

impl ArtifactPlace {
    /// `ARTIFACT_STORE`: `files` (the default) or `database`, which needs a PostgreSQL
    /// `database`.
    pub(crate) fn from_setting(value: Option<&str>, database: &StateDatabase) -> Result<Self> {
        match value.map(str::trim) {
            None | Some("files") => Ok(Self::Files),
            Some("database") => match database {
                StateDatabase::Postgres(_) => Ok(Self::Database),
                StateDatabase::Sqlite(_) => bail!(
                    "{ARTIFACT_STORE}=database keeps artifacts in PostgreSQL: set \
                     {DATABASE_URL}=postgres://… too, or {ARTIFACT_STORE}=files"
                ),
            },
            Some(other) => bail!("{ARTIFACT_STORE} must be files or database, not {other:?}"),
        }
    }
}

/// The stores of a process: the state of tasks and attempts, and the tasks' documents.
#[derive(Debug, Clone)]
pub(crate) struct Stores {
    /// `DATABASE_URL`, else `state.sqlite`.
    pub(crate) state: Arc<dyn StateStore>,
    /// `ARTIFACT_STORE`: files under `DATA_DIR`, or the PostgreSQL database.
    pub(crate) artifacts: Arc<dyn ArtifactStore>,
    /// Where the documents are.
    pub(crate) place: ArtifactPlace,
}

impl Stores {
    /// Opens the state database (creating an SQLite file, or migrating a PostgreSQL schema,
    /// as needed) and the artifact store `place` says.
    pub(crate) async fn connect(
        database: &StateDatabase,
        place: ArtifactPlace,
        data_dir: &Path,
    ) -> Result<Self> {
        let (state, artifacts): (Arc<dyn StateStore>, Arc<dyn ArtifactStore>) = match database {
            StateDatabase::Sqlite(path) => (
                Arc::new(
                    SqliteStateStore::open(path)
                        .await
                        .with_context(|| format!("cannot open {}", path.display()))?,
                ),
                Arc::new(FileArtifactStore::new(data_dir)),
            ),
            StateDatabase::Postgres(url) => {
                let store = PostgresStateStore::connect(url)
                    .await
                    .with_context(|| format!("cannot open the state database {database}"))?;
                let artifacts: Arc<dyn ArtifactStore> = match place {
                    ArtifactPlace::Database => Arc::new(store.artifact_store()),
                    ArtifactPlace::Files => Arc::new(FileArtifactStore::new(data_dir)),
                };
                (Arc::new(store), artifacts)
            }
        };
        Ok(Self {
            state,
            artifacts,
            place,
        })
    }

    /// `builder` with these stores (the file store is left to the builder, which recovers
    /// its journal).
    pub(crate) fn apply(
        &self,
        builder: agent_pipeline::PipelineBuilder,
    ) -> agent_pipeline::PipelineBuilder {
        let builder = builder.state_store(self.state.clone());
        match self.place {
            ArtifactPlace::Database => builder.artifact_store(self.artifacts.clone()),
            ArtifactPlace::Files => builder,
        }
    }
}

/// The state database of a process.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum StateDatabase {
    /// An SQLite file, shared by the processes of one host.
    Sqlite(PathBuf),
    /// A PostgreSQL database (the URL may hold a password: `Debug` and `Display` hide it).
    Postgres(String),
}

impl StateDatabase {
    /// The database `DATABASE_URL` names (`sqlite://PATH`, `postgres://…` or
    /// `postgresql://…`); unset, the SQLite file `state.sqlite` in `data_dir`.
    pub(crate) fn from_url(url: Option<&str>, data_dir: &Path) -> Result<Self> {
        let Some(url) = url.map(str::trim) else {
            return Ok(Self::Sqlite(data_dir.join("state.sqlite")));
        };
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                bail!("{DATABASE_URL} sqlite:// needs a file: sqlite://data/state.sqlite");
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_owned()));
        }
        bail!(
            "{DATABASE_URL} must start with sqlite:// or postgres://, not {:?}",
            url.split("://").next().unwrap_or_default()
        )
    }

    /// Whether the database may hold state already: an SQLite file that exists, or any
    /// PostgreSQL database (so that only looking never creates a file).
    pub(crate) async fn may_exist(&self) -> bool {
        match self {
            Self::Sqlite(path) => tokio::fs::try_exists(path).await.unwrap_or(false),
            Self::Postgres(_) => true,
        }
    }
}

impl fmt::Display for StateDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "{}", path.display()),
            Self::Postgres(url) => f.write_str(&without_password(url)),
        }
    }
}

impl fmt::Debug for StateDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Self::Postgres(url) => f
                .debug_tuple("Postgres")
                .field(&without_password(url))
                .finish(),
        }
    }
}

/// `url` with the password of its user info, if any, replaced by `***`; its query (which may
/// hold `password=`) is left out.
fn without_password(url: &str) -> String {
    let url = url.split('?').next().unwrap_or(url);
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".to_owned();
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let authority = match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info.split(':').next().unwrap_or_default();
            if user_info.contains(':') {
                format!("{user}:***@{host}")
            } else {
                format!("{user}@{host}")
            }
        }
        None => authority.to_owned(),
    };
    format!("{scheme}://{authority}/{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_chooses_the_store() -> Result<()> {
        let data = Path::new("/srv/data");
        assert_eq!(
            StateDatabase::from_url(None, data)?,
            StateDatabase::Sqlite(PathBuf::from("/srv/data/state.sqlite"))
        );
        assert_eq!(
            StateDatabase::from_url(Some("sqlite://other/state.db"), data)?,
            StateDatabase::Sqlite(PathBuf::from("other/state.db"))
        );
        assert_eq!(
            StateDatabase::from_url(Some(" postgres://agent@db/agent "), data)?,
            StateDatabase::Postgres("postgres://agent@db/agent".to_owned())
        );
        for bad in ["mysql://db/agent", "sqlite://", "state.sqlite"] {
            let error = StateDatabase::from_url(Some(bad), data)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(error.contains(DATABASE_URL), "{bad}: {error}");
        }
        Ok(())
    }

    #[test]
    fn the_password_never_shows() {
        let database = StateDatabase::Postgres(
            "postgres://agent:s3cret@db:5432/agent?sslmode=require&password=s3cret".to_owned(),
        );
        for shown in [database.to_string(), format!("{database:?}")] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("agent:***@db:5432/agent"), "{shown}");
        }
        assert_eq!(
            without_password("postgres://agent@db/agent"),
            "postgres://agent@db/agent"
        );
    }
}
