//! The circuit breaker and the stored device id under injected store faults
//! (the faulty store of the test-support crate wraps a real embedded store).

use std::sync::Arc;
use std::time::{Duration, Instant};

use zsxq_cache::clock::SystemClock;
use zsxq_cache::domain::{MemberNumber, UserId};
use zsxq_cache::store::embedded::EmbeddedStore;
use zsxq_cache::store::guard::{GuardedStore, TIMEOUT_STRIKES};
use zsxq_cache::store::{Store, StoreError};
use zsxq_cache::upstream::device::{DeviceId, candidate};
use zsxq_test_support::{Fault, FaultSwitch, FaultyStore};

fn guarded(dir: &tempfile::TempDir, cool_down: Duration) -> (GuardedStore, FaultSwitch) {
    let store =
        EmbeddedStore::open(&dir.path().join("g.redb"), Arc::new(SystemClock)).expect("opens");
    let (faulty, switch) = FaultyStore::wrap(Box::new(store));
    (
        GuardedStore::new(Box::new(faulty), Duration::from_millis(50), cool_down),
        switch,
    )
}

fn embedded(dir: &tempfile::TempDir) -> Box<dyn Store> {
    Box::new(EmbeddedStore::open(&dir.path().join("d.redb"), Arc::new(SystemClock)).unwrap())
}

fn id() -> UserId {
    UserId::new(454881884228).unwrap()
}

#[tokio::test]
async fn a_hung_store_costs_lookups_their_short_timeout_and_trips_on_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (store, switch) = guarded(&dir, Duration::from_secs(30));
    switch.set(Fault::Hanging);
    for _ in 0..5 {
        let started = Instant::now();
        let read = store.get_members(&[id()]).await;
        assert!(matches!(read, Err(StoreError::Timeout(_))), "{read:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(
            store.is_closed(),
            "a lookup's timeout alone is not an outage"
        );
    }
    for strike in 1..=TIMEOUT_STRIKES {
        let write = store.put_members(&[], Duration::from_secs(60)).await;
        assert!(matches!(write, Err(StoreError::Timeout(_))), "{write:?}");
        assert_eq!(
            store.is_closed(),
            strike < TIMEOUT_STRIKES,
            "strike {strike}"
        );
    }
    let started = Instant::now();
    let second = store.user_id_by_number(MemberNumber::new(1).unwrap()).await;
    assert!(matches!(second, Err(StoreError::Unavailable)), "{second:?}");
    assert!(
        started.elapsed() < Duration::from_millis(40),
        "an open breaker does not wait: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn io_errors_open_the_breaker_and_a_probe_closes_it_when_the_store_returns() {
    let dir = tempfile::tempdir().unwrap();
    let (store, switch) = guarded(&dir, Duration::from_millis(100));
    assert!(store.ping().await.is_ok());
    switch.set(Fault::Failing);
    assert!(matches!(store.ping().await, Err(StoreError::Embedded(_))));
    assert!(!store.is_closed());
    switch.set(Fault::None);
    assert!(
        matches!(store.ping().await, Err(StoreError::Unavailable)),
        "still cooling down"
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(store.ping().await.is_ok(), "the probe goes through");
    assert!(store.is_closed());
}

#[tokio::test]
async fn a_slow_write_between_good_ones_does_not_open_the_breaker() {
    let dir = tempfile::tempdir().unwrap();
    let (store, switch) = guarded(&dir, Duration::from_secs(30));
    for _ in 0..3 {
        switch.set(Fault::Hanging);
        for _ in 1..TIMEOUT_STRIKES {
            let write = store.put_members(&[], Duration::from_secs(60)).await;
            assert!(matches!(write, Err(StoreError::Timeout(_))), "{write:?}");
        }
        switch.set(Fault::None);
        assert!(store.get_members(&[id()]).await.is_ok());
        assert!(store.is_closed(), "a success resets the count");
    }
}

#[tokio::test]
async fn the_stored_id_wins_and_a_failing_store_leaves_the_candidate() {
    let dir = tempfile::tempdir().unwrap();
    let (faulty, switch) = FaultyStore::wrap(embedded(&dir));
    let store: Arc<dyn Store> = Arc::new(faulty);
    store.device_id("stored-earlier").await.unwrap();
    switch.set(Fault::Failing);
    let device = DeviceId::stored(store.clone(), "g t");
    assert_eq!(device.get().await, candidate("g t"), "store down");
    switch.set(Fault::None);
    assert_eq!(device.get().await, "stored-earlier", "store back");
    switch.set(Fault::Failing);
    assert_eq!(device.get().await, "stored-earlier", "held for the process");
}
