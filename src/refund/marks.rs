//! Refund marks: the operator pays deposits back by hand (Zsxq has no refund
//! API) and marks each row here, so the list says who is still owed — after
//! a restart too. The records and their atomic write are the store's
//! (`store/marks.rs`); this module decides what a change is and who may be
//! marked, and puts the marks on the lists.
//!
//! Decisions:
//! - **Only participants** — users in the camp's ranking, read the way the
//!   list reads it (the cached snapshot when there is one) — can be marked;
//!   a batch naming anyone else marks no one.
//! - **A mark is replaced whole**: a request without a note leaves none,
//!   so a note written for "rejected" never stays on a later "refunded".
//! - **A write that changes nothing** (same status, same note) is not
//!   written and not logged: the log holds changes only, and the mark keeps
//!   the time and author of its last real change.
//! - **Repeated ids in a batch** are marked once (an operator pasting a
//!   column twice means the same thing).
//! - **Compare-and-set**: the marks read before deciding go with the write;
//!   if someone changed one meanwhile nothing is written and the batch is
//!   decided again on what is stored now, so a log entry's `from` is always
//!   what was really there.
//! - **Marks that cannot be read** make a list say so (`refund_status`
//!   `null`, the counts absent, the list incomplete) rather than show every
//!   participant as still owed.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use serde::Serialize;

use super::{RefundError, RefundRow, RefundService};
use crate::domain::{CheckinId, UserId, iso_utc};
use crate::store::StoreError;
use crate::store::marks::{MarkChange, Persistence, RefundLogEntry, RefundMark, RefundStatus};

/// Longest note, in characters.
pub const NOTE_MAX_CHARS: usize = 200;

/// Most ids in one batch.
pub const BATCH_MAX: usize = 500;

/// Times a batch is decided again after a concurrent change.
const CONFLICT_RETRIES: usize = 5;

/// Who changes marks with the `ADMIN_TOKEN`.
pub const ADMIN_ACTOR: &str = "admin";

/// An operator's note on a mark: at most [`NOTE_MAX_CHARS`] characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note(String);

impl Note {
    /// `None` for a blank note; an error text for one too long.
    pub fn parse(raw: &str) -> Result<Option<Self>, String> {
        let chars = raw.chars().count();
        if chars > NOTE_MAX_CHARS {
            return Err(format!(
                "备注最多 {NOTE_MAX_CHARS} 个字符，现有 {chars} 个 (note must be at most {NOTE_MAX_CHARS} characters; it has {chars})"
            ));
        }
        Ok((!raw.trim().is_empty()).then(|| Self(raw.to_string())))
    }
}

/// Why marks could not be changed or read.
#[derive(Debug, thiserror::Error)]
pub enum MarkError {
    #[error(
        "用户 {} 不是训练营 {camp} 的参与者，未做任何标记 (not a participant of camp {camp}: {}; nothing was marked)",
        join(.users), join(.users)
    )]
    NotParticipant { camp: CheckinId, users: Vec<UserId> },
    #[error(transparent)]
    Refund(#[from] RefundError),
    /// The store failed; for a write, it may or may not have landed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("退款标记被同时修改，请重试 (the marks kept changing under this request; retry)")]
    Conflict,
}

fn join(users: &[UserId]) -> String {
    users
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A mark as the API shows it (times ISO-8601 UTC).
#[derive(Debug, Clone, Serialize)]
pub struct MarkView {
    pub user_id: UserId,
    pub status: RefundStatus,
    pub note: Option<String>,
    /// `null` for a participant never marked.
    pub updated_at: Option<String>,
    pub updated_by: Option<String>,
}

impl MarkView {
    fn of(user_id: UserId, mark: Option<&RefundMark>) -> Self {
        Self {
            user_id,
            status: mark.map_or(RefundStatus::Pending, |m| m.status),
            note: mark.and_then(|m| m.note.clone()),
            updated_at: mark.map(|m| iso_utc(m.updated_at)),
            updated_by: mark.map(|m| m.updated_by.clone()),
        }
    }
}

/// An audit entry as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LogView {
    pub at: String,
    pub by: String,
    pub user_id: UserId,
    pub from: RefundStatus,
    pub to: RefundStatus,
    pub note: Option<String>,
}

