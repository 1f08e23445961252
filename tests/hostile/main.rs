//! Hostile clients at the HTTP edge: a real service on loopback
//! (`TestApp::builder`, in process or as the binary), attacked the way a
//! web page, a slow client or a flood would. Every loop is bounded in count
//! and time; figures are printed (`-- --nocapture`).
//!
//! - `gate.rs`: DNS rebinding (a foreign `Host`), cross-site POSTs
//!   (`text/plain`, a foreign `Origin`), reads behind `READ_TOKEN`.
//! - `connections.rs`: a header trickle, idle keep-alive connections, a
//!   flood of idle sockets beside `/healthz` and a request in flight, and
//!   the same flood against the binary held to 200 file descriptors.
//! - `exports.rs`: names with bidi overrides, zero-width characters and
//!   formula prefixes, through every export.
//! - `budget.rs`: abandoned requests leave the upstream budget to the next
//!   person, the interactive queue and each client's share of it are
//!   bounded, a request past its deadline is answered 504 and its fetch
//!   given up.
//! - `bounds.rs`: a 100 MB upstream answer, unknown camp ids by the
//!   thousand.
//! - `redis_loss.rs`: Redis killed under readers and restarted empty, or
//!   flushed: nothing refetched, nothing failed.

mod bounds;
mod budget;
mod connections;
mod exports;
mod gate;
mod redis_loss;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// One HTTP/1.1 answer read off a raw socket.
#[derive(Debug)]
pub struct RawAnswer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// Reads one answer (headers and a `content-length` body) from `stream`;
/// `None` when the connection closes (or nothing comes within `within`).
pub async fn read_answer(stream: &mut TcpStream, within: Duration) -> Option<RawAnswer> {
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status = head.split(' ').nth(1)?.parse().ok()?;
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).to_string();
                return Some(RawAnswer { status, head, body });
            }
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A `GET path` on a new raw connection that stays open (keep-alive).
pub async fn raw_get(addr: SocketAddr, path: &str) -> (TcpStream, Option<RawAnswer>) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    send_get(&mut stream, addr, path).await;
    let answer = read_answer(&mut stream, Duration::from_secs(10)).await;
    (stream, answer)
}

/// Writes a `GET path` on `stream`.
pub async fn send_get(stream: &mut TcpStream, addr: SocketAddr, path: &str) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request");
}

/// Whether the server closed `stream` (EOF or reset) within `within`.
pub async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(within, stream.read(&mut byte)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// A client whose requests from `local` (a loopback address) give up
/// after `timeout`.
pub fn client_from(local: [u8; 4], timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(local))
        .timeout(timeout)
        .build()
        .expect("client")
}

/// This process's resident memory in KiB (`VmRSS`).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
