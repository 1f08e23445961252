//! Singleflight: concurrent callers of one key share one piece of work,
//! which runs in its own task — and, when asked to, gives up when they all
//! leave. Member fetches and background refreshes both run through it.
//!
//! Decisions:
//! - **The work outlives its first caller.** A caller that disconnects must
//!   not cancel an upstream call already sent (its slot is spent; the answer
//!   is worth caching), so the work is a spawned task, and callers subscribe
//!   to its answer on a `watch` channel.
//! - **...but not its last one, while it queues.** The map holds the
//!   *sender*, so the channel's receivers are exactly the callers waiting.
//!   A [`Flight`] may carry a hook for when the last one goes (hung up, or
//!   its request ran out of time): a fetch's hook abandons its budget
//!   [`Interest`], so a fetch still waiting for a budget slot gives up
//!   without calling (`upstream/budget/`); one in flight completes and is cached.
//!   The decision is taken under the map's lock, so a caller arriving at
//!   that moment either joins before (and the work goes on) or finds no
//!   flight and starts a new one. Work without a hook (a background refresh,
//!   which nobody waits for) simply runs to its end.
//! - **Bounded.** An entry lives only while its work runs (and, with a hook,
//!   while someone waits for it); lookups start fetches only through the
//!   bounded interactive queue, refund lists only for their own participants,
//!   and refreshes only for members served from the cache, so the map,
//!   though keyed by ids from clients, never holds more than those.
//! - **The entry goes however the work ends.** A guard in the task takes
//!   the entry out even if the work panics; the sender then drops and the
//!   callers waiting are told the work was interrupted, rather than waiting
//!   for ever.
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

/// A flight's answer while it runs (`None`) and once it is done.
type Slot<T, E> = watch::Sender<Option<Result<T, E>>>;

/// Work in flight by key; `E` is the error its callers get.
pub struct Flights<K, T, E = UpstreamError> {
    map: Mutex<HashMap<K, Arc<Slot<T, E>>>>,
}

impl<K, T, E> Default for Flights<K, T, E> {
    fn default() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }
}

/// The answer callers get when the work's task ended without one (it
/// panicked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupted;

impl From<Interrupted> for UpstreamError {
    fn from(_: Interrupted) -> Self {
        UpstreamError::Transport("the fetch was interrupted".into())
    }
}

/// One piece of work to share, and what to do if everyone waiting for it
/// leaves before it ends.
pub struct Flight<F> {
    work: F,
    deserted: Option<Box<dyn FnOnce() + Send>>,
}

impl<F> Flight<F> {
    /// Work that runs to its end, whether anyone still waits or not.
    pub fn new(work: F) -> Self {
        Self {
            work,
            deserted: None,
        }
    }

    /// Calls `hook` once nobody waits for the work any more (the work goes
    /// on; the hook tells it it may stop). Nobody can join it afterwards.
    pub fn on_deserted(mut self, hook: impl FnOnce() + Send + 'static) -> Self {
        self.deserted = Some(Box::new(hook));
        self
    }
}

impl<K, T, E> Flights<K, T, E> {
    fn lock(&self) -> MutexGuard<'_, HashMap<K, Arc<Slot<T, E>>>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K, T, E> Flights<K, T, E>
where
    K: Hash + Eq + Copy + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
{
    /// Flights running now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The answer of the work for `key`: joins the flight running, or calls
    /// `start` (under the map's lock) and runs what it returns in its own
    /// task. An error from `start` is returned at once and nothing starts.
    pub async fn join<F>(
        self: &Arc<Self>,
        key: K,
        start: impl FnOnce() -> Result<Flight<F>, E>,
    ) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
        E: From<Interrupted>,
    {
        let mut rx = {
            let mut map = self.lock();
            if let Some(slot) = map.get(&key) {
                slot.subscribe()
            } else {
                let flight = start()?;
                let (tx, rx) = watch::channel(None);
                let slot = Arc::new(tx);
                map.insert(key, Arc::clone(&slot));
                self.spawn(key, slot, flight);
                rx
            }
        };
        loop {
            if let Some(result) = rx.borrow_and_update().clone() {
                return result;
            }
            if rx.changed().await.is_err() {
                return Err(Interrupted.into());
            }
        }
    }

    /// Starts `work` for `key` in its own task unless a flight for `key` is
    /// running; nobody waits for its answer. True when it started.
    pub fn start<F>(self: &Arc<Self>, key: K, work: impl FnOnce() -> F) -> bool
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
    {
        let mut map = self.lock();
        if map.contains_key(&key) {
            return false;
        }
        let slot = Arc::new(watch::Sender::new(None));
        map.insert(key, Arc::clone(&slot));
        self.spawn(key, slot, Flight::new(work()));
        true
    }

    fn spawn<F>(self: &Arc<Self>, key: K, slot: Arc<Slot<T, E>>, flight: Flight<F>)
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
    {
        let landing = Landing {
            flights: Arc::clone(self),
            key,
            slot,
        };
        let task = async move {
            let Flight { work, deserted } = flight;
            let result = match deserted {
                None => work.await,
                Some(hook) => {
                    tokio::pin!(work);
                    tokio::select! {
                        result = &mut work => result,
                        () = landing.deserted() => {
                            hook();
                            work.await
                        }
                    }
                }
            };
            landing.slot.send_replace(Some(result));
        };
        tokio::spawn(task.in_current_span());
    }
}

/// A flight's entry, taken out of the map when the task ends, whether its
/// work answered or panicked.
struct Landing<K: Hash + Eq, T, E> {
    flights: Arc<Flights<K, T, E>>,
    key: K,
    slot: Arc<Slot<T, E>>,
}

impl<K: Hash + Eq, T, E> Landing<K, T, E> {
    /// Takes the entry out if it is still this flight's.
    fn remove(&self, map: &mut HashMap<K, Arc<Slot<T, E>>>) {
        if map
            .get(&self.key)
            .is_some_and(|s| Arc::ptr_eq(s, &self.slot))
        {
            map.remove(&self.key);
        }
    }

