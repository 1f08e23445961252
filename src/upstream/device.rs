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
//! - **One candidate for the whole installation.** The id offered to the
//!   store is not drawn at random per process but derived from the group
//!   and the token (a UUID made of a SHA-1 of them, which reveals neither),
//!   so replicas that start together offer the same one, and a fleet whose
//!   store is down sends one device, not one per replica. Once stored, the
//!   id stays, whatever the token becomes later (a device keeps its id
//!   across logins).
//! - **Store failing: the candidate, for now.** If the store cannot answer
//!   on a call, that call carries the candidate, and the next call asks the
//!   store again. Blocking calls on the store would undo the degradation to
//!   the upstream that a store outage relies on; the id changes at most
//!   once, when the store answers with an id stored earlier.
//! - **No store (a bare client): one id per process**, shared by every
//!   client the process builds.

use std::sync::{Arc, OnceLock};

use tokio::sync::OnceCell;

use crate::store::Store;

/// The `X-Aduid` this process sends: the installation's stored id once
/// the store answered, the candidate until then.
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
    /// The installation's id, kept in `store`; `installation` (the group
    /// and the token) makes the candidate every replica offers.
    pub fn stored(store: Arc<dyn Store>, installation: &str) -> Self {
        Self {
            store: Some(store),
            resolved: OnceCell::new(),
            candidate: candidate(installation),
        }
    }

    /// The installation's candidate, without a store to keep it in (for
    /// `doctor` when the store cannot be opened).
    pub fn unstored(installation: &str) -> Self {
        let id = candidate(installation);
        Self {
            store: None,
            resolved: OnceCell::new_with(Some(id.clone())),
            candidate: id,
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

/// A UUID (v4 layout) from a SHA-1 of `installation`: the same for every
/// replica of one installation, and no way back to the token.
pub fn candidate(installation: &str) -> String {
    let digest = sha1_smol::Sha1::from(format!("zsxq-cache device {installation}"))
        .digest()
        .bytes();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_of_one_installation_offer_one_candidate_that_hides_the_token() {
        let a = candidate("51122858222824 secret-token");
        assert_eq!(a, candidate("51122858222824 secret-token"));
        assert_ne!(a, candidate("51122858222824 another-token"));
        let parsed = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert!(!a.contains("secret"));
    }
}
