//! Refund marks: a batch applies all or nothing against what the caller
//! expected, the log reads newest first, and neither `clear` nor time
//! removes either.

use zsxq_cache::store::marks::{MarkChange, RefundLogEntry, RefundMark, RefundStatus};

use super::*;

pub async fn refund_marks_apply_all_or_nothing_log_newest_first_and_survive_clear(h: &Harness) {
    let camp = CheckinId::parse("8424481182").unwrap();
    let (a, b) = (UserId::new(11).unwrap(), UserId::new(22).unwrap());
    let change = |user, expected: Option<RefundMark>, status, at| {
        let mark = RefundMark {
            status,
            note: Some("微信已转".into()),
            updated_at: at,
            updated_by: "admin".into(),
        };
        MarkChange {
            user_id: user,
            expected: expected.clone(),
            entry: RefundLogEntry {
                at,
                by: "admin".into(),
                user_id: user,
                from: expected.map_or(RefundStatus::Pending, |m| m.status),
                to: status,
                note: mark.note.clone(),
            },
            mark,
        }
    };
    let first = [
        change(a, None, RefundStatus::Refunded, 1),
        change(b, None, RefundStatus::Rejected, 1),
    ];
    assert!(h.store.apply_refund_marks(camp, &first).await.unwrap());
    let marks = h.store.refund_marks(camp).await.unwrap();
    assert_eq!(marks.len(), 2);
    assert_eq!(marks[&a], first[0].mark);
    // A stale expectation on one of two writes nothing at all.
    let stale = [
        change(a, Some(first[0].mark.clone()), RefundStatus::Pending, 2),
        change(b, None, RefundStatus::Refunded, 2),
    ];
    assert!(!h.store.apply_refund_marks(camp, &stale).await.unwrap());
    assert_eq!(h.store.refund_marks(camp).await.unwrap(), marks);
    let next = [change(
        a,
        Some(first[0].mark.clone()),
        RefundStatus::Pending,
        3,
    )];
    assert!(h.store.apply_refund_marks(camp, &next).await.unwrap());
    let log = h.store.refund_log(camp, 10).await.unwrap();
    assert_eq!(log.len(), 3);
    assert_eq!(log[0], next[0].entry, "newest first");
    assert_eq!(h.store.refund_log(camp, 1).await.unwrap().len(), 1);
    h.store.clear().await.unwrap();
    // Redis time is real: there the PTTL below shows the keys never expire.
    if h.manual_clock.is_some() {
        h.let_time_pass(Duration::from_secs(7 * 86_400)).await;
    }
    assert_eq!(
        h.store.refund_marks(camp).await.unwrap().len(),
        2,
        "clear and time leave marks"
    );
    assert_eq!(h.store.refund_log(camp, 10).await.unwrap().len(), 3);
    let other = CheckinId::parse("1").unwrap();
    assert!(h.store.refund_marks(other).await.unwrap().is_empty());
    if let Some(mut conn) = h.raw_redis().await {
        let ttl: i64 = redis::cmd("PTTL")
            .arg("zsxq:refund:{8424481182}:marks")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(ttl, -1, "marks never expire");
    }
}
