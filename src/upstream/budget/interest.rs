//! Whether anybody still wants a fetch's answer: nobody waits, nobody calls.
//!
//! A fetch started for people who waited runs inside [`waited_for`] with its
//! [`Interest`]. While it waits for a budget slot, it gives up
//! ([`UpstreamError::Abandoned`]) as soon as the interest is abandoned
//! (every caller left or ran out of time); once it holds a slot the call
//! goes out and its answer is kept. A client that sends a hundred requests
//! and hangs up costs the hundred nothing.
//!
//! An interest admitted through the interactive queue (`queue.rs`) holds
//! its place there until the fetch has its slot, and is given up for the
//! queue's refusal when its place goes to a client under its fair share.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::watch;

use crate::upstream::error::UpstreamError;

tokio::task_local! {
    /// Who waits for the fetch this task runs; read by
    /// [`super::Budget::acquire`].
    static INTEREST: Interest;
}

/// Runs the fetch `f` for `interest`: its waits for a budget slot end once
/// nobody wants the answer any more ([`UpstreamError::Abandoned`]) or its
/// place in the queue was given to a client under its fair share.
pub async fn waited_for<F: Future>(interest: Interest, f: F) -> F::Output {
    INTEREST.scope(interest, f).await
}

/// The interest of the fetch the current task runs, inside [`waited_for`].
pub fn current_interest() -> Option<Interest> {
    INTEREST.try_with(Interest::clone).ok()
}

/// Whether anybody still wants a fetch's answer, and the queue place it
/// holds until it gets its slot. Cloned into the fetch; the one who sees the
/// callers go calls [`Interest::abandon`].
#[derive(Clone)]
pub struct Interest {
    /// Shared by the fetch, its waiters and (weakly) its queue place.
    inner: Arc<InterestInner>,
}

/// What the clones of one interest share.
struct InterestInner {
    /// `true` once abandoned; waiters in `acquire` watch it.
    gone: watch::Sender<bool>,
    /// Why, when it was not that everyone left (the place was given away).
    reason: Mutex<Option<UpstreamError>>,
    /// Given back once the fetch has its slot (it no longer queues).
    ticket: Mutex<Option<Place>>,
}

/// What an interest holds until its fetch has a slot: a place in the
/// interactive queue, given back when dropped. Opaque here, so the queue
/// depends on the interest and not the other way round.
type Place = Box<dyn Send>;

/// The queue's hold on an interest: it does not keep the fetch's state
/// alive, so a fetch that ended is simply gone.
#[derive(Debug)]
pub(super) struct WeakInterest(Weak<InterestInner>);

impl WeakInterest {
    /// The interest, if its fetch is still there.
    pub(super) fn upgrade(&self) -> Option<Interest> {
        self.0.upgrade().map(|inner| Interest { inner })
    }
}

impl std::fmt::Debug for Interest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interest")
            .field("abandoned", &self.is_abandoned())
            .finish_non_exhaustive()
    }
}

impl Interest {
    /// An interest that holds no place in the interactive queue (a refund
    /// list's fetches: their fan-out is bounded where it is made).
    pub fn unqueued() -> Self {
        Self {
            inner: Arc::new(InterestInner {
                gone: watch::Sender::new(false),
                reason: Mutex::new(None),
                ticket: Mutex::new(None),
            }),
        }
    }

    /// Nobody waits any more: a fetch still queued for a slot gives up.
    pub fn abandon(&self) {
        self.inner.gone.send_replace(true);
        self.slot_taken();
    }

    /// Gives up for `reason` (what the waiters are answered).
    pub(super) fn abandon_for(&self, reason: UpstreamError) {
        if let Ok(mut r) = self.inner.reason.lock() {
            r.get_or_insert(reason);
        }
        self.abandon();
    }

    pub fn is_abandoned(&self) -> bool {
        *self.inner.gone.borrow()
    }

    /// What a fetch given up answers: why its place was taken, or
    /// [`UpstreamError::Abandoned`].
    pub fn reason(&self) -> UpstreamError {
        self.inner
            .reason
            .lock()
            .ok()
            .and_then(|r| r.clone())
            .unwrap_or(UpstreamError::Abandoned)
    }

    /// Resolves once abandoned.
    pub(super) async fn abandoned(&self) {
        let mut gone = self.inner.gone.subscribe();
        if gone.wait_for(|g| *g).await.is_err() {
            // The sender lives as long as `self`: never reached.
            std::future::pending::<()>().await;
        }
    }

    /// The fetch left the queue: give its place back.
    pub(super) fn slot_taken(&self) {
        let ticket = self.inner.ticket.lock().map(|mut t| t.take());
        drop(ticket);
    }

    /// The queue's hold on this interest.
    pub(super) fn downgrade(&self) -> WeakInterest {
        WeakInterest(Arc::downgrade(&self.inner))
    }

    /// Holds `ticket` until the fetch has its slot or is given up. Called
    /// under the queue's lock, so the ticket is never dropped here (its
    /// drop takes that lock).
    pub(super) fn hold(&self, ticket: impl Send + 'static) {
        *self
            .inner
            .ticket
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Box::new(ticket));
    }
}
