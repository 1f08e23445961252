//! Bounds on connections: how long a client may take to send its headers,
//! how long a keep-alive connection may sit idle, and how many may be open
//! at once. `server.rs` registers every connection here and runs each one's
//! watchdog; the accept loop asks here whether a new one fits.
//!
//! Decisions:
//! - **Our own header and idle timers, not hyper's `header_read_timeout`.**
//!   hyper's timer starts whenever the connection waits for a request head,
//!   so an idle keep-alive connection would be cut after the header timeout
//!   too, and the idle timeout could never be longer. nginx keeps upstream
//!   connections idle for up to a minute and reuses them; cutting them
//!   sooner races its next request. So, as nginx itself does for its
//!   clients: a new connection has `HTTP_HEADER_TIMEOUT_SECS` to deliver
//!   its first request's headers; once a request is answered, the
//!   connection may wait `HTTP_IDLE_TIMEOUT_SECS` for the next, whose
//!   headers again have the header timeout from their first byte. A client
//!   trickling one header line every few seconds is cut at the header
//!   timeout, however long it keeps trickling.
//! - **At the cap, the longest-idle connection makes room.** An idle
//!   connection costs its client nothing to hold, so a flood of them must
//!   not lock out a health probe or an operator. When `HTTP_MAX_CONNECTIONS`
//!   are open, a new connection closes the one idle (no request being
//!   answered) for longest; connections answering a request are never cut.
//!   Only when every open connection is answering a request is the new one
//!   refused, with a 503 envelope. The same eviction runs when accepting
//!   fails for want of file descriptors, so a low `ulimit -n` degrades the
//!   same way instead of stalling the accept loop.
//! - **Busy means "a request is being answered"**, from its complete head
//!   until its answer is handed to hyper. Writing the body afterwards
//!   counts as idle: the answers here are small (the largest export is tens
//!   of kilobytes) and go to the socket buffer at once, and tracking the
//!   body too would cost an allocation per request on the hot route.
//! - **Bookkeeping on the hot path is a few relaxed atomics** on the
//!   connection's own state (requests in progress, when it last went idle,
//!   when a head started), touched by its own worker thread; the registry's
//!   lock is taken only when a connection opens, closes or must make room.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use crate::config::ConnectionLimits;

/// Refusal answers being written at once, at most; past it a refused
/// connection is just closed (each one holds a descriptor while it writes).
const MAX_REFUSALS_IN_FLIGHT: usize = 64;

/// Connections closed at once when accepting fails for want of descriptors.
const EVICT_ON_EXHAUSTION: usize = 4;

/// The shortest time between two warnings about refused connections or
/// exhausted descriptors.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Every open connection of the process, shared by the accept loop and the
/// workers.
pub struct Connections {
    limits: ConnectionLimits,
    /// Open connections by id. Touched when one opens, closes or is asked
    /// to make room, never per request.
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    /// Connections asked to close that have not closed yet: not counted
    /// against the cap, so one newcomer never closes two.
    evicting: AtomicUsize,
    next_id: AtomicU64,
    /// Refusals being written now.
    refusing: AtomicUsize,
    /// When a warning about refusals or exhaustion was last logged (ms
    /// since the epoch, plus one; 0 = never): a flood logs one line every
    /// [`WARN_EVERY`], not one per connection.
    warned_at: AtomicU64,
    /// Connections refused or made room for since that warning.
    unreported: AtomicU64,
    /// Time zero of the millisecond stamps in [`Conn`].
    epoch: Instant,
}

/// What a connection's watchdog decides.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to do before this instant.
    CheckAt(Instant),
    /// The client took longer than the header timeout to send its headers.
    HeadersTooSlow,
    /// Idle past its timeout.
    Idle,
}

/// One connection's state.
pub struct Conn {
    id: u64,
    /// Requests being answered on it now.
    busy: AtomicU32,
    /// Milliseconds since the epoch at which it last went idle (opened, or
    /// answered a request).
    idle_since: AtomicU64,
    /// Milliseconds since the epoch of the first byte of a request head not
    /// yet complete, plus one (0 = none).
    head_since: AtomicU64,
    /// Whether a request was answered on it (then the idle timeout
    /// applies between requests, else the header timeout from opening).
    answered: AtomicBool,
    /// Asked to close to make room.
    evicted: AtomicBool,
    wake: Notify,
    epoch: Instant,
}

