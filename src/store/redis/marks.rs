//! Refund marks in Redis: a hash of marks and a list of audit entries per
//! camp (`keys::refund_marks`, `keys::refund_log`), both without a TTL and
//! in one slot, so one script applies a batch atomically on a server and on
//! a cluster alike — and whether the server keeps them over a restart.

use std::collections::HashMap;

use redis::Value;

use super::RedisStore;
use super::scripts::APPLY_MARKS;
use super::transport::{Replay, decode, eval};
use crate::domain::{CheckinId, UserId};
use crate::store::marks::{
    MarkChange, Persistence, RefundLogEntry, RefundMark, encode_entry, encode_mark,
};
use crate::store::{StoreError, keys};

impl RedisStore {
    /// Every mark of the camp (`HGETALL`).
    pub(super) async fn read_marks(
        &self,
        checkin: CheckinId,
    ) -> Result<HashMap<UserId, RefundMark>, StoreError> {
        let key = keys::refund_marks(checkin);
        let hgetall = redis::cmd("HGETALL").arg(&key).take();
        let raw: HashMap<String, Vec<u8>> = self
            .command(Replay::Idempotent, &hgetall, "refund marks")
            .await?;
        raw.into_iter()
            .map(|(field, value)| {
                let id = UserId::parse(&field)
                    .map_err(|_| StoreError::Corrupt(format!("{key} field {field:?}")))?;
                let mark = serde_json::from_slice(&value)
                    .map_err(|e| StoreError::Corrupt(format!("{key} field {field}: {e}")))?;
                Ok((id, mark))
            })
            .collect()
    }

    /// One `APPLY_MARKS` call. Replaying it is safe: a script that did run
    /// finds its own marks the second time and refuses, and the caller
    /// reads again and sees them applied.
    pub(super) async fn write_marks(
        &self,
        checkin: CheckinId,
        changes: &[MarkChange],
    ) -> Result<bool, StoreError> {
        if changes.is_empty() {
            return Ok(true);
        }
        let mut cmd = eval(
            APPLY_MARKS,
            &[keys::refund_marks(checkin), keys::refund_log(checkin)],
        );
        cmd.arg(changes.len());
        for change in changes {
            let expected = change
                .expected
                .as_ref()
                .map(encode_mark)
                .unwrap_or_default();
            cmd.arg(change.user_id.to_string())
                .arg(expected)
                .arg(encode_mark(&change.mark));
        }
        for change in changes {
            cmd.arg(encode_entry(&change.entry));
        }
        let applied: i64 = self
            .command(Replay::Idempotent, &cmd, "apply marks reply")
            .await?;
        Ok(applied == 1)
    }

    /// The newest `limit` log entries (`LRANGE`; entries are pushed on the
    /// left).
    pub(super) async fn read_log(
        &self,
        checkin: CheckinId,
        limit: usize,
    ) -> Result<Vec<RefundLogEntry>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let key = keys::refund_log(checkin);
        let lrange = redis::cmd("LRANGE").arg(&key).arg(0).arg(limit - 1).take();
        let raw: Vec<Vec<u8>> = self
            .command(Replay::Idempotent, &lrange, "refund log")
            .await?;
        raw.iter()
            .map(|value| {
                serde_json::from_slice(value)
                    .map_err(|e| StoreError::Corrupt(format!("{key} entry: {e}")))
            })
            .collect()
    }

    /// `CONFIG GET appendonly` and `CONFIG GET save` on every server that
    /// holds data: volatile if any has both off, unknown if one refuses
    /// `CONFIG` (managed services rename or forbid it) and none is volatile.
    pub(super) async fn check_persistence(&self) -> Result<Persistence, StoreError> {
        let aof = self
            .config_on_masters("appendonly")
            .await
            .map(|v| v.into_iter().map(|s| s == "yes").collect::<Vec<_>>());
        let save = self.config_on_masters("save").await.map(|v| {
            v.into_iter()
                .map(|s| !s.trim().is_empty())
                .collect::<Vec<_>>()
        });
        match (aof, save) {
            (Ok(aof), Ok(save)) => {
                let volatile = aof.iter().zip(&save).filter(|(a, s)| !**a && !**s).count();
                Ok(if volatile == 0 {
                    Persistence::Durable
                } else {
                    Persistence::Volatile(format!(
                        "{volatile} of {} Redis server(s) run with appendonly no and no save rule",
                        aof.len()
                    ))
                })
            }
            (Err(StoreError::Redis(e)), _) | (_, Err(StoreError::Redis(e)))
                if matches!(e.kind(), redis::ErrorKind::Server(_)) =>
            {
                Ok(Persistence::Unknown(format!(
                    "Redis refused CONFIG GET ({})",
                    e.code().unwrap_or("error")
                )))
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        }
    }

    /// The value of one `CONFIG GET` parameter on every master.
    async fn config_on_masters(&self, parameter: &str) -> Result<Vec<String>, StoreError> {
        let cmd = redis::cmd("CONFIG").arg("GET").arg(parameter).take();
        self.on_every_master(&cmd)
            .await?
            .into_iter()
            .map(|reply: Value| {
                // RESP2 answers [name, value]; RESP3 a map of one entry.
                let pairs: HashMap<String, String> = decode(reply, "CONFIG GET reply")?;
                pairs.get(parameter).cloned().ok_or_else(|| {
                    StoreError::Corrupt(format!("CONFIG GET {parameter} answered nothing"))
                })
            })
            .collect()
    }
}
