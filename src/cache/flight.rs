//! Singleflight for upstream fetches: concurrent callers of one key share one
//! fetch, which runs in its own task — and gives up when they all leave.
//!
//! Decisions:
//! - **The fetch outlives its first caller.** A caller that disconnects must
//!   not cancel a call already sent (its slot is spent; the answer is worth
//!   caching), so the fetch is a spawned task, and callers subscribe to its
//!   answer on a `watch` channel.
//! - **...but not its last one, while it queues.** The map holds the
//!   *sender*, so the channel's receivers are exactly the callers waiting.
//!   When the last one goes (hung up, or its request ran out of time), the
//!   task abandons the fetch's [`Interest`]: a fetch still waiting for a
//!   budget slot gives up without calling (`budget.rs`); one in flight
//!   completes and is cached. The decision is taken under the map's lock, so
//!   a caller arriving at that moment either joins before (and the fetch goes
//!   on) or finds no flight and starts a new one.
//! - **Bounded.** An entry lives only while its fetch runs and someone waits
//!   for it; lookups start fetches only through the bounded interactive queue
//!   and refund lists only for their own participants, so the map, though
//!   keyed by ids from clients, never holds more than those.
//! - A `std::sync::Mutex`: held for map operations only, never across an
//!   await; a poisoned lock is taken over (the map only holds senders).

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;
use tracing::Instrument as _;

use crate::upstream::UpstreamError;
use crate::upstream::budget::{self, Interest};

/// A fetch's answer while it runs (`None`) and once it is done.
type Slot<T> = watch::Sender<Option<Result<T, UpstreamError>>>;

/// Fetches in flight by key.
pub struct Flights<K, T> {
    map: Mutex<HashMap<K, Arc<Slot<T>>>>,
}

impl<K, T> Default for Flights<K, T> {
    fn default() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K, T> Flights<K, T>
where
    K: Hash + Eq + Copy + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    fn lock(&self) -> MutexGuard<'_, HashMap<K, Arc<Slot<T>>>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fetches in flight now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The answer of the fetch for `key`: joins the one in flight, or starts
    /// `fetch` in its own task. A new fetch is first `admit`ted (its
    /// interest, holding its place in the interactive queue, or
    /// [`Interest::unqueued`] for callers not admitted through it); a
    /// refusal is returned at once and nothing starts.
    pub async fn run<F>(
        self: &Arc<Self>,
        key: K,
        admit: impl FnOnce() -> Result<Interest, UpstreamError>,
        fetch: impl FnOnce() -> F,
    ) -> Result<T, UpstreamError>
    where
        F: Future<Output = Result<T, UpstreamError>> + Send + 'static,
    {
        let mut rx = {
            let mut map = self.lock();
            if let Some(slot) = map.get(&key) {
                slot.subscribe()
            } else {
                let interest = admit()?;
                let (tx, rx) = watch::channel(None);
                let slot = Arc::new(tx);
                map.insert(key, Arc::clone(&slot));
                self.spawn(key, slot, interest, fetch());
                rx
            }
        };
        loop {
            if let Some(result) = rx.borrow_and_update().clone() {
                return result;
            }
            if rx.changed().await.is_err() {
                // The task ended without an answer (it panicked).
                return Err(UpstreamError::Transport("the fetch was interrupted".into()));
            }
        }
    }

    fn spawn<F>(self: &Arc<Self>, key: K, slot: Arc<Slot<T>>, interest: Interest, fetch: F)
    where
        F: Future<Output = Result<T, UpstreamError>> + Send + 'static,
    {
        let flights = Arc::clone(self);
        let task = async move {
            let run = budget::waited_for(interest.clone(), fetch);
            tokio::pin!(run);
            let result = tokio::select! {
                result = &mut run => result,
                () = flights.deserted(key, &slot) => {
                    interest.abandon();
                    run.await
                }
            };
            slot.send_replace(Some(result));
            let mut map = flights.lock();
            if map.get(&key).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                map.remove(&key);
            }
        };
        tokio::spawn(task.in_current_span());
    }

    /// Resolves once nobody waits for `slot` any more, having taken it out
    /// of the map (so nobody can join it afterwards).
    async fn deserted(&self, key: K, slot: &Arc<Slot<T>>) {
        loop {
            slot.closed().await;
            let mut map = self.lock();
            if slot.receiver_count() == 0 {
                if map.get(&key).is_some_and(|s| Arc::ptr_eq(s, slot)) {
                    map.remove(&key);
                }
                return;
            }
            // Someone joined between the last leaving and this check.
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch() {
        let flights: Arc<Flights<u64, u64>> = Arc::default();
        let started = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let (flights, started) = (flights.clone(), started.clone());
            tasks.push(tokio::spawn(async move {
                flights
                    .run(
                        7,
                        || Ok(Interest::unqueued()),
                        || async move {
                            started.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Ok(49)
                        },
                    )
                    .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(49));
        }
        assert_eq!(started.load(Ordering::SeqCst), 1);
        assert!(flights.is_empty(), "a finished flight leaves the map");
    }

    #[tokio::test]
    async fn a_fetch_nobody_waits_for_is_abandoned_and_leaves_the_map() {
        let flights: Arc<Flights<u64, u64>> = Arc::default();
        let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
        let caller = {
            let flights = flights.clone();
            tokio::spawn(async move {
                flights
                    .run(
                        1,
                        || Ok(Interest::unqueued()),
                        || async move {
                            // Stands for a wait on the budget: the interest
                            // is what `acquire` watches.
                            let interest = budget_interest();
                            while !interest.is_abandoned() {
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            let _ = seen_tx.send(());
                            Err(UpstreamError::Abandoned)
                        },
                    )
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(flights.len(), 1);
        caller.abort();
        tokio::time::timeout(Duration::from_secs(5), seen_rx)
            .await
            .expect("the fetch saw it was abandoned")
            .unwrap();
        assert!(flights.is_empty());
    }

    /// The interest of the fetch this task runs.
    fn budget_interest() -> Interest {
        budget::current_interest().expect("inside waited_for")
    }
}
