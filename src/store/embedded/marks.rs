//! Refund marks in the redb file: `refund_marks` (checkin_id, user_id) →
//! mark JSON and `refund_log` (checkin_id, sequence) → entry JSON. `clear`
//! never opens these tables, and a batch is one write transaction, so it
//! commits whole (and durably) or not at all.

use std::collections::HashMap;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::{EmbeddedStore, db_err};
use crate::domain::{CheckinId, UserId};
use crate::store::StoreError;
use crate::store::marks::{MarkChange, RefundLogEntry, RefundMark, encode_entry, encode_mark};

pub(super) const MARKS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("refund_marks");
/// The sequence grows by one per entry within a camp, so a reverse range
/// reads the newest first.
pub(super) const LOG: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("refund_log");

fn corrupt(what: &str, e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

impl EmbeddedStore {
    pub(super) async fn read_marks(
        &self,
        checkin: CheckinId,
    ) -> Result<HashMap<UserId, RefundMark>, StoreError> {
        let camp = checkin.get();
        self.blocking(move |inner| {
            let txn = inner.db.begin_read().map_err(db_err)?;
            let table = txn.open_table(MARKS).map_err(db_err)?;
            let mut out = HashMap::new();
            for entry in table.range((camp, 0)..=(camp, u64::MAX)).map_err(db_err)? {
                let (key, value) = entry.map_err(db_err)?;
                let id = UserId::new(key.value().1)
                    .ok_or_else(|| StoreError::Corrupt("refund mark of user 0".into()))?;
                let mark =
                    serde_json::from_slice(value.value()).map_err(|e| corrupt("refund mark", e))?;
                out.insert(id, mark);
            }
            Ok(out)
        })
        .await
    }

    pub(super) async fn write_marks(
        &self,
        checkin: CheckinId,
        changes: &[MarkChange],
    ) -> Result<bool, StoreError> {
        let camp = checkin.get();
        let changes = changes.to_vec();
        self.blocking(move |inner| {
            let txn = inner.db.begin_write().map_err(db_err)?;
            {
                let mut marks = txn.open_table(MARKS).map_err(db_err)?;
                for change in &changes {
                    let stored = marks
                        .get((camp, change.user_id.get()))
                        .map_err(db_err)?
                        .map(|v| serde_json::from_slice::<RefundMark>(v.value()))
                        .transpose()
                        .map_err(|e| corrupt("refund mark", e))?;
                    if stored != change.expected {
                        // Dropping the transaction uncommitted writes nothing.
                        return Ok(false);
                    }
                }
                for change in &changes {
                    marks
                        .insert(
                            (camp, change.user_id.get()),
                            encode_mark(&change.mark).as_slice(),
                        )
                        .map_err(db_err)?;
                }
                let mut log = txn.open_table(LOG).map_err(db_err)?;
                let first = log
                    .range((camp, 0)..=(camp, u64::MAX))
                    .map_err(db_err)?
                    .next_back()
                    .transpose()
                    .map_err(db_err)?
                    .map_or(0, |(key, _)| key.value().1 + 1);
                for (seq, change) in (first..).zip(&changes) {
                    log.insert((camp, seq), encode_entry(&change.entry).as_slice())
                        .map_err(db_err)?;
                }
            }
            txn.commit().map_err(db_err)?;
            Ok(true)
        })
        .await
    }

    pub(super) async fn read_log(
        &self,
        checkin: CheckinId,
        limit: usize,
    ) -> Result<Vec<RefundLogEntry>, StoreError> {
        let camp = checkin.get();
        self.blocking(move |inner| {
            let txn = inner.db.begin_read().map_err(db_err)?;
            let table = txn.open_table(LOG).map_err(db_err)?;
            table
                .range((camp, 0)..=(camp, u64::MAX))
                .map_err(db_err)?
                .rev()
                .take(limit)
                .map(|entry| {
                    let (_, value) = entry.map_err(db_err)?;
                    serde_json::from_slice(value.value()).map_err(|e| corrupt("refund log", e))
                })
                .collect()
        })
        .await
    }
}
