//! How the Redis store talks to Redis: one round trip under our own
//! deadline with the replay rules, pipelines, and batches split by slot so
//! the same code serves a standalone server and a cluster. Nothing here
//! knows the layout; the other files say what to send.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use redis::cluster_routing::Slot;
use redis::{FromRedisValue, Pipeline, RedisError, RedisResult, Value};

use super::RedisStore;
use crate::redis_link::Link;
use crate::store::StoreError;

/// Longest wait for a TCP connect plus Redis handshake. Redis runs next to
/// the service; anything slower is an outage and the cache falls back to the
/// upstream rather than making the operator wait.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Longest wait for the answer to one command or pipeline.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);

/// Our own bound on one round trip (dial + answer + slack), enforced outside
/// the client library so that no code path can hang.
const ROUND_TRIP_DEADLINE: Duration = Duration::from_millis(1_200);

/// Whether a failed request may be sent again.
#[derive(Debug, Clone, Copy)]
pub(super) enum Replay {
    /// Sending twice does no harm (reads, writes of absolute values).
    Idempotent,
    /// Counters: replay only when the first attempt certainly never left,
    /// i.e. the connection was refused.
    OnlyUnsent,
}

impl Replay {
    fn allows(self, error: &RedisError) -> bool {
        match self {
            Replay::Idempotent => error.is_connection_refusal() || error.is_connection_dropped(),
            Replay::OnlyUnsent => error.is_connection_refusal(),
        }
    }
}

/// Commands bound for Redis, each with the slot group of the key that
/// routes it ([`Link::slot_of`]): one group on a standalone server, one per
/// hash slot on a cluster.
#[derive(Default)]
pub(super) struct Batch {
    /// In the order pushed, which is the order of the replies `exec` returns.
    cmds: Vec<(Option<Slot>, redis::Cmd)>,
}

impl Batch {
    pub(super) fn push(&mut self, link: &Link, key: &str, cmd: redis::Cmd) {
        self.cmds.push((link.slot_of(key), cmd));
    }
}

impl RedisStore {
    /// Runs one round trip under [`ROUND_TRIP_DEADLINE`], replaying it once
    /// when `replay` allows the error it failed with.
    pub(super) async fn call<T, F, Fut>(&self, replay: Replay, request: F) -> Result<T, StoreError>
    where
        F: Fn(Link) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let mut replayed = false;
        loop {
            let attempt = tokio::time::timeout(ROUND_TRIP_DEADLINE, request(self.link.clone()));
            match attempt.await {
                Err(_) => return Err(StoreError::Timeout(ROUND_TRIP_DEADLINE)),
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) if self.link.is_cluster() && e.is_cluster_error() => {
                    // MOVED, ASK, TRYAGAIN, CLUSTERDOWN: the node refused
                    // the command without running it, so a replay is safe
                    // for idempotent requests once the map is fresh.
                    self.link.redial().await;
                    if replayed || !matches!(replay, Replay::Idempotent) {
                        return Err(e.into());
                    }
                    replayed = true;
                }
                Ok(Err(e)) if !replayed && replay.allows(&e) => replayed = true,
                Ok(Err(e)) => return Err(e.into()),
            }
        }
    }

    /// Sends a pipeline (all its keys in one slot) and returns one raw reply
    /// per command.
    pub(super) async fn pipeline(
        &self,
        replay: Replay,
        pipe: &Pipeline,
    ) -> Result<Vec<Value>, StoreError> {
        self.call(replay, |mut conn| async move {
            pipe.query_async::<Vec<Value>>(&mut conn).await
        })
        .await
    }

    /// Runs a batch and returns one reply per command, in order. On a
    /// standalone server it is one pipeline — a `MULTI`/`EXEC` when `atomic`;
    /// on a cluster one plain pipeline per slot, sent concurrently, so
    /// nothing ever crosses slots. A cluster gets no `MULTI`: atomicity
    /// across slots does not exist there anyway, and the cluster client does
    /// not follow a MOVED inside a transaction — after a failover every
    /// transaction to the moved slot failed until something else refreshed
    /// the slot map (seen in `tests/cluster.rs`). Callers order their writes
    /// so that a half-applied batch is harmless ("Writes in two rounds" in
    /// `mod.rs`).
    pub(super) async fn exec(
        &self,
        replay: Replay,
        atomic: bool,
        batch: Batch,
    ) -> Result<Vec<Value>, StoreError> {
        let atomic = atomic && !self.link.is_cluster();
        let total = batch.cmds.len();
        if total == 0 {
            return Ok(Vec::new());
        }
        let groups = group_by_slot(batch.cmds.iter().map(|(slot, _)| *slot));
        let mut cmds: Vec<Option<redis::Cmd>> =
            batch.cmds.into_iter().map(|(_, cmd)| Some(cmd)).collect();
        let pipes: Vec<Pipeline> = groups
            .iter()
            .map(|positions| {
                let mut pipe = redis::pipe();
                if atomic {
                    pipe.atomic();
                }
                for cmd in positions.iter().filter_map(|&i| cmds[i].take()) {
                    pipe.add_command(cmd);
                }
                pipe
            })
            .collect();
        let replies = futures_util::future::try_join_all(
            pipes.iter().map(|pipe| self.pipeline(replay, pipe)),
        )
        .await?;
        let mut out: Vec<Option<Value>> = vec![None; total];
        for (positions, values) in groups.iter().zip(replies) {
            if values.len() != positions.len() {
                return Err(short_reply(positions.len(), values.len()));
            }
            for (&i, value) in positions.iter().zip(values) {
                out[i] = Some(value);
            }
        }
        out.into_iter()
            .map(|v| v.ok_or_else(|| short_reply(total, 0)))
            .collect()
    }

    /// Sends one command and decodes its reply.
    pub(super) async fn command<T: FromRedisValue>(
        &self,
        replay: Replay,
        cmd: &redis::Cmd,
        what: &str,
    ) -> Result<T, StoreError> {
        let value = self
            .call(replay, |mut conn| async move {
                cmd.query_async::<Value>(&mut conn).await
            })
            .await?;
        decode(value, what)
    }
}

