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
//! HTTP/1.1 from HTTP/2 with no timer at all; [`FirstBytes`] bounds that
//! wait by the same timeout, so a client that connects and sends nothing
//! (or a few bytes) is closed too.
//! (Request bodies have their own timeout, `http.body_read_timeout_secs`,
//! in the router.)
//!
//! On shutdown the listener closes at once, every connection is told to
//! finish (in-flight requests complete; idle connections close), and the
//! function returns when they have. Upgraded connections (WebSockets) have
//! left hyper by then: their own shutdown is `Sockets::close_all`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Serves `router` on `listener` until `shutdown` resolves, then waits for
/// the requests in flight to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
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
    loop {
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
        let service = TowerToHyperService::new(router.clone());
        let builder = builder.clone();
        let stopping = stopping.clone();
        connections.spawn(async move {
            let stream = FirstBytes::new(stream, header_read_timeout);
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stopping.cancelled() => {
                    // Finish the request in flight, if any, then close.
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

/// Bytes hyper-util reads to tell HTTP/1.1 from HTTP/2 (the length of the
/// HTTP/2 preface): past them, hyper's own timer is in charge.
const SNIFFED: usize = 24;

/// A connection whose first [`SNIFFED`] bytes must arrive before a
/// deadline; a read that waits past it fails with `TimedOut`, which ends
/// the connection. After them it is the plain stream.
struct FirstBytes {
    stream: TcpStream,
    /// `None` once the first bytes are in.
    deadline: Option<Pin<Box<Sleep>>>,
    read: usize,
}

impl FirstBytes {
    fn new(stream: TcpStream, within: Duration) -> Self {
        Self {
            stream,
            deadline: Some(Box::pin(tokio::time::sleep_until(Instant::now() + within))),
            read: 0,
        }
    }
}

impl AsyncRead for FirstBytes {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.read += buf.filled().len() - before;
                if this.read >= SNIFFED {
                    this.deadline = None;
                }
                Poll::Ready(result)
            }
            Poll::Pending => match &mut this.deadline {
                Some(deadline) => {
                    ready!(deadline.as_mut().poll(cx));
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no request within the header read timeout",
                    )))
                }
                None => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for FirstBytes {
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
