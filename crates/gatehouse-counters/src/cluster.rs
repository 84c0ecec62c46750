//! Exact limits across a cluster, at the cost of a Redis round trip per *block* of requests
//! rather than per request.
//!
//! # Algorithm
//! Redis holds, per counter and period, the count of the current and the previous fixed
//! window (`{prefix:counter}:<period>:<window index>`, both keys of a counter in one hash
//! slot). A node that has no tokens for a counter runs the lease script, which atomically:
//! 1. computes for every period the sliding-window estimate the local counters use
//!    (`previous × (time left in the window / window) + current`) and what remains of the
//!    limit: `remaining = limit − estimate`;
//! 2. grants `g = min(want, ⌈remaining_p / (2 × live nodes)⌉ for every period p)` — never
//!    more than remains, and never more than a share of it;
//! 3. adds `g` to the current window of every period.
//!
//! The node then spends its `g` tokens locally, without Redis. `want` doubles when a block
//! was spent in under 100 ms and halves when it lasted over a second (1 … 4,096), so a
//! busy counter costs one round trip per few thousand requests, and a quiet one ties up
//! little quota.
//!
//! # Bounds
//! - **Never more than N.** Every unit a node spends was granted by the script, and the
//!   script grants only what remains; grants are atomic in Redis. The sliding estimate only
//!   loosens as time passes within a window, so a grant stays within the limit until spent.
//! - **Not much less than N.** As the remaining quota shrinks, so do the grants (a share of
//!   what remains), down to one unit: near the limit each node holds at most a few units.
//!   Units a node leased but does not spend are given back (`DECRBY`) when the lease has been
//!   idle for a second or its window ended, so a node that stops receiving traffic does not
//!   strand quota. A refusal is decided locally for at most 50 ms after Redis said nothing
//!   is left (then Redis is asked again). What can be lost: the units held by a node that
//!   dies before giving them back (at most one block each).
//! - **Clocks**: window indexes come from each node's clock; skew between nodes shifts which
//!   window a request counts in, never the per-window bound.
//!
//! # Redis down
//! A command that fails or takes longer than 250 ms puts the node in degraded mode: it
//! counts locally with each limit divided by the number of live nodes (from the node
//! registry), logs it, shows it in `/status` and sets `gatehouse_counter_store_degraded`.
//! A probe every second brings it back to exact counting when Redis answers again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::Script;
use serde::Serialize;

use crate::lease::{Lease, Spend};
use crate::redis_conn::{self, Conn, Target, UrlError};
use crate::{CounterKey, CounterStore, Decision, LocalCounters, Period};

const SHARDS: usize = 32;
/// A lease idle this long gives its tokens back.
const IDLE_GIVE_BACK_MS: u64 = 1_000;
/// A lease entry idle this long is forgotten.
const FORGET_MS: u64 = 60_000;
/// Rounds a request may lose to others spending the node's block before it is refused.
const MAX_ROUNDS: usize = 16;

/// Grants a block: see the module docs. KEYS: per period, current then previous window.
/// ARGV: now (ms), want, divisor, then per period its length (ms) and limit.
/// Returns the grant, then the remaining quota of every period before the grant.
const LEASE_LUA: &str = r"
local now = tonumber(ARGV[1])
local grant = tonumber(ARGV[2])
local div = tonumber(ARGV[3])
local n = #KEYS / 2
local out = {0}
for i = 1, n do
  local len = tonumber(ARGV[2 + 2 * i])
  local limit = tonumber(ARGV[3 + 2 * i])
  local cur = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
  local prev = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
  local left = len - (now % len)
  local rem = limit - (math.floor(prev * left / len) + cur)
  if rem < 0 then rem = 0 end
  out[i + 1] = rem
  local share = math.ceil(rem / div)
  if share < grant then grant = share end
end
if grant > 0 then
  for i = 1, n do
    redis.call('INCRBY', KEYS[2 * i - 1], grant)
    redis.call('PEXPIRE', KEYS[2 * i - 1], 2 * tonumber(ARGV[2 + 2 * i]) + 1000)
  end
end
out[1] = grant
return out
";

/// Gives unspent units back. KEYS: the windows they were granted in; ARGV: the amount.
const GIVE_BACK_LUA: &str = r"
local amount = tonumber(ARGV[1])
for i = 1, #KEYS do
  local v = tonumber(redis.call('GET', KEYS[i]) or '0')
  local d = amount
  if d > v then d = v end
  if d > 0 then redis.call('DECRBY', KEYS[i], d) end
end
return 0
";

