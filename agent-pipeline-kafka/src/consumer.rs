//! Consuming: one restarting fetch stream per owned partition feeds a dispatcher that hands
//! out messages with the core bus's key order, and commits each partition's position to the
//! state store as acknowledgements close the gaps.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use agent_pipeline::bus::{BusError, Delivery, FollowFrom, Receipt, Subscription};
use agent_pipeline::store::Lease;
use async_trait::async_trait;
use futures_util::StreamExt;
use rskafka::client::consumer::{StartOffset, StreamConsumerBuilder};
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::record::RecordAndOffset;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::bus::{Inner, transport};

mod leases;

/// How many fetched messages of one partition may wait to be handed out before its fetch
/// stream pauses.
const QUEUE_LIMIT: usize = 1000;
/// The most bytes one fetch asks for.
const FETCH_BYTES: i32 = 4 * 1024 * 1024;
/// The longest pause between two tries of a failing fetch stream.
const MAX_RESTART_PAUSE: Duration = Duration::from_secs(5);

/// Who reads: a consumer group, which owns partitions and commits its position, or a
/// follower, which reads every partition and keeps nothing.
#[derive(Debug, Clone)]
pub(crate) enum Membership {
    Group(String),
    Follower(FollowFrom),
}

/// A subscription to one topic on a [`crate::KafkaBus`].
pub(crate) struct KafkaSubscription {
    member: Arc<Member>,
    /// The position last written to the state store, per partition (writes are serialized
    /// so that an older position never overwrites a newer one).
    written: tokio::sync::Mutex<HashMap<u32, u64>>,
    /// Renews this member's partition leases and balances the shares (leased ownership).
    balancer: Option<Balancer>,
}

impl fmt::Debug for KafkaSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSubscription")
            .field("topic", &self.member.topic)
            .field("membership", &self.member.membership)
            .finish_non_exhaustive()
    }
}

/// The task that renews a member's leases, and how to stop it between two rounds (never in
/// the middle of one, whose writes could land after the member left).
struct Balancer {
    /// The task, until the member leaves.
    task: Mutex<Option<JoinHandle<()>>>,
    stop: tokio::sync::watch::Sender<bool>,
}

/// One member of a group (or a follower) on one topic: the partitions it consumes, their
/// fetch streams and, with leased ownership, its leases.
struct Member {
    topic: String,
    membership: Membership,
    bus: Arc<Inner>,
    shared: Arc<Shared>,
    /// How many partitions the topic has.
    partition_count: u32,
    /// Partition → its fetch stream.
    fetchers: Mutex<HashMap<u32, JoinHandle<()>>>,
    /// Partition → the lease held on it (leased ownership only).
    leases: Mutex<HashMap<u32, Lease>>,
}

/// What the fetchers and the consumer share.
#[derive(Default)]
struct Shared {
    dispatch: Mutex<Dispatch>,
    /// A message arrived or a key was released.
    arrived: Notify,
    /// A queue has room again.
    room: Notify,
}

#[derive(Default)]
struct Dispatch {
    partitions: BTreeMap<u32, PartitionQueue>,
    /// Keys with a message handed out and not acknowledged.
    busy_keys: HashSet<String>,
    /// (partition, offset) handed out → its key.
    in_flight: HashMap<(u32, u64), String>,
    /// Where the next search for a message starts, for fairness between partitions.
    turn: usize,
}

struct PartitionQueue {
    /// Fetched and not handed out yet, in offset order.
    waiting: VecDeque<Fetched>,
    /// Fetched and not acknowledged (waiting or in flight).
    unacknowledged: BTreeSet<u64>,
    /// The next offset to fetch.
    next_fetch: u64,
    /// The position to commit: every message below it was acknowledged.
    position: u64,
}

struct Fetched {
    offset: u64,
    key: String,
    payload: Vec<u8>,
    /// The record's timestamp (the producer's clock, or the broker's with `LogAppendTime`).
    published_at: chrono::DateTime<chrono::Utc>,
}

