//! Listeners and worker threads. Each worker is a single-threaded tokio runtime with its own
//! `SO_REUSEPORT` socket, connection pool and balancer state, so the hot path shares nothing
//! between cores but the config snapshot.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;

use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::watch;

use crate::body::ClientBody;
use crate::h1server::{self, Ended};
use crate::handler::{ConnInfo, Shared, Worker};
use crate::stream::ClientStream;

/// Spawns hyper's HTTP/2 stream tasks on the worker's own thread.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

/// A connection's place under a listener's connection cap; given back on drop.
pub struct ConnSlot {
    active: Rc<std::cell::Cell<usize>>,
    all_closed: Rc<tokio::sync::Notify>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let n = self.active.get().saturating_sub(1);
        self.active.set(n);
        if n == 0 {
            self.all_closed.notify_one();
        }
    }
}

/// The streams of one HTTP/2 connection: how many are open, and when the last one ended
/// (for the idle timeout). A stream counts from its request until its response body is
/// done or dropped.
#[derive(Clone)]
struct H2Activity(Rc<H2ActivityInner>);

struct H2ActivityInner {
    open: std::cell::Cell<usize>,
    since: std::cell::Cell<tokio::time::Instant>,
    any: std::cell::Cell<bool>,
}

impl H2Activity {
    fn new() -> H2Activity {
        H2Activity(Rc::new(H2ActivityInner {
            open: std::cell::Cell::new(0),
            since: std::cell::Cell::new(tokio::time::Instant::now()),
            any: std::cell::Cell::new(false),
        }))
    }

    fn enter(&self) -> StreamGuard {
        self.0.open.set(self.0.open.get() + 1);
        self.0.any.set(true);
        StreamGuard(self.clone())
    }
}

/// One open HTTP/2 stream; ends when dropped.
struct StreamGuard(H2Activity);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let a = &self.0 .0;
        a.open.set(a.open.get().saturating_sub(1));
        a.since.set(tokio::time::Instant::now());
    }
}

/// A response body that holds its stream open until it is done.
struct Tracked {
    inner: crate::body::ProxyBody,
    _stream: StreamGuard,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Lets a stopping HTTP/2 connection finish its open streams (the worker's drain timeout
/// bounds them), then gives a peer that does not acknowledge the GOAWAY a short grace: an
/// idle client must not hold the process's exit.
async fn drain_h2<F: std::future::Future>(mut conn: std::pin::Pin<&mut F>, activity: &H2Activity) {
    const GRACE: std::time::Duration = std::time::Duration::from_millis(250);
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = tokio::time::sleep(GRACE) => {
                if activity.0.open.get() == 0 {
                    let _ = tokio::time::timeout(GRACE, conn.as_mut()).await;
                    return;
                }
            }
        }
    }
}

/// Serves an HTTP/2 connection until it ends, the worker stops, or it has had no open
/// stream for the idle timeout (the header-read timeout before its first stream: a client
/// that sends only the preface, or half a HEADERS block, is not kept).
async fn serve_h2(
    h2: hyper::server::conn::http2::Builder<LocalExec>,
    io: h1server::Replay,
    worker: Rc<Worker>,
    info: Rc<ConnInfo>,
    mut stop: watch::Receiver<bool>,
) {
    let settings = worker.settings().clone();
    let activity = H2Activity::new();
    let act = activity.clone();
    let svc = service_fn(move |req: Request<Incoming>| {
        let stream = act.enter();
        let fut = worker
            .clone()
            .handle(info.clone(), req.map(ClientBody::Hyper));
        async move {
            let resp = fut.await?;
            Ok::<_, std::convert::Infallible>(resp.map(|inner| Tracked {
                inner,
                _stream: stream,
            }))
        }
    });
    let conn = h2.serve_connection(TokioIo::new(io), svc);
    let mut conn = std::pin::pin!(conn);
    loop {
        let a = &activity.0;
        let limit = if a.any.get() {
            settings.idle_timeout
        } else {
            settings.header_read_timeout
        };
        let now = tokio::time::Instant::now();
        let deadline = if a.open.get() > 0 {
            now + limit
        } else {
            a.since.get() + limit
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "HTTP/2 client connection ended with an error");
                }
                return;
            }
            _ = stop.wait_for(|s| *s) => {
                conn.as_mut().graceful_shutdown();
                drain_h2(conn.as_mut(), &activity).await;
                return;
            }
            _ = tokio::time::sleep_until(deadline) => {
                if a.open.get() == 0 && a.since.get() + limit <= tokio::time::Instant::now() {
                    tracing::debug!(?limit, "HTTP/2 connection idle; closing");
                    conn.as_mut().graceful_shutdown();
                    // A peer that never answers the GOAWAY does not hold the socket.
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), conn.as_mut()).await;
                    return;
                }
            }
        }
    }
}

