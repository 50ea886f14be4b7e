//! The memory bus passes the bus conformance suite.

use agent_pipeline::bus::MemoryBus;

#[tokio::test]
async fn memory_bus_passes_the_conformance_suite() {
    agent_pipeline::conformance::bus(&MemoryBus::new(), "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bus_passes_on_a_multi_threaded_runtime() {
    agent_pipeline::conformance::bus(&MemoryBus::new(), "mt-").await;
}
