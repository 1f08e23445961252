//! Operations on the store as a whole: `clear`, the persisted counters,
//! memory use, reachability, what identifies the data, the device id — and
//! the per-node plumbing (every master of a cluster) that `clear` and
//! `INFO` need.

use std::collections::{HashMap, HashSet};

use redis::Value;

use super::RedisStore;
use super::scripts::DEVICE_ID;
use super::transport::{Batch, Replay, decode, eval, refused_by_server};
use crate::store::{
    ClearReport, DataIdentity, STAT_LAST_SYNC_TIME, StatCounters, StoreError, StoredStats,
    human_bytes, keys,
};

/// Keys per `SCAN` step of `clear` and of the upgrade from the original
/// layout.
const SCAN_COUNT: usize = 1_000;

impl RedisStore {
    /// Deletes every key the store made — member hashes, index buckets and
    /// directories, rankings, counters, and the original layout's keys — as
    /// a scan of our namespace finds them. SCAN may repeat keys; DEL's reply
    /// tells whether a key was still there, so nothing is counted twice. On
    /// a cluster every master holds part of the keyspace and is scanned in
    /// turn; a standalone server is the one "node".
    pub(super) async fn clear_all(&self) -> Result<ClearReport, StoreError> {
        let mut report = ClearReport::default();
        let mut seen = HashSet::new();
        for node in &self.data_nodes().await? {
            let mut cursor: u64 = 0;
            loop {
                let (next, found) = self
                    .scan_step(node, cursor, keys::NAMESPACE_PATTERN)
                    .await?;
                let doomed: Vec<String> = found
                    .into_iter()
                    .filter(|key| keys::is_store_key(key) && seen.insert(key.clone()))
                    .collect();
                let existed = self.delete_each(&doomed).await?;
                for (key, existed) in doomed.iter().zip(existed) {
                    if existed {
                        report.deleted_keys += 1;
                        report.deleted_users += u64::from(key.starts_with(keys::USER_PREFIX));
                    }
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        // Other replicas drop their near caches. Best effort: the clear is
        // done either way, and their entries expire after NEAR_CACHE_TTL.
        let publish = redis::cmd("PUBLISH")
            .arg(keys::EVENTS)
            .arg(format!("{} c", self.origin))
            .take();
        if let Err(e) = self
            .command::<i64>(Replay::Idempotent, &publish, "PUBLISH reply")
            .await
        {
            tracing::warn!(error = %e, "could not announce the clear to other replicas");
        }
        Ok(report)
    }

    /// Adds `delta` to the counters hash, replayed only if never sent.
    pub(super) async fn add_counters(&self, delta: &StatCounters) -> Result<(), StoreError> {
        if delta.is_zero() {
            return Ok(());
        }
        let mut batch = Batch::default();
        for (field, value) in delta.fields() {
            let value = i64::try_from(value).unwrap_or(i64::MAX);
            let incr = redis::cmd("HINCRBY")
                .arg(keys::STATS)
                .arg(field)
                .arg(value)
                .take();
            batch.push(&self.link, keys::STATS, incr);
        }
        self.exec(Replay::OnlyUnsent, true, batch).await?;
        Ok(())
    }

    /// Stores the time of the last completed sync in the counters hash.
    pub(super) async fn record_sync_time(&self, ms: i64) -> Result<(), StoreError> {
        let hset = redis::cmd("HSET")
            .arg(keys::STATS)
            .arg(STAT_LAST_SYNC_TIME)
            .arg(ms)
            .take();
        let _: u64 = self
            .command(Replay::Idempotent, &hset, "HSET reply")
            .await?;
        Ok(())
    }

    /// The counters hash, absent fields read as zero.
    pub(super) async fn read_stats(&self) -> Result<StoredStats, StoreError> {
        let hgetall = redis::cmd("HGETALL").arg(keys::STATS).take();
        let fields: HashMap<String, String> = self
            .command(Replay::Idempotent, &hgetall, "stats hash")
            .await?;
        let counter = |name: &str| -> Result<u64, StoreError> {
            fields.get(name).map_or(Ok(0), |raw| {
                raw.parse().map_err(|_| {
                    StoreError::Corrupt(format!("{} field {name} is {raw:?}", keys::STATS))
                })
            })
        };
        let last_sync_time = match fields.get(STAT_LAST_SYNC_TIME) {
            None => None,
            Some(raw) => Some(raw.parse::<i64>().map_err(|_| {
                StoreError::Corrupt(format!(
                    "{} field {STAT_LAST_SYNC_TIME} is {raw:?}",
                    keys::STATS
                ))
            })?),
        };
        Ok(StoredStats {
            counters: StatCounters::read_fields(counter)?,
            last_sync_time,
        })
    }

    /// `used_memory` of the server, or summed over a cluster's masters, as
    /// Redis prints it.
    pub(super) async fn used_memory(&self) -> Result<String, StoreError> {
        // Summed over the masters of a cluster (replicas hold copies).
        let info = redis::cmd("INFO").arg("memory").take();
        let mut bytes: u64 = 0;
        for reply in self.on_every_master(&info).await? {
            let text: String = decode(reply, "INFO reply")?;
            let used = used_memory_in(&text)
                .ok_or_else(|| StoreError::Corrupt("INFO memory lacks used_memory".into()))?;
            bytes = bytes.saturating_add(used);
        }
        Ok(human_bytes(bytes))
    }

    /// `PING`, expecting `PONG`.
    pub(super) async fn ping_server(&self) -> Result<(), StoreError> {
        let ping = redis::cmd("PING").take();
        let reply: String = self
            .command(Replay::Idempotent, &ping, "PING reply")
            .await?;
        if reply == "PONG" {
            Ok(())
        } else {
            Err(StoreError::Corrupt(format!("PING answered {reply:?}")))
        }
    }

    /// The server's run id and how many members the number index lists
    /// (every member is in it; a flushed Redis has no index, so 0).
    pub(super) async fn identity(&self) -> Result<Option<DataIdentity>, StoreError> {
        self.ensure_layout().await?;
        let members = self.indexed_members().await?;
        // On a cluster each node has its own run id and a failover changes
        // which ones serve, so none of them identifies the data.
        let run_id = if self.link.is_cluster() {
            None
        } else {
            let info = redis::cmd("INFO").arg("server").take();
            match self
                .command::<String>(Replay::Idempotent, &info, "INFO reply")
                .await
            {
                Ok(text) => run_id_in(&text),
                // A server that refuses INFO (renamed or forbidden, as some
                // managed services do) is watched by its member count
                // alone; it is not failing.
                Err(e) if refused_by_server(&e) => None,
                Err(e) => return Err(e),
            }
        };
        Ok(Some(DataIdentity { run_id, members }))
    }

    /// The stored device id, or `candidate` stored now.
    pub(super) async fn device_id_or(&self, candidate: &str) -> Result<String, StoreError> {
        // One key, so one slot on a cluster; replaying it is harmless.
        let mut cmd = eval(DEVICE_ID, &[keys::DEVICE_ID]);
        cmd.arg(candidate);
        self.command(Replay::Idempotent, &cmd, "device id").await
    }

    /// One `SCAN` step on `node` for keys matching `pattern`: the next
    /// cursor and the keys found.
    pub(super) async fn scan_step(
        &self,
        node: &Option<(String, u16)>,
        cursor: u64,
        pattern: &str,
    ) -> Result<(u64, Vec<String>), StoreError> {
        let scan = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .take();
        let reply = self.on_data_node(node, &scan).await?;
        decode(reply, "SCAN reply")
    }

    /// Deletes `keys` one `DEL` each, returning which ones existed.
    pub(super) async fn delete_each(&self, keys: &[String]) -> Result<Vec<bool>, StoreError> {
        let mut batch = Batch::default();
        for key in keys {
            batch.push(&self.link, key, redis::cmd("DEL").arg(key).take());
        }
        let replies = self.exec(Replay::Idempotent, false, batch).await?;
        replies
            .into_iter()
            .map(|reply| decode::<u64>(reply, "DEL reply").map(|n| n > 0))
            .collect()
    }

    /// The nodes that hold data: every master of a cluster, or `None` for
    /// the one server. A cluster that lists no master is an error (nothing
    /// could be read or deleted there).
    pub(super) async fn data_nodes(&self) -> Result<Vec<Option<(String, u16)>>, StoreError> {
        if !self.link.is_cluster() {
            return Ok(vec![None]);
        }
        let masters = self
            .call(
                Replay::Idempotent,
                |link| async move { link.masters().await },
            )
            .await?;
        if masters.is_empty() {
            return Err(StoreError::Corrupt("the cluster lists no master".into()));
        }
        Ok(masters.into_iter().map(Some).collect())
    }

    /// Runs `cmd` on one node of [`RedisStore::data_nodes`].
    async fn on_data_node(
        &self,
        node: &Option<(String, u16)>,
        cmd: &redis::Cmd,
    ) -> Result<Value, StoreError> {
        match node {
            None => self.command(Replay::Idempotent, cmd, "reply").await,
            Some((host, port)) => {
                self.call(Replay::Idempotent, |link| {
                    let cmd = cmd.clone();
                    async move { link.on_node(host, *port, cmd).await }
                })
                .await
            }
        }
    }

    /// Runs `cmd` once per node that holds data and returns the replies.
    pub(super) async fn on_every_master(&self, cmd: &redis::Cmd) -> Result<Vec<Value>, StoreError> {
        let mut out = Vec::new();
        for node in &self.data_nodes().await? {
            out.push(self.on_data_node(node, cmd).await?);
        }
        Ok(out)
    }
}

/// The `run_id` of an `INFO server` answer.
fn run_id_in(info: &str) -> Option<String> {
    info.lines()
        .find_map(|line| line.strip_prefix("run_id:"))
        .map(|id| id.trim().to_string())
        .filter(|id| !id.is_empty())
}

/// The `used_memory` figure (bytes) of an `INFO memory` answer.
pub fn used_memory_in(info: &str) -> Option<u64> {
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|value| value.trim().parse().ok())
}
