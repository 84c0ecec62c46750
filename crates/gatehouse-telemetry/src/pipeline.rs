//! From the request path to the store: a request hands its record to a bounded queue
//! (`try_send`: never waits; a full queue drops the record and counts it), one writer task
//! takes whatever is queued as one batch (one transaction), counts it into the open
//! rollups, and writes the changed rollup rows every second. Retention deletes in small
//! batches between writes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::call::Call;
use crate::rollup::Rollups;
use crate::store::CallStore;

/// Records taken per batch at most.
pub const BATCH: usize = 2_000;
/// How often changed rollup rows are written.
pub const ROLLUP_EVERY: Duration = Duration::from_secs(1);
/// How often retention runs.
pub const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Most batches one retention run deletes (then it waits for the next run).
pub const PRUNE_MAX_BATCHES: u32 = 100;

/// What the pipeline did (for `/metrics` and `/status`).
#[derive(Debug, Default)]
pub struct Stats {
    /// Records queued.
    pub accepted: AtomicU64,
    /// Records dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Records written.
    pub written: AtomicU64,
    /// Records lost to store errors.
    pub failed: AtomicU64,
    /// Rows deleted by retention.
    pub pruned: AtomicU64,
}

/// The call log of a node.
pub struct CallLog {
    tx: mpsc::Sender<Call>,
    stats: Arc<Stats>,
    store: CallStore,
}

impl CallLog {
    /// Starts the writer and retention tasks on the current runtime; the queue holds
    /// `capacity` records.
    pub fn start(store: CallStore, capacity: usize) -> Arc<CallLog> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let stats = Arc::new(Stats::default());
        tokio::spawn(write_loop(store.clone(), rx, stats.clone()));
        tokio::spawn(prune_loop(store.clone(), stats.clone()));
        Arc::new(CallLog { tx, stats, store })
    }

    /// Queues a record; drops it (counted) when the queue is full.
    pub fn offer(&self, call: Call) {
        match self.tx.try_send(call) {
            Ok(()) => self.stats.accepted.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.stats.dropped.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// The store (for queries).
    pub fn store(&self) -> &CallStore {
        &self.store
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Records waiting in the queue.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

/// Unix ms now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn write_loop(store: CallStore, mut rx: mpsc::Receiver<Call>, stats: Arc<Stats>) {
    let mut rollups = Rollups::default();
    let mut buf: Vec<Call> = Vec::with_capacity(BATCH);
    let mut tick = tokio::time::interval(ROLLUP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut buf, BATCH) => {
                if n == 0 {
                    break;
                }
                match store.insert(&buf).await {
                    Ok(()) => stats.written.fetch_add(n as u64, Ordering::Relaxed),
                    Err(e) => {
                        tracing::warn!(error = %e, calls = n, "call log: a batch could not be written");
                        stats.failed.fetch_add(n as u64, Ordering::Relaxed)
                    }
                };
                for c in &buf {
                    rollups.add(c);
                }
                buf.clear();
            }
            _ = tick.tick() => flush(&store, &mut rollups).await,
        }
    }
    flush(&store, &mut rollups).await;
}

async fn flush(store: &CallStore, rollups: &mut Rollups) {
    let rows = rollups.take_dirty(now_ms());
    if rows.is_empty() {
        return;
    }
    if let Err(e) = store.write_rollups(&rows).await {
        tracing::warn!(error = %e, rows = rows.len(), "call log: rollups could not be written");
    }
}

async fn prune_loop(store: CallStore, stats: Arc<Stats>) {
    loop {
        tokio::time::sleep(PRUNE_EVERY).await;
        prune(&store, &stats).await;
    }
}

/// One retention run: deletes what the settings let go, a batch at a time, pausing
/// between batches so writes never wait long.
pub async fn prune(store: &CallStore, stats: &Stats) {
    let retention = match store.retention().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "call log: retention settings unreadable");
            return;
        }
    };
    for _ in 0..PRUNE_MAX_BATCHES {
        match store.prune_batch(now_ms(), &retention).await {
            Ok(0) => break,
            Ok(n) => {
                stats.pruned.fetch_add(n, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "call log: retention delete failed");
                break;
            }
        }
    }
}
