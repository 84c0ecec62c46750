//! `ai-rate-limiting` (tokens and requests per second/minute/hour/day) and `ai-budget`
//! (US dollars per day/month), by consumer, route, model or client address.
//!
//! Both reserve the call's worst case before it is made — for tokens, the prompt estimate
//! plus `max_tokens`; for money, that at the target's dearest prices — and settle to the
//! real usage after it: the unused part goes back to the counter. A call whose worst case
//! does not fit is refused before the provider is called, so 50 concurrent calls against a
//! nearly spent budget cannot push it over: each holds its worst case while it runs.
//! Counters are the gateway's (`policy: local`, or `redis` for exact limits across a
//! cluster); money is counted in micro-dollars.

use std::sync::Arc;

use gatehouse_ai::Usage;
use gatehouse_counters::cluster::ClusterCounters;
use gatehouse_counters::{CounterKey, Decision, KeyPart, Period};
use gatehouse_proxy::plugin::{BuildCtx, Factory, Flow, Plugin, RequestCtx};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{add_limit, AiLimit, BoxFuture, Estimate, Refusal, Reservation};
use crate::config;
use crate::traffic::counting::{check_policy, now_ms, Counters};
use crate::traffic::rate_limiting::Policy;

/// Who a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum AiLimitBy {
    /// The authenticated consumer (the client address when there is none).
    #[default]
    Consumer,
    /// The route (everyone together).
    Route,
    /// The public model (everyone together, per model).
    Model,
    /// The client address.
    Ip,
}

fn counter_key(plugin: Uuid, by: AiLimitBy, ctx: &RequestCtx, model: Option<&str>) -> CounterKey {
    let ip = KeyPart::Ip(ctx.client_ip);
    let by = match by {
        AiLimitBy::Consumer => ctx
            .consumer
            .as_ref()
            .map_or(ip, |c| KeyPart::Consumer(c.id)),
        AiLimitBy::Route => KeyPart::Route(ctx.route_id),
        AiLimitBy::Ip => ip,
        AiLimitBy::Model => KeyPart::Name(model.unwrap_or("").to_string()),
    };
    CounterKey { route: plugin, by }
}

/// A refusal saying when the period that refused `cost` resets.
fn refusal(code: &'static str, what: &str, d: &Decision, cost: u64) -> Refusal {
    let reset = d
        .usage
        .iter()
        .filter(|u| u.remaining < cost)
        .map(|u| u.reset_ms)
        .max()
        .unwrap_or(1_000);
    Refusal {
        code,
        message: format!("{what}; it resets in {} s", reset.div_ceil(1_000)),
        retry_after_s: reset.div_ceil(1_000),
        status: 429,
    }
}

/// One limit's reservation: `amount` units counted at `at`; settled to `actual`.
struct Held {
    store: Counters,
    key: CounterKey,
    limits: Arc<[(Period, u64)]>,
    amount: u64,
    at: u64,
    /// What the settlement counts: tokens or micro-dollars.
    measure: fn(&Usage, u64) -> u64,
}

impl Reservation for Held {
    fn settle(self: Box<Self>, usage: &Usage, cost_micros: u64) -> BoxFuture<()> {
        let actual = (self.measure)(usage, cost_micros);
        Box::pin(async move {
            if actual < self.amount {
                self.store
                    .refund(&self.key, &self.limits, self.amount - actual, self.at)
                    .await;
            } else if actual > self.amount {
                self.store
                    .charge(&self.key, &self.limits, actual - self.amount)
                    .await;
            }
        })
    }
}

/// A reservation with nothing to settle (request counts stay counted).
struct Counted;

impl Reservation for Counted {
    fn settle(self: Box<Self>, _: &Usage, _: u64) -> BoxFuture<()> {
        Box::pin(async {})
    }
}

// ---------------------------------------------------------------------------------------
// ai-rate-limiting

/// Settings of `ai-rate-limiting`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AiRateLimitingConfig {
    /// Tokens (input + output) per second.
    #[serde(default)]
    pub tokens_per_second: Option<u64>,
    /// Tokens per minute.
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
    /// Tokens per hour.
    #[serde(default)]
    pub tokens_per_hour: Option<u64>,
    /// Tokens per day.
    #[serde(default)]
    pub tokens_per_day: Option<u64>,
    /// Calls per minute.
    #[serde(default)]
    pub requests_per_minute: Option<u64>,
    /// Calls per hour.
    #[serde(default)]
    pub requests_per_hour: Option<u64>,
    /// Calls per day.
    #[serde(default)]
    pub requests_per_day: Option<u64>,
    /// Who is counted.
    #[serde(default)]
    pub limit_by: AiLimitBy,
    /// `local` (this node) or `redis` (exact across the cluster; needs `--redis`).
    #[serde(default)]
    pub policy: Policy,
}

