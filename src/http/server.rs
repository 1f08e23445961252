//! Serving connections: one single-threaded Tokio runtime per core, each
//! serving the connections handed to it — nginx's one worker per core, in
//! one process.
//!
//! Decisions:
//! - **Per-core runtimes rather than the work-stealing runtime.** A hot
//!   lookup is answered in a few microseconds of our code and a few more of
//!   kernel TCP; at that size the multi-threaded scheduler's bookkeeping
//!   (a connection's task moving between cores, cross-thread wake-ups,
//!   shared run queues) shows. Here a connection lives on one thread for
//!   its whole life. Measured on a 2-core machine: `docs/BENCHMARKS.md` has
//!   the figures and the command.
//! - **One accept loop, round robin.** The caller's listener is used as it
//!   is (tests bind port 0); the loop runs on the caller's runtime and hands
//!   each accepted socket to the next worker. Accepting is rare (clients
//!   keep connections alive), so the hand-off costs nothing per request, and
//!   the spread is even where `SO_REUSEPORT`'s hash would split 50
//!   connections unevenly between two threads.
//! - **Tasks a handler spawns** (a background refresh, a shared fetch, a
//!   sync job) run on that worker's runtime, so workers keep running after
//!   their connections are closed, until [`Workers::stop`]: a sync still
//!   finishes within the shutdown grace.
//! - **Graceful shutdown** as `axum::serve` does it: stop accepting, ask
//!   every connection to finish its request and close (hyper's
//!   `graceful_shutdown`), resolve once all are closed.
//! - **HTTP/1.1 only**, with hyper's defaults (keep-alive, vectored
//!   writes); no upgrades (nothing here uses them).
//! - **Bounded connections** (`connections.rs`): every accepted connection
//!   is registered before it is handed on, so the cap is counted in one
//!   place, and each connection runs a watchdog beside hyper for the
//!   header and idle timeouts and for being asked to make room.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tower::util::Either;

use super::App;
use super::connections::{Conn, Connections, Registered, Verdict, Watched, is_out_of_descriptors};
use crate::config::ConnectionLimits;

/// A connection accepted by the loop, on its way to a worker.
type Accepted = (std::net::TcpStream, SocketAddr, Registered);

/// The worker threads and how to reach them.
pub struct Workers {
    workers: Vec<Worker>,
    /// Set to `true` to ask every connection to close after its request.
    closing: watch::Sender<bool>,
    /// Every open connection, for the cap.
    connections: Arc<Connections>,
}

struct Worker {
    /// Accepted connections; dropped to tell the worker no more will come.
    connections: Option<mpsc::UnboundedSender<Accepted>>,
    /// Resolves when the worker's connections are all closed.
    drained: Option<oneshot::Receiver<()>>,
    /// Dropped (or sent) to end the worker's runtime.
    stop: Option<oneshot::Sender<()>>,
    /// Resolves when the worker's runtime is gone (its tasks dropped).
    exited: Option<oneshot::Receiver<()>>,
}