/// Sockets bound to one address, one per worker.
pub struct Listener {
    /// The bound address (with the real port when 0 was asked for).
    pub addr: SocketAddr,
    sockets: Vec<std::net::TcpListener>,
}

fn socket(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nodelay(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s.into())
}

/// Claims `addr` without `SO_REUSEPORT`: the kernel refuses it while any other socket —
/// another gateway process's `SO_REUSEPORT` ones included — listens there. Without this
/// check a second process on the same port would start silently and take part of the
/// traffic with its own config.
fn probe(addr: SocketAddr) -> io::Result<SocketAddr> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into()).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            io::Error::new(
                e.kind(),
                format!("{addr} is already in use (another process listens there; is another gateway running?)"),
            )
        } else {
            e
        }
    })?;
    s.local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("bound address is not an IP address"))
}

/// Binds `workers` sockets to `addr` with `SO_REUSEPORT` (the kernel spreads connections)
/// after making sure no other process listens there.
pub fn bind(addr: SocketAddr, workers: usize) -> io::Result<Listener> {
    // The probe socket closes before the real ones bind; port 0 keeps the port it was given.
    let addr = probe(addr)?;
    let first = socket(addr)?;
    let addr = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..workers.max(1) {
        sockets.push(socket(addr)?);
    }
    Ok(Listener { addr, sockets })
}

/// Running proxy workers.
pub struct ProxyHandle {
    threads: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl ProxyHandle {
    /// Stops accepting; in-flight requests get the drain timeout to finish.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits until every worker has drained and exited.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Starts one worker thread per socket of `listener` (each also takes one socket of `tls`,
/// the TLS listener, when there is one).
pub fn start(
    shared: Arc<Shared>,
    listener: Listener,
    tls: Option<Listener>,
) -> io::Result<ProxyHandle> {
    let (stop, stop_rx) = watch::channel(false);
    let mut threads = Vec::new();
    // The kernel spreads connections evenly over the workers' sockets; each takes its share
    // of the node's cap (plain and TLS connections together).
    let cap = shared
        .settings
        .max_connections
        .div_ceil(listener.sockets.len().max(1))
        .max(1);
    let mut tls_sockets = tls.map(|l| l.sockets.into_iter());
    for (i, sock) in listener.sockets.into_iter().enumerate() {
        let shared = shared.clone();
        let rx = stop_rx.clone();
        let tls_sock = tls_sockets.as_mut().and_then(Iterator::next);
        let t = std::thread::Builder::new()
            .name(format!("gatehouse-worker-{i}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start worker runtime");
                        return;
                    }
                };
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, run_worker(shared, sock, tls_sock, cap, rx));
            })?;
        threads.push(t);
    }
    Ok(ProxyHandle { threads, stop })
}

/// A worker's listening sockets, made tokio's on its own runtime.
struct Sockets {
    plain: tokio::net::TcpListener,
    tls: Option<tokio::net::TcpListener>,
}

impl Sockets {
    /// The next connection on either listener, and whether it is the TLS one.
    async fn accept(&self) -> (io::Result<(tokio::net::TcpStream, SocketAddr)>, bool) {
        match &self.tls {
            None => (self.plain.accept().await, false),
            Some(tls) => tokio::select! {
                a = self.plain.accept() => (a, false),
                a = tls.accept() => (a, true),
            },
        }
    }
}

/// The connections of one worker: how many, the cap, and who to tell when the last one
/// closes (graceful stop).
struct Admission {
    active: Rc<std::cell::Cell<usize>>,
    all_closed: Rc<tokio::sync::Notify>,
    cap: usize,
    refused_logged: Option<tokio::time::Instant>,
}

impl Admission {
    /// A slot for a new connection, or `None` over the cap (the caller closes it: the client
    /// sees the connection end rather than hang in the accept queue; logged once a second).
    fn admit(&mut self) -> Option<ConnSlot> {
        if self.active.get() >= self.cap {
            if self
                .refused_logged
                .is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1))
            {
                self.refused_logged = Some(tokio::time::Instant::now());
                tracing::warn!(
                    cap = self.cap,
                    "connection cap reached; closing new connections"
                );
            }
            return None;
        }
        self.active.set(self.active.get() + 1);
        Some(ConnSlot {
            active: self.active.clone(),
            all_closed: self.all_closed.clone(),
        })
    }
}