impl AiRateLimitingConfig {
    fn tokens(&self) -> Vec<(Period, u64)> {
        [
            (Period::Second, self.tokens_per_second),
            (Period::Minute, self.tokens_per_minute),
            (Period::Hour, self.tokens_per_hour),
            (Period::Day, self.tokens_per_day),
        ]
        .into_iter()
        .filter_map(|(p, l)| l.map(|l| (p, l)))
        .collect()
    }
    fn requests(&self) -> Vec<(Period, u64)> {
        [
            (Period::Minute, self.requests_per_minute),
            (Period::Hour, self.requests_per_hour),
            (Period::Day, self.requests_per_day),
        ]
        .into_iter()
        .filter_map(|(p, l)| l.map(|l| (p, l)))
        .collect()
    }
}

/// The `ai-rate-limiting` factory.
pub struct AiRateLimiting {
    /// Shared counters for `policy: redis`.
    pub cluster: Option<Arc<ClusterCounters>>,
}

impl Factory for AiRateLimiting {
    fn name(&self) -> &'static str {
        "ai-rate-limiting"
    }
    fn priority(&self) -> i32 {
        903
    }
    fn check(&self, v: &Value) -> Vec<(String, String)> {
        config::check::<AiRateLimitingConfig>(v, |c| {
            let mut e = Vec::new();
            if c.tokens().is_empty() && c.requests().is_empty() {
                e.push((
                    "tokens_per_minute".into(),
                    "set at least one tokens_per_* or requests_per_* limit".into(),
                ));
            }
            for (p, l) in c.tokens().into_iter().chain(c.requests()) {
                if l == 0 {
                    e.push((
                        format!("per_{}", p.name().to_lowercase()),
                        "limits must be at least 1".into(),
                    ));
                }
            }
            check_policy(c.policy, &self.cluster, &mut e);
            e
        })
    }
    fn build(&self, v: &Value, ctx: &BuildCtx) -> Result<Arc<dyn Plugin>, String> {
        let c: AiRateLimitingConfig = config::parse(v).map_err(|(p, m)| format!("{p}: {m}"))?;
        Ok(Arc::new(RateCompiled {
            inner: Arc::new(RateShared {
                id: ctx.id,
                tokens: c.tokens().into(),
                requests: c.requests().into(),
                store: Counters::of(c.policy, &self.cluster, ctx, v)?,
            }),
            by: c.limit_by,
        }))
    }
    fn schema(&self) -> Value {
        config::schema::<AiRateLimitingConfig>()
    }
    fn filled(&self, config: &Value) -> Option<Value> {
        config::filled::<AiRateLimitingConfig>(config)
    }
}

struct RateCompiled {
    inner: Arc<RateShared>,
    by: AiLimitBy,
}

/// What every request's [`RateLimit`] of one instance shares.
struct RateShared {
    id: Uuid,
    tokens: Arc<[(Period, u64)]>,
    requests: Arc<[(Period, u64)]>,
    store: Counters,
}

/// A rate limit bound to one request (its counter key; by model: known at reservation).
struct RateLimit {
    plugin: Arc<RateShared>,
    key: Option<CounterKey>,
}

impl Plugin for RateCompiled {
    fn access(&self, ctx: &mut RequestCtx, _req: &mut http::request::Parts) -> Flow {
        let key =
            (self.by != AiLimitBy::Model).then(|| counter_key(self.inner.id, self.by, ctx, None));
        add_limit(
            &mut ctx.extensions,
            Arc::new(RateLimit {
                plugin: self.inner.clone(),
                key,
            }),
        );
        Flow::Continue
    }
}

impl RateLimit {
    fn key(&self, model: &str) -> CounterKey {
        match &self.key {
            Some(k) => k.clone(),
            None => CounterKey {
                route: self.plugin.id,
                by: KeyPart::Name(model.to_string()),
            },
        }
    }
}

