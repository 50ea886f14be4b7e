//! Leased ownership: the members of a group share a topic's partitions through leases in the
//! state store (`KafkaSettings::leases`).

use agent_pipeline::bus::BusError;
use chrono::Utc;

use super::{Member, lock};
use crate::settings::PartitionLeases;

impl Member {
    /// The group and this bus's member id, when this member shares partitions by leases.
    fn leased_member(&self) -> Option<(&str, &str)> {
        Some((self.group()?, self.bus.member_id.as_deref()?))
    }

    /// The error of a lease operation of the state store.
    fn lease_error(&self, error: agent_pipeline::store::StoreError) -> BusError {
        BusError::Transport(format!("partition leases of {}: {error}", self.topic))
    }

    /// Where the partition leases of `group` live.
    fn partitions_prefix(&self, group: &str) -> String {
        format!("partition/{group}/{}/", self.topic)
    }

    /// The lease resource of `partition` for `group`.
    fn partition_resource(&self, group: &str, partition: u32) -> String {
        format!("{}{partition}", self.partitions_prefix(group))
    }

    /// Where the member leases of `group` live.
    fn members_prefix(&self, group: &str) -> String {
        format!("member/{group}/{}/", self.topic)
    }

    /// One round of leased ownership: renews this member's heartbeat and partition leases
    /// (giving up those it lost), takes free partitions up to its share (the partitions
    /// divided by the live members, rounded up), and releases those above its share, so that
    /// a member that joined finds them free.
    pub(super) async fn balance(&self, leases: &PartitionLeases) -> Result<(), BusError> {
        let Some((group, member_id)) = self.leased_member() else {
            return Ok(());
        };
        let store = &self.bus.offsets;
        let failed = |error| self.lease_error(error);
        let now = Utc::now();
        let until =
            now + chrono::TimeDelta::from_std(leases.ttl).unwrap_or(chrono::TimeDelta::seconds(10));
        let me = format!("{}{}", self.members_prefix(group), member_id);
        store
            .acquire_lease(&me, member_id, now, until)
            .await
            .map_err(failed)?;
        let members = store
            .leases(&self.members_prefix(group), now)
            .await
            .map_err(failed)?
            .len()
            .max(1);
        let share = (self.partition_count as usize).div_ceil(members);

        let held: Vec<u32> = lock(&self.leases).keys().copied().collect();
        for partition in held {
            let resource = self.partition_resource(group, partition);
            match store
                .acquire_lease(&resource, member_id, now, until)
                .await
                .map_err(failed)?
            {
                Some(renewed) => {
                    lock(&self.leases).insert(partition, renewed);
                }
                None => {
                    tracing::warn!(topic = %self.topic, partition, "lost the partition's lease to another member");
                    self.give_up(partition);
                }
            }
        }

        // Start the search at a place of this member's own, so that members starting together
        // do not all try the same partitions first; partitions under another member's running
        // lease are not tried (one read instead of a write each).
        let count = self.partition_count;
        let taken: std::collections::HashSet<String> = if lock(&self.leases).len() < share {
            store
                .leases(&self.partitions_prefix(group), now)
                .await
                .map_err(failed)?
                .into_iter()
                .map(|lease| lease.resource)
                .collect()
        } else {
            Default::default()
        };
        let first = member_id
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
            % count.max(1);
        for step in 0..count {
            if lock(&self.leases).len() >= share {
                break;
            }
            let partition = (first + step) % count;
            if lock(&self.leases).contains_key(&partition) {
                continue;
            }
            let resource = self.partition_resource(group, partition);
            if taken.contains(&resource) {
                continue;
            }
            if let Some(lease) = store
                .acquire_lease(&resource, member_id, now, until)
                .await
                .map_err(failed)?
            {
                tracing::info!(topic = %self.topic, partition, member = %member_id, epoch = lease.epoch, "took the partition");
                if let Err(error) = self.take_partition(partition, Some(lease.clone())).await {
                    let _ = store.release_lease(&lease, Utc::now()).await;
                    return Err(error);
                }
            }
        }

        let surplus: Vec<u32> = {
            let held = lock(&self.leases);
            let mut partitions: Vec<u32> = held.keys().copied().collect();
            partitions.sort_unstable();
            partitions.into_iter().skip(share).collect()
        };
        for partition in surplus {
            tracing::info!(topic = %self.topic, partition, members, "giving the partition up to a member that joined");
            if let Some(lease) = self.give_up(partition) {
                store
                    .release_lease(&lease, Utc::now())
                    .await
                    .map_err(failed)?;
            }
        }
        Ok(())
    }

    /// Gives every partition and the member's heartbeat up, so that the others take them at
    /// once instead of after the leases' time to live.
    pub(super) async fn leave(&self) -> Result<(), BusError> {
        let Some((group, member_id)) = self.leased_member() else {
            return Ok(());
        };
        let store = &self.bus.offsets;
        let failed = |error| self.lease_error(error);
        let now = Utc::now();
        let held: Vec<u32> = lock(&self.leases).keys().copied().collect();
        for partition in held {
            if let Some(lease) = self.give_up(partition) {
                store.release_lease(&lease, now).await.map_err(failed)?;
            }
        }
        let me = format!("{}{}", self.members_prefix(group), member_id);
        if let Some(heartbeat) = store
            .leases(&me, now)
            .await
            .map_err(failed)?
            .into_iter()
            .find(|lease| lease.holder == member_id)
        {
            store.release_lease(&heartbeat, now).await.map_err(failed)?;
        }
        Ok(())
    }
}
