//! Conformance suites: behaviour every implementation of a pluggable trait must show.
//!
//! Call them from the tests of an implementation (feature `test-util`); they panic with a
//! message saying which behaviour is missing.

mod artifacts;
mod bus;
mod state;

pub use artifacts::artifact_store;
pub use bus::bus;
pub use state::state_store;