/// What `/status` shows of the counter store.
#[derive(Debug, Clone, Serialize)]
pub struct CounterStatus {
    /// `redis`.
    pub backend: &'static str,
    /// The URL, password hidden.
    pub url: String,
    /// True while counting locally because Redis is unreachable.
    pub degraded: bool,
    /// Why, while degraded.
    pub reason: Option<String>,
    /// Unix seconds the current outage began.
    pub since: Option<i64>,
    /// Live nodes a limit is divided by while degraded.
    pub live_nodes: usize,
    /// Lease round trips so far (one per block, not per request).
    pub leases: u64,
}

#[derive(Default)]
struct Outage {
    reason: Option<String>,
    since: Option<i64>,
}

type Shard = Mutex<HashMap<CounterKey, Lease, foldhash::quality::RandomState>>;

/// Counters shared by every node through Redis (see the module docs).
pub struct ClusterCounters {
    target: Target,
    ca_pem: Option<Vec<u8>>,
    url: String,
    prefix: String,
    conn: Mutex<Option<Conn>>,
    shards: Vec<Shard>,
    local: LocalCounters,
    degraded: AtomicBool,
    outage: Mutex<Outage>,
    live_nodes: AtomicUsize,
    leases: AtomicU64,
    lease_script: Script,
    give_back_script: Script,
    /// The runtime background refills run on (the one `connect` ran on).
    rt: tokio::runtime::Handle,
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn period_code(p: Period) -> char {
    match p {
        Period::Second => 's',
        Period::Minute => 'm',
        Period::Hour => 'h',
        Period::Day => 'd',
        Period::Month => 'M',
    }
}

enum Step {
    Done(Decision),
    Wait(Arc<tokio::sync::Notify>),
    Lead {
        want: u64,
        stale: Option<([u64; 5], u64)>,
    },
}

impl ClusterCounters {
    /// Counters in the Redis at `url`, keys under `prefix`; `ca_pem` verifies a TLS Redis
    /// with a private CA. Connects now; if Redis does not answer, starts degraded (local
    /// counting) and keeps trying (see [`Self::spawn_upkeep`]).
    pub async fn connect(
        url: &str,
        prefix: &str,
        ca_pem: Option<Vec<u8>>,
    ) -> Result<Arc<ClusterCounters>, UrlError> {
        let target = Target::parse(url)?;
        let me = Arc::new(ClusterCounters {
            target,
            ca_pem,
            url: redis_conn::redacted(url),
            prefix: prefix.to_string(),
            conn: Mutex::new(None),
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
            local: LocalCounters::default(),
            degraded: AtomicBool::new(false),
            outage: Mutex::new(Outage::default()),
            live_nodes: AtomicUsize::new(1),
            leases: AtomicU64::new(0),
            lease_script: Script::new(LEASE_LUA),
            give_back_script: Script::new(GIVE_BACK_LUA),
            rt: tokio::runtime::Handle::current(),
        });
        if let Err(e) = me.reconnect().await {
            me.enter_degraded(&e.to_string());
        } else {
            tracing::info!(redis = %me.url, "shared counters in redis");
        }
        Ok(me)
    }

    async fn reconnect(&self) -> Result<(), redis::RedisError> {
        let mut c = redis_conn::connect(&self.target, self.ca_pem.as_deref()).await?;
        c.ping().await?;
        *self.conn.lock().unwrap_or_else(PoisonError::into_inner) = Some(c);
        Ok(())
    }

    /// The number of live nodes (from the registry); limits are divided by it while degraded.
    pub fn set_live_nodes(&self, n: usize) {
        self.live_nodes.store(n.max(1), Ordering::Relaxed);
    }

    /// True while counting locally because Redis is unreachable.
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// For `/status`.
    pub fn status(&self) -> CounterStatus {
        let o = self.outage.lock().unwrap_or_else(PoisonError::into_inner);
        CounterStatus {
            backend: "redis",
            url: self.url.clone(),
            degraded: self.is_degraded(),
            reason: o.reason.clone(),
            since: o.since,
            live_nodes: self.live_nodes.load(Ordering::Relaxed),
            leases: self.leases.load(Ordering::Relaxed),
        }
    }

    fn enter_degraded(&self, why: &str) {
        let mut o = self.outage.lock().unwrap_or_else(PoisonError::into_inner);
        if !self.degraded.swap(true, Ordering::AcqRel) {
            tracing::error!(redis = %self.url, error = %why, live_nodes = self.live_nodes.load(Ordering::Relaxed),
                "redis unreachable: limits degrade to local counting at limit / live nodes");
            o.since = Some(unix_now());
        }
        o.reason = Some(why.to_string());
    }

    fn leave_degraded(&self) {
        // Leases from before the outage are worthless: their windows may be over and Redis
        // may have lost them.
        for s in &self.shards {
            s.lock().unwrap_or_else(PoisonError::into_inner).clear();
        }
        *self.outage.lock().unwrap_or_else(PoisonError::into_inner) = Outage::default();
        if self.degraded.swap(false, Ordering::AcqRel) {
            tracing::info!(redis = %self.url, "redis reachable again: exact cluster-wide counting resumed");
        }
    }

