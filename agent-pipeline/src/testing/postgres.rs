//! A private database per test on the PostgreSQL server of `TEST_DATABASE_URL`.

use sqlx::{Connection, PgConnection};

/// The variable naming the server the tests use (`scripts/test-all` starts one and sets it).
pub const TEST_DATABASE_URL: &str = "TEST_DATABASE_URL";

/// A new, empty database on the server of `TEST_DATABASE_URL`, for one test.
///
/// Without that variable the test is skipped (with a line saying so on stderr), except under
/// `CI=true`, where a missing server fails the test. Call [`TestDatabase::drop_database`] at
/// the end of the test to remove it; a test that fails leaves its database behind for
/// inspection (the cluster `scripts/test-all` starts is deleted after the run anyway).
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    admin_url: String,
    name: String,
}

impl TestDatabase {
    /// Creates the database; `None` when there is no server and the test is to be skipped.
    ///
    /// # Panics
    /// Under `CI=true` when `TEST_DATABASE_URL` is unset, and whenever the server refuses to
    /// create the database.
    pub async fn create() -> Option<Self> {
        let Ok(admin_url) = std::env::var(TEST_DATABASE_URL) else {
            let message = format!(
                "no PostgreSQL server: set {TEST_DATABASE_URL} (scripts/test-all starts one)"
            );
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{message} (CI=true: a missing server fails the run)"
            );
            eprintln!("SKIPPED: {message}");
            return None;
        };
        let name = format!("agent_pipeline_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {TEST_DATABASE_URL}: {e}"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("cannot create the test database {name}: {e}"));
        let _ = admin.close().await;
        Some(Self {
            url: with_database(&admin_url, &name),
            admin_url,
            name,
        })
    }

    /// The URL of the new database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Drops the database, closing the connections still open to it.
    pub async fn drop_database(self) {
        let Ok(mut admin) = PgConnection::connect(&self.admin_url).await else {
            return;
        };
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await;
        let _ = admin.close().await;
    }
}

/// `url` with its database (the path) replaced by `name`, query parameters kept.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{name}", &base[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_of_a_url_is_replaced_and_its_parameters_kept() {
        assert_eq!(
            with_database("postgres://u:p@127.0.0.1:5432/postgres", "t1"),
            "postgres://u:p@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u@host?sslmode=disable", "t2"),
            "postgres://u@host/t2?sslmode=disable"
        );
        assert_eq!(
            with_database("postgresql://h:1/db?a=1&b=2", "t3"),
            "postgresql://h:1/t3?a=1&b=2"
        );
    }
}
