//! Limit counters: what every limit of the gateway (rate limits now; quotas, AI token
//! limits and budgets later) counts with.
//!
//! - [`LocalCounters`]: in this process. Per key, the current and previous fixed window of
//!   each period, decided with a sliding-window estimate under one lock per key shard: with
//!   a limit of N, N requests pass, however many arrive at once on however many workers.
//! - [`cluster::ClusterCounters`]: the same decisions across every node of a cluster, exact,
//!   through Redis — nodes lease blocks of the remaining quota atomically and spend them
//!   locally (see `cluster` for the algorithm and its bounds). While Redis is down each node
//!   falls back to local counting at limit / live nodes.

pub mod cluster;
mod lease;
mod local;
mod redis_conn;

pub use local::{LocalCounters, Saved};

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
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct CounterKey {
    /// The route the limit applies on.
    pub route: uuid::Uuid,
    /// Who or what is counted.
    pub by: KeyPart,
}

/// The identity part of a [`CounterKey`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
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
    /// Any other name (an AI model, a consumer and model pair).
    Name(String),
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
            KeyPart::Name(n) => write!(f, "{}|name:{n}", self.route),
        }
    }
}

/// Where counters live.
pub trait CounterStore: Send + Sync {
    /// Counts `cost` units for `key` if every limit allows them all.
    fn hit_n(&self, key: &CounterKey, limits: &[(Period, u64)], cost: u64, now_ms: u64)
        -> Decision;
    /// Counts a request for `key` if every limit allows it.
    fn hit(&self, key: &CounterKey, limits: &[(Period, u64)], now_ms: u64) -> Decision {
        self.hit_n(key, limits, 1, now_ms)
    }
}
