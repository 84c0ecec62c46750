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

/// Spawns hyper's HTTP/2 stream tasks on the worker's own thread.
#[derive(Clone, Copy, Debug)]
struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
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

/// Binds `workers` sockets to `addr` with `SO_REUSEPORT` (the kernel spreads connections).
pub fn bind(addr: SocketAddr, workers: usize) -> io::Result<Listener> {
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

/// Starts one worker thread per socket.
pub fn start(shared: Arc<Shared>, listener: Listener) -> io::Result<ProxyHandle> {
    let (stop, stop_rx) = watch::channel(false);
    let mut threads = Vec::new();
    for (i, sock) in listener.sockets.into_iter().enumerate() {
        let shared = shared.clone();
        let rx = stop_rx.clone();
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
                local.block_on(&rt, run_worker(shared, sock, rx));
            })?;
        threads.push(t);
    }
    Ok(ProxyHandle { threads, stop })
}

async fn run_worker(
    shared: Arc<Shared>,
    sock: std::net::TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(sock) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot register listener");
            return;
        }
    };
    let local = listener.local_addr().ok();
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
    // HTTP/1 connections are served by h1server; one that opens with the HTTP/2 preface is
    // handed to hyper's HTTP/2 server.
    let mut h2 = hyper::server::conn::http2::Builder::new(LocalExec);
    h2.timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX));
    let active = Rc::new(std::cell::Cell::new(0usize));
    let all_closed = Rc::new(tokio::sync::Notify::new());
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let info = Rc::new(ConnInfo::new(peer, local.unwrap_or(peer), &settings));
                let w = worker.clone();
                let h2 = h2.clone();
                let mut stop = stop.clone();
                let (active, all_closed) = (active.clone(), all_closed.clone());
                active.set(active.get() + 1);
                tokio::task::spawn_local(async move {
                    if let Ended::Http2(io) = h1server::serve(w.clone(), info.clone(), stream).await {
                        let svc = service_fn(move |req: Request<Incoming>| {
                            w.clone().handle(info.clone(), req.map(ClientBody::Hyper))
                        });
                        let conn = h2.serve_connection(TokioIo::new(io), svc);
                        let mut conn = std::pin::pin!(conn);
                        tokio::select! {
                            r = conn.as_mut() => {
                                if let Err(e) = r {
                                    tracing::debug!(error = %e, "HTTP/2 client connection ended with an error");
                                }
                            }
                            _ = stop.wait_for(|s| *s) => {
                                conn.as_mut().graceful_shutdown();
                                let _ = conn.await;
                            }
                        }
                    }
                    active.set(active.get() - 1);
                    if active.get() == 0 {
                        all_closed.notify_one();
                    }
                });
            }
        }
    }
    drop(listener);
    let _keep_ticking_while_draining = &ticker;
    worker.coarse.drain();
    let drained = async {
        while active.get() > 0 {
            all_closed.notified().await;
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
