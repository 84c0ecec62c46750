//! Per-worker upstream connection pool. Each worker thread owns its pool (no locks, no
//! atomics): idle HTTP/1.1 connections are kept per target, last-in first-out so the warmest
//! connection is reused, and expire after the idle timeout.

use foldhash::{HashMap, HashMapExt};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::RequestBody;
use crate::snapshot::TargetRt;

/// Why no connection could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The connect did not finish in time.
    #[error("connect to {0} timed out")]
    Timeout(Arc<str>),
    /// Refused, unreachable or not resolvable.
    #[error("connect to {0}: {1}")]
    Failed(Arc<str>, std::io::Error),
    /// HTTP handshake failed.
    #[error("handshake with {0}: {1}")]
    Handshake(Arc<str>, hyper::Error),
}

struct Idle {
    tx: SendRequest<RequestBody>,
    since: Instant,
}

/// The idle connections of one worker.
pub struct Pool {
    idle: RefCell<HashMap<Arc<str>, Vec<Idle>>>,
    max_idle: usize,
    idle_timeout: Duration,
}

/// A connection lent out; give it back with [`Checkin::release`] once its response ended.
pub struct Checkin {
    pool: Rc<Pool>,
    key: Arc<str>,
    tx: SendRequest<RequestBody>,
}

impl Checkin {
    /// Returns the connection to the pool (unless it is closing).
    pub fn release(self) {
        if self.tx.is_closed() {
            return;
        }
        let mut idle = self.pool.idle.borrow_mut();
        let list = idle.entry(self.key).or_default();
        if list.len() < self.pool.max_idle {
            list.push(Idle {
                tx: self.tx,
                since: Instant::now(),
            });
        }
    }
}

/// A connection ready for one request.
pub struct Lease {
    /// Sender for the request.
    pub tx: SendRequest<RequestBody>,
    /// True when the connection was reused from the pool (it may have been closed meanwhile).
    pub reused: bool,
}

impl Pool {
    /// A pool keeping at most `max_idle` idle connections per target for `idle_timeout`.
    pub fn new(max_idle: usize, idle_timeout: Duration) -> Rc<Pool> {
        Rc::new(Pool {
            idle: RefCell::new(HashMap::new()),
            max_idle,
            idle_timeout,
        })
    }

    /// Number of idle connections to a target (for tests and metrics).
    pub fn idle_count(&self, key: &str) -> usize {
        self.idle.borrow().get(key).map_or(0, Vec::len)
    }

    /// Wraps a leased sender so the response body can return it.
    pub fn checkin(self: &Rc<Self>, key: Arc<str>, tx: SendRequest<RequestBody>) -> Checkin {
        Checkin {
            pool: self.clone(),
            key,
            tx,
        }
    }

    /// Takes a warm connection to `target`, or opens one.
    pub async fn get(
        &self,
        target: &TargetRt,
        connect_timeout: Duration,
    ) -> Result<Lease, ConnectError> {
        loop {
            let cand = {
                let mut idle = self.idle.borrow_mut();
                idle.get_mut(&*target.key).and_then(Vec::pop)
            };
            let Some(mut c) = cand else { break };
            if c.tx.is_closed() || c.since.elapsed() > self.idle_timeout {
                continue;
            }
            if c.tx.is_ready() || c.tx.ready().await.is_ok() {
                return Ok(Lease {
                    tx: c.tx,
                    reused: true,
                });
            }
        }
        let tx = connect(target, connect_timeout).await?;
        Ok(Lease { tx, reused: false })
    }
}

async fn connect(
    target: &TargetRt,
    timeout: Duration,
) -> Result<SendRequest<RequestBody>, ConnectError> {
    let key = target.key.clone();
    let fut = async {
        let stream = match target.host.parse::<std::net::IpAddr>() {
            Ok(ip) => TcpStream::connect(SocketAddr::new(ip, target.port)).await,
            Err(_) => TcpStream::connect((&*target.host, target.port)).await,
        };
        stream.map_err(|e| ConnectError::Failed(key.clone(), e))
    };
    let stream = tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| ConnectError::Timeout(key.clone()))??;
    let _ = stream.set_nodelay(true);
    let (tx, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ConnectError::Handshake(key.clone(), e))?;
    tokio::task::spawn_local(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(target = %key, error = %e, "upstream connection ended with an error");
        }
    });
    Ok(tx)
}
