//! Test support for implementations and deployments (feature `test-util`): a private
//! PostgreSQL database per test (feature `postgres` as well).

#[cfg(feature = "postgres")]
mod postgres;

#[cfg(feature = "postgres")]
pub use postgres::{TEST_DATABASE_URL, TestDatabase};
