//! Free loopback ports for the servers tests start: redis-server, cluster
//! nodes, the service binary, chromedriver, nginx.
//!
//! A port is found by binding port 0 and reading what the OS chose. The
//! listener is then released for the child process to bind, so another
//! process can take the port in between; every caller that starts a child on
//! it retries with a new port when the child cannot bind. The machine's
//! shared Redis port is never handed out, so no test can start a server
//! there or mistake that Redis for its own.

use std::io;
use std::net::{Ipv4Addr, TcpListener};

/// Port of the machine's shared Redis; no test server may use it.
pub const SHARED_REDIS_PORT: u16 = 6379;

/// One free port on 127.0.0.1, never [`SHARED_REDIS_PORT`].
pub fn free_port() -> io::Result<u16> {
    Ok(free_ports(1)?[0])
}

/// `count` distinct free ports on 127.0.0.1, none of them
/// [`SHARED_REDIS_PORT`]. The listeners are held until all are chosen, so no
/// port is handed out twice.
pub fn free_ports(count: usize) -> io::Result<Vec<u16>> {
    let mut listeners = Vec::with_capacity(count);
    let mut ports = Vec::with_capacity(count);
    while ports.len() < count {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        if port != SHARED_REDIS_PORT {
            ports.push(port);
        }
        listeners.push(listener);
    }
    Ok(ports)
}

/// How many times [`retry_on_new_ports`] tries.
const START_ATTEMPTS: usize = 3;

/// Runs `start` (which picks its own free ports) until it succeeds, at most
/// three times: another process can take a port between our probe and the
/// child's bind. "Not found" is final, since a missing program stays missing.
pub fn retry_on_new_ports<T>(
    what: &str,
    mut start: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    let mut last_error = None;
    for _ in 0..START_ATTEMPTS {
        match start() {
            Ok(started) => return Ok(started),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(e),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other(format!("{what} did not start"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_and_never_the_shared_redis_port() {
        let ports = free_ports(20).unwrap();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 20);
        assert!(!ports.contains(&SHARED_REDIS_PORT));
        assert_ne!(free_port().unwrap(), SHARED_REDIS_PORT);
    }
}