    fn shard(&self, key: &CounterKey) -> &Shard {
        use std::hash::BuildHasher;
        let h = foldhash::fast::FixedState::with_seed(11).hash_one(key) as usize;
        &self.shards[h % SHARDS]
    }

    /// Counts locally at limit / live nodes (the degraded mode).
    fn local_hit(
        &self,
        key: &CounterKey,
        limits: &[(Period, u64)],
        cost: u64,
        now: u64,
    ) -> Decision {
        let n = self.live_nodes.load(Ordering::Relaxed).max(1) as u64;
        let mut scaled = [(Period::Second, 0u64); 5];
        for (slot, &(p, l)) in scaled.iter_mut().zip(limits) {
            *slot = (p, l.div_ceil(n));
        }
        self.local
            .hit_n(key, &scaled[..limits.len().min(5)], cost, now)
    }

    /// Decides without waiting when the node's lease can (or while degraded); `None` means
    /// Redis must be asked: call [`Self::hit`].
    ///
    /// When the lease runs low (a quarter of its block left), the next block is asked for
    /// in the background, so busy counters rarely make a request wait for Redis.
    pub fn try_hit(
        self: &Arc<Self>,
        key: &CounterKey,
        limits: &[(Period, u64)],
        cost: u64,
        now: u64,
    ) -> Option<Decision> {
        if self.is_degraded() {
            return Some(self.local_hit(key, limits, cost, now));
        }
        let mut shard = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let lease = shard.get_mut(key)?;
        let d = match lease.spend(limits, cost, now) {
            Spend::Decided(d) => d,
            Spend::Refill => return None,
        };
        if d.allowed && lease.wants_ahead() {
            lease.refilling = true;
            let want = lease.next_want(cost, now);
            drop(shard);
            let (me, key, limits) = (self.clone(), key.clone(), limits.to_vec());
            self.rt.spawn(async move {
                let r = me.lease(&key, &limits, want, now).await;
                me.finish_refill(&key, &limits, r, now);
            });
        }
        Some(d)
    }

    /// Records a refill's outcome and wakes the requests waiting for it.
    fn finish_refill(
        &self,
        key: &CounterKey,
        limits: &[(Period, u64)],
        r: Result<(u64, Vec<u64>), redis::RedisError>,
        now: u64,
    ) {
        let mut shard = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(lease) = shard.get_mut(key) {
            lease.refilling = false;
            if let Ok((granted, remaining)) = &r {
                lease.grant(limits, *granted, remaining, now);
            }
            lease.notify.notify_waiters();
        }
        drop(shard);
        if let Err(e) = r {
            self.enter_degraded(&e.to_string());
        }
    }

    /// Decides, asking Redis for a block when the lease is empty. One request per node and
    /// counter asks at a time; the others wait for its answer.
    ///
    /// Every round either spends, waits for the refill in flight, or leads one (a round trip
    /// that grants at least one unit or says none is left), so a request gets its turn; one
    /// that loses [`MAX_ROUNDS`] races in a row under extreme contention is refused — never
    /// passed uncounted.
    pub async fn hit(
        &self,
        key: &CounterKey,
        limits: &[(Period, u64)],
        cost: u64,
        now: u64,
    ) -> Decision {
        for _ in 0..MAX_ROUNDS {
            if self.is_degraded() {
                return self.local_hit(key, limits, cost, now);
            }
            let step = {
                let mut shard = self
                    .shard(key)
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let lease = shard.entry(key.clone()).or_insert_with(|| Lease::new(now));
                match lease.spend(limits, cost, now) {
                    Spend::Decided(d) => Step::Done(d),
                    Spend::Refill if lease.refilling => Step::Wait(lease.notify.clone()),
                    Spend::Refill => {
                        lease.refilling = true;
                        let stale = lease.take_stale(limits, now);
                        Step::Lead {
                            want: lease.next_want(cost, now),
                            stale,
                        }
                    }
                }
            };
            match step {
                Step::Done(d) => return d,
                Step::Wait(n) => {
                    let woken = n.notified();
                    tokio::pin!(woken);
                    // Registered before re-checking, so a wake-up between the two is kept.
                    woken.as_mut().enable();
                    let in_flight = self
                        .shard(key)
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get(key)
                        .is_some_and(|l| l.refilling);
                    if in_flight {
                        let _ = tokio::time::timeout(redis_conn::TIMEOUT * 2, woken).await;
                    }
                }
                Step::Lead { want, stale } => {
                    if let Some((windows, units)) = stale {
                        self.give_back(key, crate::lease::mask(limits), windows, units)
                            .await;
                    }
                    let r = self.lease(key, limits, want, now).await;
                    self.finish_refill(key, limits, r, now);
                }
            }
        }
        crate::lease::refused(limits, now)
    }

