//! The fault-injection suite: the service keeps answering when
//! Redis or the upstream misbehaves, loses nothing it was told, and leaks no
//! secret. Real faults on real things: a `redis-server` killed, restarted and
//! SIGSTOPped; the simulator answering garbage, slowly, with HTTP 500 or a
//! 1059 storm; the service binary itself SIGTERMed and SIGKILLed mid-write.
//!
//! Assertions are about behaviour; timings are only bounded generously
//! (machines are noisy). Each scenario prints what it measured
//! (`cargo test --test faults -- --nocapture`).

mod breaker;
mod crash;
mod secrets;
mod shutdown;
mod store_outage;
mod upstream_faults;
