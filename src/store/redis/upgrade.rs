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
//!
//! The same first check refuses a Redis older than 7.0 by name: the scripts
//! need `PEXPIRETIME` (new in 7.0), and an older server would otherwise
//! fail every write with "unknown command" and nothing saying why.

use std::sync::atomic::Ordering;

use super::RedisStore;
use super::transport::{Batch, Replay, decode, refused_by_server};
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
        self.check_version().await?;
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

/// The oldest Redis the layout runs on (`PEXPIRETIME`).
const MIN_VERSION: (u32, u32) = (7, 0);

impl RedisStore {
    /// Fails with [`StoreError::Unsupported`] if a server that holds data
    /// runs a Redis older than [`MIN_VERSION`]. A server that refuses
    /// `INFO` (some managed services forbid it) or does not say its version
    /// passes: the scripts then fail on their own if it is too old.
    async fn check_version(&self) -> Result<(), StoreError> {
        let info = redis::cmd("INFO").arg("server").take();
        let replies = match self.on_every_master(&info).await {
            Ok(replies) => replies,
            Err(e) if refused_by_server(&e) => return Ok(()),
            Err(e) => return Err(e),
        };
        for reply in replies {
            let text: String = decode(reply, "INFO reply")?;
            if let Some(message) = too_old(&text) {
                return Err(StoreError::Unsupported(message));
            }
        }
        Ok(())
    }
}

/// What is wrong with the server an `INFO server` answer describes, if its
/// version is below [`MIN_VERSION`].
fn too_old(info: &str) -> Option<String> {
    let raw = info
        .lines()
        .find_map(|line| line.strip_prefix("redis_version:"))?
        .trim();
    let mut parts = raw.split('.').map(|p| p.parse::<u32>());
    let (Some(Ok(major)), Some(Ok(minor))) = (parts.next(), parts.next()) else {
        return None;
    };
    ((major, minor) < MIN_VERSION).then(|| {
        format!(
            "Redis {raw} is too old: zsxq-cache needs Redis {}.{} or later (PEXPIRETIME)",
            MIN_VERSION.0, MIN_VERSION.1
        )
    })
}

#[cfg(test)]
mod tests {
    use super::too_old;

    #[test]
    fn only_a_server_below_7_0_is_refused_by_its_version() {
        let info = |v: &str| format!("# Server\r\nredis_version:{v}\r\nredis_mode:standalone\r\n");
        let refused = too_old(&info("6.2.14")).expect("6.2 is too old");
        assert!(
            refused.contains("6.2.14") && refused.contains("7.0"),
            "{refused}"
        );
        assert!(too_old(&info("5.0.7")).is_some());
        for fine in ["7.0.15", "7.2.4", "8.0.0", "10.1.2"] {
            assert_eq!(too_old(&info(fine)), None, "{fine}");
        }
        // No version, or one we cannot read: not refused.
        assert_eq!(too_old("# Server\r\nredis_mode:standalone\r\n"), None);
        assert_eq!(too_old(&info("unstable")), None);
    }
}
