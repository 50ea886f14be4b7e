//! B3: planner, worker and orchestrator as three `agent-host` processes on a real broker
//! (tansu started for the run, or the brokers of `REDPANDA_BROKERS`), with the offline model
//! and code execution off; this process submits the tasks and follows the reports.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use agent_pipeline::Pipeline;
use agent_pipeline::bus::Topics;
use agent_pipeline::store::MemoryStateStore;
use agent_pipeline_kafka::KafkaBus;
use agent_pipeline_kafka::testing::{TestBroker, topic_prefix};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::host::agent_host_binary;
use crate::load::burst;

/// The services, one process each.
const SERVICES: [&str; 3] = ["planner", "worker", "orchestrator"];

/// `tasks` tasks through the three processes; the result as JSON.
pub(crate) async fn run(tasks: usize, concurrency: usize) -> Result<Value, String> {
    let broker = TestBroker::start()
        .ok_or("no broker: install tansu (scripts/test-all does) or set REDPANDA_BROKERS")?;
    let prefix = topic_prefix();
    let topics = Topics::default().with_prefix(&prefix);
    let data = crate::scratch_dir()?;
    let mut env = broker.env_with_topics(&prefix);
    env.extend([
        ("DATA_DIR".to_owned(), data.display().to_string()),
        ("EXECUTE_CODE".to_owned(), "false".to_owned()),
        ("WORKER_CONCURRENCY".to_owned(), concurrency.to_string()),
        ("SERVICE_CONCURRENCY".to_owned(), concurrency.to_string()),
        ("RUST_LOG".to_owned(), "warn".to_owned()),
    ]);
    let binary = agent_host_binary()?;
    let mut processes = Vec::new();
    for service in SERVICES {
        processes.push(start_service(&binary, service, &env).await?);
    }
    let bus = KafkaBus::connect(broker.settings(), Arc::new(MemoryStateStore::new()))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    bus.create_topics(&topics)
        .await
        .map_err(|e| format!("topics: {e}"))?;
    let client = Pipeline::builder()
        .data_dir(&data)
        .bus(Arc::new(bus))
        .state_store(Arc::new(MemoryStateStore::new()))
        .topics(topics)
        .build()
        .await
        .map_err(|e| format!("client: {e}"))?;
    let measured = burst(&client, tasks, Duration::from_secs(600)).await;
    for process in &mut processes {
        let _ = process.kill().await;
    }
    let mut result = measured?.into_json(tasks, concurrency);
    result["broker"] = json!(broker.brokers());
    Ok(result)
}

/// Starts `agent-host <service>` and waits for its banner's last line.
async fn start_service(
    binary: &std::path::Path,
    service: &str,
    env: &[(String, String)],
) -> Result<Child, String> {
    let mut child = Command::new(binary)
        .arg(service)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{}: {e}", binary.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let banner = async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("Press Ctrl-C") {
                return true;
            }
        }
        false
    };
    match tokio::time::timeout(Duration::from_secs(60), banner).await {
        Ok(true) => {
            // Keep reading so that the process never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            Ok(child)
        }
        _ => Err(format!("agent-host {service} did not start within 60 s")),
    }
}