/// Positions of `slots` grouped by slot, groups in first-seen order: what
/// may share one pipeline or one script call ([`Link::slot_of`]; a single
/// server is one group).
pub(super) fn group_by_slot(slots: impl IntoIterator<Item = Option<Slot>>) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut group_of: HashMap<Option<Slot>, usize> = HashMap::new();
    for (i, slot) in slots.into_iter().enumerate() {
        let g = *group_of.entry(slot).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(i);
    }
    groups
}

/// `EVAL script numkeys keys…`, arguments to be appended by the caller. Plain
/// EVAL rather than EVALSHA: EVAL cannot fail with NOSCRIPT (inside a
/// transaction, or on a node a failover just promoted), and sending the
/// text is cheap. The largest, an index script with its shared library, is
/// about 6 KB; on this 2-core machine 5 000 calls of it cost 292 µs each by
/// EVAL against 278 µs by EVALSHA (a loop of single calls on a private
/// redis-server, during a build), 14 µs in a page of a few milliseconds.
pub(super) fn eval<K: AsRef<str>>(script: &str, keys: &[K]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(keys.len());
    for key in keys {
        cmd.arg(key.as_ref());
    }
    cmd
}

/// Whether the server answered the command with an error of its own (a
/// command renamed or forbidden, as some managed services do with `INFO`
/// and `CONFIG`) rather than failing to be reached.
pub(super) fn refused_by_server(e: &StoreError) -> bool {
    matches!(e, StoreError::Redis(e) if matches!(e.kind(), redis::ErrorKind::Server(_)))
}

/// Decodes a reply, reporting a reply of the wrong shape as corrupt data.
pub(super) fn decode<T: FromRedisValue>(value: Value, what: &str) -> Result<T, StoreError> {
    redis::from_redis_value(value).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

pub(super) fn short_reply(expected: usize, got: usize) -> StoreError {
    StoreError::Corrupt(format!(
        "pipeline answered {got} replies for {expected} commands"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_group_by_slot_in_first_seen_order() {
        assert_eq!(group_by_slot([None, None, None]), vec![vec![0, 1, 2]]);
        let (a, b) = (
            Some(Slot::for_key("zsxq:user:1")),
            Some(Slot::for_key("zsxq:user:2")),
        );
        assert_ne!(a, b);
        assert_eq!(group_by_slot([b, a, b, a]), vec![vec![0, 2], vec![1, 3]]);
        assert!(group_by_slot([]).is_empty());
    }
}
