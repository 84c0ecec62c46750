//! `prometheus`: request counts, latency histograms (total, upstream, gateway-added), bytes
//! and rate-limit decisions, served as Prometheus text at `/metrics` on the status listener.
//! Label values are service and route names (bounded by the config) and status codes;
//! per-consumer labels only when `per_consumer` is set, because consumer counts are
//! unbounded (a known memory trap).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use gatehouse_proxy::plugin::{BuildCtx, CallRecord, Factory, Plugin};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::config;

fn yes() -> bool {
    true
}

/// Settings of `prometheus`.
#[derive(Debug, Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {
    /// Add a `consumer` label to request counts (watch the cardinality).
    #[serde(default)]
    pub per_consumer: bool,
    /// Record latency histograms.
    #[serde(default = "yes")]
    pub latency_metrics: bool,
    /// Record request and response bytes.
    #[serde(default = "yes")]
    pub bandwidth_metrics: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    service: String,
    route: String,
    code: u16,
    consumer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    service: String,
    route: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BytesLabels {
    service: String,
    route: String,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    route: String,
    decision: &'static str,
}

/// Labels of AI token counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AiTokenLabels {
    /// Provider entity name.
    pub provider: String,
    /// Public model name.
    pub model: String,
    /// input, output, cached_input, cache_write, reasoning.
    pub kind: &'static str,
}

/// Labels of AI calls, costs and times.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AiLabels {
    /// Provider entity name.
    pub provider: String,
    /// Public model name.
    pub model: String,
}

const BUCKETS_MS: [f64; 15] = [
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0,
];

fn histogram() -> Histogram {
    Histogram::new(BUCKETS_MS)
}

/// The node's metrics (one set per process, shared by every prometheus instance).
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    bytes: Family<BytesLabels, Counter>,
    limits: Family<LimitLabels, Counter>,
    /// AI tokens by provider, model and kind.
    pub ai_tokens: Family<AiTokenLabels, Counter>,
    /// AI cost in micro-dollars by provider and model.
    pub ai_cost: Family<AiLabels, Counter>,
    /// AI calls by provider and model.
    pub ai_calls: Family<AiLabels, Counter>,
    /// Time to first token, ms.
    pub ai_ttft: Family<AiLabels, Histogram, fn() -> Histogram>,
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| {
        let mut registry = Registry::with_prefix("gatehouse");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency =
            Family::<LatencyLabels, Histogram, fn() -> Histogram>::new_with_constructor(histogram);
        let bytes = Family::<BytesLabels, Counter>::default();
        let limits = Family::<LimitLabels, Counter>::default();
        registry.register(
            "http_requests",
            "Requests by service, route and status",
            requests.clone(),
        );
        registry.register(
            "latency_ms",
            "Latency in ms: total, upstream, gateway (added by the gateway)",
            latency.clone(),
        );
        registry.register(
            "bandwidth_bytes",
            "Body bytes by direction (ingress: requests, egress: responses)",
            bytes.clone(),
        );
        registry.register(
            "rate_limit_decisions",
            "Rate-limit decisions by route",
            limits.clone(),
        );
        let ai_tokens = Family::<AiTokenLabels, Counter>::default();
        let ai_cost = Family::<AiLabels, Counter>::default();
        let ai_calls = Family::<AiLabels, Counter>::default();
        let ai_ttft =
            Family::<AiLabels, Histogram, fn() -> Histogram>::new_with_constructor(histogram);
        registry.register(
            "ai_tokens",
            "LLM tokens by provider, model and kind (input includes cached)",
            ai_tokens.clone(),
        );
        registry.register(
            "ai_cost_micro_usd",
            "LLM cost in millionths of a US dollar by provider and model",
            ai_cost.clone(),
        );
        registry.register(
            "ai_calls",
            "LLM calls answered by provider and model",
            ai_calls.clone(),
        );
        registry.register(
            "ai_time_to_first_token_ms",
            "Milliseconds from the call to the first token",
            ai_ttft.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            bytes,
            limits,
            ai_tokens,
            ai_cost,
            ai_calls,
            ai_ttft,
        }
    })
}

/// The metrics as Prometheus text (for `/metrics`).
pub fn render() -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &metrics().registry).is_err() {
        out.clear();
    }
    out
}

/// The `prometheus` factory.
pub struct Prometheus;

/// Metric handles of one route (handles share their value with the family's entry).
struct RouteHandles {
    total: Histogram,
    upstream: Histogram,
    gateway: Histogram,
    egress: Counter,
    ingress: Counter,
    /// Request counts by status (without per-consumer labels): a route sees few statuses,
    /// so a short list searched in order beats a second hash lookup.
    by_status: Vec<(u16, Counter)>,
    /// Rate-limit decisions: `[limited, allowed]`.
    limits: [Option<Counter>; 2],
}

/// Route, status and (with `per_consumer`) consumer of a request count.
type RequestKey = (Uuid, u16, Option<Uuid>);
/// Keys are config ids and statuses, not request data: a fast fixed hasher is safe.
type Fast = foldhash::fast::FixedState;

struct Compiled {
    cfg: PrometheusConfig,
    /// Distinguishes this instance's handles in the per-thread cache (names of routes and
    /// services can change between snapshots while ids stay).
    generation: u64,
}

