//! Per-worker upstream connection pool. Each worker thread owns its pool (no locks, no
//! atomics): idle connections are kept per target, last-in first-out so the warmest
//! connection is reused, checked for EOF before reuse, and dropped after the idle timeout.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use foldhash::{HashMap, HashMapExt};

use crate::coarse::{Coarse, TICK};

use crate::h1::Conn;
use crate::snapshot::TargetRt;

pub use crate::upstream::connect::ConnectError;

struct Idle {
    conn: Conn,
    /// Coarse tick at which it went idle (the worker's clock: no clock read per request).
    since: u64,
}

/// The idle connections of one worker.
pub struct Pool {
    idle: RefCell<HashMap<Arc<str>, Vec<Idle>>>,
    max_idle: usize,
    /// The idle timeout in coarse ticks (rounded down: a connection never outlives it).
    idle_ticks: u64,
    clock: Rc<Coarse>,
}

/// Where a connection goes back when its response is done.
pub struct Release {
    pool: Rc<Pool>,
    key: Arc<str>,
}

impl Release {
    /// Returns a connection whose exchange completed cleanly.
    pub fn release(self, conn: Conn) {
        let mut idle = self.pool.idle.borrow_mut();
        let list = idle.entry(self.key).or_default();
        if list.len() < self.pool.max_idle {
            list.push(Idle {
                conn,
                since: self.pool.clock.ticks(),
            });
        }
    }
}

/// A connection ready for one request.
pub struct Lease {
    /// The connection.
    pub conn: Conn,
    /// True when it was reused from the pool (the upstream may have closed it meanwhile).
    pub reused: bool,
}

impl Pool {
    /// A pool keeping at most `max_idle` idle connections per target for `idle_timeout`,
    /// timed on the worker's coarse clock.
    pub fn new(max_idle: usize, idle_timeout: Duration, clock: Rc<Coarse>) -> Rc<Pool> {
        Rc::new(Pool {
            idle: RefCell::new(HashMap::new()),
            max_idle,
            idle_ticks: (idle_timeout.as_millis() / TICK.as_millis()) as u64,
            clock,
        })
    }

    /// Number of idle connections to a target (for tests and metrics).
    pub fn idle_count(&self, key: &str) -> usize {
        self.idle.borrow().get(key).map_or(0, Vec::len)
    }

    /// Where to return a connection to `key`.
    pub fn release_to(self: &Rc<Self>, key: Arc<str>) -> Release {
        Release {
            pool: self.clone(),
            key,
        }
    }

    /// Takes a warm connection to `target` (`fresh` forces a new one), or opens one the way
    /// `transport` says. Pool keys include the transport (TLS settings), so connections of
    /// one service are never handed to another with other TLS settings.
    pub async fn get(
        &self,
        target: &TargetRt,
        transport: &crate::upstream::Transport,
        connect_timeout: Duration,
        fresh: bool,
    ) -> Result<Lease, ConnectError> {
        if !fresh {
            let mut idle = self.idle.borrow_mut();
            if let Some(list) = idle.get_mut(&*target.key) {
                let now = self.clock.ticks();
                while let Some(c) = list.pop() {
                    let mut c = c;
                    if now - c.since < self.idle_ticks && c.conn.is_reusable() {
                        return Ok(Lease {
                            conn: c.conn,
                            reused: true,
                        });
                    }
                }
            }
        }
        // Boxed: a TLS handshake's state is large, and every request's future would carry
        // it though most requests reuse a pooled connection.
        let stream = Box::pin(crate::upstream::connect::connect(
            target,
            transport,
            connect_timeout,
        ))
        .await?;
        Ok(Lease {
            conn: Conn::new(stream),
            reused: false,
        })
    }
}
