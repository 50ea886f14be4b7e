//! The behaviour every [`Bus`] must show.

use std::collections::HashMap;
use std::time::Duration;

use std::sync::Arc;

use crate::bus::{Bus, Delivery, FollowFrom, Subscription};

/// How long the suite waits for a message that must arrive.
const ARRIVES_WITHIN: Duration = Duration::from_secs(10);
/// How long it waits to be sure a message does not arrive.
const QUIET_FOR: Duration = Duration::from_millis(300);

async fn next(subscription: &dyn Subscription, what: &str) -> Delivery {
    match tokio::time::timeout(ARRIVES_WITHIN, subscription.next()).await {
        Ok(Ok(delivery)) => delivery,
        Ok(Err(error)) => panic!("bus conformance: {what}: next() failed: {error}"),
        Err(_) => panic!("bus conformance: {what}: no message within {ARRIVES_WITHIN:?}"),
    }
}

async fn nothing_more(subscription: &dyn Subscription, what: &str) {
    if let Ok(Ok(delivery)) = tokio::time::timeout(QUIET_FOR, subscription.next()).await {
        panic!(
            "bus conformance: {what}: unexpected message {:?}",
            delivery.key
        );
    }
}

async fn publish(bus: &dyn Bus, topic: &str, key: &str, payload: &str) {
    if let Err(error) = bus.publish(topic, key, payload.as_bytes().to_vec()).await {
        panic!("bus conformance: publish to {topic} failed: {error}");
    }
}

async fn subscribe(bus: &dyn Bus, topic: &str, group: &str) -> Arc<dyn Subscription> {
    match bus.subscribe(topic, group).await {
        Ok(subscription) => subscription,
        Err(error) => panic!("bus conformance: subscribe to {topic} as {group} failed: {error}"),
    }
}

async fn ack(subscription: &dyn Subscription, delivery: &Delivery) {
    if let Err(error) = subscription.ack(delivery.receipt).await {
        panic!("bus conformance: ack failed: {error}");
    }
}

