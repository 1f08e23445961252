//! zsxq-cache: a member-number cache in front of the Zsxq API.

pub mod clock;
pub mod domain;
pub mod sim;
pub mod store;
pub mod testkit;