impl AiLimit for RateLimit {
    fn reserve(&self, est: &Estimate) -> BoxFuture<Result<Box<dyn Reservation>, Refusal>> {
        let p = self.plugin.clone();
        let key = self.key(&est.model);
        let worst = est.input_tokens + est.max_output;
        Box::pin(async move {
            let now = now_ms();
            if !p.requests.is_empty() {
                let rkey = CounterKey {
                    route: Uuid::from_u128(p.id.as_u128() ^ 1),
                    by: key.by.clone(),
                };
                let d = p.store.hit(&rkey, &p.requests, 1, now).await;
                if !d.allowed {
                    return Err(refusal(
                        "request_limit_exceeded",
                        "AI request limit reached",
                        &d,
                        1,
                    ));
                }
            }
            if p.tokens.is_empty() {
                return Ok(Box::new(Counted) as Box<dyn Reservation>);
            }
            let d = p.store.hit(&key, &p.tokens, worst, now).await;
            if !d.allowed {
                return Err(refusal(
                    "token_limit_exceeded",
                    &format!("AI token limit reached (this call may use up to {worst} tokens)"),
                    &d,
                    worst,
                ));
            }
            Ok(Box::new(Held {
                store: p.store.clone(),
                key,
                limits: p.tokens.clone(),
                amount: worst,
                at: now,
                measure: |u, _| u.total(),
            }) as Box<dyn Reservation>)
        })
    }
}

// ---------------------------------------------------------------------------------------
// ai-budget

/// Settings of `ai-budget`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AiBudgetConfig {
    /// US dollars per day (UTC days).
    #[serde(default)]
    pub per_day: Option<f64>,
    /// US dollars per month (30-day windows).
    #[serde(default)]
    pub per_month: Option<f64>,
    /// Who has the budget.
    #[serde(default)]
    pub limit_by: AiLimitBy,
    /// `local` (this node) or `redis` (exact across the cluster; needs `--redis`).
    #[serde(default)]
    pub policy: Policy,
}

impl AiBudgetConfig {
    fn limits(&self) -> Vec<(Period, u64)> {
        [(Period::Day, self.per_day), (Period::Month, self.per_month)]
            .into_iter()
            .filter_map(|(p, usd)| usd.map(|usd| (p, (usd * 1e6).round() as u64)))
            .collect()
    }
}

/// The `ai-budget` factory.
pub struct AiBudget {
    /// Shared counters for `policy: redis`.
    pub cluster: Option<Arc<ClusterCounters>>,
    /// Where `policy: local` spend is kept across restarts (the node's data dir).
    pub spend_dir: Option<std::path::PathBuf>,
}

/// Keeps `policy: local` spend across restarts: each budget's counters are written to
/// `<data dir>/ai-spend/<plugin id>.json` (owner-only) every two seconds when they changed,
/// and read back when the budget is first built. A budget that leaves the config stops
/// being written (its counters are held weakly).
mod spend {
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

    use gatehouse_counters::{LocalCounters, Saved};

    type Entry = (Weak<LocalCounters>, PathBuf, String);

    fn kept() -> &'static Mutex<Vec<Entry>> {
        static KEPT: OnceLock<Mutex<Vec<Entry>>> = OnceLock::new();
        KEPT.get_or_init(|| {
            let spawned = std::thread::Builder::new()
                .name("gatehouse-ai-spend".into())
                .spawn(|| loop {
                    std::thread::sleep(std::time::Duration::from_secs(2));
                    save_all();
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "ai spend will not be kept across restarts");
            }
            Mutex::new(Vec::new())
        })
    }

    fn save_all() {
        let mut list = kept().lock().unwrap_or_else(PoisonError::into_inner);
        list.retain(|(w, _, _)| w.strong_count() > 0);
        for (w, path, last) in list.iter_mut() {
            let Some(c) = w.upgrade() else { continue };
            let Ok(text) = serde_json::to_string(&c.export()) else {
                continue;
            };
            if *last != text {
                match gatehouse_store_write(path, text.as_bytes()) {
                    Ok(()) => *last = text,
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "writing ai spend")
                    }
                }
            }
        }
    }

    /// Owner-only file, written whole then renamed into place.
    fn gatehouse_store_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    }

    /// Counters for budget `id`, with what was spent before a restart.
    pub(super) fn restore(dir: &Path, id: uuid::Uuid) -> (LocalCounters, PathBuf) {
        let path = dir.join("ai-spend").join(format!("{id}.json"));
        let c = LocalCounters::default();
        match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Vec<Saved>>(&bytes) {
                Ok(saved) => c.import(saved),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "unreadable ai spend file ignored")
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "reading ai spend"),
        }
        (c, path)
    }

    /// Writes `c` to `path` from now on.
    pub(super) fn keep(c: &Arc<LocalCounters>, path: PathBuf) {
        let mut list = kept().lock().unwrap_or_else(PoisonError::into_inner);
        list.retain(|(w, p, _)| w.strong_count() > 0 && *p != path);
        list.push((Arc::downgrade(c), path, String::new()));
    }
}

