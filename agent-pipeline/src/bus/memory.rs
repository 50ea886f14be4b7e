//! The in-process bus, the embedded default.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use super::{Bus, BusError, Delivery, FollowFrom, Receipt, Subscription};

/// An in-process bus: topics are append-only logs in memory, shared by every clone.
///
/// It keeps every message for the life of the process (there is no retention), and loses
/// them all when the process ends; the pipeline makes up for that from its state store.
#[derive(Debug, Clone, Default)]
pub struct MemoryBus {
    inner: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    topics: HashMap<String, Topic>,
    next_subscription: u64,
}

#[derive(Debug, Default)]
struct Topic {
    /// Key, payload and publication time of each message, by offset.
    log: Vec<(String, Vec<u8>, DateTime<Utc>)>,
    groups: HashMap<String, Group>,
    /// Woken on every publish, acknowledgement and redelivery of this topic (only its
    /// subscribers look again).
    changed: Arc<Notify>,
}

#[derive(Debug, Default)]
struct Group {
    /// The first offset never handed out.
    cursor: u64,
    /// Offsets handed out at least once that must be delivered again (blocked by their key or
    /// returned by a dropped subscription), in offset order.
    pending: BTreeSet<u64>,
    /// Offsets delivered and not yet acknowledged, with the subscription that holds them.
    in_flight: HashMap<u64, u64>,
    /// Keys with a message in flight.
    busy_keys: HashSet<String>,
}

impl MemoryBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// A member of `group` on `topic`. A follower (`ephemeral`) gets a group of its own,
    /// starting at `from`, that is removed when it is dropped.
    fn join(
        &self,
        topic: &str,
        mut group: String,
        from: Option<FollowFrom>,
        ephemeral: bool,
    ) -> MemorySubscription {
        let mut state = self.lock();
        state.next_subscription += 1;
        let id = state.next_subscription;
        if ephemeral {
            group = format!("\0follower-{id}");
        }
        let topic_log = state.topics.entry(topic.to_owned()).or_default();
        let start = match from {
            Some(FollowFrom::Now) => topic_log.log.len() as u64,
            _ => 0,
        };
        topic_log.groups.entry(group.clone()).or_insert(Group {
            cursor: start,
            ..Group::default()
        });
        MemorySubscription {
            shared: self.inner.clone(),
            changed: topic_log.changed.clone(),
            topic: topic.to_owned(),
            group,
            id,
            ephemeral,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.inner)
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    // A panic while holding the lock leaves plain data behind, still consistent enough to go on.
    shared
        .state
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, topic: &str, key: &str, payload: Vec<u8>) -> Result<(), BusError> {
        let changed = {
            let mut state = self.lock();
            let topic = match state.topics.get_mut(topic) {
                Some(topic) => topic,
                None => state.topics.entry(topic.to_owned()).or_default(),
            };
            topic.log.push((key.to_owned(), payload, Utc::now()));
            topic.changed.clone()
        };
        changed.notify_waiters();
        Ok(())
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Arc<dyn Subscription>, BusError> {
        Ok(Arc::new(self.join(topic, group.to_owned(), None, false)))
    }

    async fn follow(
        &self,
        topic: &str,
        from: FollowFrom,
    ) -> Result<Arc<dyn Subscription>, BusError> {
        Ok(Arc::new(self.join(topic, String::new(), Some(from), true)))
    }

    fn is_durable(&self) -> bool {
        false
    }
}

#[derive(Debug)]
struct MemorySubscription {
    shared: Arc<Shared>,
    /// The topic's [`Topic::changed`].
    changed: Arc<Notify>,
    topic: String,
    group: String,
    id: u64,
    /// A follower's group, removed with it.
    ephemeral: bool,
}

impl MemorySubscription {
    /// Hands out the oldest message whose key is free, if any.
    fn take(&self) -> Option<Delivery> {
        let mut state = lock(&self.shared);
        let topic = state.topics.get_mut(&self.topic)?;
        let Topic { log, groups, .. } = topic;
        let group = groups.get_mut(&self.group)?;

        let key_of = |offset: u64| log.get(offset as usize).map(|(key, ..)| key.as_str());
        let mut chosen = group
            .pending
            .iter()
            .copied()
            .find(|offset| key_of(*offset).is_some_and(|k| !group.busy_keys.contains(k)));
        if let Some(offset) = chosen {
            group.pending.remove(&offset);
        } else {
            while (group.cursor as usize) < log.len() {
                let offset = group.cursor;
                group.cursor += 1;
                let key = key_of(offset).unwrap_or_default();
                // A key already blocked in `pending` must stay behind its older message.
                let blocked = group.busy_keys.contains(key)
                    || group.pending.iter().any(|p| key_of(*p) == Some(key));
                if blocked {
                    group.pending.insert(offset);
                } else {
                    chosen = Some(offset);
                    break;
                }
            }
        }
        let offset = chosen?;
        let (key, payload, published_at) = log.get(offset as usize)?.clone();
        group.in_flight.insert(offset, self.id);
        group.busy_keys.insert(key.clone());
        Some(Delivery {
            topic: self.topic.clone(),
            key,
            payload,
            receipt: Receipt {
                partition: 0,
                offset,
            },
            published_at: Some(published_at),
        })
    }
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next(&self) -> Result<Delivery, BusError> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Register interest before looking, so that a publish in between is not missed.
            changed.as_mut().enable();
            if let Some(delivery) = self.take() {
                return Ok(delivery);
            }
            changed.await;
        }
    }

    async fn ack(&self, receipt: Receipt) -> Result<(), BusError> {
        {
            let mut state = lock(&self.shared);
            let Some(topic) = state.topics.get_mut(&self.topic) else {
                return Ok(());
            };
            let Topic { log, groups, .. } = topic;
            if let Some(group) = groups.get_mut(&self.group)
                && group.in_flight.remove(&receipt.offset).is_some()
                && let Some((key, ..)) = log.get(receipt.offset as usize)
            {
                group.busy_keys.remove(key);
            }
        }
        self.changed.notify_waiters();
        Ok(())
    }
}

impl Drop for MemorySubscription {
    fn drop(&mut self) {
        let mut state = lock(&self.shared);
        if let Some(topic) = state.topics.get_mut(&self.topic) {
            if self.ephemeral {
                topic.groups.remove(&self.group);
                return;
            }
            let Topic { log, groups, .. } = topic;
            if let Some(group) = groups.get_mut(&self.group) {
                let mine: Vec<u64> = group
                    .in_flight
                    .iter()
                    .filter(|(_, holder)| **holder == self.id)
                    .map(|(offset, _)| *offset)
                    .collect();
                for offset in mine {
                    group.in_flight.remove(&offset);
                    if let Some((key, ..)) = log.get(offset as usize) {
                        group.busy_keys.remove(key);
                    }
                    group.pending.insert(offset);
                }
            }
        }
        drop(state);
        self.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_delivery_carries_the_time_its_message_was_published() -> Result<(), BusError> {
        let bus = MemoryBus::new();
        let before = Utc::now();
        bus.publish("topic", "key", b"first".to_vec()).await?;
        let after = Utc::now();
        let subscription = bus.subscribe("topic", "group").await?;
        let delivery = subscription.next().await?;
        let published_at = delivery.published_at;
        assert!(
            published_at.is_some_and(|at| before <= at && at <= after),
            "{published_at:?} is not between {before} and {after}"
        );
        Ok(())
    }
}