/// Runs the bus conformance suite on `bus`; topics are named `<prefix>…` so that the suite
/// can run on a shared broker (use a fresh prefix per run).
///
/// It checks: a published message is delivered with its key and payload (and, when the bus
/// stamps it, the time it was published); every group gets
/// every message; each key's messages arrive in publish order while another key's may pass
/// them; the next message of a key waits for the previous one's acknowledgement; a message
/// not acknowledged when its subscription is dropped is delivered again to the group, and an
/// acknowledged one is not; a follower reads from the oldest message or from now, and leaves
/// the groups as they were.
pub async fn bus(bus: &dyn Bus, prefix: &str) {
    let topic = format!("{prefix}conformance");

    // Delivery with key and payload, to every group, stamped with its publication time (to
    // the millisecond, as Kafka keeps it).
    let before = chrono::Utc::now() - chrono::Duration::milliseconds(1);
    publish(bus, &topic, "k1", "first").await;
    let after = chrono::Utc::now() + chrono::Duration::milliseconds(1);
    let a = subscribe(bus, &topic, "group-a").await;
    let b = subscribe(bus, &topic, "group-b").await;
    for (subscription, group) in [(&a, "group-a"), (&b, "group-b")] {
        let delivery = next(subscription.as_ref(), group).await;
        assert_eq!(
            delivery.key, "k1",
            "bus conformance: {group} got the wrong key"
        );
        assert_eq!(
            delivery.payload, b"first",
            "bus conformance: {group} got the wrong payload"
        );
        assert_eq!(
            delivery.topic, topic,
            "bus conformance: delivery names the wrong topic"
        );
        if let Some(published_at) = delivery.published_at {
            assert!(
                before <= published_at && published_at <= after,
                "bus conformance: published_at {published_at} is not between {before} and {after}"
            );
        }
        ack(subscription.as_ref(), &delivery).await;
    }

    // Per-key order, across interleaved keys.
    for n in 0..20 {
        publish(bus, &topic, &format!("key-{}", n % 3), &format!("{n}")).await;
    }
    let mut seen: HashMap<String, Vec<u32>> = HashMap::new();
    for _ in 0..20 {
        let delivery = next(a.as_ref(), "ordering").await;
        let n: u32 = String::from_utf8_lossy(&delivery.payload)
            .parse()
            .unwrap_or(u32::MAX);
        seen.entry(delivery.key.clone()).or_default().push(n);
        ack(a.as_ref(), &delivery).await;
    }
    for (key, numbers) in &seen {
        let mut sorted = numbers.clone();
        sorted.sort_unstable();
        assert_eq!(numbers, &sorted, "bus conformance: key {key} out of order");
    }
    assert_eq!(seen.values().map(Vec::len).sum::<usize>(), 20);
    // group-b has not consumed these yet and still gets them all.
    for _ in 0..20 {
        let delivery = next(b.as_ref(), "group-b catches up").await;
        ack(b.as_ref(), &delivery).await;
    }
    nothing_more(b.as_ref(), "group-b after catching up").await;

    // The next message of a key waits for the previous one's acknowledgement.
    publish(bus, &topic, "same", "one").await;
    publish(bus, &topic, "same", "two").await;
    publish(bus, &topic, "other", "three").await;
    // The two keys may come in either order (a partitioned bus fetches them apart), but
    // "two" must not come while "one" is unacknowledged.
    let first = next(a.as_ref(), "key gating").await;
    let second = next(a.as_ref(), "another key passes a busy one").await;
    let mut payloads = [first.payload.clone(), second.payload.clone()];
    payloads.sort();
    assert_eq!(
        payloads,
        [b"one".to_vec(), b"three".to_vec()],
        "bus conformance: a busy key's next message came out, or a busy key blocked another key"
    );
    nothing_more(a.as_ref(), "second message of a busy key").await;
    ack(a.as_ref(), &first).await;
    ack(a.as_ref(), &second).await;
    let two = next(a.as_ref(), "key released").await;
    assert_eq!(two.payload, b"two");
    ack(a.as_ref(), &two).await;

    // Redelivery of what was not acknowledged; nothing acknowledged comes back.
    publish(bus, &topic, "crash", "unacked").await;
    let held = next(a.as_ref(), "before the crash").await;
    assert_eq!(held.payload, b"unacked");
    drop(a);
    let again = subscribe(bus, &topic, "group-a").await;
    let redelivered = next(again.as_ref(), "redelivery after the subscription dropped").await;
    assert_eq!(
        redelivered.payload, b"unacked",
        "bus conformance: unacknowledged message lost"
    );
    ack(again.as_ref(), &redelivered).await;
    nothing_more(again.as_ref(), "after redelivery").await;

    followers(bus, &format!("{prefix}followed")).await;
}

async fn follow(bus: &dyn Bus, topic: &str, from: FollowFrom) -> Arc<dyn Subscription> {
    match bus.follow(topic, from).await {
        Ok(subscription) => subscription,
        Err(error) => panic!("bus conformance: follow {topic} from {from:?} failed: {error}"),
    }
}

async fn followers(bus: &dyn Bus, topic: &str) {
    publish(bus, topic, "k", "old").await;
    let from_oldest = follow(bus, topic, FollowFrom::Oldest).await;
    let from_now = follow(bus, topic, FollowFrom::Now).await;
    publish(bus, topic, "k", "new").await;
    for expected in ["old", "new"] {
        let delivery = next(from_oldest.as_ref(), "a follower from the oldest").await;
        assert_eq!(
            delivery.payload,
            expected.as_bytes(),
            "bus conformance: a follower from the oldest message got the wrong message"
        );
        ack(from_oldest.as_ref(), &delivery).await;
    }
    let delivery = next(from_now.as_ref(), "a follower from now").await;
    assert_eq!(
        delivery.payload, b"new",
        "bus conformance: a follower from now got a message published before it followed"
    );
    ack(from_now.as_ref(), &delivery).await;
    drop(from_oldest);
    // Followers leave no trace: a group that joins now still starts at the oldest message.
    let group = subscribe(bus, topic, "after-followers").await;
    let first = next(group.as_ref(), "a group after followers").await;
    assert_eq!(
        first.payload, b"old",
        "bus conformance: a follower moved a group's position"
    );
    ack(group.as_ref(), &first).await;
}
