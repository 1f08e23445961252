//! Scale-out tests: several replicas of the service sharing one
//! Redis and one upstream budget, measured at the simulator, and the
//! operational surface that running a fleet needs (logs, deploy files).
//!
//! Each test starts what it needs: a simulator, a private `redis-server`
//! (never the shared one) and the replicas on port 0, in this process.

mod deploy;
mod fleet;
mod logs;
