//! The installation's device id, sent as `X-Aduid` on every upstream call.
//!
//! The web client sends a device id that stays the same across requests
//! (`docs/UPSTREAM.md`); an id that changes from call to call, or differs
//! between the replicas of one installation, looks like a token shared by
//! many devices. So the id is a UUID generated once per installation and
//! kept in the store ([`Store::device_id`], atomic get-or-create), read on
//! the first upstream call and then held for the life of the process.
//!
//! Decisions:
//! - **Read lazily, not at start.** A replica starts while Redis is down;
//!   the id is asked for with the first call instead.
//! - **Store failing: this process's candidate, for now.** If the store
//!   cannot answer on a call, that call carries the candidate this process
//!   would have stored, and the next call asks the store again. Blocking
//!   calls on the store would undo the degradation to the upstream that a
//!   store outage relies on; the id changes at most once, when the store
//!   answers.
//! - **No store (a bare client): one id per process**, shared by every
//!   client the process builds.

use std::sync::{Arc, OnceLock};

use tokio::sync::OnceCell;

use crate::store::Store;

pub struct DeviceId {
    /// Where the installation's id lives; `None` for a bare client.
    store: Option<Arc<dyn Store>>,
    /// The id once the store answered.
    resolved: OnceCell<String>,
    /// Offered to the store, and used while it cannot answer.
    candidate: String,
}

impl std::fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceId")
            .field("stored", &self.store.is_some())
            .field("resolved", &self.resolved.get())
            .finish_non_exhaustive()
    }
}

impl DeviceId {
    /// The installation's id, kept in `store`.
    pub fn stored(store: Arc<dyn Store>) -> Self {
        Self {
            store: Some(store),
            resolved: OnceCell::new(),
            candidate: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// One id for the whole process, for clients built without a store.
    pub fn process() -> Self {
        static PROCESS: OnceLock<String> = OnceLock::new();
        let id = PROCESS
            .get_or_init(|| uuid::Uuid::new_v4().to_string())
            .clone();
        Self {
            store: None,
            resolved: OnceCell::new_with(Some(id.clone())),
            candidate: id,
        }
    }

    /// The id to send now.
    pub async fn get(&self) -> &str {
        if let Some(id) = self.resolved.get() {
            return id;
        }
        let Some(store) = &self.store else {
            return &self.candidate;
        };
        let stored = self
            .resolved
            .get_or_try_init(|| store.device_id(&self.candidate))
            .await;
        match stored {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(error = %e, "device id not readable from the store: this call carries the process's own");
                &self.candidate
            }
        }
    }
}
