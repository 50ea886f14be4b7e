//! Mirrors a topic to an append-only JSON-lines file under `DATA_DIR`.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{Deps, Handler, dead_letter_of};
use crate::Result;
use crate::bus::Delivery;
use crate::store::ReportLog;
use crate::wire::ReportEvent;

/// Appends every message of a topic to a file; a message that is not a JSON object is
/// dead-lettered instead (or, on the dead-letter topic itself, kept wrapped in one).
#[derive(Debug, Clone)]
pub(crate) struct Mirror {
    pub(crate) deps: Deps,
    pub(crate) log: ReportLog,
    /// Where each report event goes once it is in the file (the report mirror only).
    pub(crate) feed: Option<tokio::sync::broadcast::Sender<ReportEvent>>,
    /// The messages appended lately, to skip a resend of one.
    pub(crate) recent: Arc<Recent>,
}

/// How many appended messages [`Recent`] remembers.
const RECENT: usize = 65_536;

/// Fingerprints (128 bits) of the messages appended lately. A handler that died after
/// sending the messages its state change led to and before recording that it did sends
/// them again, byte for byte (an outbox); a message seen again here is such a resend, since
/// two different events never have the same bytes (each carries its own time).
#[derive(Debug, Default)]
pub(crate) struct Recent {
    hashers: (RandomState, RandomState),
    seen: Mutex<(HashSet<u128>, VecDeque<u128>)>,
}

impl Recent {
    fn fingerprint(&self, payload: &[u8]) -> u128 {
        let high = u128::from(self.hashers.0.hash_one(payload));
        let low = u128::from(self.hashers.1.hash_one(payload));
        (high << 64) | low
    }

    /// Remembers `payload`; false when it was seen lately.
    fn first_time(&self, payload: &[u8]) -> bool {
        let fingerprint = self.fingerprint(payload);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let (set, order) = &mut *seen;
        if !set.insert(fingerprint) {
            return false;
        }
        order.push_back(fingerprint);
        if order.len() > RECENT
            && let Some(oldest) = order.pop_front()
        {
            set.remove(&oldest);
        }
        true
    }

    /// Forgets `payload`, which could not be appended (it will come again).
    fn forget(&self, payload: &[u8]) {
        let fingerprint = self.fingerprint(payload);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.0.remove(&fingerprint);
    }
}

#[async_trait]
impl Handler for Mirror {
    async fn handle(&self, delivery: &Delivery) -> Result<()> {
        let is_object = serde_json::from_slice::<serde_json::Value>(&delivery.payload)
            .is_ok_and(|v| v.is_object());
        if is_object {
            if !self.recent.first_time(&delivery.payload) {
                tracing::debug!(topic = %delivery.topic, key = %delivery.key, "a resent message is already in the file");
                return Ok(());
            }
            if let Err(error) = self.log.append_raw(&delivery.payload).await {
                self.recent.forget(&delivery.payload);
                return Err(error.into());
            }
            if let Some(feed) = &self.feed
                && let Ok(event) = serde_json::from_slice::<ReportEvent>(&delivery.payload)
            {
                // Nobody listening is fine: the feed is for live views only.
                let _ = feed.send(event);
            }
        } else if delivery.topic == self.deps.topics.dlq {
            // Dead-lettering a dead letter would loop; keep it in the file, wrapped in one.
            let wrapped = dead_letter_of(delivery, "a dead letter that is not a JSON object");
            let wrapped = crate::wire::encode(&wrapped);
            self.log.append_raw(&wrapped).await?;
        } else {
            return self
                .deps
                .dead_letter(delivery, "a report must be one JSON object")
                .await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Recent;

    #[test]
    fn a_resend_is_recognised_and_a_forgotten_message_is_new_again() {
        let recent = Recent::default();
        assert!(recent.first_time(b"{\"a\":1}"));
        assert!(recent.first_time(b"{\"a\":2}"));
        assert!(!recent.first_time(b"{\"a\":1}"), "the same bytes again");
        recent.forget(b"{\"a\":2}");
        assert!(
            recent.first_time(b"{\"a\":2}"),
            "forgotten after a failed append"
        );
    }
}
