//! Serving connections under the operator's limits: a cap on connections,
//! a deadline for request headers, an idle timeout, a cap on HTTP/2
//! streams per connection and a deadline for writes to a client.
//!
//! axum's own `serve` sets none of these (its HTTP server runs without a
//! timer, so not even the header deadline applies), hence this loop over
//! hyper's connection builder.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_io_timeout::TimeoutStream;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, info, warn};

use crate::tls::TlsPeer;

/// What the operator allows one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once; beyond it the listener stops accepting.
    pub max_connections: usize,
    /// How long an HTTP/1.1 client gets to send a request's headers,
    /// counted from when its connection opened or went idle.
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
    /// Requests in flight at once on one HTTP/2 connection.
    pub http2_max_streams: u32,
    /// How long a write to a client may wait before its connection closes.
    pub write_timeout: Duration,
}

/// An accepted connection holding one of the listener's slots.
pub(crate) struct Connection<Io> {
    pub(crate) io: Io,
    pub(crate) remote: SocketAddr,
    pub(crate) slot: Slot,
    /// Set on TLS connections: what their handshake verified.
    pub(crate) peer: Option<TlsPeer>,
}

/// Where finished connections come from: a TCP socket, or TLS handshakes.
pub(crate) trait Accept: Send {
    type Io: AsyncRead + AsyncWrite + Send + Unpin + 'static;
    /// The next connection; `None` once the source has failed for good.
    fn accept(&mut self) -> impl Future<Output = Option<Connection<Self::Io>>> + Send;
}

/// The listener's connection slots, and the signal that asks idle
/// connections to make room when they are all taken.
pub(crate) struct Slots {
    free: Arc<Semaphore>,
    pressure: watch::Sender<u64>,
}

impl Slots {
    pub(crate) fn new(max_connections: usize) -> Arc<Self> {
        Arc::new(Self {
            free: Arc::new(Semaphore::new(max_connections)),
            pressure: watch::Sender::new(0),
        })
    }

    /// A free slot. While there is none, idle connections are asked every
    /// quarter second to close (as nginx reuses idle keep-alive
    /// connections when it runs out): a flood of connections that send
    /// nothing cannot keep real clients out for longer than that.
    async fn take(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(slot) = self.free.clone().try_acquire_owned() {
            return Some(slot);
        }
        loop {
            self.pressure.send_modify(|asked| *asked += 1);
            let wait = self.free.clone().acquire_owned();
            match tokio::time::timeout(Duration::from_millis(250), wait).await {
                Ok(slot) => return slot.ok(),
                Err(_) => continue,
            }
        }
    }
}

