//! Mirrors a topic to an append-only JSON-lines file under `DATA_DIR`.

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
}

#[async_trait]
impl Handler for Mirror {
    async fn handle(&self, delivery: &Delivery) -> Result<()> {
        let is_object = serde_json::from_slice::<serde_json::Value>(&delivery.payload)
            .is_ok_and(|v| v.is_object());
        if is_object {
            self.log.append_raw(&delivery.payload).await?;
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
