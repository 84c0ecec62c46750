//! Rate-limit counters behind a trait, so a cluster-wide store (Redis) can replace the local
//! one without touching the plugin. The local store keeps, per key, the current and previous
//! fixed window of each period and decides with a sliding-window estimate. A decision and
//! its increments happen under one lock per key shard: with a limit of N, N requests pass,
//! however many arrive at once on however many workers.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// A rate-limit period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// 1 s.
    Second,
    /// 60 s.
    Minute,
    /// 3,600 s.
    Hour,
    /// 86,400 s.
    Day,
    /// 30 days.
    Month,
}

impl Period {
    /// All periods, shortest first.
    pub const ALL: [Period; 5] = [
        Period::Second,
        Period::Minute,
        Period::Hour,
        Period::Day,
        Period::Month,
    ];

    /// Length in milliseconds.
    pub fn millis(self) -> u64 {
        match self {
            Period::Second => 1_000,
            Period::Minute => 60_000,
            Period::Hour => 3_600_000,
            Period::Day => 86_400_000,
            Period::Month => 30 * 86_400_000,
        }
    }

    /// Name used in headers (`X-RateLimit-Limit-Minute`).
    pub fn name(self) -> &'static str {
        match self {
            Period::Second => "Second",
            Period::Minute => "Minute",
            Period::Hour => "Hour",
            Period::Day => "Day",
            Period::Month => "Month",
        }
    }
}

/// The outcome for one period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// The period.
    pub period: Period,
    /// Its limit.
    pub limit: u64,
    /// Requests left after this one (0 when refused).
    pub remaining: u64,
    /// Milliseconds until the current window ends.
    pub reset_ms: u64,
}

impl Default for Usage {
    fn default() -> Self {
        Usage {
            period: Period::Second,
            limit: 0,
            remaining: 0,
            reset_ms: 0,
        }
    }
}

/// The usages of one decision, kept inline (at most one per period): a decision is made
/// for every request and should not allocate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usages {
    items: [Usage; 5],
    len: u8,
}

impl Usages {
    /// Adds the outcome of the next period (at most one per period; extras are ignored).
    pub fn push(&mut self, u: Usage) {
        if let Some(slot) = self.items.get_mut(usize::from(self.len)) {
            *slot = u;
            self.len += 1;
        }
    }
}

impl std::ops::Deref for Usages {
    type Target = [Usage];
    fn deref(&self) -> &[Usage] {
        &self.items[..usize::from(self.len)]
    }
}

impl std::ops::DerefMut for Usages {
    fn deref_mut(&mut self) -> &mut [Usage] {
        &mut self.items[..usize::from(self.len)]
    }
}

/// A decision over all configured periods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// True when the request may pass (and was counted).
    pub allowed: bool,
    /// Per period, in the order given.
    pub usage: Usages,
}

/// What one counter counts: a route and the identity requests are grouped by. Built without
/// allocating for the common cases; a shared store (Redis) uses its `Display` form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CounterKey {
    /// The route the limit applies on.
    pub route: uuid::Uuid,
    /// Who or what is counted.
    pub by: KeyPart,
}

/// The identity part of a [`CounterKey`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyPart {
    /// A consumer id.
    Consumer(uuid::Uuid),
    /// A credential identifier.
    Credential(std::sync::Arc<str>),
    /// A client address.
    Ip(std::net::IpAddr),
    /// A header value.
    Header(String),
    /// A request path.
    Path(String),
    /// A service id.
    Service(uuid::Uuid),
    /// A route id.
    Route(uuid::Uuid),
}

impl std::fmt::Display for CounterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.by {
            KeyPart::Consumer(c) => write!(f, "{}|consumer:{c}", self.route),
            KeyPart::Credential(c) => write!(f, "{}|credential:{c}", self.route),
            KeyPart::Ip(ip) => write!(f, "{}|ip:{ip}", self.route),
            KeyPart::Header(h) => write!(f, "{}|header:{h}", self.route),
            KeyPart::Path(p) => write!(f, "{}|path:{p}", self.route),
            KeyPart::Service(s) => write!(f, "{}|service:{s}", self.route),
            KeyPart::Route(r) => write!(f, "{}|route:{r}", self.route),
        }
    }
}

/// Where counters live.
pub trait CounterStore: Send + Sync {
    /// Counts a request for `key` if every limit allows it.
    fn hit(&self, key: &CounterKey, limits: &[(Period, u64)], now_ms: u64) -> Decision;
}

#[derive(Default, Clone, Copy)]
struct Window {
    index: u64,
    current: u64,
    previous: u64,
}

impl Window {
    fn roll(&mut self, index: u64) {
        if index != self.index {
            self.previous = if index == self.index + 1 {
                self.current
            } else {
                0
            };
            self.current = 0;
            self.index = index;
        }
    }
}

#[derive(Default)]
struct Entry {
    windows: [Window; 5],
    last_ms: u64,
}

const SHARDS: usize = 32;

/// Counters in this process, shared by all workers.
pub struct LocalCounters {
    // Keys can come from request data (header, path, IP), so the hasher is seeded per map.
    shards: Vec<Mutex<HashMap<CounterKey, Entry, foldhash::quality::RandomState>>>,
}

impl Default for LocalCounters {
    fn default() -> Self {
        LocalCounters {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
        }
    }
}

