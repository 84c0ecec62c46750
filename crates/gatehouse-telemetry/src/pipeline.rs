//! From the request path to the store: a request appends its record to its worker
//! thread's own buffer (an uncontended lock, no wake-up of anyone: never waits; a full
//! buffer drops the record and counts it). Every 100 ms one writer task takes every
//! buffer's records as one batch (one transaction), counts them into the open rollups, and
//! writes the changed rollup rows every second. Retention deletes in small batches between
//! writes.
//!
//! Waking the writer per record (a channel) cost a context switch per request on a busy
//! core; collecting on a timer costs nothing on the request path but the push.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::sync::Mutex;

use crate::call::Call;
use crate::rollup::Rollups;
use crate::store::CallStore;

/// How often the writer collects the workers' records.
pub const COLLECT_EVERY: Duration = Duration::from_millis(100);
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

/// One worker thread's records waiting for the writer.
#[derive(Default)]
struct Shard {
    buf: Mutex<Vec<Call>>,
}

/// The call log of a node.
pub struct CallLog {
    shards: Mutex<Vec<Arc<Shard>>>,
    /// Records one worker's buffer holds at most.
    capacity: usize,
    stats: Arc<Stats>,
    store: CallStore,
}

thread_local! {
    /// This thread's buffer, and the call log it belongs to (by address: tests run several).
    static SHARD: std::cell::RefCell<Option<(usize, Arc<Shard>)>> = const { std::cell::RefCell::new(None) };
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl CallLog {
    /// Starts the writer and retention tasks on the current runtime; each worker thread's
    /// buffer holds `capacity` records at most.
    pub fn start(store: CallStore, capacity: usize) -> Arc<CallLog> {
        let stats = Arc::new(Stats::default());
        let log = Arc::new(CallLog {
            shards: Mutex::default(),
            capacity: capacity.max(1),
            stats: stats.clone(),
            store: store.clone(),
        });
        tokio::spawn(write_loop(Arc::downgrade(&log)));
        tokio::spawn(prune_loop(store, stats));
        log
    }

    /// This thread's buffer (made and registered at its first record).
    fn shard(&self) -> Arc<Shard> {
        let me = self as *const CallLog as usize;
        SHARD.with(|s| {
            let mut s = s.borrow_mut();
            match &*s {
                Some((owner, shard)) if *owner == me => shard.clone(),
                _ => {
                    let shard = Arc::new(Shard::default());
                    lock(&self.shards).push(shard.clone());
                    *s = Some((me, shard.clone()));
                    shard
                }
            }
        })
    }

    /// Queues a record; drops it (counted) when this thread's buffer is full.
    pub fn offer(&self, call: Call) {
        let shard = self.shard();
        let mut buf = lock(&shard.buf);
        if buf.len() >= self.capacity {
            drop(buf);
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        buf.push(call);
        drop(buf);
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// Every buffered record, taken out.
    fn collect(&self) -> Vec<Call> {
        let shards: Vec<Arc<Shard>> = lock(&self.shards).clone();
        let mut out = Vec::new();
        for s in shards {
            let mut taken = std::mem::take(&mut *lock(&s.buf));
            if out.is_empty() {
                out = taken;
            } else {
                out.append(&mut taken);
            }
        }
        out
    }

    /// The store (for queries).
    pub fn store(&self) -> &CallStore {
        &self.store
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Records waiting for the writer.
    pub fn queued(&self) -> usize {
        lock(&self.shards).iter().map(|s| lock(&s.buf).len()).sum()
    }
}

/// Unix ms now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn write_loop(log: std::sync::Weak<CallLog>) {
    let mut rollups = Rollups::default();
    let mut tick = tokio::time::interval(COLLECT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_rollup = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let Some(log) = log.upgrade() else {
            return;
        };
        let batch = log.collect();
        if !batch.is_empty() {
            let n = batch.len() as u64;
            match log.store.insert(&batch).await {
                Ok(()) => log.stats.written.fetch_add(n, Ordering::Relaxed),
                Err(e) => {
                    tracing::warn!(error = %e, calls = n, "call log: a batch could not be written");
                    log.stats.failed.fetch_add(n, Ordering::Relaxed)
                }
            };
            for c in &batch {
                rollups.add(c);
            }
        }
        if last_rollup.elapsed() >= ROLLUP_EVERY {
            last_rollup = tokio::time::Instant::now();
            flush(&log.store, &mut rollups).await;
        }
    }
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
