//! The core's bus conformance suite, on a real broker.

mod common;

use agent_pipeline_kafka::testing::topic_prefix;
use common::TestResult;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_bus_passes_the_bus_conformance_suite() -> TestResult {
    let Some(broker) = common::broker() else {
        return Ok(());
    };
    let bus = common::bus(&broker).await?;
    agent_pipeline::conformance::bus(&bus, &topic_prefix()).await;
    Ok(())
}
