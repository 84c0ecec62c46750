//! The admin and status listeners: axum routers served over HTTP/1.1 with the same
//! defences as the proxy listener — a header-read timeout, an idle timeout and a cap on open
//! connections — so a client that opens connections and sends nothing (or half a head)
//! cannot hold them. (`axum::serve` has none of the three.)

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time to send a complete request head.
    pub header_read_timeout: Duration,
    /// A connection with no bytes moving either way for this long is closed.
    pub idle_timeout: Duration,
    /// Most connections open at once; more are closed at once.
    pub max_connections: usize,
}

/// A socket that notes when bytes last moved (milliseconds since `epoch`).
struct Watched {
    io: TcpStream,
    epoch: Instant,
    last: Arc<AtomicU64>,
}

impl Watched {
    fn touch(&self) {
        self.last
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Gives a connection's place back under the cap when dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves `router` on `listener` until `stop` turns true (then open connections finish
/// their current request and close).
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let open = Arc::new(AtomicUsize::new(0));
    let mut refused_logged: Option<Instant> = None;
    loop {
        let (stream, _) = tokio::select! {
            _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        if open.load(Ordering::Relaxed) >= limits.max_connections {
            drop(stream);
            if refused_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                refused_logged = Some(Instant::now());
                tracing::warn!(
                    listener = name,
                    cap = limits.max_connections,
                    "connection cap reached; closing new connections"
                );
            }
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        let slot = Slot(open.clone());
        let router = router.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _slot = slot;
            serve_conn(stream, router, limits, stop).await;
        });
    }
}

async fn serve_conn(
    stream: TcpStream,
    router: axum::Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let epoch = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let io = Watched {
        io: stream,
        epoch,
        last: last.clone(),
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(router));
    let mut conn = std::pin::pin!(conn);
    let idle = limits.idle_timeout;
    loop {
        let quiet_since = epoch + Duration::from_millis(last.load(Ordering::Relaxed));
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(5), conn.as_mut()).await;
                return;
            }
            _ = tokio::time::sleep_until((quiet_since + idle).into()) => {
                let quiet_since = epoch + Duration::from_millis(last.load(Ordering::Relaxed));
                if quiet_since.elapsed() >= idle {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(1), conn.as_mut()).await;
                    return;
                }
            }
        }
    }
}