impl Workers {
    /// Starts one worker per core, each serving `app`, within `limits`.
    pub fn start(app: App, limits: ConnectionLimits) -> io::Result<Self> {
        super::connections::warn_if_above_descriptor_limit(limits);
        let count = std::thread::available_parallelism().map_or(1, usize::from);
        let (closing, closing_rx) = watch::channel(false);
        let workers = (0..count)
            .map(|i| Worker::start(i, app.clone(), closing_rx.clone()))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self {
            workers,
            closing,
            connections: Connections::new(limits),
        })
    }

    /// Accepts connections on `listener` and hands them to the workers until
    /// `shutdown` resolves; then stops accepting, asks every connection to
    /// close after its request and resolves once all have.
    pub async fn serve(
        &mut self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let mut shutdown = pin!(shutdown);
        let mut next = 0usize;
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = &mut shutdown => break,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) if is_out_of_descriptors(&e) && self.connections.make_room() > 0 => {
                    // Idle connections were asked to close; their
                    // descriptors are free in a moment.
                    if let Some(times) = self.connections.warning_due() {
                        tracing::warn!(error = %e, times, "out of file descriptors: closing idle connections to accept new ones");
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than
                    // spin (what axum::serve does).
                    tracing::error!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let Some(registered) = self.connections.admit() else {
                refuse(stream, &self.connections);
                continue;
            };
            // A socket in non-blocking mode, ready to join another runtime.
            let stream = match stream.into_std() {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "could not hand a connection to a worker");
                    continue;
                }
            };
            let worker = &self.workers[next % self.workers.len()];
            next = next.wrapping_add(1);
            if let Some(connections) = &worker.connections {
                let _ = connections.send((stream, peer, registered));
            }
        }
        drop(listener);
        let _ = self.closing.send(true);
        for worker in &mut self.workers {
            worker.connections = None;
        }
        for worker in &mut self.workers {
            if let Some(drained) = worker.drained.take() {
                let _ = drained.await;
            }
        }
        Ok(())
    }

    /// Ends the workers' runtimes (dropping what handlers left running) and
    /// waits for them to be gone, so the state they hold (the store) is
    /// released when this returns.
    pub async fn stop(mut self) {
        for worker in &mut self.workers {
            if let Some(stop) = worker.stop.take() {
                let _ = stop.send(());
            }
        }
        for worker in &mut self.workers {
            if let Some(exited) = worker.exited.take() {
                let _ = exited.await;
            }
        }
    }
}

impl Worker {
    fn start(i: usize, app: App, mut shared: watch::Receiver<bool>) -> io::Result<Self> {
        let (connections, mut incoming) = mpsc::unbounded_channel::<Accepted>();
        let (drained_tx, drained) = oneshot::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let (exited_tx, exited) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name(format!("http-worker-{i}"))
            .spawn(move || {
                runtime.block_on(async move {
                    // Connections watch a channel of their worker's own,
                    // relayed from the shared one: a connection checks it
                    // on every poll, and a lock only this thread takes is
                    // cheaper than one both cores bounce between them.
                    let (closing_tx, closing) = watch::channel(false);
                    tokio::spawn(async move {
                        requested(&mut shared).await;
                        let _ = closing_tx.send(true);
                    });
                    let serving = async {
                        // Each connection holds a receiver; `closed`
                        // resolves when the last one is dropped.
                        let (open_tx, open_rx) = watch::channel(());
                        while let Some((stream, peer, registered)) = incoming.recv().await {
                            match TcpStream::from_std(stream) {
                                Ok(stream) => {
                                    tokio::spawn(serve_connection(
                                        stream,
                                        peer,
                                        registered,
                                        app.clone(),
                                        closing.clone(),
                                        open_rx.clone(),
                                    ));
                                }
                                Err(e) => tracing::warn!(error = %e, "a worker could not take a connection"),
                            }
                        }
                        drop(open_rx);
                        open_tx.closed().await;
                        let _ = drained_tx.send(());
                        // Handlers' tasks keep running until told to stop.
                        std::future::pending::<()>().await;
                    };
                    // Stopping wins over connections still open: past the
                    // shutdown grace they are cut (the runtime's drop
                    // closes them).
                    tokio::select! {
                        () = serving => {}
                        _ = stopped => {}
                    }
                });
                drop(runtime);
                let _ = exited_tx.send(());
            })?;
        Ok(Self {
            connections: Some(connections),
            drained: Some(drained),
            stop: Some(stop),
            exited: Some(exited),
        })
    }
}

