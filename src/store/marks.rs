//! What the store keeps about refunds paid by hand: a camp's marks (one per
//! participant the operator marked) and its audit log. These are records,
//! not cache entries: they have no TTL, `clear` leaves them alone, and the
//! stores write them durably (a redb commit; Redis as durably as the
//! server's persistence allows, which [`Persistence`] reports).
//!
//! The store does not judge a change: the refund module decides what changes
//! and what the log says ([`MarkChange`]); the store applies a batch only if
//! every mark is still what the caller read (compare-and-set), so two
//! operators marking at once never log a "from" that was not there.

use serde::{Deserialize, Serialize};

use crate::domain::UserId;

/// Where a participant's deposit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    /// Not paid back yet (every unmarked participant).
    Pending,
    Refunded,
    /// Will not be paid back (e.g. the operator found a rule broken).
    Rejected,
}

impl RefundStatus {
    pub const ALL: [RefundStatus; 3] = [Self::Pending, Self::Refunded, Self::Rejected];

    /// The name in JSON and in request bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Refunded => "refunded",
            Self::Rejected => "rejected",
        }
    }

    /// The label of exports and the page.
    pub fn label(self) -> &'static str {
        match self {
            Self::Pending => "未退款",
            Self::Refunded => "已退款",
            Self::Rejected => "已拒绝",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

/// One participant's mark, as stored (times in unix ms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundMark {
    pub status: RefundStatus,
    /// The operator's note; `None` when the mark was set without one.
    pub note: Option<String>,
    /// When the mark last changed (unix ms).
    pub updated_at: i64,
    /// Who changed it last (`admin`, or the name of a named admin token).
    pub updated_by: String,
}

/// One line of a camp's audit log: a mark that changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundLogEntry {
    /// When (unix ms).
    pub at: i64,
    pub by: String,
    pub user_id: UserId,
    /// The status before; `pending` for a participant never marked.
    pub from: RefundStatus,
    pub to: RefundStatus,
    pub note: Option<String>,
}

/// One mark to write, with what the caller read before deciding on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkChange {
    pub user_id: UserId,
    /// The mark the caller read; the batch is refused (nothing written) if
    /// the stored one differs by now.
    pub expected: Option<RefundMark>,
    pub mark: RefundMark,
    pub entry: RefundLogEntry,
}

/// Whether what the store holds survives a restart of the server holding
/// it: marks are worth money, so the operator is told when they are not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Persistence {
    /// Committed writes survive (a redb file; Redis with AOF or snapshots).
    Durable,
    /// A restart of the server loses the data (Redis with `appendonly no`
    /// and no `save` rule); the text names the server(s).
    Volatile(String),
    /// Could not be told (a managed Redis refusing `CONFIG`); the text says
    /// why.
    Unknown(String),
}

/// Marks encoded the one way both stores write them: a Redis script
/// compares stored values byte for byte, so one struct always encodes alike.
pub fn encode_mark(mark: &RefundMark) -> Vec<u8> {
    serde_json::to_vec(mark).unwrap_or_default()
}

pub fn encode_entry(entry: &RefundLogEntry) -> Vec<u8> {
    serde_json::to_vec(entry).unwrap_or_default()
}
