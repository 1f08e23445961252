//! Coming up on a Redis that the original layout filled: its member hashes
//! are kept and indexed anew, its number strings, id set and sorted sets
//! deleted.
//!
//! Rebuilding rather than dropping: the hashes are the same in both layouts
//! and each one is a member the upstream (rate-limited, and slow to page
//! through) would otherwise be asked for again; indexing them costs one
//! `SCAN` of `zsxq:user:*` and one `HGETALL` + `PEXPIRETIME` per member,
//! once. Their expiry entries take the hash's own `PEXPIRETIME`, as every
//! write's do.
//!
//! The check runs once per process, before the first operation that relies
//! on the indexes (it is one `EXISTS` per old fixed key). Two replicas
//! upgrading at once do the same idempotent work. A replica of the old
//! version still writing after the upgrade is not followed: its members are
//! indexed when the new version rewrites them (run one version at a time).

use std::sync::atomic::Ordering;

use super::RedisStore;
use super::transport::{Batch, Replay, decode};
use crate::domain::UserId;
use crate::store::{StoreError, keys};

/// Members re-indexed per round trip during the upgrade.
const UPGRADE_BATCH: usize = 500;

impl RedisStore {
    /// Upgrades from the original layout if this Redis still holds it; a
    /// no-op after the first success.
    pub(super) async fn ensure_layout(&self) -> Result<(), StoreError> {
        if self.layout_checked.load(Ordering::Acquire) {
            return Ok(());
        }
        let old: Vec<&str> = std::iter::once(keys::OLD_USERS_ALL)
            .chain(keys::OLD_INDEXES)
            .collect();
        let mut batch = Batch::default();
        for key in &old {
            batch.push(&self.link, key, redis::cmd("EXISTS").arg(*key).take());
        }
        let mut found = false;
        for reply in self.exec(Replay::Idempotent, false, batch).await? {
            found |= decode::<bool>(reply, "EXISTS reply")?;
        }
        if found {
            self.upgrade_from_original_layout().await?;
        }
        self.layout_checked.store(true, Ordering::Release);
        Ok(())
    }

    /// Indexes every member hash, then deletes the original layout's keys.
    async fn upgrade_from_original_layout(&self) -> Result<(), StoreError> {
        let pattern = format!("{}*", keys::USER_PREFIX);
        let (mut indexed, mut deleted) = (0, 0);
        let mut pending: Vec<UserId> = Vec::new();
        let number_pattern = format!("{}*", keys::NUMBER_PREFIX);
        for node in &self.data_nodes().await? {
            for (pattern, numbers) in [(&pattern, false), (&number_pattern, true)] {
                let mut cursor = 0;
                loop {
                    let (next, found) = self.scan_step(node, cursor, pattern).await?;
                    if numbers {
                        // Deleted step by step: gathered, a large group's
                        // number strings would all be held at once.
                        deleted += count_deleted(self.delete_each(&found).await?);
                    } else {
                        pending.extend(found.iter().filter_map(|key| {
                            key.strip_prefix(keys::USER_PREFIX)
                                .and_then(|raw| UserId::parse(raw).ok())
                        }));
                    }
                    if pending.len() >= UPGRADE_BATCH {
                        indexed += self.reindex(&pending).await?;
                        pending.clear();
                    }
                    cursor = next;
                    if cursor == 0 {
                        break;
                    }
                }
            }
        }
        indexed += self.reindex(&pending).await?;
        let doomed: Vec<String> = std::iter::once(keys::OLD_USERS_ALL)
            .chain(keys::OLD_INDEXES)
            .map(str::to_owned)
            .collect();
        deleted += count_deleted(self.delete_each(&doomed).await?);
        tracing::info!(
            members = indexed,
            deleted_keys = deleted,
            "upgraded Redis from the original layout: member hashes indexed anew, number keys, id set and sorted sets deleted"
        );
        Ok(())
    }
}

fn count_deleted(deleted: Vec<bool>) -> usize {
    deleted.into_iter().filter(|d| *d).count()
}
