//! zsxq-cache: a member-number cache in front of the Zsxq (知识星球) API and
//! the refund lists built on it. See `README.md` for the map of modules.

pub mod clock;
pub mod domain;
pub mod store;
pub mod testkit;