impl PartitionQueue {
    fn starting_at(offset: u64) -> Self {
        Self {
            waiting: VecDeque::new(),
            unacknowledged: BTreeSet::new(),
            next_fetch: offset,
            position: offset,
        }
    }

    /// The offset below which every fetched message was acknowledged.
    fn acknowledged_up_to(&self) -> u64 {
        self.unacknowledged
            .first()
            .copied()
            .unwrap_or(self.next_fetch)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl KafkaSubscription {
    /// Resolves where each partition starts and starts its fetch stream.
    pub(crate) async fn start(
        bus: Arc<Inner>,
        topic: &str,
        membership: Membership,
    ) -> Result<Self, BusError> {
        let member = match &membership {
            Membership::Group(group) => {
                let member = (topic.to_owned(), group.clone());
                if !lock(&bus.members).insert(member.clone()) {
                    return Err(BusError::AlreadySubscribed {
                        topic: topic.to_owned(),
                        group: group.clone(),
                    });
                }
                Some(member)
            }
            Membership::Follower(_) => None,
        };
        let started = Self::start_member(bus.clone(), topic, membership).await;
        if started.is_err()
            && let Some(member) = member
        {
            lock(&bus.members).remove(&member);
        }
        started
    }

    async fn start_member(
        bus: Arc<Inner>,
        topic: &str,
        membership: Membership,
    ) -> Result<Self, BusError> {
        let count = bus.partition_count(topic).await?;
        let leases = match &membership {
            Membership::Group(_) => bus.settings.leases.clone(),
            Membership::Follower(_) => None,
        };
        let member = Arc::new(Member {
            topic: topic.to_owned(),
            membership,
            bus,
            shared: Arc::new(Shared::default()),
            partition_count: count,
            fetchers: Mutex::new(HashMap::new()),
            leases: Mutex::new(HashMap::new()),
        });
        let balancer = match leases {
            Some(leases) => {
                // The first round before returning, so that a lone member consumes at once.
                member.balance(&leases).await?;
                let balancing = member.clone();
                let (stop, mut stopped) = tokio::sync::watch::channel(false);
                let task = tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            () = tokio::time::sleep(leases.renew_every()) => {}
                            _ = stopped.changed() => return,
                        }
                        if let Err(error) = balancing.balance(&leases).await {
                            tracing::warn!(topic = %balancing.topic, %error, "cannot renew or balance the partition leases; retrying");
                        }
                    }
                });
                Some(Balancer {
                    task: Mutex::new(Some(task)),
                    stop,
                })
            }
            None => {
                let owned: Vec<u32> = match &member.membership {
                    Membership::Group(_) => (0..count)
                        .filter(|p| member.bus.settings.ownership.owns(*p))
                        .collect(),
                    Membership::Follower(_) => (0..count).collect(),
                };
                if owned.is_empty() {
                    tracing::warn!(
                        topic,
                        partitions = count,
                        ownership = ?member.bus.settings.ownership,
                        "this instance owns no partition of the topic: it will receive nothing \
                         (a group never has more useful members than the topic has partitions)"
                    );
                }
                for partition in owned {
                    member.take_partition(partition, None).await?;
                }
                None
            }
        };
        Ok(Self {
            member,
            written: tokio::sync::Mutex::new(HashMap::new()),
            balancer,
        })
    }

    /// Hands out the oldest waiting message whose key is free, if any.
    fn take(&self) -> Option<Delivery> {
        let mut dispatch = lock(&self.member.shared.dispatch);
        let Dispatch {
            partitions,
            busy_keys,
            in_flight,
            turn,
        } = &mut *dispatch;
        let count = partitions.len();
        let order: Vec<u32> = partitions.keys().copied().collect();
        for step in 0..count {
            let partition = order[(*turn + step) % count];
            let Some(queue) = partitions.get_mut(&partition) else {
                continue;
            };
            // A key whose older message waits (or is in flight) stays behind it.
            let mut blocked: HashSet<&str> = HashSet::new();
            let mut chosen = None;
            for (index, message) in queue.waiting.iter().enumerate() {
                if busy_keys.contains(&message.key) || blocked.contains(message.key.as_str()) {
                    blocked.insert(&message.key);
                } else {
                    chosen = Some(index);
                    break;
                }
            }
            let Some(message) = chosen.and_then(|index| queue.waiting.remove(index)) else {
                continue;
            };
            *turn = (*turn + step + 1) % count.max(1);
            busy_keys.insert(message.key.clone());
            in_flight.insert((partition, message.offset), message.key.clone());
            self.member.shared.room.notify_waiters();
            return Some(Delivery {
                topic: self.member.topic.clone(),
                key: message.key,
                payload: message.payload,
                receipt: Receipt {
                    partition,
                    offset: message.offset,
                },
                published_at: Some(message.published_at),
            });
        }
        None
    }

    /// Writes the partition's position to the state store if it moved; with leased ownership
    /// only while this member still holds the partition's lease (else it gives the partition
    /// up: another member has it now).
    async fn commit(&self, group: &str, partition: u32) -> Result<(), BusError> {
        let member = &self.member;
        let mut written = self.written.lock().await;
        let position = lock(&member.shared.dispatch)
            .partitions
            .get(&partition)
            .map(|queue| queue.position);
        let Some(position) = position else {
            return Ok(());
        };
        if written.get(&partition) == Some(&position) {
            return Ok(());
        }
        let topic = &member.topic;
        let failed = |error| {
            BusError::Transport(format!(
                "cannot commit the position {position} of group {group} in {topic}/{partition}: \
                 {error}"
            ))
        };
        let lease = lock(&member.leases).get(&partition).cloned();
        let offsets = &member.bus.offsets;
        match lease {
            Some(lease) => {
                let recorded = offsets
                    .commit_consumer_offset_fenced(group, topic, partition, position, &lease)
                    .await
                    .map_err(failed)?;
                if !recorded {
                    tracing::warn!(topic = %topic, partition, "the partition's lease went to another member; giving the partition up");
                    member.give_up(partition);
                    written.remove(&partition);
                    return Ok(());
                }
            }
            None => offsets
                .commit_consumer_offset(group, topic, partition, position)
                .await
                .map_err(failed)?,
        }
        written.insert(partition, position);
        Ok(())
    }
}

