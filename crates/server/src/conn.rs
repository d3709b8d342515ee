//! Serving connections under limits: a deadline for a request's headers, one for its body, a
//! limit on idle time and on open connections. Past them the connection is closed (after a 408
//! where a response can still be sent) and counted by reason in
//! `tidegauge_http_connections_closed_total{reason}`. The same for plain and TLS listeners.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use hyper_util::rt::{TokioIo, TokioTimer};
use tidegauge_core::{CancellationToken, MetricFamily, labels};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tower::ServiceExt;

/// Limits on client connections.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConnLimits {
    /// A request's headers must arrive within this (`--web.read-header-timeout`); it also
    /// bounds how long a kept-alive connection waits for its next request.
    pub read_header_timeout: Duration,
    /// A request's body must arrive within this (`--web.read-timeout`).
    pub read_timeout: Duration,
    /// A connection with no byte read or written for this long is closed
    /// (`--web.idle-timeout`).
    pub idle_timeout: Duration,
    /// Connections open at once (`--web.max-connections`); more are closed when accepted.
    pub max_connections: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            read_header_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            max_connections: 1024,
        }
    }
}

/// Why the host closed a connection.
#[derive(Debug, Clone, Copy)]
enum Closed {
    HeaderTimeout,
    ReadTimeout,
    IdleTimeout,
    MaxConnections,
}

impl Closed {
    const ALL: [Closed; 4] = [
        Closed::HeaderTimeout,
        Closed::ReadTimeout,
        Closed::IdleTimeout,
        Closed::MaxConnections,
    ];

    fn label(self) -> &'static str {
        match self {
            Closed::HeaderTimeout => "header_timeout",
            Closed::ReadTimeout => "read_timeout",
            Closed::IdleTimeout => "idle_timeout",
            Closed::MaxConnections => "max_connections",
        }
    }
}

/// Connections closed by the host, by reason.
#[derive(Debug, Default)]
pub struct ConnStats {
    closed: [AtomicU64; 4],
}

impl ConnStats {
    fn count(&self, why: Closed) {
        self.closed[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// `tidegauge_http_connections_closed_total{reason}`.
    pub fn family(&self) -> MetricFamily {
        let mut f = MetricFamily::counter(
            "tidegauge_http_connections_closed",
            "Connections the host closed: headers or body too slow, idle too long, or over the connection limit.",
        );
        for why in Closed::ALL {
            f.push(
                labels([("reason", why.label())]),
                self.closed[why as usize].load(Ordering::Relaxed) as f64,
            );
        }
        f
    }
}

/// Serves `app` on `listener` under `limits` until `shutdown`, then lets open connections
/// finish their requests.
pub async fn serve<L>(
    mut listener: L,
    app: Router,
    limits: ConnLimits,
    stats: Arc<ConnStats>,
    shutdown: CancellationToken,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
{
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let mut open = tokio::task::JoinSet::new();
    loop {
        let (io, _) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            stats.count(Closed::MaxConnections);
            drop(io);
            continue;
        };
        let (app, stats, shutdown) = (app.clone(), Arc::clone(&stats), shutdown.clone());
        open.spawn(async move {
            let _permit = permit;
            connection(io, app, limits, stats, shutdown).await;
        });
        while open.try_join_next().is_some() {}
    }
    while open.join_next().await.is_some() {}
    Ok(())
}

async fn connection<I>(
    io: I,
    app: Router,
    limits: ConnLimits,
    stats: Arc<ConnStats>,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let started = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let io = Tracked {
        inner: io,
        started,
        last: Arc::clone(&last),
    };
    let read_timeout = limits.read_timeout;
    let body_stats = Arc::clone(&stats);
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let app = app.clone();
        let stats = Arc::clone(&body_stats);
        async move {
            let fired = Arc::new(AtomicBool::new(false));
            let req = req.map(|b| {
                Body::new(Deadline {
                    inner: b,
                    sleep: Box::pin(tokio::time::sleep(read_timeout)),
                    fired: Arc::clone(&fired),
                })
            });
            let resp = app
                .oneshot(Request::from(req))
                .await
                .unwrap_or_else(|e| match e {});
            Ok::<_, std::convert::Infallible>(if fired.load(Ordering::Relaxed) {
                stats.count(Closed::ReadTimeout);
                let mut r =
                    (StatusCode::REQUEST_TIMEOUT, "request body too slow\n").into_response();
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                r
            } else {
                resp
            })
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.read_header_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let idle = async {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let since = started.elapsed().as_millis() as u64 - last.load(Ordering::Relaxed);
            if Duration::from_millis(since) >= limits.idle_timeout {
                return;
            }
        }
    };
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result
                && e.is_timeout()
            {
                stats.count(Closed::HeaderTimeout);
            }
        }
        () = idle => stats.count(Closed::IdleTimeout),
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(10), conn).await;
        }
    }
}

/// A connection's stream, noting when a byte last went through.
struct Tracked<I> {
    inner: I,
    started: Instant,
    last: Arc<AtomicU64>,
}

impl<I> Tracked<I> {
    fn touch(&self) {
        self.last
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    // Forwarded so hyper queues a response's chunks (shared encodings) and writes them with
    // `writev`; without it hyper copies every body into a buffer per connection.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request body that must arrive whole before its deadline.
struct Deadline {
    inner: hyper::body::Incoming,
    sleep: Pin<Box<tokio::time::Sleep>>,
    fired: Arc<AtomicBool>,
}

/// The body did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within the read timeout")]
struct TooSlow;

impl hyper::body::Body for Deadline {
    type Data = hyper::body::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.fired.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(Box::new(TooSlow))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// hyper writes a response's chunks with `writev` only when the stream says it can;
    /// otherwise it copies every body into a buffer per connection.
    #[tokio::test]
    async fn tracked_streams_keep_vectored_writes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        assert!(server.is_write_vectored());
        let mut tracked = Tracked {
            inner: server,
            started: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        };
        assert!(tracked.is_write_vectored());
        tokio::time::sleep(Duration::from_millis(5)).await;
        let parts = [std::io::IoSlice::new(b"ab"), std::io::IoSlice::new(b"cd")];
        let n = tracked.write_vectored(&parts).await.unwrap();
        assert!(n > 0);
        assert!(
            tracked.last.load(Ordering::Relaxed) > 0,
            "a write is activity"
        );
        let mut got = vec![0u8; n];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..], &b"abcd"[..n]);
    }
}
