//! `prometheus`: request counts, latency histograms (total, upstream, gateway-added), bytes
//! and rate-limit decisions, served as Prometheus text at `/metrics` on the status listener.
//! Label values are service and route names (bounded by the config) and status codes;
//! per-consumer labels only when `per_consumer` is set, because consumer counts are
//! unbounded (a known memory trap).

use std::sync::{Arc, OnceLock};

use gatehouse_proxy::plugin::{BuildCtx, CallRecord, Factory, LimitDecision, Plugin};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::config;

fn yes() -> bool {
    true
}

/// Settings of `prometheus`.
#[derive(Debug, Deserialize, ToSchema)]
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
        Metrics {
            registry,
            requests,
            latency,
            bytes,
            limits,
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

struct Compiled {
    cfg: PrometheusConfig,
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
        Ok(Arc::new(Compiled { cfg }))
    }
    fn schema(&self) -> Value {
        config::schema::<PrometheusConfig>()
    }
}

impl Plugin for Compiled {
    fn wants_log(&self) -> bool {
        true
    }
    fn log(&self, rec: &CallRecord) {
        let m = metrics();
        let r = &rec.ctx.request;
        let service = r
            .service_name
            .as_deref()
            .map_or_else(|| rec.ctx.service_id.to_string(), str::to_string);
        let route = r
            .route_name
            .as_deref()
            .map_or_else(|| rec.ctx.route_id.to_string(), str::to_string);
        let consumer = match (&rec.ctx.consumer, self.cfg.per_consumer) {
            (Some(c), true) => c
                .username
                .as_deref()
                .map_or_else(|| c.id.to_string(), str::to_string),
            _ => String::new(),
        };
        m.requests
            .get_or_create(&RequestLabels {
                service: service.clone(),
                route: route.clone(),
                code: rec.status.as_u16(),
                consumer,
            })
            .inc();
        if self.cfg.latency_metrics {
            let total = rec.total.as_secs_f64() * 1000.0;
            let lat = |kind, v| {
                m.latency
                    .get_or_create(&LatencyLabels {
                        service: service.clone(),
                        route: route.clone(),
                        kind,
                    })
                    .observe(v)
            };
            lat("total", total);
            if let Some(u) = rec.ctx.upstream_latency {
                let u = u.as_secs_f64() * 1000.0;
                lat("upstream", u);
                lat("gateway", (total - u).max(0.0));
            }
        }
        if self.cfg.bandwidth_metrics {
            let by = |direction, n| {
                m.bytes
                    .get_or_create(&BytesLabels {
                        service: service.clone(),
                        route: route.clone(),
                        direction,
                    })
                    .inc_by(n);
            };
            by("egress", rec.response_bytes);
            if let Some(n) = r.body_bytes {
                by("ingress", n);
            }
        }
        if let Some(d) = rec.ctx.extensions.get::<LimitDecision>() {
            let decision = if d.allowed { "allowed" } else { "limited" };
            m.limits
                .get_or_create(&LimitLabels { route, decision })
                .inc();
        }
    }
}