impl Member {
    /// The group this member belongs to, if it is not a follower.
    fn group(&self) -> Option<&str> {
        match &self.membership {
            Membership::Group(group) => Some(group),
            Membership::Follower(_) => None,
        }
    }

    /// Starts consuming `partition` where the group (or the follower) starts in it.
    async fn take_partition(&self, partition: u32, lease: Option<Lease>) -> Result<(), BusError> {
        let topic = &self.topic;
        let client = Arc::new(
            self.bus
                .consuming
                .partition_client(
                    topic.as_str(),
                    partition as i32,
                    UnknownTopicHandling::Retry,
                )
                .await
                .map_err(|e| transport(&format!("reach the leader of {topic}/{partition}"), &e))?,
        );
        let start = start_offset(&self.bus, &client, topic, partition, &self.membership).await?;
        lock(&self.shared.dispatch)
            .partitions
            .insert(partition, PartitionQueue::starting_at(start));
        if let Some(lease) = lease {
            lock(&self.leases).insert(partition, lease);
        }
        tracing::debug!(topic = %topic, partition, start, membership = ?self.membership, "consuming");
        let fetcher = tokio::spawn(fetch(
            self.shared.clone(),
            client,
            partition,
            self.bus.settings.fetch_wait,
        ));
        if let Some(earlier) = lock(&self.fetchers).insert(partition, fetcher) {
            earlier.abort();
        }
        Ok(())
    }

