//! The accept loop: the router served over hyper, with a header read
//! timeout.
//!
//! `axum::serve` does what this does (HTTP/1.1 and HTTP/2 without TLS
//! through hyper-util's auto builder, upgrades for WebSockets, graceful
//! shutdown) but sets no timer, so hyper cannot time out a client that
//! trickles its request line and headers: each such client would hold a
//! connection and a task for as long as it likes. Here hyper gets a Tokio
//! timer and `http.header_read_timeout_secs`; past it the connection is
//! closed. hyper runs the same timer between two requests of a keep-alive
//! connection, so it also closes a connection left idle that long.
//! Before hyper's timer can start, hyper-util reads the first bytes to tell
//! HTTP/1.1 from HTTP/2 with no timer at all; [`Timed`] bounds that
//! wait by the same timeout, so a client that connects and sends nothing
//! (or a few bytes) is closed too.
//! (Request bodies have their own timeout, `http.body_read_timeout_secs`,
//! in the router.)
//!
//! HTTP/2 (prior knowledge, `h2c`) has no such timer in hyper: once past
//! its preface, a connection could stay open with nothing in flight for as
//! long as its client liked, or send a request's headers as slowly. So
//! [`Timed`] keeps the same timeout on HTTP/2 connections: one with
//! no request in flight (from its start, or since its last response was
//! sent in full) for that long is closed, with a GOAWAY first (hyper's
//! graceful shutdown; should that not close it within another timeout,
//! at once). Frames that do not complete a request (pings, settings,
//! headers in dribs) do not count; a request in flight, however long it
//! takes, does not run out ([`Tracked`] counts them).
//!
//! Connections are bounded (`http.max_connections`): at the limit the loop
//! accepts no more until one closes, so new ones wait in the kernel's
//! listen backlog rather than take file descriptors the process needs
//! (at its open-file limit, `accept` fails for everyone). A connection
//! upgraded to a WebSocket leaves this count when it leaves hyper; the
//! WebSocket layer bounds those (`live.max_connections`).
//!
//! On shutdown the listener closes at once, every connection is told to
//! finish (in-flight requests complete; idle connections close), and the
//! function returns when they have. Upgraded connections (WebSockets) have
//! left hyper by then: their own shutdown is `Sockets::close_all`.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use futures_util::future::{BoxFuture, Either};
use futures_util::task::AtomicWaker;
use http_body_util::BodyExt as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::instruments::Metrics;

/// How the accept loop bounds its connections.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// `http.header_read_timeout_secs`.
    pub header_read_timeout: Duration,
    /// `http.max_connections`.
    pub max_connections: usize,
}

/// How often, at most, the loop says it is at its connection limit.
const FULL_WARNING_EVERY: Duration = Duration::from_secs(60);

/// Serves `router` on `listener` until `shutdown` resolves, then waits for
/// the requests in flight to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let header_read_timeout = limits.header_read_timeout;
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    // hyper-util's `GracefulShutdown` does this too, behind a cargo feature
    // that would rebuild the AWS SDK's HTTP stack; tokio-util is here already.
    let stopping = CancellationToken::new();
    let connections = TaskTracker::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut warned: Option<Instant> = None;
    loop {
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if warned.is_none_or(|at| at.elapsed() >= FULL_WARNING_EVERY) {
                    warned = Some(Instant::now());
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "at http.max_connections: new connections wait in the listen backlog until one closes"
                    );
                }
                tokio::select! {
                    slot = Arc::clone(&slots).acquire_owned() => match slot {
                        Ok(slot) => slot,
                        // Never closed; were it, nothing more could be served.
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let activity = Arc::new(Activity::new());
        let service = TowerToHyperService::new(Tracked {
            router: router.clone(),
            activity: Arc::clone(&activity),
        });
        let builder = builder.clone();
        let stopping = stopping.clone();
        let open = metrics.http_connection_open();
        connections.spawn(async move {
            // Both given back when the connection ends (or is upgraded).
            let _held = (slot, open);
            let idle = Arc::clone(&activity);
            let stream = Timed::new(stream, header_read_timeout, activity);
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            let ending = async {
                tokio::select! {
                    () = stopping.cancelled() => {}
                    () = idle.expired.notified() => {}
                }
            };
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = ending => {
                    // Stopping, or idle too long (HTTP/2): finish the
                    // request in flight, if any, say so (HTTP/2: GOAWAY),
                    // then close.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            // A client that hangs up, times out or speaks nonsense: its
            // problem, and common enough not to be worth more than debug.
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    // No new connections from here on.
    drop(listener);
    stopping.cancel();
    connections.close();
    connections.wait().await;
    Ok(())
}

/// After a failed `accept`. A connection reset before it was accepted
/// concerns that client only; anything else (out of file descriptors, say)
/// would fail again at once, so wait a moment, as `axum::serve` does.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// The HTTP/2 connection preface, which hyper-util reads to tell HTTP/1.1
/// from HTTP/2: past it, hyper's own timer is in charge of HTTP/1.1.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a connection has in flight, for the HTTP/2 idle timer.
struct Activity {
    /// HTTP/2 requests whose response is not sent in full yet.
    in_flight: AtomicUsize,
    /// Since when none has been (the connection's start at first).
    idle_since: Mutex<Instant>,
    /// The connection's task, woken when the last request in flight ends
    /// so that its reader sets the timer again.
    reader: AtomicWaker,
    /// Told by the reader once the connection has been idle for the
    /// timeout: the accept loop then closes it gracefully.
    expired: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            reader: AtomicWaker::new(),
            expired: Notify::new(),
        }
    }

    /// When the connection, idle now, times out; `None` while a request is
    /// in flight.
    fn deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = *self
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Some(since + timeout)
    }
}

/// One HTTP/2 request in flight, from its call until its response body is
/// dropped (sent in full, or the stream reset).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // The time first: a reader that sees none in flight reads it.
        *self
            .0
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.reader.wake();
        }
    }
}