/// Waits for a free slot, then accepts one TCP connection. Accepting
/// errors (out of descriptors and the like) pause the loop briefly: open
/// connections finishing free some.
pub(crate) async fn accept_tcp(
    tcp: &TcpListener,
    slots: &Slots,
) -> Option<(TcpStream, SocketAddr, Slot)> {
    let permit = slots.take().await?;
    loop {
        match tcp.accept().await {
            Ok((stream, remote)) => {
                // Streams are many small writes: without TCP_NODELAY,
                // Nagle's algorithm holds each back until the last is acked.
                if let Err(error) = stream.set_nodelay(true) {
                    debug!(%error, "cannot set TCP_NODELAY");
                }
                let slot = Slot {
                    _permit: permit,
                    pressure: slots.pressure.subscribe(),
                };
                return Some((stream, remote, slot));
            }
            Err(error) => {
                warn!(%error, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A connection's place in the listener: freed when the connection
/// closes.
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    pressure: watch::Receiver<u64>,
}

/// Plain TCP connections.
pub(crate) struct PlainListener {
    pub(crate) tcp: TcpListener,
    pub(crate) slots: Arc<Slots>,
}

impl Accept for PlainListener {
    type Io = TcpStream;

    async fn accept(&mut self) -> Option<Connection<TcpStream>> {
        let (io, remote, slot) = accept_tcp(&self.tcp, &self.slots).await?;
        Some(Connection {
            io,
            remote,
            slot,
            peer: None,
        })
    }
}

fn http_server(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_streams);
    builder
}

/// Serves connections from `listener` until `shutdown` resolves, then
/// stops accepting, asks open connections to close once their requests
/// are done, and gives them up to `grace`.
pub(crate) async fn serve_connections<A: Accept>(
    mut listener: A,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    limits: Limits,
) {
    let server = Arc::new(http_server(&limits));
    let (stopping_tx, stopping) = watch::channel(false);
    let connections = TaskTracker::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut accepting = true;
    loop {
        tokio::select! {
            accepted = listener.accept(), if accepting => match accepted {
                Some(connection) => {
                    connections.spawn(serve_connection(
                        connection,
                        app.clone(),
                        server.clone(),
                        limits,
                        stopping.clone(),
                    ));
                }
                // The socket failed for good: wait for the signal.
                None => accepting = false,
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    info!(
        grace_secs = grace.as_secs(),
        open = connections.len(),
        "shutting down: no new connections; finishing in-flight requests"
    );
    let _ = stopping_tx.send(true);
    connections.close();
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        warn!("grace period over; closing the remaining connections");
    }
}

async fn serve_connection<Io>(
    connection: Connection<Io>,
    app: Router,
    server: Arc<auto::Builder<TokioExecutor>>,
    limits: Limits,
    mut stopping: watch::Receiver<bool>,
) where
    Io: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let Connection {
        io,
        remote,
        slot,
        peer,
    } = connection;
    let Slot {
        _permit,
        mut pressure,
    } = slot;
    let mut io = TimeoutStream::new(io);
    io.set_write_timeout(Some(limits.write_timeout));
    let (activity_tx, mut activity) = watch::channel(Activity {
        requests: 0,
        idle_since: Instant::now(),
    });
    let activity_tx = Arc::new(activity_tx);
    let peer = peer.map(ConnectInfo);
    let service = tower::service_fn(move |mut request: Request<hyper::body::Incoming>| {
        if let Some(peer) = &peer {
            request.extensions_mut().insert(peer.clone());
        }
        let in_flight = InFlight::begin(activity_tx.clone());
        let response = app.clone().oneshot(request.map(Body::new));
        async move {
            let response = response.await?;
            Ok::<_, Infallible>(response.map(|body| {
                Body::new(Tracked {
                    body,
                    _in_flight: in_flight,
                })
            }))
        }
    });
    let connection = server.serve_connection_with_upgrades(
        TokioIo::new(Box::pin(io)),
        TowerToHyperService::new(service),
    );
    let mut connection = std::pin::pin!(connection);
    let mut closing = false;
    // An idle connection asked to close goes at once; one in the middle of
    // a request's headers finishes reading them first, so it is given a
    // moment and then dropped (it has nothing in flight to lose).
    let mut drop_at = None;
    let mut listening = true;
    loop {
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(error) = served {
                    debug!(%remote, %error, "connection ended with an error");
                }
                return;
            }
            () = idle(&mut activity, limits.idle_timeout), if !closing => {
                debug!(%remote, "idle connection closed");
                connection.as_mut().graceful_shutdown();
                closing = true;
                drop_at = Some(tokio::time::Instant::now() + DROP_IDLE_AFTER);
            }
            asked = pressure.changed(), if !closing && listening => {
                // The listener is gone (shutting down): nobody will ask.
                if asked.is_err() {
                    listening = false;
                } else if activity.borrow().idle_for(RECLAIMABLE_AFTER) {
                    debug!(%remote, "idle connection closed to make room");
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                    drop_at = Some(tokio::time::Instant::now() + DROP_IDLE_AFTER);
                }
            }
            () = sleep_until(drop_at), if drop_at.is_some() => {
                if activity.borrow().requests == 0 {
                    debug!(%remote, "connection dropped with an unfinished request head");
                    return;
                }
                drop_at = None;
            }
            _ = stopping.wait_for(|stopping| *stopping), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
                drop_at = Some(tokio::time::Instant::now() + DROP_IDLE_AFTER);
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// How long an idle connection asked to close may take before it is
/// dropped.
const DROP_IDLE_AFTER: Duration = Duration::from_millis(500);

/// How long a connection must have been idle before the listener, out of
/// slots, may close it: long enough that a client which has just connected
/// gets to send its request.
const RECLAIMABLE_AFTER: Duration = Duration::from_secs(1);

/// What a connection is doing.
struct Activity {
    /// Requests in flight (until their response bodies are sent).
    requests: usize,
    /// When the last request finished, or the connection opened.
    idle_since: Instant,
}

impl Activity {
    fn idle_for(&self, at_least: Duration) -> bool {
        self.requests == 0 && self.idle_since.elapsed() >= at_least
    }
}

/// Resolves once no request has been in flight on the connection for
/// `after`.
async fn idle(activity: &mut watch::Receiver<Activity>, after: Duration) {
    loop {
        if activity.wait_for(|now| now.requests == 0).await.is_err() {
            return std::future::pending().await;
        }
        let woken = tokio::time::timeout(after, activity.wait_for(|now| now.requests > 0)).await;
        if woken.is_err() {
            return;
        }
    }
}

/// One request in flight on its connection, until its response body has
/// been sent (or dropped).
struct InFlight(Arc<watch::Sender<Activity>>);

impl InFlight {
    fn begin(activity: Arc<watch::Sender<Activity>>) -> Self {
        activity.send_modify(|now| now.requests += 1);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|now| {
            now.requests -= 1;
            if now.requests == 0 {
                now.idle_since = Instant::now();
            }
        });
    }
}

/// A response body that keeps its request counted as in flight.
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