    /// Stops consuming `partition`: its fetch stream ends, its waiting messages are dropped
    /// and the acknowledgements of those in flight no longer count (the partition's next
    /// owner delivers them again from the last committed position). Returns its lease.
    fn give_up(&self, partition: u32) -> Option<Lease> {
        if let Some(fetcher) = lock(&self.fetchers).remove(&partition) {
            fetcher.abort();
        }
        {
            let mut dispatch = lock(&self.shared.dispatch);
            dispatch.partitions.remove(&partition);
            let Dispatch {
                busy_keys,
                in_flight,
                ..
            } = &mut *dispatch;
            in_flight.retain(|(p, _), key| {
                if *p == partition {
                    busy_keys.remove(key.as_str());
                }
                *p != partition
            });
        }
        self.shared.arrived.notify_waiters();
        self.shared.room.notify_waiters();
        lock(&self.leases).remove(&partition)
    }
}

/// Where a member starts reading `partition`: a group at its committed position (else the
/// oldest message), a follower at the oldest or the next message.
async fn start_offset(
    bus: &Inner,
    client: &PartitionClient,
    topic: &str,
    partition: u32,
    membership: &Membership,
) -> Result<u64, BusError> {
    let at = match membership {
        Membership::Group(group) => {
            let committed = bus
                .offsets
                .consumer_offset(group, topic, partition)
                .await
                .map_err(|error| {
                    BusError::Transport(format!(
                        "cannot read the position of group {group} in {topic}/{partition}: \
                         {error}"
                    ))
                })?;
            if let Some(offset) = committed {
                return Ok(offset);
            }
            OffsetAt::Earliest
        }
        Membership::Follower(FollowFrom::Oldest) => OffsetAt::Earliest,
        Membership::Follower(FollowFrom::Now) => OffsetAt::Latest,
    };
    let offset = client
        .get_offset(at)
        .await
        .map_err(|e| transport(&format!("read the offsets of {topic}/{partition}"), &e))?;
    Ok(u64::try_from(offset).unwrap_or(0))
}

/// Feeds one partition's messages to the dispatcher, forever: the stream of `rskafka` ends
/// after its first error, so it is restarted where it stopped (at the oldest offset the
/// broker still has when the position fell out of its range).
async fn fetch(
    shared: Arc<Shared>,
    client: Arc<PartitionClient>,
    partition: u32,
    fetch_wait: Duration,
) {
    let wait_ms = i32::try_from(fetch_wait.as_millis()).unwrap_or(i32::MAX);
    let mut failures: u32 = 0;
    loop {
        let start = lock(&shared.dispatch)
            .partitions
            .get(&partition)
            .map_or(0, |queue| queue.next_fetch);
        let mut stream = StreamConsumerBuilder::new(client.clone(), StartOffset::At(start as i64))
            .with_max_wait_ms(wait_ms)
            .with_max_batch_size(FETCH_BYTES)
            .build();
        while let Some(item) = stream.next().await {
            match item {
                Ok((record, _high_watermark)) => {
                    failures = 0;
                    push(&shared, partition, record).await;
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    restart_after(&shared, &client, partition, &error).await;
                    break;
                }
            }
        }
        let pause = Duration::from_millis(100)
            .saturating_mul(2u32.saturating_pow(failures.min(6)))
            .min(MAX_RESTART_PAUSE);
        tokio::time::sleep(pause).await;
    }
}