impl Connections {
    pub fn new(limits: ConnectionLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            open: Mutex::new(HashMap::new()),
            evicting: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            refusing: AtomicUsize::new(0),
            warned_at: AtomicU64::new(0),
            unreported: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    pub fn limits(&self) -> ConnectionLimits {
        self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        // A panic while holding it leaves the map intact (inserts and
        // removes only), so a poisoned lock is still usable.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open connections not yet asked to close.
    pub fn open_count(&self) -> usize {
        self.lock()
            .len()
            .saturating_sub(self.evicting.load(Ordering::Relaxed))
    }

    /// Registers a new connection, making room first when the cap is
    /// reached; `None` when every open connection is answering a request.
    pub fn admit(self: &Arc<Self>) -> Option<Registered> {
        let mut open = self.lock();
        let live = open
            .len()
            .saturating_sub(self.evicting.load(Ordering::Relaxed));
        if live >= self.limits.max_connections && self.evict_idle(&open, 1) == 0 {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            id,
            busy: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            answered: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            wake: Notify::new(),
            epoch: self.epoch,
        });
        conn.idle_since.store(conn.now_ms(), Ordering::Relaxed);
        open.insert(id, conn.clone());
        Some(Registered {
            connections: self.clone(),
            conn,
        })
    }

    /// Accepting failed for want of file descriptors: closes a few idle
    /// connections; how many were asked to.
    pub fn make_room(&self) -> usize {
        let open = self.lock();
        self.evict_idle(&open, EVICT_ON_EXHAUSTION)
    }

    /// Asks the `n` connections idle longest to close.
    fn evict_idle(&self, open: &HashMap<u64, Arc<Conn>>, n: usize) -> usize {
        let mut idle: Vec<(u64, &Arc<Conn>)> = open
            .values()
            .filter(|c| !c.evicted.load(Ordering::Relaxed) && c.busy.load(Ordering::Relaxed) == 0)
            .map(|c| (c.last_active(), c))
            .collect();
        let n = n.min(idle.len());
        if n == 0 {
            return 0;
        }
        idle.select_nth_unstable_by_key(n - 1, |(at, _)| *at);
        for (_, conn) in &idle[..n] {
            conn.evicted.store(true, Ordering::Relaxed);
            self.evicting.fetch_add(1, Ordering::Relaxed);
            conn.wake.notify_one();
        }
        n
    }

    /// Counts one event worth a warning (a refusal, an exhausted accept);
    /// `Some(events since the last warning)` when a warning is due.
    pub fn warning_due(&self) -> Option<u64> {
        self.warning_due_at(self.epoch.elapsed())
    }

    /// [`Connections::warning_due`] at `now` since the epoch.
    fn warning_due_at(&self, now: Duration) -> Option<u64> {
        let events = self.unreported.fetch_add(1, Ordering::Relaxed) + 1;
        let now = now.as_millis() as u64 + 1;
        let last = self.warned_at.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= WARN_EVERY.as_millis() as u64;
        if due
            && self
                .warned_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.unreported.fetch_sub(events, Ordering::Relaxed);
            return Some(events);
        }
        None
    }

    /// A permit to write a refusal, unless too many are being written.
    pub fn refusal_permit(self: &Arc<Self>) -> Option<RefusalPermit> {
        let before = self.refusing.fetch_add(1, Ordering::Relaxed);
        let permit = RefusalPermit(self.clone());
        (before < MAX_REFUSALS_IN_FLIGHT).then_some(permit)
    }
}

/// Held while a refusal is written.
pub struct RefusalPermit(Arc<Connections>);