impl From<RefundLogEntry> for LogView {
    fn from(e: RefundLogEntry) -> Self {
        Self {
            at: iso_utc(e.at),
            by: e.by,
            user_id: e.user_id,
            from: e.from,
            to: e.to,
            note: e.note,
        }
    }
}

/// What a mark request changed.
#[derive(Debug, Clone, Serialize)]
pub struct MarkOutcome {
    /// Every id asked for (once each), with its mark as stored now.
    pub marks: Vec<MarkView>,
    /// How many marks changed (and were logged).
    pub changed: usize,
}

/// What the start-up check found out about the store's persistence.
#[derive(Debug, Default)]
pub struct PersistenceCheck(Mutex<Option<Persistence>>);

impl PersistenceCheck {
    pub fn get(&self) -> Option<Persistence> {
        self.0.lock().ok().and_then(|p| p.clone())
    }

    fn set(&self, found: Persistence) {
        if let Ok(mut p) = self.0.lock() {
            *p = Some(found);
        }
    }
}

/// The `/readyz` words for a store's persistence: "checking", "durable",
/// "volatile" or "unknown".
pub fn persistence_state(found: Option<&Persistence>) -> &'static str {
    match found {
        None => "checking",
        Some(Persistence::Durable) => "durable",
        Some(Persistence::Volatile(_)) => "volatile",
        Some(Persistence::Unknown(_)) => "unknown",
    }
}

/// The notice for the page when marks can be lost on a store restart.
pub fn persistence_notice(found: Option<&Persistence>) -> Option<String> {
    match found? {
        Persistence::Volatile(detail) => Some(format!(
            "Redis 未开启持久化，重启后退款标记会丢失：请开启 appendonly (Redis persistence is off — {detail}; refund marks are lost when Redis restarts: turn on appendonly)"
        )),
        _ => None,
    }
}

impl RefundService {
    /// Marks `users` of camp `checkin` with `status` and `note`, as `by`,
    /// all or none; see the module's decisions.
    pub async fn mark(
        &self,
        checkin: CheckinId,
        users: &[UserId],
        status: RefundStatus,
        note: Option<Note>,
        by: &str,
    ) -> Result<MarkOutcome, MarkError> {
        let mut seen = HashSet::new();
        let users: Vec<UserId> = users.iter().copied().filter(|u| seen.insert(*u)).collect();
        {
            let _turn = self.turns.take(checkin).await;
            let (snapshot, _) = self.ranking(checkin).await?;
            let participants: HashSet<UserId> =
                snapshot.rows.iter().map(|r| r.user.user_id).collect();
            let strangers: Vec<UserId> = users
                .iter()
                .copied()
                .filter(|u| !participants.contains(u))
                .collect();
            if !strangers.is_empty() {
                return Err(MarkError::NotParticipant {
                    camp: checkin,
                    users: strangers,
                });
            }
        }
        let note = note.map(|n| n.0);
        let store = self.cache.store();
        for _ in 0..CONFLICT_RETRIES {
            let stored = store.refund_marks(checkin).await?;
            let now = self.cache.now_ms();
            let changes: Vec<MarkChange> = users
                .iter()
                .filter_map(|&user_id| {
                    let expected = stored.get(&user_id).cloned();
                    let from = expected
                        .as_ref()
                        .map_or(RefundStatus::Pending, |m| m.status);
                    let old_note = expected.as_ref().and_then(|m| m.note.clone());
                    // An unmarked participant is pending without a note.
                    if from == status && old_note == note {
                        return None;
                    }
                    let mark = RefundMark {
                        status,
                        note: note.clone(),
                        updated_at: now,
                        updated_by: by.to_string(),
                    };
                    let entry = RefundLogEntry {
                        at: now,
                        by: by.to_string(),
                        user_id,
                        from,
                        to: status,
                        note: note.clone(),
                    };
                    Some(MarkChange {
                        user_id,
                        expected,
                        mark,
                        entry,
                    })
                })
                .collect();
            if !store.apply_refund_marks(checkin, &changes).await? {
                continue;
            }
            let mut now_stored = stored;
            for change in &changes {
                now_stored.insert(change.user_id, change.mark.clone());
            }
            return Ok(MarkOutcome {
                marks: users
                    .iter()
                    .map(|&u| MarkView::of(u, now_stored.get(&u)))
                    .collect(),
                changed: changes.len(),
            });
        }
        Err(MarkError::Conflict)
    }

