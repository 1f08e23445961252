//! One `redis-server` of a test cluster: started with cluster mode on its
//! own client and bus ports and directory, killed with SIGKILL, and started
//! again with its old `nodes.conf`, so it comes back as the same node.

use std::io;
use std::process::Child;

use tempfile::TempDir;

use crate::net::SHARED_REDIS_PORT;
use crate::redis_server::{spawn_redis, tail};

/// `cluster-node-timeout` in milliseconds. Small so that a killed master is
/// declared failed, and its replica elected, within a few seconds; large
/// enough that two loaded cores do not make healthy nodes look dead (1000 ms
/// is borderline while benchmarks share the machine).
const NODE_TIMEOUT_MS: u64 = 2000;

/// One `redis-server` of the cluster.
#[derive(Debug)]
pub(super) struct Node {
    /// Client port, fixed so that a restarted node comes back on the address
    /// the rest of the cluster (and any client) already knows.
    pub(super) port: u16,
    /// Cluster bus port (`--cluster-port`), fixed for the same reason.
    pub(super) bus_port: u16,
    /// Holds `nodes.conf` and the log. Kept across a kill so that
    /// `restart_node` brings back the same node identity; removed on drop.
    pub(super) dir: TempDir,
    /// `None` while the node is killed.
    pub(super) child: Option<Child>,
}

impl Node {
    /// Starts the node and waits until it answers PING.
    pub(super) fn spawn_and_wait(&mut self) -> io::Result<()> {
        if self.bus_port == SHARED_REDIS_PORT {
            return Err(io::Error::other(
                "refusing to start on the shared Redis port 6379",
            ));
        }
        let bus_port = self.bus_port.to_string();
        let node_timeout = NODE_TIMEOUT_MS.to_string();
        let child = spawn_redis(
            self.port,
            self.dir.path(),
            &[
                "--cluster-port",
                &bus_port,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                &node_timeout,
                // A replica may always stand for election, however long it
                // was cut off: the tests want a failover, not a cluster that
                // stays down because its replicas look too stale on a slow
                // machine.
                "--cluster-replica-validity-factor",
                "0",
                // Full syncs start at once instead of waiting 5 s for more
                // replicas to share the transfer.
                "--repl-diskless-sync-delay",
                "0",
                // Full syncs never touch the disk on either side. Otherwise a
                // replica keeps the received snapshot as dump.rdb and reloads
                // it when restarted, so a "crashed" node would come back with
                // stale data instead of empty.
                "--repl-diskless-sync",
                "yes",
                "--repl-diskless-load",
                "swapdb",
                "--logfile",
                "redis.log",
                "--loglevel",
                "notice",
            ],
            Some(&self.dir.path().join("redis.log")),
        )?;
        self.child = Some(child);
        Ok(())
    }

    /// An error, with the end of the node's log, if a node that should be
    /// running has exited; waiting on a dead node would only time out.
    pub(super) fn ensure_alive(&mut self) -> io::Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        if let Some(status) = child.try_wait()? {
            self.child = None;
            return Err(io::Error::other(format!(
                "cluster node on port {} exited ({status}): {}",
                self.port,
                tail(&self.dir.path().join("redis.log"))
            )));
        }
        Ok(())
    }

    /// SIGKILL and reap; the directory stays for `restart_node`.
    pub(super) fn kill(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Runs before `dir` is removed, so no process writes into a
        // directory being deleted.
        let _ = self.kill();
    }
}
