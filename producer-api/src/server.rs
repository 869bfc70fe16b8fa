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
use crate::http::{AppState, Publisher, router, with_json_errors};
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
    with_json_errors(
        router(state).layer(TimeoutLayer::with_status_code(http::StatusCode::REQUEST_TIMEOUT, config.request_timeout)),
    )
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
        (TimedStream { io, timeouts: self.timeouts, timer, in_request: false, replacing: None }, addr)
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
    /// hyper's own error answer being written in the API's error shape instead (see
    /// [`own_error_answer`]).
    replacing: Option<Replacement>,
}

/// An answer written in place of one of hyper's: `text`, of which `written` bytes are out, in
/// place of the `stands_for` bytes hyper handed over.
struct Replacement {
    text: Vec<u8>,
    written: usize,
    stands_for: usize,
}

/// When `head` is a whole answer hyper wrote by itself, the same answer in the API's error shape.
///
/// hyper answers a request head it cannot parse (400), one too large or with too many fields
/// (431) and a URI too long (414) by itself, before any service sees the request, with an empty
/// body; hyper offers no hook to change that answer. So it is changed here, on its way out: an
/// error status with `content-length: 0` can only be hyper's own, since every error the API and
/// its layers answer carries a JSON body (`http::with_json_errors`). The connection is closed
/// after it, as hyper closes it.
fn own_error_answer(head: &[u8]) -> Option<Vec<u8>> {
    if !may_be_own_error_answer(head) {
        return None;
    }
    let text = std::str::from_utf8(head).ok()?;
    let rest = text.strip_prefix("HTTP/1.1 ").or_else(|| text.strip_prefix("HTTP/1.0 "))?;
    let status = http::StatusCode::from_bytes(rest.get(..3)?.as_bytes()).ok()?;
    let lines = text.strip_suffix("\r\n\r\n")?;
    let empty_body = lines.split("\r\n").any(|l| l.eq_ignore_ascii_case("content-length: 0"));
    let typed = lines.split("\r\n").any(|l| l.len() > 13 && l[..13].eq_ignore_ascii_case("content-type:"));
    if !(status.is_client_error() || status.is_server_error()) || !empty_body || typed {
        return None;
    }
    let body = crate::http::error_body(status);
    let mut answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    // hyper's other headers (`date`) are kept.
    for line in lines.split("\r\n").skip(1) {
        if !line.to_ascii_lowercase().starts_with("content-length:")
            && !line.to_ascii_lowercase().starts_with("connection:")
        {
            answer.push_str(line);
            answer.push_str("\r\n");
        }
    }
    answer.push_str("\r\n");
    answer.push_str(&body);
    Some(answer.into_bytes())
}

/// The cheap half of [`own_error_answer`]'s test, for the first write of every answer: an error
/// status line, and a whole head with nothing after it.
fn may_be_own_error_answer(bytes: &[u8]) -> bool {
    matches!(bytes.get(9), Some(b'4' | b'5')) && bytes.ends_with(b"\r\n\r\n")
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
        let this = &mut *self;
        // Only the first write of an answer can be hyper's own (a request was being read).
        if this.replacing.is_none()
            && this.in_request
            && let Some(text) = own_error_answer(buf)
        {
            this.replacing = Some(Replacement { text, written: 0, stands_for: buf.len() });
        }
        if let Some(r) = &mut this.replacing {
            while r.written < r.text.len() {
                match Pin::new(&mut this.io).poll_write(cx, &r.text[r.written..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => r.written += n,
                    other => return other,
                }
            }
            let stands_for = r.stands_for;
            this.replacing = None;
            this.wrote(stands_for);
            return Poll::Ready(Ok(stands_for));
        }
        let result = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            this.wrote(n);
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // An answer's head comes first; a write that may be hyper's own answer goes through
        // `poll_write`, which can replace it (writing less than all of `bufs` is allowed). Any
        // other answer keeps its single vectored write.
        let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
        if self.replacing.is_some() || (self.in_request && may_be_own_error_answer(first)) {
            return self.poll_write(cx, first);
        }
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