    /// Resolves once nobody waits for the slot any more, having taken it
    /// out of the map (so nobody can join it afterwards).
    async fn deserted(&self) {
        loop {
            self.slot.closed().await;
            let mut map = self.flights.lock();
            if self.slot.receiver_count() == 0 {
                self.remove(&mut map);
                return;
            }
            // Someone joined between the last leaving and this check.
        }
    }
}

impl<K: Hash + Eq, T, E> Drop for Landing<K, T, E> {
    fn drop(&mut self) {
        let mut map = self.flights.lock();
        self.remove(&mut map);
    }
}

impl<K, T> Flights<K, T, UpstreamError>
where
    K: Hash + Eq + Copy + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    /// The answer of the upstream fetch for `key`: joins the one in flight,
    /// or starts `fetch` in its own task. A new fetch is first `admit`ted
    /// (its interest, holding its place in the interactive queue, or
    /// [`Interest::unqueued`] for callers not admitted through it); a
    /// refusal is returned at once and nothing starts. The fetch runs with
    /// its interest, which is abandoned when its callers all leave.
    pub async fn run<F>(
        self: &Arc<Self>,
        key: K,
        admit: impl FnOnce() -> Result<Interest, UpstreamError>,
        fetch: impl FnOnce() -> F,
    ) -> Result<T, UpstreamError>
    where
        F: Future<Output = Result<T, UpstreamError>> + Send + 'static,
    {
        self.join(key, || {
            let interest = admit()?;
            let work = budget::waited_for(interest.clone(), fetch());
            Ok(Flight::new(work).on_deserted(move || interest.abandon()))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
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

    #[tokio::test]
    async fn detached_work_runs_once_per_key_to_its_end_and_leaves_the_map() {
        let flights: Arc<Flights<u64, (), Infallible>> = Arc::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let first = {
            let runs = runs.clone();
            flights.start(3, move || async move {
                let _ = release_rx.await;
                runs.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
        };
        assert!(first, "nothing ran for the key: it starts");
        let second = {
            let runs = runs.clone();
            flights.start(3, move || async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
        };
        assert!(!second, "one flight per key at a time");
        assert_eq!(flights.len(), 1, "kept while running though nobody waits");
        release_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            while !flights.is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the finished flight leaves the map");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(flights.start(3, || async { Ok(()) }), "and may run again");
    }

    #[tokio::test]
    async fn callers_of_work_that_panics_are_told_and_the_key_is_free_again() {
        let flights: Arc<Flights<u64, u64>> = Arc::default();
        let answer = flights
            .join(5, || {
                Ok(Flight::new(async {
                    tokio::task::yield_now().await;
                    broken()
                }))
            })
            .await;
        assert!(
            matches!(answer, Err(UpstreamError::Transport(_))),
            "{answer:?}"
        );
        assert!(flights.is_empty(), "the entry went with the task");
        let again = flights.join(5, || Ok(Flight::new(async { Ok(8) }))).await;
        assert_eq!(again, Ok(8));
    }

    fn broken() -> Result<u64, UpstreamError> {
        panic!("the work broke (a test of what callers are told)")
    }

    /// The interest of the fetch this task runs.
    fn budget_interest() -> Interest {
        budget::current_interest().expect("inside waited_for")
    }
}
