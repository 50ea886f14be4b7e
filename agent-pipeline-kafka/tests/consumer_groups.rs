//! Consumer groups over a broker without them: positions in the state store, partitions
//! shared by leases or by static ownership, foreign messages, and the partition of a key.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use agent_pipeline::bus::{Bus, BusError};
use agent_pipeline::store::{MemoryStateStore, StateStore};
use agent_pipeline_kafka::testing::topic_prefix;
use agent_pipeline_kafka::{Ownership, partition_for};
use common::{TestResult, bus, bus_with, maybe_next, next};
use rskafka::client::ClientBuilder;
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;

const QUIET: Duration = Duration::from_millis(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_goes_on_where_it_stopped_after_a_restart() -> TestResult {
    let Some(broker) = common::broker() else {
        return Ok(());
    };
    let offsets: Arc<dyn StateStore> = Arc::new(MemoryStateStore::new());
    let topic = format!("{}restart", topic_prefix());
    let first = bus_with(broker.settings(), offsets.clone()).await?;
    for n in 0..6 {
        first
            .publish(&topic, "one-key", format!("{n}").into_bytes())
            .await?;
    }
    let subscription = first.subscribe(&topic, "g").await?;
    for expected in 0..3 {
        let delivery = next(subscription.as_ref()).await?;
        assert_eq!(delivery.payload, format!("{expected}").into_bytes());
        subscription.ack(delivery.receipt).await?;
    }
    // The fourth is handed out and never acknowledged: the process "dies".
    let held = next(subscription.as_ref()).await?;
    assert_eq!(held.payload, b"3");
    let partition = held.receipt.partition;
    drop(subscription);
    drop(first);
    assert_eq!(
        offsets.consumer_offset("g", &topic, partition).await?,
        Some(3),
        "the position is the first message not acknowledged"
    );

    let second = bus_with(broker.settings(), offsets.clone()).await?;
    let subscription = second.subscribe(&topic, "g").await?;
    for expected in 3..6 {
        let delivery = next(subscription.as_ref()).await?;
        assert_eq!(
            delivery.payload,
            format!("{expected}").into_bytes(),
            "a restarted group must resume at its position, redelivering what was not acknowledged"
        );
        subscription.ack(delivery.receipt).await?;
    }
    assert!(maybe_next(subscription.as_ref(), QUIET).await.is_none());
    assert_eq!(
        offsets.consumer_offset("g", &topic, partition).await?,
        Some(6)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_position_stops_at_the_oldest_message_not_acknowledged() -> TestResult {
    let Some(broker) = common::broker() else {
        return Ok(());
    };
    let offsets: Arc<dyn StateStore> = Arc::new(MemoryStateStore::new());
    let topic = format!("{}gaps", topic_prefix());
    let bus = bus_with(broker.settings(), offsets.clone()).await?;
    // Three keys on one partition (found by the partitioner), so that their offsets are 0, 1, 2.
    let partitions = bus.partition_count(&topic).await?;
    let keys: Vec<String> = (0..)
        .map(|n| format!("key-{n}"))
        .filter(|k| partition_for(k.as_bytes(), partitions) == 0)
        .take(3)
        .collect();
    for key in &keys {
        bus.publish(&topic, key, key.clone().into_bytes()).await?;
    }
    let subscription = bus.subscribe(&topic, "g").await?;
    let mut deliveries = Vec::new();
    for _ in 0..3 {
        deliveries.push(next(subscription.as_ref()).await?);
    }
    let offsets_seen: Vec<u64> = deliveries.iter().map(|d| d.receipt.offset).collect();
    assert_eq!(
        offsets_seen,
        [0, 1, 2],
        "different keys are handed out together"
    );
    subscription.ack(deliveries[2].receipt).await?;
    subscription.ack(deliveries[1].receipt).await?;
    assert_eq!(
        offsets.consumer_offset("g", &topic, 0).await?,
        None,
        "nothing may be committed while offset 0 is unacknowledged"
    );
    subscription.ack(deliveries[0].receipt).await?;
    assert_eq!(offsets.consumer_offset("g", &topic, 0).await?, Some(3));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_a_topic_by_partition() -> TestResult {
    let Some(broker) = common::broker() else {
        return Ok(());
    };
    let offsets: Arc<dyn StateStore> = Arc::new(MemoryStateStore::new());
    let topic = format!("{}shared", topic_prefix());
    let mut members = Vec::new();
    for instance in 0..2 {
        let mut settings = broker.settings();
        settings.ownership = Ownership::new(instance, 2)?;
        settings.leases = None;
        let bus = bus_with(settings, offsets.clone()).await?;
        let subscription = bus.subscribe(&topic, "workers").await?;
        members.push((bus, subscription));
    }
    let publisher = &members[0].0;
    let partitions = publisher.partition_count(&topic).await?;
    for n in 0..30 {
        publisher
            .publish(&topic, &format!("task-{n}"), vec![b'x'])
            .await?;
    }
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for (instance, (_, subscription)) in members.iter().enumerate() {
        while let Some(delivery) = maybe_next(subscription.as_ref(), QUIET).await {
            assert_eq!(
                delivery.receipt.partition % 2,
                instance as u32,
                "instance {instance} got a partition it does not own"
            );
            assert_eq!(
                delivery.receipt.partition,
                partition_for(delivery.key.as_bytes(), partitions),
                "a message is on the partition of its key"
            );
            subscription.ack(delivery.receipt).await?;
            *seen.entry(delivery.key).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), 30, "every message reached one instance");
    assert!(
        seen.values().all(|count| *count == 1),
        "a message reached two instances"
    );
    Ok(())
}

/// Two processes (two buses on one state store) in one group: the first takes every
/// partition, shares them when the second joins, and the second takes them all once the
/// first dies; every message is consumed by one member, and what the dead one held comes
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_share_partitions_by_leases_and_take_over_from_a_dead_one() -> TestResult {
    let Some(broker) = common::broker() else {
        return Ok(());
    };
    let offsets: Arc<dyn StateStore> = Arc::new(MemoryStateStore::new());
    let topic = format!("{}leased", topic_prefix());
    let mut settings = broker.settings();
    settings.partitions = 4;
    let ttl = settings
        .leases
        .as_ref()
        .map(|l| l.ttl)
        .ok_or("leases are the default")?;
    let first_bus = bus_with(settings.clone(), offsets.clone()).await?;
    let first = first_bus.subscribe(&topic, "workers").await?;
    let held = |now| {
        let offsets = offsets.clone();
        let prefix = format!("partition/workers/{topic}/");
        async move {
            let leases = offsets.leases(&prefix, now).await?;
            let mut by_holder: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for lease in leases {
                by_holder
                    .entry(lease.holder)
                    .or_default()
                    .insert(lease.resource);
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(by_holder)
        }
    };
    let alone = held(chrono::Utc::now()).await?;
    assert_eq!(
        alone.values().map(BTreeSet::len).collect::<Vec<_>>(),
        [4],
        "a lone member takes every partition at once: {alone:?}"
    );

    let second_bus = bus_with(settings.clone(), offsets.clone()).await?;
    let second = second_bus.subscribe(&topic, "workers").await?;
    // A few renewal rounds: the first gives two partitions up, the second takes them.
    let deadline = tokio::time::Instant::now() + ttl * 6;
    loop {
        let shares: Vec<usize> = held(chrono::Utc::now())
            .await?
            .values()
            .map(BTreeSet::len)
            .collect();
        if shares == [2, 2] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the members did not share the partitions: {shares:?}"
        );
        tokio::time::sleep(ttl / 10).await;
    }
    for n in 0..40 {
        first_bus
            .publish(&topic, &format!("task-{n}"), vec![b'x'])
            .await?;
    }
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    let mut unacknowledged_by_first = BTreeSet::new();
    let mut by_member = [0, 0];
    for (index, subscription) in [&first, &second].into_iter().enumerate() {
        while let Some(delivery) = maybe_next(subscription.as_ref(), QUIET).await {
            *seen.entry(delivery.key.clone()).or_default() += 1;
            by_member[index] += 1;
            // The first member leaves one message per partition unacknowledged when it dies.
            if index == 0 && unacknowledged_by_first.len() < 2 {
                unacknowledged_by_first.insert(delivery.key);
                continue;
            }
            subscription.ack(delivery.receipt).await?;
        }
    }
    assert_eq!(seen.len(), 40, "every message reached a member");
    assert!(seen.values().all(|n| *n == 1), "a message reached both");
    assert!(
        by_member.iter().all(|n| *n > 0),
        "both members consumed: {by_member:?}"
    );

    // The first process dies: no goodbye, its leases run out.
    drop(first);
    drop(first_bus);
    let deadline = tokio::time::Instant::now() + ttl * 6;
    let mut again = BTreeSet::new();
    while !again.is_superset(&unacknowledged_by_first) {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(delivery) = maybe_next(second.as_ref(), remaining).await else {
            panic!("the dead member's unacknowledged messages did not come again: {again:?}");
        };
        second.ack(delivery.receipt).await?;
        again.insert(delivery.key);
    }
    // Delivery is at least once: what the first acknowledged after a message it never did
    // comes again too, since its position could not move past that message.
    let shares: Vec<usize> = held(chrono::Utc::now())
        .await?
        .values()
        .map(BTreeSet::len)
        .collect();
    assert_eq!(shares, [4], "the survivor holds every partition");
    for n in 40..44 {
        second_bus
            .publish(&topic, &format!("task-{n}"), vec![b'y'])
            .await?;
    }
    let mut fresh = BTreeSet::new();
    while fresh.len() < 4 {
        let delivery = next(second.as_ref()).await?;
        second.ack(delivery.receipt).await?;
        if delivery.payload == b"y" {
            fresh.insert(delivery.key);
        }
    }

    // A member that stops cleanly gives its partitions up at once.
    second.close().await?;
    assert!(
        held(chrono::Utc::now()).await?.is_empty(),
        "a closed member holds nothing"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_member_per_group_and_process() -> TestResult {
    let Some(broker) = common::broker() else {
        return Ok(());
    };
    let bus = bus(&broker).await?;
    let topic = format!("{}single", topic_prefix());
    let first = bus.subscribe(&topic, "g").await?;
    match bus.subscribe(&topic, "g").await {
        Err(BusError::AlreadySubscribed { .. }) => {}
        other => panic!("a second member of the group in one process: {other:?}"),
    }
    drop(first);
    bus.subscribe(&topic, "g").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_of_other_producers_are_consumed() -> TestResult {
    let Some(broker) = common::broker() else {
        return Ok(());
    };
    let bus = bus(&broker).await?;
    let topic = format!("{}foreign", topic_prefix());
    let partitions = bus.partition_count(&topic).await?;
    // A producer with its own ideas: no key, and a keyed message on a partition that is not
    // its key's.
    let client = ClientBuilder::new(vec![broker.brokers().to_owned()])
        .build()
        .await?;
    let wrong_partition = (partition_for(b"elsewhere", partitions) + 1) % partitions;
    let record = |key: Option<&str>, value: &str| Record {
        key: key.map(|k| k.as_bytes().to_vec()),
        value: Some(value.as_bytes().to_vec()),
        headers: BTreeMap::new(),
        timestamp: chrono::Utc::now(),
    };
    for (partition, key, value) in [
        (0, None, "no key"),
        (wrong_partition, Some("elsewhere"), "wrong partition"),
    ] {
        client
            .partition_client(&topic, partition as i32, UnknownTopicHandling::Retry)
            .await?
            .produce(vec![record(key, value)], Compression::NoCompression)
            .await?;
    }
    let subscription = bus.subscribe(&topic, "g").await?;
    let mut got = BTreeSet::new();
    for _ in 0..2 {
        let delivery = next(subscription.as_ref()).await?;
        subscription.ack(delivery.receipt).await?;
        got.insert((delivery.key, String::from_utf8(delivery.payload)?));
    }
    let expected: BTreeSet<(String, String)> = [
        (String::new(), "no key".to_owned()),
        ("elsewhere".to_owned(), "wrong partition".to_owned()),
    ]
    .into();
    assert_eq!(got, expected);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_larger_than_the_limit_is_refused_before_the_broker() -> TestResult {
    let Some(broker) = common::broker() else {
        return Ok(());
    };
    let bus = bus(&broker).await?;
    let limit = bus.settings().max_message_bytes;
    let topic = format!("{}large", topic_prefix());
    match bus.publish(&topic, "k", vec![0; limit + 1]).await {
        Err(BusError::TooLarge { limit: l, .. }) => assert_eq!(l, limit),
        other => panic!("an oversized message: {other:?}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_reads_every_partition_and_commits_nothing() -> TestResult {
    let Some(broker) = common::broker() else {
        return Ok(());
    };
    let offsets: Arc<dyn StateStore> = Arc::new(MemoryStateStore::new());
    let mut settings = broker.settings();
    // This process owns partition 1 of 3 only; a follower still reads them all.
    settings.ownership = Ownership::new(1, 3)?;
    settings.leases = None;
    let bus = bus_with(settings, offsets.clone()).await?;
    let topic = format!("{}follow", topic_prefix());
    for n in 0..12 {
        bus.publish(&topic, &format!("k{n}"), vec![b'.']).await?;
    }
    let follower = bus
        .follow(&topic, agent_pipeline::bus::FollowFrom::Oldest)
        .await?;
    let mut partitions = BTreeSet::new();
    for _ in 0..12 {
        let delivery = next(follower.as_ref()).await?;
        partitions.insert(delivery.receipt.partition);
        follower.ack(delivery.receipt).await?;
    }
    assert!(partitions.len() > 1, "the follower read one partition only");
    for partition in 0..3 {
        assert_eq!(offsets.consumer_offset("", &topic, partition).await?, None);
    }
    Ok(())
}
