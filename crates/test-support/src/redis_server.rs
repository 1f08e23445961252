//! A throwaway `redis-server` for tests: real Redis, no mocks (STYLE.md).
//!
//! Each [`RedisServer`] runs its own process on a free port of 127.0.0.1 with
//! persistence off, so tests never share state, never leave files behind and
//! never touch a Redis someone else runs (the shared one on 6379 is refused
//! outright). The process is killed when the value is dropped, including when
//! a test panics.
//!
//! Fault injection is done on the real process: [`RedisServer::stop`] and
//! [`RedisServer::restart`] model Redis going away and coming back on the same
//! address; [`RedisServer::pause`] / [`RedisServer::resume`] (SIGSTOP/SIGCONT)
//! model a hung server whose socket still accepts connections but never
//! answers, which is the case that makes naive clients hang.
//!
//! The methods block the calling thread (start-up waits up to a few seconds
//! for PING to answer). That is fine in a test or benchmark; the server never
//! uses this module.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::net::{SHARED_REDIS_PORT, free_port, retry_on_new_ports};

/// How long a fresh server gets to answer PING before start-up fails.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` child process owned by a test.
#[derive(Debug)]
pub struct RedisServer {
    /// Fixed for the life of the value, so `restart` comes back on the same
    /// address and a store built before the outage can reconnect to it.
    port: u16,
    /// `None` while stopped.
    child: Option<Child>,
    /// Whether the process is currently SIGSTOPped; `stop` and `Drop` resume
    /// it first so it can be reaped cleanly.
    paused: bool,
}

impl RedisServer {
    /// Starts `redis-server` from `PATH` on a free local port and waits until
    /// it answers PING. Fails with a message naming the package to install if
    /// the binary is missing.
    pub fn start() -> io::Result<Self> {
        retry_on_new_ports("redis-server", || {
            let mut server = RedisServer {
                port: free_port()?,
                child: None,
                paused: false,
            };
            server.spawn_and_wait()?;
            Ok(server)
        })
    }

    /// The TCP port the server listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`, ready for `RedisStore::connect`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server and waits for it to exit. Data is lost (persistence
    /// is off), exactly like a crashed cache.
    pub fn stop(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            // SIGKILL also ends a stopped process; no need to resume first.
            self.paused = false;
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Stops the server if it runs and starts a fresh one on the same port.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop()?;
        self.spawn_and_wait()
    }

    /// Freezes the process (SIGSTOP): connections are still accepted by the
    /// kernel but nothing is answered, like a server stuck in a long command.
    pub fn pause(&mut self) -> io::Result<()> {
        self.signal("-STOP")?;
        self.paused = true;
        Ok(())
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&mut self) -> io::Result<()> {
        self.signal("-CONT")?;
        self.paused = false;
        Ok(())
    }

    fn signal(&self, signal: &str) -> io::Result<()> {
        let child = self
            .child
            .as_ref()
            .ok_or_else(|| io::Error::other("redis-server is not running"))?;
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!("kill {signal} failed: {status}")))
        }
    }

    fn spawn_and_wait(&mut self) -> io::Result<()> {
        let child = spawn_redis(
            self.port,
            &std::env::temp_dir(),
            &["--loglevel", "warning"],
            None,
        )?;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Starts `redis-server` on `port` with what every test server shares —
/// loopback only, in the foreground, nothing persisted, its files in `dir` —
/// plus `extra` arguments, and waits until it answers PING. If it exits
/// during start-up the error says how, with the end of `log` when the server
/// writes one; nothing is left running when this fails. The shared Redis
/// port is refused outright.
pub(crate) fn spawn_redis(
    port: u16,
    dir: &Path,
    extra: &[&str],
    log: Option<&Path>,
) -> io::Result<Child> {
    if port == SHARED_REDIS_PORT {
        return Err(io::Error::other(
            "refusing to start on the shared Redis port 6379",
        ));
    }
    let mut command = Command::new("redis-server");
    command
        .arg("--port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1"])
        .args(["--protected-mode", "no"])
        .args(["--daemonize", "no"])
        // Persistence off: `save` takes a list, so it is given once, here.
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = super::spawn_tool(&mut command, "redis-server", "redis-server")?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let failure = match child.try_wait() {
            Ok(Some(status)) => Some(io::Error::other(format!(
                "redis-server on port {port} exited during start-up ({status}){}",
                log.map(|log| format!(": {}", tail(log)))
                    .unwrap_or_default()
            ))),
            Err(e) => Some(e),
            Ok(None) if ping(port).unwrap_or(false) => return Ok(child),
            Ok(None) if Instant::now() >= deadline => Some(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("redis-server on port {port} did not answer PING within {READY_TIMEOUT:?}"),
            )),
            Ok(None) => None,
        };
        if let Some(e) = failure {
            // Do not leave a half-started process behind.
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The last few lines of a log file, for error messages.
pub(crate) fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join(" | ")
}

/// One raw RESP PING with short timeouts; `Ok(true)` once the server answers.
fn ping(port: u16) -> io::Result<bool> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.set_write_timeout(Some(Duration::from_millis(500)))?;
    stream.write_all(b"PING\r\n")?;
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply)?;
    Ok(&reply == b"+PONG\r\n")
}

/// Redis's `used_memory` in bytes, for measurements of what the cache costs
/// (`tests/store_memory.rs`, `bench hot`).
pub async fn used_memory<C: redis::aio::ConnectionLike>(conn: &mut C) -> redis::RedisResult<i64> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(conn).await?;
    zsxq_cache::store::redis::used_memory_in(&info)
        .and_then(|bytes| i64::try_from(bytes).ok())
        .ok_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::Parse, "INFO memory lacks used_memory"))
        })
}

/// Every key matching `pattern` in the Redis at `url`, found with `SCAN`
/// (never `KEYS`), sorted. For tests that look behind the store.
pub async fn scan_keys(url: &str, pattern: &str) -> redis::RedisResult<Vec<String>> {
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            keys.sort();
            keys.dedup();
            return Ok(keys);
        }
    }
}

/// `TTL key` in seconds: -1 for a key that never expires, -2 for none.
pub async fn ttl_of<C: redis::aio::ConnectionLike>(
    conn: &mut C,
    key: &str,
) -> redis::RedisResult<i64> {
    redis::cmd("TTL").arg(key).query_async(conn).await
}