/// Logs why a partition's stream ended and, when its position is out of the broker's range
/// (retention removed the messages, or the topic was recreated), moves it to the oldest one.
async fn restart_after(
    shared: &Shared,
    client: &PartitionClient,
    partition: u32,
    error: &KafkaError,
) {
    let out_of_range = matches!(
        error,
        KafkaError::ServerError {
            protocol_error: ProtocolError::OffsetOutOfRange,
            ..
        }
    );
    if !out_of_range {
        tracing::warn!(topic = client.topic(), partition, %error, "fetching failed; retrying");
        return;
    }
    match client.get_offset(OffsetAt::Earliest).await {
        Ok(earliest) => {
            let earliest = u64::try_from(earliest).unwrap_or(0);
            let mut dispatch = lock(&shared.dispatch);
            if let Some(queue) = dispatch.partitions.get_mut(&partition) {
                tracing::warn!(
                    topic = client.topic(),
                    partition,
                    from = queue.next_fetch,
                    to = earliest,
                    "position out of the broker's range; going on from the oldest message"
                );
                queue.next_fetch = earliest;
            }
        }
        Err(error) => {
            tracing::warn!(topic = client.topic(), partition, %error, "cannot read the oldest offset; retrying");
        }
    }
}

/// Queues one fetched message, waiting while the partition's queue is full.
async fn push(shared: &Shared, partition: u32, record: RecordAndOffset) {
    let offset = u64::try_from(record.offset).unwrap_or(0);
    let mut message = Some(Fetched {
        offset,
        key: String::from_utf8_lossy(record.record.key.as_deref().unwrap_or_default()).into_owned(),
        payload: record.record.value.unwrap_or_default(),
        published_at: record.record.timestamp,
    });
    loop {
        let room = shared.room.notified();
        tokio::pin!(room);
        room.as_mut().enable();
        {
            let mut dispatch = lock(&shared.dispatch);
            let Some(queue) = dispatch.partitions.get_mut(&partition) else {
                return;
            };
            if offset < queue.next_fetch {
                // Fetched again after a restart inside a batch.
                return;
            }
            if queue.waiting.len() < QUEUE_LIMIT
                && let Some(message) = message.take()
            {
                queue.waiting.push_back(message);
                queue.unacknowledged.insert(offset);
                queue.next_fetch = offset + 1;
                drop(dispatch);
                shared.arrived.notify_waiters();
                return;
            }
        }
        room.await;
    }
}

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn next(&self) -> Result<Delivery, BusError> {
        loop {
            let arrived = self.member.shared.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(delivery) = self.take() {
                return Ok(delivery);
            }
            arrived.await;
        }
    }

    async fn ack(&self, receipt: Receipt) -> Result<(), BusError> {
        let moved = {
            let mut dispatch = lock(&self.member.shared.dispatch);
            let Some(key) = dispatch
                .in_flight
                .remove(&(receipt.partition, receipt.offset))
            else {
                return Ok(());
            };
            dispatch.busy_keys.remove(&key);
            match dispatch.partitions.get_mut(&receipt.partition) {
                Some(queue) => {
                    queue.unacknowledged.remove(&receipt.offset);
                    let up_to = queue.acknowledged_up_to();
                    let moved = up_to > queue.position;
                    if moved {
                        queue.position = up_to;
                    }
                    moved
                }
                None => false,
            }
        };
        self.member.shared.arrived.notify_waiters();
        match &self.member.membership {
            Membership::Group(group) if moved => self.commit(group, receipt.partition).await,
            _ => Ok(()),
        }
    }

    async fn close(&self) -> Result<(), BusError> {
        let Some(balancer) = &self.balancer else {
            return Ok(());
        };
        let Some(task) = lock(&balancer.task).take() else {
            // Left already.
            return Ok(());
        };
        // The round under way finishes first, so that no renewal lands after the release.
        let _ = balancer.stop.send(true);
        let _ = task.await;
        self.member.leave().await
    }
}
impl Drop for KafkaSubscription {
    fn drop(&mut self) {
        if let Some(task) = self.balancer.as_ref().and_then(|b| lock(&b.task).take()) {
            task.abort();
        }
        for (_, fetcher) in lock(&self.member.fetchers).drain() {
            fetcher.abort();
        }
        if let Membership::Group(group) = &self.member.membership {
            lock(&self.member.bus.members).remove(&(self.member.topic.clone(), group.clone()));
        }
    }
}
