//! What the Kafka tests share: a broker of their own (`TestBroker`: `REDPANDA_BROKERS`, or a
//! throw-away tansu), topics no other test uses, and the environment that points every
//! `agent-host` process of a test at both.

use std::process::Command;
use std::sync::Arc;

use agent_pipeline::bus::Topics;
use agent_pipeline::store::MemoryStateStore;
use agent_pipeline_kafka::testing::{TestBroker, topic_prefix};
use agent_pipeline_kafka::{KafkaBus, KafkaSettings};

use super::{Host, Sandbox};

/// A broker and a fresh set of topics on it.
pub(crate) struct Kafka {
    /// The broker (a tansu process this test owns, stopped on drop, or an external one).
    pub(crate) broker: TestBroker,
    /// The topics of this test.
    pub(crate) topics: Topics,
    /// The variables that point a process at the broker and the topics.
    env: Vec<(String, String)>,
}

impl Kafka {
    /// A broker and fresh topics; `None` when there is no broker (`TestBroker` has said
    /// SKIPPED; under `CI=true` it fails the test instead).
    pub(crate) fn start() -> Option<Self> {
        let broker = TestBroker::start()?;
        let prefix = topic_prefix();
        let topics = Topics::default().with_prefix(&prefix);
        let env = broker.env_with_topics(&prefix);
        Some(Self {
            broker,
            topics,
            env,
        })
    }

    /// The variables that point a process at the broker and this test's topics.
    pub(crate) fn env(&self) -> impl Iterator<Item = (&str, &str)> {
        self.env.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The binary with `args` in `sandbox`, on this broker and these topics.
    pub(crate) fn command(&self, sandbox: &Sandbox, args: &[&str]) -> Command {
        let mut command = sandbox.command(args);
        command.envs(self.env());
        command
    }

    /// Starts a process of one service (`planner`, `worker --instance 1 --instances 2` …)
    /// and waits for its banner.
    pub(crate) fn start_service(&self, sandbox: &Sandbox, args: &[&str]) -> Host {
        Host::start_service(self.command(sandbox, args))
    }

    /// A bus of the test's own on the broker, as any other producer would have.
    pub(crate) async fn bus(&self) -> KafkaBus {
        let settings: KafkaSettings = self.broker.settings();
        KafkaBus::connect(settings, Arc::new(MemoryStateStore::new()))
            .await
            .expect("the test connects to the broker")
    }
}
