//! One node's lease on one counter: a block of the cluster-wide remaining quota that Redis
//! granted atomically, spent here without a round trip. Pure bookkeeping (no I/O), so the
//! rules are unit-tested; `cluster` does the Redis side.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::{Decision, Period, Usage, Usages};

/// Largest block a node asks for.
pub(crate) const MAX_BLOCK: u64 = 4096;
/// A lease emptied faster than this asks for twice as much next time.
const FAST_MS: u64 = 100;
/// A lease that lasted longer than this asks for half as much next time.
const SLOW_MS: u64 = 1_000;
/// After Redis said "nothing left", refuse locally for at most this long before asking
/// again (the sliding window frees slots as time passes).
pub(crate) const EMPTY_RECHECK_MS: u64 = 50;

/// The window index of each period at `now_ms` (indexed by `Period as usize`).
pub(crate) fn windows(limits: &[(Period, u64)], now_ms: u64) -> [u64; 5] {
    let mut w = [0; 5];
    for &(p, _) in limits {
        w[p as usize] = now_ms / p.millis();
    }
    w
}

/// A refusal that names no remaining quota.
pub(crate) fn refused(limits: &[(Period, u64)], now_ms: u64) -> Decision {
    let mut usage = Usages::default();
    for &(period, limit) in limits {
        let len = period.millis();
        usage.push(Usage {
            period,
            limit,
            remaining: 0,
            reset_ms: len - now_ms % len,
        });
    }
    Decision {
        allowed: false,
        usage,
    }
}

/// The periods of `limits` as a bit set.
pub(crate) fn mask(limits: &[(Period, u64)]) -> u8 {
    limits.iter().fold(0, |m, &(p, _)| m | 1 << (p as u8))
}

/// What a node holds for one counter.
pub(crate) struct Lease {
    /// Window indexes the tokens belong to.
    pub windows: [u64; 5],
    /// Units left to spend locally.
    pub tokens: u64,
    /// Units granted by the last refill.
    pub granted: u64,
    /// Cluster-wide remaining per period right after the last grant (for headers).
    pub remaining: [u64; 5],
    /// When the last grant arrived.
    pub granted_ms: u64,
    /// Last time anything was spent or asked.
    pub last_ms: u64,
    /// Block size the next refill asks for.
    pub want: u64,
    /// Redis had nothing left: refuse without asking until then.
    pub empty_until_ms: u64,
    /// A refill is in flight; others wait on `notify` instead of asking Redis too.
    pub refilling: bool,
    /// Wakes the requests waiting for the refill in flight.
    pub notify: Arc<Notify>,
    /// The periods the tokens count in (bit `Period as usize`), to give them back.
    pub periods: u8,
}

/// The result of trying to spend locally.
pub(crate) enum Spend {
    /// Decided here (allowed from the lease, or refused: Redis said nothing is left).
    Decided(Decision),
    /// The lease cannot decide: ask Redis.
    Refill,
}

impl Lease {
    pub(crate) fn new(now_ms: u64) -> Lease {
        Lease {
            windows: [0; 5],
            tokens: 0,
            granted: 0,
            remaining: [0; 5],
            granted_ms: now_ms,
            last_ms: now_ms,
            want: 1,
            empty_until_ms: 0,
            refilling: false,
            notify: Arc::new(Notify::new()),
            periods: 0,
        }
    }

    /// Tokens that belong to windows that have ended (to give back), emptied from the lease.
    pub(crate) fn take_stale(
        &mut self,
        limits: &[(Period, u64)],
        now_ms: u64,
    ) -> Option<([u64; 5], u64)> {
        let now = windows(limits, now_ms);
        if now == self.windows {
            return None;
        }
        let old = (self.windows, self.tokens);
        self.windows = now;
        self.tokens = 0;
        self.empty_until_ms = 0;
        (old.1 > 0).then_some(old)
    }

    /// Spends `cost` from the lease if it can decide.
    pub(crate) fn spend(&mut self, limits: &[(Period, u64)], cost: u64, now_ms: u64) -> Spend {
        self.last_ms = now_ms;
        if self.windows != windows(limits, now_ms) {
            return Spend::Refill;
        }
        if self.tokens >= cost {
            self.tokens -= cost;
            return Spend::Decided(self.decision(true, limits, now_ms));
        }
        if now_ms < self.empty_until_ms {
            return Spend::Decided(self.decision(false, limits, now_ms));
        }
        Spend::Refill
    }

    /// True when a quarter or less of a sizeable block is left and nothing is being asked:
    /// time to ask for the next block in the background, before requests have to wait.
    pub(crate) fn wants_ahead(&self) -> bool {
        !self.refilling && self.granted >= 8 && self.tokens <= self.granted / 4
    }