impl Drop for RefusalPermit {
    fn drop(&mut self) {
        self.0.refusing.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's place in the registry; dropping it (when the connection
/// ends, however it ends) removes it.
pub struct Registered {
    connections: Arc<Connections>,
    conn: Arc<Conn>,
}

impl Registered {
    pub fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    /// What the watchdog should do now.
    pub fn verdict(&self) -> Verdict {
        self.conn.verdict(self.connections.limits, Instant::now())
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let removed = self.connections.lock().remove(&self.conn.id);
        if removed.is_some() && self.conn.evicted.load(Ordering::Relaxed) {
            self.connections.evicting.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Conn {
    fn now_ms(&self) -> u64 {
        self.ms_at(Instant::now())
    }

    fn ms_at(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }

    fn at_ms(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    /// When it last did something: went idle, or started a head.
    fn last_active(&self) -> u64 {
        let head = self.head_since.load(Ordering::Relaxed);
        self.idle_since
            .load(Ordering::Relaxed)
            .max(head.saturating_sub(1))
    }

    /// Whether it was asked to close to make room.
    pub fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Whether a request is being answered on it.
    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed) > 0
    }

    /// Resolves when it is asked to close (or was before).
    pub async fn evicted(&self) {
        if !self.is_evicted() {
            self.wake.notified().await;
        }
    }

    /// A request's head is complete and is being answered.
    pub fn request_started(&self) {
        self.busy.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(0, Ordering::Relaxed);
    }

    /// The request's answer is ready (or its future was dropped).
    pub fn request_ended(&self) {
        self.idle_since.store(self.now_ms(), Ordering::Relaxed);
        self.answered.store(true, Ordering::Relaxed);
        self.busy.fetch_sub(1, Ordering::Relaxed);
    }

    /// Bytes arrived: the first of a head, when nothing is being answered.
    fn bytes_read(&self) {
        if self.head_since.load(Ordering::Relaxed) == 0 && !self.is_busy() {
            self.head_since.store(self.now_ms() + 1, Ordering::Relaxed);
        }
    }

    fn verdict(&self, limits: ConnectionLimits, now: Instant) -> Verdict {
        if self.is_busy() {
            // Answering: no timeout of ours applies; look again later.
            return Verdict::CheckAt(now + limits.idle_timeout);
        }
        let head = self.head_since.load(Ordering::Relaxed);
        let (from, timeout, expired) = if head != 0 {
            (head - 1, limits.header_timeout, Verdict::HeadersTooSlow)
        } else if self.answered.load(Ordering::Relaxed) {
            let since = self.idle_since.load(Ordering::Relaxed);
            (since, limits.idle_timeout, Verdict::Idle)
        } else {
            // A new connection has the header timeout for its first request.
            let since = self.idle_since.load(Ordering::Relaxed);
            (since, limits.header_timeout, Verdict::HeadersTooSlow)
        };
        let deadline = self.at_ms(from) + timeout;
        if deadline <= now {
            expired
        } else {
            Verdict::CheckAt(deadline)
        }
    }
}

/// A connection's socket, telling its [`Conn`] when bytes arrive.
pub struct Watched<S> {
    inner: S,
    conn: Arc<Conn>,
}

impl<S> Watched<S> {
    pub fn new(inner: S, conn: Arc<Conn>) -> Self {
        Self { inner, conn }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.conn.bytes_read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Descriptors the process needs besides its clients' connections (the
/// store, the upstream's pool, the runtime, logs), roughly.
const DESCRIPTOR_RESERVE: u64 = 64;

/// Warns at start when `HTTP_MAX_CONNECTIONS` cannot be reached within the
/// open-file limit (Linux: `/proc/self/limits`; elsewhere nothing is said).
/// Not fatal: idle connections make room when descriptors run out, but
/// the cap the operator set is then not the one that holds.
pub fn warn_if_above_descriptor_limit(limits: ConnectionLimits) {
    let Some(soft) = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .as_deref()
        .and_then(open_files_soft_limit)
    else {
        return;
    };
    let wanted = limits.max_connections as u64 + DESCRIPTOR_RESERVE;
    if wanted > soft {
        tracing::warn!(
            max_connections = limits.max_connections,
            open_file_limit = soft,
            "HTTP_MAX_CONNECTIONS is above what the open-file limit allows (ulimit -n, LimitNOFILE): when descriptors run out, idle connections are closed to make room"
        );
    }
}

/// The soft "Max open files" of a `/proc/<pid>/limits` text.
fn open_files_soft_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Whether accepting failed because the process or the system is out of
/// file descriptors (EMFILE, ENFILE: 24 and 23 on Linux and macOS).
pub fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// The 503 envelope written raw to a connection refused at the cap.
pub fn refusal_bytes() -> Vec<u8> {
    let body = serde_json::json!({
        "code": 503,
        "message": "连接数已满，请稍后重试 (every connection is busy answering requests; retry in a moment)",
        "data": null,
        "timestamp": chrono::Utc::now().timestamp_millis(),
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize) -> ConnectionLimits {
        ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            max_connections: max,
        }
    }

    #[test]
    fn a_new_connection_has_the_header_timeout_then_the_idle_timeout_between_requests() {
        let all = Connections::new(limits(8));
        let reg = all.admit().unwrap();
        let conn = reg.conn().clone();
        let l = all.limits();
        let opened = conn.at_ms(conn.idle_since.load(Ordering::Relaxed));
        assert_eq!(
            conn.verdict(l, opened),
            Verdict::CheckAt(opened + l.header_timeout)
        );
        assert_eq!(
            conn.verdict(l, opened + l.header_timeout),
            Verdict::HeadersTooSlow
        );
        conn.bytes_read();
        conn.request_started();
        assert!(
            matches!(
                conn.verdict(l, opened + Duration::from_secs(3600)),
                Verdict::CheckAt(_)
            ),
            "a request being answered is never cut"
        );
        conn.request_ended();
        let idle = conn.at_ms(conn.idle_since.load(Ordering::Relaxed));
        assert_eq!(
            conn.verdict(l, idle + Duration::from_secs(30)),
            Verdict::CheckAt(idle + l.idle_timeout)
        );
        assert_eq!(conn.verdict(l, idle + l.idle_timeout), Verdict::Idle);
        // The next head's first byte starts the header timeout again.
        conn.bytes_read();
        let head = conn.at_ms(conn.head_since.load(Ordering::Relaxed) - 1);
        assert_eq!(
            conn.verdict(l, head + l.header_timeout),
            Verdict::HeadersTooSlow
        );
    }

    #[test]
    fn at_the_cap_the_longest_idle_connection_makes_room_and_busy_ones_are_kept() {
        let all = Connections::new(limits(8));
        let regs: Vec<Registered> = (0..8).map(|_| all.admit().unwrap()).collect();
        for (i, reg) in regs.iter().enumerate() {
            // Connection 3 went idle first; the rest later, in order.
            let at = if i == 3 { 1 } else { 100 + i as u64 };
            reg.conn().idle_since.store(at, Ordering::Relaxed);
        }
        regs[0].conn().request_started();
        regs[0].conn().idle_since.store(0, Ordering::Relaxed);
        assert_eq!(all.open_count(), 8);
        let ninth = all.admit().expect("room is made");
        assert!(regs[3].conn().is_evicted(), "the longest idle goes");
        assert!(
            !regs[0].conn().is_evicted(),
            "a busy one stays, however old"
        );
        assert_eq!(all.open_count(), 8, "the evicted one no longer counts");
        drop(ninth);
        drop(regs);
        assert_eq!(all.open_count(), 0);
        assert_eq!(all.evicting.load(Ordering::Relaxed), 0);
        // All busy: a newcomer is refused.
        let busy: Vec<Registered> = (0..8).map(|_| all.admit().unwrap()).collect();
        for reg in &busy {
            reg.conn().request_started();
        }
        assert!(all.admit().is_none());
        assert_eq!(all.make_room(), 0);
    }

    #[test]
    fn the_open_file_limit_is_read_from_proc_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units\n\
                    Max processes             63421                63421                processes\n\
                    Max open files            200                  4096                 files\n";
        assert_eq!(open_files_soft_limit(text), Some(200));
        assert_eq!(
            open_files_soft_limit("Max open files unlimited unlimited files"),
            None
        );
        assert_eq!(open_files_soft_limit(""), None);
    }

    #[test]
    fn a_flood_warns_once_per_period_with_the_count() {
        let all = Connections::new(limits(8));
        let at = |secs: u64| all.warning_due_at(Duration::from_secs(secs));
        assert_eq!(at(0), Some(1), "the first one is said at once");
        for _ in 0..999 {
            assert_eq!(at(5), None);
        }
        // A period later, the next one reports all it held back.
        assert_eq!(at(10), Some(1000));
        assert_eq!(at(11), None);
        assert_eq!(at(20), Some(2));
    }
}