/// Handles resolved once per route (and status/consumer) and worker thread, so a request
/// costs a small hash lookup, no label strings and no lock shared with other workers.
#[derive(Default)]
struct LocalHandles {
    routes: HashMap<(u64, Uuid), RouteHandles, Fast>,
    /// Request counts with per-consumer labels (too many to keep per route).
    requests: HashMap<(u64, RequestKey), Counter, Fast>,
}

/// Entries per map after which a thread's cache starts over (old generations pile up
/// across reloads otherwise).
const LOCAL_LIMIT: usize = 4096;

thread_local! {
    static LOCAL: RefCell<LocalHandles> = RefCell::new(LocalHandles::default());
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

fn cached<K: std::hash::Hash + Eq, V>(
    map: &mut HashMap<K, V, Fast>,
    key: K,
    make: impl FnOnce() -> V,
) -> &mut V {
    if map.len() >= LOCAL_LIMIT && !map.contains_key(&key) {
        map.clear();
    }
    map.entry(key).or_insert_with(make)
}

impl Factory for Prometheus {
    fn name(&self) -> &'static str {
        "prometheus"
    }
    fn priority(&self) -> i32 {
        13
    }
    fn check(&self, v: &Value) -> Vec<(String, String)> {
        config::check::<PrometheusConfig>(v, |_| Vec::new())
    }
    fn build(&self, v: &Value, _ctx: &BuildCtx) -> Result<Arc<dyn Plugin>, String> {
        let cfg: PrometheusConfig = config::parse(v).map_err(|(p, m)| format!("{p}: {m}"))?;
        metrics();
        Ok(Arc::new(Compiled {
            cfg,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
        }))
    }
    fn schema(&self) -> Value {
        config::schema::<PrometheusConfig>()
    }
    fn filled(&self, config: &Value) -> Option<Value> {
        config::filled::<PrometheusConfig>(config)
    }
}

fn names(rec: &CallRecord) -> (String, String) {
    let r = &rec.ctx.request;
    (
        r.service_name
            .as_deref()
            .map_or_else(|| rec.ctx.service_id.to_string(), str::to_string),
        r.route_name
            .as_deref()
            .map_or_else(|| rec.ctx.route_id.to_string(), str::to_string),
    )
}

impl Plugin for Compiled {
    fn wants_log(&self) -> bool {
        true
    }
    fn log(&self, rec: &CallRecord) {
        LOCAL.with(|local| self.record(&mut local.borrow_mut(), rec));
    }
}

impl Compiled {
    fn record(&self, local: &mut LocalHandles, rec: &CallRecord) {
        let m = metrics();
        let ctx = rec.ctx;
        let gen = self.generation;
        let code = rec.status.as_u16();
        if self.cfg.per_consumer {
            let consumer = ctx.consumer.as_ref().map(|c| c.id);
            cached(
                &mut local.requests,
                (gen, (ctx.route_id, code, consumer)),
                || {
                    let (service, route) = names(rec);
                    let consumer = ctx.consumer.as_ref().map_or_else(String::new, |c| {
                        c.username
                            .as_deref()
                            .map_or_else(|| c.id.to_string(), str::to_string)
                    });
                    m.requests
                        .get_or_create(&RequestLabels {
                            service,
                            route,
                            code,
                            consumer,
                        })
                        .clone()
                },
            )
            .inc();
        }
        let h = cached(&mut local.routes, (gen, ctx.route_id), || {
            let (service, route) = names(rec);
            let lat = |kind| {
                m.latency
                    .get_or_create(&LatencyLabels {
                        service: service.clone(),
                        route: route.clone(),
                        kind,
                    })
                    .clone()
            };
            let by = |direction| {
                m.bytes
                    .get_or_create(&BytesLabels {
                        service: service.clone(),
                        route: route.clone(),
                        direction,
                    })
                    .clone()
            };
            RouteHandles {
                total: lat("total"),
                upstream: lat("upstream"),
                gateway: lat("gateway"),
                egress: by("egress"),
                ingress: by("ingress"),
                by_status: Vec::new(),
                limits: [None, None],
            }
        });
        if !self.cfg.per_consumer {
            match h.by_status.iter().find(|(c, _)| *c == code) {
                Some((_, counter)) => {
                    counter.inc();
                }
                None => {
                    let (service, route) = names(rec);
                    let counter = m
                        .requests
                        .get_or_create(&RequestLabels {
                            service,
                            route,
                            code,
                            consumer: String::new(),
                        })
                        .clone();
                    counter.inc();
                    h.by_status.push((code, counter));
                }
            }
        }
        if self.cfg.latency_metrics {
            let total = rec.total.as_secs_f64() * 1000.0;
            h.total.observe(total);
            if let Some(u) = ctx.upstream_latency {
                let u = u.as_secs_f64() * 1000.0;
                h.upstream.observe(u);
                h.gateway.observe((total - u).max(0.0));
            }
        }
        if self.cfg.bandwidth_metrics {
            h.egress.inc_by(rec.response_bytes);
            if let Some(n) = ctx.request.body_bytes {
                h.ingress.inc_by(n);
            }
        }
        if let Some(d) = ctx.limit {
            h.limits[usize::from(d.allowed)]
                .get_or_insert_with(|| {
                    let (_, route) = names(rec);
                    m.limits
                        .get_or_create(&LimitLabels {
                            route,
                            decision: if d.allowed { "allowed" } else { "limited" },
                        })
                        .clone()
                })
                .inc();
        }
    }
}