impl Factory for AiBudget {
    fn name(&self) -> &'static str {
        "ai-budget"
    }
    fn priority(&self) -> i32 {
        902
    }
    fn check(&self, v: &Value) -> Vec<(String, String)> {
        config::check::<AiBudgetConfig>(v, |c| {
            let mut e = Vec::new();
            if c.per_day.is_none() && c.per_month.is_none() {
                e.push(("per_day".into(), "set per_day, per_month or both".into()));
            }
            for (f, v) in [("per_day", c.per_day), ("per_month", c.per_month)] {
                if v.is_some_and(|v| !(v > 0.0 && v <= 1e9)) {
                    e.push((
                        f.into(),
                        "must be more than 0 and at most 1000000000 (US dollars)".into(),
                    ));
                }
            }
            check_policy(c.policy, &self.cluster, &mut e);
            e
        })
    }
    fn build(&self, v: &Value, ctx: &BuildCtx) -> Result<Arc<dyn Plugin>, String> {
        let c: AiBudgetConfig = config::parse(v).map_err(|(p, m)| format!("{p}: {m}"))?;
        let store = match (c.policy, &self.spend_dir) {
            (Policy::Local, Some(dir)) => {
                let mut fresh = None;
                let counters = ctx.state.get_or_insert(ctx.id, v, || {
                    let (c, path) = spend::restore(dir, ctx.id);
                    fresh = Some(path);
                    c
                });
                if let Some(path) = fresh {
                    spend::keep(&counters, path);
                }
                Counters::Local(counters)
            }
            _ => Counters::of(c.policy, &self.cluster, ctx, v)?,
        };
        Ok(Arc::new(BudgetCompiled {
            id: ctx.id,
            limits: c.limits().into(),
            by: c.limit_by,
            store,
        }))
    }
    fn schema(&self) -> Value {
        config::schema::<AiBudgetConfig>()
    }
    fn filled(&self, config: &Value) -> Option<Value> {
        config::filled::<AiBudgetConfig>(config)
    }
}

struct BudgetCompiled {
    id: Uuid,
    limits: Arc<[(Period, u64)]>,
    by: AiLimitBy,
    store: Counters,
}

struct Budget {
    id: Uuid,
    limits: Arc<[(Period, u64)]>,
    store: Counters,
    key: Option<CounterKey>,
}

impl Plugin for BudgetCompiled {
    fn access(&self, ctx: &mut RequestCtx, _req: &mut http::request::Parts) -> Flow {
        let key = (self.by != AiLimitBy::Model).then(|| counter_key(self.id, self.by, ctx, None));
        let b = Budget {
            id: self.id,
            limits: self.limits.clone(),
            store: self.store.clone(),
            key,
        };
        add_limit(&mut ctx.extensions, Arc::new(b));
        Flow::Continue
    }
}

impl AiLimit for Budget {
    fn reserve(&self, est: &Estimate) -> BoxFuture<Result<Box<dyn Reservation>, Refusal>> {
        let key = self.key.clone().unwrap_or_else(|| CounterKey {
            route: self.id,
            by: KeyPart::Name(est.model.to_string()),
        });
        let (store, limits) = (self.store.clone(), self.limits.clone());
        let worst = est.worst_cost_micros;
        Box::pin(async move {
            let now = now_ms();
            let d = store.hit(&key, &limits, worst, now).await;
            if !d.allowed {
                let mut r = refusal(
                    "budget_exceeded",
                    &format!(
                        "AI budget exceeded (this call may cost up to ${:.6})",
                        worst as f64 / 1e6
                    ),
                    &d,
                    worst,
                );
                r.message.push_str(&format!(
                    " at {}",
                    httpdate::fmt_http_date(
                        std::time::SystemTime::now()
                            + std::time::Duration::from_secs(r.retry_after_s)
                    )
                ));
                return Err(r);
            }
            Ok(Box::new(Held {
                store,
                key,
                limits,
                amount: worst,
                at: now,
                measure: |_, cost| cost,
            }) as Box<dyn Reservation>)
        })
    }
}