async fn run_worker(
    shared: Arc<Shared>,
    sock: std::net::TcpListener,
    tls_sock: Option<std::net::TcpListener>,
    cap: usize,
    mut stop: watch::Receiver<bool>,
) {
    let register = |s: std::net::TcpListener| match tokio::net::TcpListener::from_std(s) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::error!(error = %e, "cannot register listener");
            None
        }
    };
    let Some(plain) = register(sock) else { return };
    let sockets = Sockets {
        plain,
        tls: tls_sock.and_then(register),
    };
    let settings = shared.settings.clone();
    let worker = Worker::new(shared);
    let coarse = worker.coarse.clone();
    let ticker = tokio::task::spawn_local(async move {
        let mut every = tokio::time::interval(crate::coarse::TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            coarse.tick();
        }
    });
    // HTTP/1 connections are served by h1server; one that opens with the HTTP/2 preface (or
    // negotiated h2 by ALPN) is handed to hyper's HTTP/2 server.
    let mut h2 = hyper::server::conn::http2::Builder::new(LocalExec);
    h2.timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(settings.h2_max_concurrent_streams)
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(256);
    let mut admission = Admission {
        active: Rc::new(std::cell::Cell::new(0usize)),
        all_closed: Rc::new(tokio::sync::Notify::new()),
        cap,
        refused_logged: None,
    };
    loop {
        let ((accepted, tls), _) = tokio::select! {
            biased;
            _ = stop.changed() => break,
            a = sockets.accept() => (a, ()),
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        let Some(slot) = admission.admit() else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(peer);
        let info = ConnInfo::new(peer, local, &settings).with_slot(slot);
        let (w, h2, stop) = (worker.clone(), h2.clone(), stop.clone());
        if tls {
            tokio::task::spawn_local(serve_tls(w, h2, info, stream, stop));
        } else {
            tokio::task::spawn_local(serve_conn(
                w,
                h2,
                Rc::new(info),
                ClientStream::Plain(stream),
                false,
                stop,
            ));
        }
    }
    drop(sockets);
    let _keep_ticking_while_draining = &ticker;
    worker.coarse.drain();
    let drained = async {
        while admission.active.get() > 0 {
            admission.all_closed.notified().await;
        }
    };
    if tokio::time::timeout(settings.drain_timeout, drained)
        .await
        .is_err()
    {
        tracing::warn!("drain timeout reached; closing remaining connections");
    }
    ticker.abort();
}

/// Serves a connection as HTTP/1 (handing it to HTTP/2 on the preface) or, when ALPN chose
/// `h2`, as HTTP/2 at once.
async fn serve_conn(
    w: Rc<Worker>,
    h2: hyper::server::conn::http2::Builder<LocalExec>,
    info: Rc<ConnInfo>,
    stream: ClientStream,
    alpn_h2: bool,
    stop: watch::Receiver<bool>,
) {
    if alpn_h2 {
        serve_h2(h2, h1server::Replay::new(stream), w, info, stop).await;
        return;
    }
    if let Ended::Http2(io) = h1server::serve(w.clone(), info.clone(), stream).await {
        serve_h2(h2, io, w, info, stop).await;
    }
}

/// Completes the TLS handshake (certificate by SNI from the current snapshot, within the
/// header-read timeout), then serves the connection.
async fn serve_tls(
    w: Rc<Worker>,
    h2: hyper::server::conn::http2::Builder<LocalExec>,
    info: ConnInfo,
    stream: tokio::net::TcpStream,
    stop: watch::Receiver<bool>,
) {
    let snap = w.snapshot();
    let settings = w.settings();
    let accepted = crate::tls::server::accept(
        stream,
        &snap.tls,
        settings.default_tls.as_ref(),
        settings.header_read_timeout,
    )
    .await;
    drop(snap);
    let (tls, tls_info) = match accepted {
        Ok(t) => t,
        Err(e) => {
            tracing::debug!(peer = %info.peer, error = %e, "TLS handshake failed");
            return;
        }
    };
    let alpn_h2 = tls_info.h2;
    let info = Rc::new(info.with_tls(tls_info));
    serve_conn(w, h2, info, ClientStream::Tls(Box::new(tls)), alpn_h2, stop).await;
}
