//! Batched produces: one `BatchProducer` per partition, shared by every publisher of the
//! process, so that concurrent messages to a partition go out in one request.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_pipeline::bus::BusError;
use rskafka::client::Client;
use rskafka::client::partition::UnknownTopicHandling;
use rskafka::client::producer::aggregator::RecordAggregator;
use rskafka::client::producer::{BatchProducer, BatchProducerBuilder};
use rskafka::record::Record;

use crate::bus::transport;

/// The batching producer of one partition.
type Producer = Arc<BatchProducer<RecordAggregator>>;

/// The producers of one process, by topic and partition.
pub(crate) struct Producers {
    linger: Duration,
    /// The largest batch in bytes.
    batch_bytes: usize,
    by_partition: Mutex<HashMap<(String, u32), Producer>>,
}

impl Producers {
    /// No producer yet; batches wait up to `linger` and hold up to `max_message_bytes` (at
    /// least 1 MiB) of records.
    pub(crate) fn new(linger: Duration, max_message_bytes: usize) -> Self {
        Self {
            linger,
            batch_bytes: max_message_bytes.max(1024 * 1024),
            by_partition: Mutex::new(HashMap::new()),
        }
    }

    /// Appends one record and waits until the broker has it.
    pub(crate) async fn produce(
        &self,
        client: &Client,
        topic: &str,
        partition: u32,
        key: &str,
        payload: Vec<u8>,
    ) -> Result<(), BusError> {
        let producer = self.producer(client, topic, partition).await?;
        let record = Record {
            key: Some(key.as_bytes().to_vec()),
            value: Some(payload),
            headers: BTreeMap::new(),
            timestamp: chrono::Utc::now(),
        };
        producer.produce(record).await.map(drop).map_err(|error| {
            BusError::Transport(format!("cannot publish to {topic}/{partition}: {error}"))
        })
    }

    async fn producer(
        &self,
        client: &Client,
        topic: &str,
        partition: u32,
    ) -> Result<Producer, BusError> {
        let key = (topic.to_owned(), partition);
        if let Some(producer) = self.lock().get(&key) {
            return Ok(producer.clone());
        }
        let partition_client = client
            .partition_client(topic, partition as i32, UnknownTopicHandling::Retry)
            .await
            .map_err(|e| transport(&format!("reach the leader of {topic}/{partition}"), &e))?;
        let producer = Arc::new(
            BatchProducerBuilder::new(Arc::new(partition_client))
                .with_linger(self.linger)
                .build(RecordAggregator::new(self.batch_bytes)),
        );
        // Two publishers may race here; the first producer stored wins, so every message of
        // the partition goes through one.
        Ok(self.lock().entry(key).or_insert(producer).clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u32), Producer>> {
        self.by_partition
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}
