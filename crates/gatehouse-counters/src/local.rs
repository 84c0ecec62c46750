//! Counters in this process (see the crate docs).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::{CounterKey, CounterStore, Decision, Period, Usage, Usages};

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

/// One key's counts, for keeping them across restarts (budgets).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Saved {
    /// The key.
    pub key: CounterKey,
    /// Per period (`Period as usize`): window index, count in it, count in the one before.
    pub windows: [(u64, u64, u64); 5],
    /// Last use (Unix ms).
    pub last_ms: u64,
}

impl LocalCounters {
    /// Every key's counts.
    pub fn export(&self) -> Vec<Saved> {
        let mut out = Vec::new();
        for s in &self.shards {
            let shard = s.lock().unwrap_or_else(PoisonError::into_inner);
            out.extend(shard.iter().map(|(k, e)| Saved {
                key: k.clone(),
                windows: e.windows.map(|w| (w.index, w.current, w.previous)),
                last_ms: e.last_ms,
            }));
        }
        out
    }

    /// Puts saved counts back (a key counted since is left as it is).
    pub fn import(&self, saved: Vec<Saved>) {
        for s in saved {
            let mut shard = self.shards[shard_of(&s.key)]
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            shard.entry(s.key).or_insert_with(|| Entry {
                windows: s.windows.map(|(index, current, previous)| Window {
                    index,
                    current,
                    previous,
                }),
                last_ms: s.last_ms,
            });
        }
    }

    /// Takes back `amount` units counted at `at_ms` (a reservation settled below its worst
    /// case). Units of a window that has ended stay counted: that window is history.
    pub fn refund(&self, key: &CounterKey, limits: &[(Period, u64)], amount: u64, at_ms: u64) {
        let mut shard = self.shards[shard_of(key)]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = shard.get_mut(key) else {
            return;
        };
        for &(period, _) in limits {
            let w = &mut entry.windows[period as usize];
            if w.index == at_ms / period.millis() {
                w.current = w.current.saturating_sub(amount);
            }
        }
    }
}

impl CounterStore for LocalCounters {
    fn hit_n(
        &self,
        key: &CounterKey,
        limits: &[(Period, u64)],
        cost: u64,
        now_ms: u64,
    ) -> Decision {
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
            return decide(entry, limits, cost, now_ms);
        }
        decide(shard.entry(key.clone()).or_default(), limits, cost, now_ms)
    }
}

/// Counts `cost` against one key's windows if every limit allows all of it.
fn decide(entry: &mut Entry, limits: &[(Period, u64)], cost: u64, now_ms: u64) -> Decision {
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
        if used.saturating_add(cost) > limit {
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
            entry.windows[period as usize].current += cost;
        }
        // This request took `cost` of what remained.
        for u in usage.iter_mut() {
            u.remaining = u.remaining.saturating_sub(cost);
        }
    }
    Decision { allowed, usage }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyPart;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    fn k(s: &str) -> CounterKey {
        CounterKey {
            route: uuid::Uuid::nil(),
            by: KeyPart::Header(s.to_string()),
        }
    }

    #[test]
    fn counts_survive_export_and_import() {
        let a = LocalCounters::default();
        let lim = [(Period::Day, 100)];
        assert!(a.hit_n(&k("x"), &lim, 70, 5_000).allowed);
        let b = LocalCounters::default();
        b.import(a.export());
        assert!(!b.hit_n(&k("x"), &lim, 31, 6_000).allowed);
        assert!(b.hit_n(&k("x"), &lim, 30, 6_000).allowed);
    }

    #[test]
    fn refund_returns_units_within_the_window_only() {
        let c = LocalCounters::default();
        let lim = [(Period::Minute, 100)];
        assert!(c.hit_n(&k("r"), &lim, 90, 1_000).allowed);
        assert!(!c.hit_n(&k("r"), &lim, 20, 1_001).allowed);
        c.refund(&k("r"), &lim, 60, 1_000);
        assert!(
            c.hit_n(&k("r"), &lim, 70, 1_002).allowed,
            "90 - 60 + 70 = 100"
        );
        assert!(!c.hit_n(&k("r"), &lim, 1, 1_003).allowed);
        // A refund for another window changes nothing in this one.
        c.refund(&k("r"), &lim, 50, 61_000);
        assert!(!c.hit_n(&k("r"), &lim, 1, 1_005).allowed);
        assert!(!c.hit_n(&k("r"), &lim, 1, 1_004).allowed);
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