    /// The block to ask for: doubled when the last one went fast, halved when it lasted.
    pub(crate) fn next_want(&mut self, cost: u64, now_ms: u64) -> u64 {
        let lasted = now_ms.saturating_sub(self.granted_ms);
        if self.granted > 0 && lasted < FAST_MS {
            self.want = (self.want * 2).min(MAX_BLOCK);
        } else if lasted > SLOW_MS {
            self.want = (self.want / 2).max(1);
        }
        self.want.max(cost)
    }

    /// Records a grant from Redis: `granted` units for the windows of `at_ms`, and what
    /// remained cluster-wide per period before it.
    pub(crate) fn grant(
        &mut self,
        limits: &[(Period, u64)],
        granted: u64,
        remaining: &[u64],
        at_ms: u64,
    ) {
        let w = windows(limits, at_ms);
        if w != self.windows {
            self.windows = w;
            self.tokens = 0;
        }
        self.tokens += granted;
        self.granted = granted;
        self.periods = mask(limits);
        self.granted_ms = at_ms;
        for (&(p, _), &r) in limits.iter().zip(remaining) {
            self.remaining[p as usize] = r.saturating_sub(granted);
        }
        self.empty_until_ms = if granted == 0 {
            at_ms + EMPTY_RECHECK_MS
        } else {
            0
        };
    }

    /// A decision with headers: cluster-wide remaining as of the last grant, less what this
    /// node spent since (other nodes' spending shows at the next grant).
    fn decision(&self, allowed: bool, limits: &[(Period, u64)], now_ms: u64) -> Decision {
        let spent = self.granted.saturating_sub(self.tokens);
        let mut usage = Usages::default();
        for &(period, limit) in limits {
            let len = period.millis();
            let left = if allowed {
                (self.remaining[period as usize] + self.granted).saturating_sub(spent)
            } else {
                0
            };
            usage.push(Usage {
                period,
                limit,
                remaining: left.min(limit),
                reset_ms: len - now_ms % len,
            });
        }
        Decision { allowed, usage }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: [(Period, u64); 1] = [(Period::Minute, 100)];

    #[test]
    fn spends_what_was_granted_then_asks() {
        let mut l = Lease::new(0);
        l.windows = windows(&MIN, 1_000);
        assert!(matches!(l.spend(&MIN, 1, 1_000), Spend::Refill));
        l.grant(&MIN, 3, &[100], 1_000);
        for i in 0..3 {
            match l.spend(&MIN, 1, 1_001) {
                Spend::Decided(d) => {
                    assert!(d.allowed);
                    assert_eq!(d.usage[0].remaining, 100 - 1 - i);
                }
                Spend::Refill => panic!("has tokens"),
            }
        }
        assert!(matches!(l.spend(&MIN, 1, 1_002), Spend::Refill));
    }

    #[test]
    fn nothing_left_refuses_locally_for_a_moment() {
        let mut l = Lease::new(0);
        l.grant(&MIN, 0, &[0], 1_000);
        assert!(matches!(
            l.spend(&MIN, 1, 1_010),
            Spend::Decided(Decision { allowed: false, .. })
        ));
        assert!(matches!(
            l.spend(&MIN, 1, 1_000 + EMPTY_RECHECK_MS),
            Spend::Refill
        ));
    }

    #[test]
    fn a_new_window_makes_old_tokens_stale() {
        let mut l = Lease::new(0);
        l.grant(&MIN, 10, &[100], 1_000);
        assert!(matches!(l.spend(&MIN, 1, 61_000), Spend::Refill));
        assert_eq!(l.take_stale(&MIN, 61_000), Some((windows(&MIN, 1_000), 10)));
        assert_eq!(l.tokens, 0);
        assert_eq!(l.take_stale(&MIN, 61_001), None);
    }

    #[test]
    fn block_size_follows_the_pace() {
        let mut l = Lease::new(0);
        l.grant(&MIN, 1, &[100], 0);
        assert_eq!(l.next_want(1, 10), 2, "emptied fast: double");
        l.grant(&MIN, 2, &[100], 10);
        assert_eq!(l.next_want(1, 20), 4);
        l.grant(&MIN, 4, &[100], 20);
        assert_eq!(l.next_want(1, 5_000), 2, "lasted: halve");
        assert_eq!(l.next_want(7, 5_001), 7, "at least the cost");
        for _ in 0..20 {
            l.grant(&MIN, l.want, &[u64::MAX], 6_000);
            l.next_want(1, 6_001);
        }
        assert_eq!(l.want, MAX_BLOCK);
    }
}
