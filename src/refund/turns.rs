//! One holder at a time per key (the per-camp turn of refund lists), in a
//! map that forgets a key as soon as nobody holds or waits for it.
//!
//! Decisions:
//! - **Pruned on release.** The map is keyed by camp ids from clients; an
//!   entry that outlived its use would let anyone grow it by asking for
//!   distinct ids. Each key's lock is an `Arc`: the map holds one reference,
//!   every holder and waiter another (taken under the map's lock), so when a
//!   holder lets go and only the map's reference is left, nobody can be
//!   waiting and the entry goes.
//! - **Swept when large.** A waiter whose request is dropped between being
//!   woken and taking the lock can leave an entry nobody will release; when
//!   the map passes [`SWEEP_ABOVE`] entries, every unused one is dropped, so
//!   the map never holds more than that plus the keys in use.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::OwnedMutexGuard;

/// Entries past which unused ones are swept on the next turn taken.
pub const SWEEP_ABOVE: usize = 1_024;

/// Per-key turns.
pub struct Turns<K> {
    map: Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>,
}

impl<K> Default for Turns<K> {
    fn default() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }
}

/// The turn of one key, held until dropped.
pub struct Turn<'a, K: Hash + Eq + Copy> {
    turns: &'a Turns<K>,
    key: K,
    guard: Option<OwnedMutexGuard<()>>,
}

impl<K: Hash + Eq + Copy> Turns<K> {
    fn lock(&self) -> MutexGuard<'_, HashMap<K, Arc<tokio::sync::Mutex<()>>>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for `key`'s turn.
    pub async fn take(&self, key: K) -> Turn<'_, K> {
        let lock = {
            let mut map = self.lock();
            if map.len() >= SWEEP_ABOVE {
                map.retain(|_, lock| Arc::strong_count(lock) > 1);
            }
            Arc::clone(map.entry(key).or_default())
        };
        Turn {
            turns: self,
            key,
            guard: Some(lock.lock_owned().await),
        }
    }

    /// Keys held now (in use, waited for, or not yet pruned).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Hash + Eq + Copy> Drop for Turn<'_, K> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.turns.lock();
        if map
            .get(&self.key)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_turn_is_exclusive_and_its_key_is_forgotten_once_released() {
        let turns: Arc<Turns<u64>> = Arc::default();
        let first = turns.take(1).await;
        let waiter = {
            let turns = turns.clone();
            tokio::spawn(async move {
                let _turn = turns.take(1).await;
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "the second caller waits");
        drop(first);
        waiter.await.unwrap();
        assert!(turns.is_empty());
    }

    #[tokio::test]
    async fn twenty_thousand_distinct_keys_leave_the_map_bounded() {
        let turns: Turns<u64> = Turns::default();
        for key in 0..20_000 {
            drop(turns.take(key).await);
        }
        assert_eq!(turns.len(), 0);
        // Entries left by waiters dropped before they took their turn are
        // swept by the next turn taken.
        for key in 0..20_000u64 {
            turns.lock().entry(key).or_default();
        }
        drop(turns.take(u64::MAX).await);
        assert_eq!(turns.len(), 0);
    }
}
