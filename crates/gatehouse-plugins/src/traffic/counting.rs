//! Where a limit plugin counts — this node's counters or the cluster's through Redis — chosen
//! once per instance from its `policy`, and the counting operations every limit uses.

use std::sync::Arc;

use gatehouse_counters::cluster::ClusterCounters;
use gatehouse_counters::{CounterKey, CounterStore, Decision, LocalCounters, Period};
use gatehouse_proxy::plugin::BuildCtx;
use serde_json::Value;

use super::rate_limiting::Policy;

/// Where a compiled limit counts.
#[derive(Clone)]
pub enum Counters {
    /// This node's counters (kept across reloads that leave the instance's config as it is).
    Local(Arc<LocalCounters>),
    /// The cluster's, in Redis.
    Cluster(Arc<ClusterCounters>),
}

/// Unix milliseconds now (windows are placed by the wall clock, as in Redis).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `policy: redis` on a node without `--redis`: the config check's error.
pub fn check_policy(
    policy: Policy,
    cluster: &Option<Arc<ClusterCounters>>,
    e: &mut Vec<(String, String)>,
) {
    if matches!(policy, Policy::Redis) && cluster.is_none() {
        e.push((
            "policy".into(),
            "`redis` needs the node started with --redis (GATEHOUSE_REDIS); every node of a cluster needs it".into(),
        ));
    }
}

impl Counters {
    /// The counters of the instance being built (`v` its config) for `policy`.
    pub fn of(
        policy: Policy,
        cluster: &Option<Arc<ClusterCounters>>,
        ctx: &BuildCtx,
        v: &Value,
    ) -> Result<Counters, String> {
        match (policy, cluster) {
            (Policy::Redis, Some(c)) => Ok(Counters::Cluster(c.clone())),
            (Policy::Redis, None) => {
                Err("policy: `redis` needs the node started with --redis".into())
            }
            // Same plugin id and config as before a reload: the same counters.
            (Policy::Local, _) => Ok(Counters::Local(ctx.state.get_or_insert(
                ctx.id,
                v,
                LocalCounters::default,
            ))),
        }
    }

    /// Counts `cost` if every limit allows it (asking Redis when the node's lease cannot
    /// decide).
    pub async fn hit(
        &self,
        key: &CounterKey,
        limits: &[(Period, u64)],
        cost: u64,
        now: u64,
    ) -> Decision {
        match self {
            Counters::Local(l) => l.hit_n(key, limits, cost, now),
            Counters::Cluster(c) => match c.try_hit(key, limits, cost, now) {
                Some(d) => d,
                None => c.hit(key, limits, cost, now).await,
            },
        }
    }

    /// Takes back `amount` counted at `at` (a reservation settled below its worst case).
    pub async fn refund(&self, key: &CounterKey, limits: &[(Period, u64)], amount: u64, at: u64) {
        match self {
            Counters::Local(l) => l.refund(key, limits, amount, at),
            Counters::Cluster(c) => c.refund(key, limits, amount, at).await,
        }
    }

    /// Counts `amount` whatever the limits say (a call that used more than it reserved:
    /// it happened, so it counts).
    pub async fn charge(&self, key: &CounterKey, limits: &[(Period, u64)], amount: u64) {
        let unlimited: Vec<(Period, u64)> =
            limits.iter().map(|&(p, _)| (p, u64::MAX / 4)).collect();
        self.hit(key, &unlimited, amount, now_ms()).await;
    }
}
