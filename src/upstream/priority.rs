//! Who is waiting for an upstream call. The budget orders its slots by it,
//! the fleet's schedule in Redis holds the next slot for it, and `/metrics`
//! labels calls with it — so it sits below all three.

use serde::Serialize;

/// Who is waiting for the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// A person is waiting on the answer (lookup, refund list).
    Interactive,
    /// Sync, refresh and warm-up: uses what interactive work leaves.
    Background,
}