/// Serves one connection until the client closes it, until `closing`
/// turns true and the request in progress (if any) is answered, or until
/// its watchdog cuts it: headers too slow, idle too long, or asked to make
/// room while idle.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    registered: Registered,
    app: App,
    mut closing: watch::Receiver<bool>,
    _open: watch::Receiver<()>,
) {
    // No Nagle delay on answers: an answer is one write, sent at once.
    let _ = stream.set_nodelay(true);
    let conn = registered.conn().clone();
    let service = TowerToHyperService::new(ForConnection::new(app, peer, conn.clone()));
    let io = TokioIo::new(Watched::new(stream, conn.clone()));
    let connection = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    let mut connection = pin!(connection);
    let watchdog = tokio::time::sleep(Duration::ZERO);
    let mut watchdog = pin!(watchdog);
    // Asked to finish (shutdown, idle, room) and close: the watchdog keeps
    // running meanwhile, so a client trickling its headers cannot hold a
    // shutdown past the header timeout.
    let mut finishing = false;
    let result = loop {
        tokio::select! {
            // The connection first: it is what is ready nearly every time.
            biased;
            result = connection.as_mut() => break result,
            () = requested(&mut closing), if !finishing => {
                finishing = true;
                connection.as_mut().graceful_shutdown();
            }
            () = conn.evicted(), if !finishing => {
                if !conn.is_busy() {
                    tracing::debug!(%peer, "closing an idle connection to make room");
                    return;
                }
                // It took a request since it was picked: finish that.
                finishing = true;
                connection.as_mut().graceful_shutdown();
            }
            () = watchdog.as_mut() => match registered.verdict() {
                Verdict::CheckAt(at) => watchdog.as_mut().reset(at.into()),
                Verdict::HeadersTooSlow => {
                    tracing::debug!(%peer, "closing a connection: its request headers took longer than HTTP_HEADER_TIMEOUT_SECS");
                    return;
                }
                // Nothing in progress: closing is all there is to do.
                Verdict::Idle => return,
            },
        }
    };
    if let Err(e) = result {
        tracing::trace!(error = %e, "connection ended with an error");
    }
}

/// Answers a connection refused at the cap with a 503 envelope and closes
/// it, on a task of its own so the accept loop never waits on a client.
fn refuse(stream: TcpStream, connections: &Arc<Connections>) {
    if let Some(times) = connections.warning_due() {
        tracing::warn!(
            max = connections.limits().max_connections,
            times,
            "connections refused: HTTP_MAX_CONNECTIONS are open and all are answering requests"
        );
    }
    let Some(permit) = connections.refusal_permit() else {
        return;
    };
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt as _;
        let mut stream = stream;
        let bytes = super::connections::refusal_bytes();
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            stream.write_all(&bytes).await?;
            stream.shutdown().await
        })
        .await;
        drop(permit);
    });
}

/// Resolves once closing is asked for (or can no longer be).
async fn requested(closing: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, not held across the
    // connection's awaits (it is not `Send`).
    let _ = closing.wait_for(|closing| *closing).await;
}

/// `app` for one connection: told its client's address (for the rate
/// limit), taking hyper's request body as axum's, and telling the
/// connection's [`Conn`] while a request is being answered.
#[derive(Clone)]
struct ForConnection {
    app: App,
    conn: Arc<Conn>,
}

impl ForConnection {
    fn new(app: App, peer: SocketAddr, conn: Arc<Conn>) -> Self {
        let mut app = app;
        match &mut app {
            Either::Left(cors) => cors.get_mut().set_peer(peer),
            Either::Right(pipeline) => pipeline.set_peer(peer),
        }
        Self { app, conn }
    }
}

type AppFuture = <App as tower::Service<axum::extract::Request>>::Future;

impl tower::Service<hyper::Request<Incoming>> for ForConnection {
    type Response = Response;
    type Error = Infallible;
    type Future = Answering<AppFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::<axum::extract::Request>::poll_ready(&mut self.app, cx)
    }

    fn call(&mut self, request: hyper::Request<Incoming>) -> Self::Future {
        self.conn.request_started();
        Answering {
            inner: self.app.call(request.map(Body::new)),
            conn: self.conn.clone(),
        }
    }
}

/// A request's answer on its way; the connection counts as busy until it
/// is dropped (hyper drops it once the answer is ready, or when the
/// connection goes).
struct Answering<F> {
    inner: F,
    conn: Arc<Conn>,
}

impl<F: Future + Unpin> Future for Answering<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        Pin::new(&mut self.inner).poll(cx)
    }
}

impl<F> Drop for Answering<F> {
    fn drop(&mut self) {
        self.conn.request_ended();
    }
}

/// Errors that concern one connection only; the loop goes on at once.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