    /// Takes back `amount` units spent at `at_ms` (a reservation settled below its worst
    /// case): into the node's lease while its window lasts (spent again without a round
    /// trip, given back to Redis when idle), else straight back to Redis's window if it has
    /// not ended. Units of an ended window stay counted.
    pub async fn refund(
        &self,
        key: &CounterKey,
        limits: &[(Period, u64)],
        amount: u64,
        at_ms: u64,
    ) {
        if amount == 0 {
            return;
        }
        if self.is_degraded() {
            let n = self.live_nodes.load(Ordering::Relaxed).max(1) as u64;
            let mut scaled = [(Period::Second, 0u64); 5];
            for (slot, &(p, l)) in scaled.iter_mut().zip(limits) {
                *slot = (p, l.div_ceil(n));
            }
            self.local
                .refund(key, &scaled[..limits.len().min(5)], amount, at_ms);
            return;
        }
        let at = crate::lease::windows(limits, at_ms);
        let now = now_ms();
        if at != crate::lease::windows(limits, now) {
            return;
        }
        {
            let mut shard = self
                .shard(key)
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(lease) = shard.get_mut(key).filter(|l| l.windows == at) {
                lease.tokens += amount;
                lease.last_ms = now;
                return;
            }
        }
        self.give_back(key, crate::lease::mask(limits), at, amount)
            .await;
    }

    fn window_key(&self, key: &CounterKey, p: Period, index: u64) -> String {
        format!("{{{}:{key}}}:{}:{index}", self.prefix, period_code(p))
    }

    fn conn(&self) -> Result<Conn, redis::RedisError> {
        self.conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| {
                redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    "not connected to redis",
                ))
            })
    }

    /// Runs the lease script: `(granted, remaining per period before the grant)`.
    async fn lease(
        &self,
        key: &CounterKey,
        limits: &[(Period, u64)],
        want: u64,
        now: u64,
    ) -> Result<(u64, Vec<u64>), redis::RedisError> {
        let mut keys = Vec::with_capacity(limits.len() * 2);
        let mut args = vec![
            now,
            want,
            2 * self.live_nodes.load(Ordering::Relaxed).max(1) as u64,
        ];
        for &(p, limit) in limits {
            let index = now / p.millis();
            keys.push(self.window_key(key, p, index));
            keys.push(self.window_key(key, p, index.saturating_sub(1)));
            args.push(p.millis());
            args.push(limit);
        }
        let out = self.conn()?.run(&self.lease_script, &keys, &args).await?;
        self.leases.fetch_add(1, Ordering::Relaxed);
        let granted = out.first().copied().unwrap_or(0).max(0) as u64;
        let remaining = out.iter().skip(1).map(|&r| r.max(0) as u64).collect();
        Ok((granted, remaining))
    }

    /// Returns unspent units to the windows they were granted in (best effort: if Redis is
    /// down they stay counted, which errs on the safe side).
    async fn give_back(&self, key: &CounterKey, periods: u8, windows: [u64; 5], units: u64) {
        let keys: Vec<String> = Period::ALL
            .into_iter()
            .filter(|&p| periods & (1 << (p as u8)) != 0)
            .map(|p| self.window_key(key, p, windows[p as usize]))
            .collect();
        if let Ok(mut c) = self.conn() {
            if let Err(e) = c.run(&self.give_back_script, &keys, &[units]).await {
                tracing::debug!(error = %e, "giving back leased units failed");
            }
        }
    }

    /// Background work: every 500 ms, give back the units of idle leases and forget old
    /// ones; every second while degraded, try Redis again.
    pub fn spawn_upkeep(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = 0u64;
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                tick += 1;
                let Some(s) = me.upgrade() else { break };
                if s.is_degraded() {
                    if tick.is_multiple_of(2) {
                        match s.reconnect().await {
                            Ok(()) => s.leave_degraded(),
                            Err(e) => s.enter_degraded(&e.to_string()),
                        }
                    }
                    continue;
                }
                s.reap().await;
            }
        });
    }

    async fn reap(&self) {
        let now = now_ms();
        let mut back = Vec::new();
        for s in &self.shards {
            let mut shard = s.lock().unwrap_or_else(PoisonError::into_inner);
            shard.retain(|k, l| {
                if l.refilling {
                    return true;
                }
                let idle = now.saturating_sub(l.last_ms);
                if idle >= IDLE_GIVE_BACK_MS && l.tokens > 0 {
                    back.push((k.clone(), l.periods, l.windows, l.tokens));
                    l.tokens = 0;
                }
                idle < FORGET_MS
            });
        }
        for (k, periods, windows, units) in back {
            self.give_back(&k, periods, windows, units).await;
        }
    }
}
