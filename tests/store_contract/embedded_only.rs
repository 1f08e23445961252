//! The embedded store's own promises: data survives reopening the file, an
//! undecodable record is reported and repaired, and a file held by another
//! handle says what holds it.

use super::*;

#[tokio::test]
async fn embedded_data_survives_closing_and_reopening_the_file() {
    let h = Harness::embedded().await;
    let clock = h.manual_clock.clone().unwrap();
    let a = member(91, 1, "持久", "2024-01-01T00:00:00.000+0800");
    h.store.put_members(slice::from_ref(&a), TTL).await.unwrap();
    h.store
        .add_stats(&StatCounters {
            total_requests: 1,
            ..StatCounters::default()
        })
        .await
        .unwrap();
    h.store.set_last_sync_time(START_MS).await.unwrap();
    let path = h.path.clone().unwrap();
    let Harness { store, _dir, .. } = h;
    drop(store);

    let reopened = EmbeddedStore::open(&path, clock.clone()).expect("reopen");
    assert_eq!(
        reopened.get_members(&[uid(91)]).await.unwrap(),
        vec![Some(a)]
    );
    assert_eq!(
        reopened.user_id_by_number(num(1)).await.unwrap(),
        Some(uid(91))
    );
    assert_eq!(reopened.count().await.unwrap(), 1);
    let stats = reopened.stats().await.unwrap();
    assert_eq!(stats.counters.total_requests, 1);
    assert_eq!(stats.last_sync_time, Some(START_MS));

    // Expiry is by stored time, so it also holds across a reopen.
    clock.advance_ms(i64::try_from(TTL.as_millis()).unwrap());
    assert_eq!(reopened.get_members(&[uid(91)]).await.unwrap(), vec![None]);
    assert_eq!(reopened.count().await.unwrap(), 0);
}

#[tokio::test]
async fn embedded_reports_an_undecodable_record_as_corrupt_and_clear_repairs_it() {
    const RECORDS: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("records");
    let h = Harness::embedded().await;
    let clock = h.manual_clock.clone().unwrap();
    let path = h.path.clone().unwrap();
    let Harness { store, _dir, .. } = h;
    drop(store);
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(RECORDS)
            .unwrap()
            .insert(7u64, b"{not json".as_slice())
            .unwrap();
        txn.commit().unwrap();
    }

    let store = EmbeddedStore::open(&path, clock).unwrap();
    let err = store.get_members(&[uid(7)]).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "got {err:?}");
    store.clear().await.unwrap();
    assert_eq!(store.get_members(&[uid(7)]).await.unwrap(), vec![None]);
}

#[test]
fn opening_an_embedded_file_another_handle_holds_says_what_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("held.redb");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let _held = EmbeddedStore::open(&path, clock.clone()).unwrap();
    let err = EmbeddedStore::open(&path, clock).unwrap_err().to_string();
    assert!(err.contains("already open"), "{err}");
    assert!(err.contains("serve"), "{err}");
}