fn shard_of(key: &CounterKey) -> usize {
    use std::hash::BuildHasher;
    (foldhash::fast::FixedState::with_seed(7).hash_one(key) as usize) % SHARDS
}

impl LocalCounters {
    /// Number of keys tracked (for tests).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    /// True when no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl CounterStore for LocalCounters {
    fn hit(&self, key: &CounterKey, limits: &[(Period, u64)], now_ms: u64) -> Decision {
        let mut shard = self.shards[shard_of(key)]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Forget keys idle for longer than the longest period (bounded memory).
        if shard.len() > 4096 && now_ms.is_multiple_of(64) {
            let horizon = limits.iter().map(|(p, _)| p.millis()).max().unwrap_or(0) * 2;
            shard.retain(|_, e| now_ms.saturating_sub(e.last_ms) < horizon);
        }
        // Looked up first, so a hit allocates no key; inserted once on a miss.
        if let Some(entry) = shard.get_mut(key) {
            return decide(entry, limits, now_ms);
        }
        decide(shard.entry(key.clone()).or_default(), limits, now_ms)
    }
}

/// Counts a request against one key's windows if every limit allows it.
fn decide(entry: &mut Entry, limits: &[(Period, u64)], now_ms: u64) -> Decision {
    entry.last_ms = now_ms;
    let mut usage = Usages::default();
    let mut allowed = true;
    for &(period, limit) in limits {
        let len = period.millis();
        let w = &mut entry.windows[period as usize];
        w.roll(now_ms / len);
        let into = now_ms % len;
        // Sliding estimate: the previous window's count weighted by how much of it still
        // overlaps the last `len` milliseconds, plus this window's count. In u64 unless the
        // product overflows (128-bit division is a library call).
        let left = len - into;
        let carried = match w.previous.checked_mul(left) {
            Some(p) => p / len,
            None => (u128::from(w.previous) * u128::from(left) / u128::from(len)) as u64,
        };
        let used = carried + w.current;
        if used >= limit {
            allowed = false;
        }
        usage.push(Usage {
            period,
            limit,
            remaining: limit.saturating_sub(used),
            reset_ms: left,
        });
    }
    if allowed {
        for &(period, _) in limits {
            entry.windows[period as usize].current += 1;
        }
        // This request took one of what remained.
        for u in usage.iter_mut() {
            u.remaining = u.remaining.saturating_sub(1);
        }
    }
    Decision { allowed, usage }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    fn k(s: &str) -> CounterKey {
        CounterKey {
            route: uuid::Uuid::nil(),
            by: KeyPart::Header(s.to_string()),
        }
    }

    /// Property: for any number of threads, requests per thread and limit, exactly
    /// min(limit, requests) pass. 40 random cases plus fixed edge cases.
    #[test]
    fn exactly_n_pass_under_concurrency() {
        use rand::Rng;
        let mut rng = rand::thread_rng();
        let mut cases = vec![
            (8usize, 50usize, 100u64),
            (4, 10, 7),
            (16, 40, 333),
            (1, 1, 1),
            (3, 5, 15),
        ];
        for _ in 0..40 {
            cases.push((
                rng.gen_range(1..=12),
                rng.gen_range(1..=80),
                rng.gen_range(1..=600),
            ));
        }
        for (threads, per_thread, limit) in cases {
            let c = Arc::new(LocalCounters::default());
            let passed = Arc::new(AtomicU64::new(0));
            let hs: Vec<_> = (0..threads)
                .map(|_| {
                    let (c, passed) = (c.clone(), passed.clone());
                    std::thread::spawn(move || {
                        for _ in 0..per_thread {
                            if c.hit(&k("k"), &[(Period::Minute, limit)], 1_000).allowed {
                                passed.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
            assert_eq!(
                passed.load(Ordering::SeqCst),
                limit.min((threads * per_thread) as u64)
            );
        }
    }

    #[test]
    fn sliding_window_carries_the_previous_window() {
        let c = LocalCounters::default();
        let lim = [(Period::Second, 10)];
        for _ in 0..10 {
            assert!(c.hit(&k("k"), &lim, 500).allowed);
        }
        assert!(!c.hit(&k("k"), &lim, 900).allowed);
        // 1.25 s: 75% of the previous window still counts (7.5 → 7), so 3 more pass.
        let passed = (0..10)
            .filter(|_| c.hit(&k("k"), &lim, 1_250).allowed)
            .count();
        assert_eq!(passed, 3);
        // Two windows later everything is forgotten.
        assert!(c.hit(&k("k"), &lim, 3_100).allowed);
    }

    #[test]
    fn every_limit_must_allow_and_keys_are_separate() {
        let c = LocalCounters::default();
        let lim = [(Period::Second, 5), (Period::Minute, 6)];
        for _ in 0..5 {
            assert!(c.hit(&k("a"), &lim, 100).allowed);
        }
        let d = c.hit(&k("a"), &lim, 200);
        assert!(!d.allowed);
        assert_eq!(d.usage[0].remaining, 0);
        assert!(
            c.hit(&k("a"), &lim, 1_100).allowed,
            "new second, minute still has room"
        );
        assert!(!c.hit(&k("a"), &lim, 2_100).allowed, "minute limit reached");
        assert!(c.hit(&k("b"), &lim, 2_100).allowed);
    }
}
