//! The bounded interactive queue, and each client address's fair share of
//! it.
//!
//! Decisions:
//! - **Bounded** (`INTERACTIVE_QUEUE_MAX`, by default what the rate serves
//!   within the request deadline, [`default_queue_max`]): lookups that would
//!   start a new fetch are admitted while fewer than the bound wait for a
//!   slot. Over it, the caller is told at once ([`UpstreamError::QueueFull`],
//!   a 503 with `Retry-After`) rather than queued behind calls that could not
//!   be made before its deadline.
//! - **A fair share per client address** (IPv6 by its /64, as the HTTP rate
//!   limit keys it): a client alone may fill the queue, but once it is full
//!   no address holds more than `max / clients holding places` — a client
//!   under its share takes the newest place of the one holding the most,
//!   whose lookup is refused instead. `INTERACTIVE_QUEUE_PER_CLIENT` caps an
//!   address lower still.
//! - **No memory of idle clients.** The queue's map is keyed by client
//!   address but only holds clients with a place, so it never has more
//!   entries than the bound.
//! - **Lookups only.** Refund lists and background work are not admitted
//!   through it: their fan-out is bounded where it is made.

pub use crate::config::{DEFAULT_QUEUE_MIN, default_queue_max};
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::interest::{Interest, WeakInterest};
use crate::upstream::error::UpstreamError;

/// Longest `Retry-After` a refusal suggests.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(120);

tokio::task_local! {
    /// The client address the current request serves (set by the HTTP
    /// layer), for the interactive queue's per-client share.
    static CLIENT: Option<IpAddr>;
}

/// Runs `f` on behalf of `client`: fetches it starts count against that
/// address's share of the interactive queue.
pub async fn for_client<F: Future>(client: Option<IpAddr>, f: F) -> F::Output {
    CLIENT.scope(client, f).await
}

/// The client address of the request being served, if the HTTP layer set
/// one (`None` in-process: the CLI, tests).
pub fn current_client() -> Option<IpAddr> {
    CLIENT.try_with(|c| *c).ok().flatten()
}

/// The lookups waiting for an upstream slot, bounded in all and per client
/// address (see the module docs).
#[derive(Debug)]
pub struct InteractiveQueue {
    /// `INTERACTIVE_QUEUE_MAX`.
    max: usize,
    /// `INTERACTIVE_QUEUE_PER_CLIENT`: a fixed cap under the fair share.
    per_client: usize,
    /// The budget's spacing, to say how long a refused caller should wait.
    period: Duration,
    /// A std mutex: admission and giving a place back never await.
    state: Mutex<QueueState>,
}

/// The places, changed together under one lock.
#[derive(Debug, Default)]
struct QueueState {
    /// Places held, all clients together.
    waiting: usize,
    /// Places held per client address, oldest first; only addresses holding
    /// one, so at most `max` entries.
    by_client: HashMap<Option<IpAddr>, Vec<Place>>,
    /// Names the next place.
    next_id: u64,
}

/// One place: whose fetch holds it, to give up if the place is given away.
#[derive(Debug)]
struct Place {
    /// Matches the place to its ticket when the ticket is given back.
    id: u64,
    /// Given up with the queue's refusal if the place is given away.
    interest: WeakInterest,
}

/// A place in the [`InteractiveQueue`], given back when dropped.
#[derive(Debug)]
pub struct QueueTicket {
    /// The queue the place is given back to.
    queue: Arc<InteractiveQueue>,
    /// Whose place it is.
    client: Option<IpAddr>,
    /// Which of the client's places.
    id: u64,
}

impl Drop for QueueTicket {
    fn drop(&mut self) {
        let Ok(mut state) = self.queue.state.lock() else {
            return;
        };
        // A place given away was already taken out.
        let Some(places) = state.by_client.get_mut(&self.client) else {
            return;
        };
        let Some(at) = places.iter().position(|p| p.id == self.id) else {
            return;
        };
        places.remove(at);
        if places.is_empty() {
            state.by_client.remove(&self.client);
        }
        state.waiting = state.waiting.saturating_sub(1);
    }
}

impl InteractiveQueue {
    /// At most `max` places (at least 1), at most `per_client` (1..=max) for
    /// one address.
    pub fn new(max: usize, per_client: usize, period: Duration) -> Self {
        let max = max.max(1);
        Self {
            max,
            per_client: per_client.clamp(1, max),
            period,
            state: Mutex::new(QueueState::default()),
        }
    }

    fn refusal(&self, waiting: usize, limit: usize, per_client: bool) -> UpstreamError {
        UpstreamError::QueueFull {
            waiting,
            limit,
            per_client,
            retry_after: (self.period * (waiting as u32).max(1))
                .clamp(Duration::from_secs(1), RETRY_AFTER_MAX),
        }
    }

    /// An interest holding a place for a fetch `client` starts, or the
    /// refusal to answer with. A client may hold at most its fair share of
    /// a full queue (`max` over the clients holding places, itself
    /// included) and never more than `per_client`: when the queue is full
    /// and `client` is under its share, the newest place of the client
    /// holding the most is given to it (that fetch is refused instead).
    pub fn admit(self: &Arc<Self>, client: Option<IpAddr>) -> Result<Interest, UpstreamError> {
        let evicted;
        let interest = {
            let mut state = self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let held = state.by_client.get(&client).map_or(0, Vec::len);
            if held >= self.per_client {
                return Err(self.refusal(held, self.per_client, true));
            }
            let clients = state.by_client.len() + usize::from(held == 0);
            let fair = (self.max / clients).max(1);
            evicted = if state.waiting < self.max {
                None
            } else if held >= fair {
                return Err(self.refusal(held, fair, true));
            } else {
                let victim = state
                    .by_client
                    .iter_mut()
                    .max_by_key(|(_, places)| places.len())
                    .filter(|(_, places)| places.len() > fair)
                    .and_then(|(_, places)| places.pop().map(|p| (p, places.len())));
                let Some((place, left)) = victim else {
                    return Err(self.refusal(state.waiting, self.max, false));
                };
                state.by_client.retain(|_, places| !places.is_empty());
                state.waiting -= 1;
                Some((place, left + 1, fair))
            };
            state.waiting += 1;
            state.next_id += 1;
            let id = state.next_id;
            let interest = Interest::unqueued();
            state.by_client.entry(client).or_default().push(Place {
                id,
                interest: interest.downgrade(),
            });
            interest.hold(QueueTicket {
                queue: Arc::clone(self),
                client,
                id,
            });
            interest
        };
        // Outside the lock: giving up drops the victim's ticket, which
        // takes the lock (and finds its place already gone).
        if let Some((place, held, fair)) = evicted
            && let Some(victim) = place.interest.upgrade()
        {
            tracing::debug!(
                held,
                fair,
                "a queued lookup gave its place to a client under its share"
            );
            victim.abandon_for(self.refusal(held, fair, true));
        }
        Ok(interest)
    }

    /// Places held now.
    pub fn waiting(&self) -> usize {
        self.state.lock().map_or(0, |s| s.waiting)
    }

    /// Client addresses holding a place now.
    pub fn clients(&self) -> usize {
        self.state.lock().map_or(0, |s| s.by_client.len())
    }
}
