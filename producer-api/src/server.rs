//! The two ways to run the router: as a Lambda function, or as a long-running local server.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::serve::{Listener, ListenerExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tower_http::timeout::TimeoutLayer;

use crate::config::Config;
use crate::http::{AppState, Publisher, router};
use crate::publish::{Coalescer, RecordSink};

/// The router for Lambda: one request per invocation, so records are published directly.
pub fn lambda_app<S: RecordSink>(config: &Config, sink: S) -> Router {
    let state = AppState {
        publisher: Publisher::Direct { sink: Arc::new(sink), budget: config.publish_budget },
        trusted_proxy_hops: 0,
        sites: config.sites.clone(),
        intake: config.intake.clone(),
    };
    router(state)
}

/// The router for the local server or a container behind a load balancer: concurrent
/// requests are coalesced into shared `PutRecords` calls; slow clients get 408.
pub fn server_app<S: RecordSink>(config: &Config, sink: S) -> Router {
    let coalescer = Coalescer::spawn(Arc::new(sink), config.linger, config.publish_budget);
    let state = AppState {
        publisher: Publisher::<S>::Coalescing(coalescer),
        trusted_proxy_hops: config.trusted_proxy_hops,
        sites: config.sites.clone(),
        intake: config.intake.clone(),
    };
    router(state).layer(TimeoutLayer::with_status_code(http::StatusCode::REQUEST_TIMEOUT, config.request_timeout))
}

/// Serves `app` on `listener` until `shutdown` completes, then drains in-flight requests, with the
/// default [`ConnectionTimeouts`].
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with_timeouts(listener, app, ConnectionTimeouts::default(), shutdown).await
}

/// [`serve`] with explicit per-connection timeouts.
pub async fn serve_with_timeouts(
    listener: TcpListener,
    app: Router,
    timeouts: ConnectionTimeouts,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    // `tap_io` is only there for its `Connected` impl, which gives handlers the peer address
    // (`ConnectInfo<SocketAddr>`) for any listener whose address type is `SocketAddr`.
    let listener = TimedListener { inner: listener, timeouts }.tap_io(|_| {});
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}

/// What closes a connection that is not making progress. `TimeoutLayer` (408) starts only once
/// a request's head has arrived, and axum::serve gives hyper no timer, so without these a client
/// that sends a head one byte at a time, or connects and sends nothing, holds its connection
/// (a task and a file descriptor) for ever, and enough of them exhaust the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionTimeouts {
    /// From a request's first byte until the server starts writing its answer; then the
    /// connection is closed without an answer.
    pub request: Duration,
    /// A connection with no request in progress (before the first one, or between keep-alive
    /// requests) is closed after this long.
    pub idle: Duration,
}

/// Longer than the 60 s default idle timeout of AWS load balancers: the balancer, not the server,
/// should close an idle connection, or it may send a request on one we are closing (a 502).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(75);

impl ConnectionTimeouts {
    pub fn from_config(config: &Config) -> Self {
        // Twice the request timeout, so a slow body still gets the 408 of `TimeoutLayer` (which
        // starts after the head) before the connection is cut.
        let request = config.request_timeout.saturating_mul(2);
        ConnectionTimeouts { request, idle: IDLE_TIMEOUT.max(request) }
    }
}

impl Default for ConnectionTimeouts {
    fn default() -> Self {
        ConnectionTimeouts { request: Duration::from_secs(20), idle: IDLE_TIMEOUT }
    }
}

struct TimedListener {
    inner: TcpListener,
    timeouts: ConnectionTimeouts,
}

impl Listener for TimedListener {
    type Io = TimedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // axum's own accept loop: it logs and backs off on errors such as EMFILE.
        let (io, addr) = Listener::accept(&mut self.inner).await;
        let timer = Box::pin(tokio::time::sleep(self.timeouts.idle));
        (TimedStream { io, timeouts: self.timeouts, timer, in_request: false }, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A TCP stream whose reads fail with `TimedOut` once its deadline passes: `idle` after the last
/// write (or the accept), `request` after the first byte of a request. Hyper then closes it.
struct TimedStream {
    io: TcpStream,
    timeouts: ConnectionTimeouts,
    timer: Pin<Box<Sleep>>,
    /// A request's first byte arrived and no answer has been written since.
    in_request: bool,
}

impl TimedStream {
    fn wrote(&mut self, n: usize) {
        if n > 0 {
            self.in_request = false;
            self.timer.as_mut().reset(Instant::now() + self.timeouts.idle);
        }
    }
}

impl AsyncRead for TimedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // Polled first so the timer, not only the socket, wakes a read that is waiting.
        if this.timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "connection made no progress in time")));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before && !this.in_request {
            this.in_request = true;
            this.timer.as_mut().reset(Instant::now() + this.timeouts.request);
        }
        result
    }
}

impl AsyncWrite for TimedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            self.wrote(n);
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = result {
            self.wrote(n);
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