/// The router, counting a connection's HTTP/2 requests in flight for its
/// idle timer (HTTP/1.1 requests go straight through).
#[derive(Clone)]
struct Tracked {
    router: Router,
    activity: Arc<Activity>,
}

impl<B> tower::Service<axum::http::Request<B>> for Tracked
where
    Router: tower::Service<
            axum::http::Request<B>,
            Response = axum::response::Response,
            Error = Infallible,
            Future: Send + 'static,
        >,
{
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = Either<
        <Router as tower::Service<axum::http::Request<B>>>::Future,
        BoxFuture<'static, Result<axum::response::Response, Infallible>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        tower::Service::<axum::http::Request<B>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        if request.version() != axum::http::Version::HTTP_2 {
            return Either::Left(self.router.call(request));
        }
        let in_flight = InFlight::new(&self.activity);
        let response = self.router.call(request);
        Either::Right(Box::pin(async move {
            let response = response.await?;
            // Held by the body: dropped once it is sent, or the stream reset.
            Ok(response.map(|body| {
                axum::body::Body::new(body.map_frame(move |frame| {
                    let _ = &in_flight;
                    frame
                }))
            }))
        }))
    }
}

/// A connection whose first bytes (as many as the HTTP/2 preface) must
/// arrive before a deadline; a read that waits past it fails with
/// `TimedOut`, which ends the connection. After them it is the plain
/// stream for HTTP/1.1, and for HTTP/2 the stream with its idle timer: a
/// read that waits while no request has been in flight for `timeout`
/// fails the same way.
struct Timed {
    stream: TcpStream,
    timeout: Duration,
    phase: Phase,
    /// The first bytes' deadline, `None` once they are in; then the idle
    /// timer's (HTTP/2), `None` while a request is in flight.
    deadline: Option<Pin<Box<Sleep>>>,
    /// HTTP/2, once idle too long: how long the accept loop has to close
    /// the connection gracefully.
    grace: Option<Pin<Box<Sleep>>>,
}

/// What a [`Timed`] connection has shown of its protocol.
enum Phase {
    /// The first `seen` bytes are in, fewer than the preface; `preface`:
    /// they are the preface's so far.
    Sniffing {
        seen: usize,
        preface: bool,
        activity: Arc<Activity>,
    },
    Http1,
    Http2(Arc<Activity>),
}

impl Timed {
    fn new(stream: TcpStream, timeout: Duration, activity: Arc<Activity>) -> Self {
        Self {
            stream,
            timeout,
            phase: Phase::Sniffing {
                seen: 0,
                preface: true,
                activity,
            },
            deadline: Some(Box::pin(tokio::time::sleep_until(Instant::now() + timeout))),
            grace: None,
        }
    }

    /// Notes bytes just read; once there are enough, tells the protocol.
    fn sniff(&mut self, read: &[u8]) {
        let Phase::Sniffing { seen, preface, .. } = &mut self.phase else {
            return;
        };
        let taken = read.len().min(PREFACE.len() - *seen);
        *preface &= read[..taken] == PREFACE[*seen..*seen + taken];
        *seen += taken;
        if *seen < PREFACE.len() {
            return;
        }
        self.deadline = None;
        self.phase = match std::mem::replace(&mut self.phase, Phase::Http1) {
            Phase::Sniffing {
                preface: true,
                activity,
                ..
            } => Phase::Http2(activity),
            _ => Phase::Http1,
        };
    }
}

/// Whether the HTTP/2 idle timer (`timer`) has run out; registers the
/// task to be woken when it does, or when the last request in flight ends.
fn idle_for_too_long(
    timer: &mut Option<Pin<Box<Sleep>>>,
    timeout: Duration,
    activity: &Activity,
    cx: &mut Context<'_>,
) -> bool {
    activity.reader.register(cx.waker());
    let Some(deadline) = activity.deadline(timeout) else {
        *timer = None;
        return false;
    };
    let sleep = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
    if sleep.deadline() != deadline {
        sleep.as_mut().reset(deadline);
    }
    sleep.as_mut().poll(cx).is_ready()
}

impl AsyncRead for Timed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        if let Phase::Http2(activity) = &this.phase {
            return match Pin::new(&mut this.stream).poll_read(cx, buf) {
                Poll::Pending
                    if idle_for_too_long(&mut this.deadline, this.timeout, activity, cx) =>
                {
                    // The accept loop sends GOAWAY and closes; a connection
                    // still open a timeout later ends with an error.
                    let grace = this.grace.get_or_insert_with(|| {
                        activity.expired.notify_one();
                        Box::pin(tokio::time::sleep(this.timeout))
                    });
                    ready!(grace.as_mut().poll(cx));
                    Poll::Ready(Err(timed_out()))
                }
                polled => polled,
            };
        }
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.sniff(&buf.filled()[before..]);
                Poll::Ready(result)
            }
            Poll::Pending => match &mut this.deadline {
                Some(deadline) => {
                    ready!(deadline.as_mut().poll(cx));
                    Poll::Ready(Err(timed_out()))
                }
                None => Poll::Pending,
            },
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "no request within the header read timeout",
    )
}

impl AsyncWrite for Timed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