    /// The newest `limit` audit entries of a camp, newest first.
    pub async fn mark_log(
        &self,
        checkin: CheckinId,
        limit: usize,
    ) -> Result<Vec<LogView>, MarkError> {
        let entries = self.cache.store().refund_log(checkin, limit).await?;
        Ok(entries.into_iter().map(LogView::from).collect())
    }

    /// The camp's marks, or `None` (logged) when they cannot be read.
    pub(super) async fn marks_for_list(
        &self,
        checkin: CheckinId,
    ) -> Option<HashMap<UserId, RefundMark>> {
        match self.cache.store().refund_marks(checkin).await {
            Ok(marks) => Some(marks),
            Err(e) => {
                tracing::warn!(error = %e, %checkin, "could not read the refund marks");
                None
            }
        }
    }

    /// Asks the store once whether it keeps data over a restart; warns in
    /// the log when marks can be lost. `/readyz` shows the result.
    pub async fn check_persistence(&self) {
        let found = match self.cache.store().persistence().await {
            Ok(found) => found,
            Err(e) => Persistence::Unknown(format!("the store could not be asked: {e}")),
        };
        match &found {
            Persistence::Volatile(detail) => tracing::warn!(
                %detail,
                "Redis persistence is off: refund marks are lost when Redis restarts (turn on appendonly)"
            ),
            Persistence::Unknown(why) => tracing::info!(
                %why,
                "whether Redis keeps refund marks over a restart is unknown"
            ),
            Persistence::Durable => {}
        }
        self.persistence.set(found);
    }

    pub fn persistence(&self) -> Option<Persistence> {
        self.persistence.get()
    }
}

/// Puts the marks on the rows: pending where unmarked; `None` everywhere
/// when the marks could not be read.
pub(super) fn annotate(rows: &mut [RefundRow], marks: Option<&HashMap<UserId, RefundMark>>) {
    for row in rows {
        let Some(marks) = marks else {
            row.refund_status = None;
            continue;
        };
        let mark = marks.get(&row.planet_user_id);
        row.refund_status = Some(mark.map_or(RefundStatus::Pending, |m| m.status));
        row.refund_note = mark.and_then(|m| m.note.clone());
        row.refund_updated_at = mark.map(|m| iso_utc(m.updated_at));
    }
}

/// The reason a list is incomplete when its marks could not be read.
pub const MARKS_UNREAD: &str = "退款标记未能读取，退款状态未知 (the refund marks could not be read; every row's refund_status is unknown)";

/// (refunded, rejected, pending) among the qualified, or `None` when any
/// row's status is unknown.
pub(super) fn counts(rows: &[RefundRow]) -> Option<(usize, usize, usize)> {
    let mut out = (0, 0, 0);
    for row in rows.iter().filter(|r| r.is_qualified) {
        match row.refund_status? {
            RefundStatus::Refunded => out.0 += 1,
            RefundStatus::Rejected => out.1 += 1,
            RefundStatus::Pending => out.2 += 1,
        }
    }
    if rows.iter().any(|r| r.refund_status.is_none()) {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_count_characters_not_bytes() {
        assert!(Note::parse(&"退".repeat(200)).is_ok());
        let e = Note::parse(&"退".repeat(201)).unwrap_err();
        assert!(e.contains("it has 201"), "{e}");
        assert_eq!(Note::parse("  ").unwrap(), None);
    }

    #[test]
    fn statuses_read_and_print_both_ways() {
        for s in RefundStatus::ALL {
            assert_eq!(RefundStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(RefundStatus::parse("paid"), None);
        assert_eq!(RefundStatus::Refunded.label(), "已退款");
    }
}
