//! `rate-limiting`: requests per second/minute/hour/day/month, by consumer, credential, IP,
//! header, path, service or route. Sliding windows, exact under concurrency (see
//! `counters`); counters survive reloads that keep the plugin's config. `policy: redis`
//! counts across every node of a cluster, exactly, through leases of the remaining quota
//! (see `gatehouse_counters::cluster`).

use std::sync::Arc;

use gatehouse_proxy::plugin::{BuildCtx, Factory, Flow, LimitDecision, Plugin, RequestCtx};
use http::{HeaderName, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::counters::cluster::ClusterCounters;
use super::counters::{CounterKey, CounterStore, Decision, KeyPart, Period};
use super::counting::{check_policy, Counters};
use crate::config;

/// What requests are counted together.
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LimitBy {
    /// The authenticated consumer (the client IP when there is none).
    #[default]
    Consumer,
    /// The credential used (the client IP when there is none).
    Credential,
    /// The client IP (after the trusted-proxy rules).
    Ip,
    /// The value of `header_name` (the client IP when absent).
    Header,
    /// The request path.
    Path,
    /// The service.
    Service,
    /// The route.
    Route,
}

/// Where counters are kept.
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// In this node's memory.
    #[default]
    Local,
    /// In Redis, shared by every node (the node needs `--redis`).
    Redis,
}

fn too_many() -> u16 {
    429
}
fn default_message() -> String {
    "API rate limit exceeded".into()
}

/// Settings of `rate-limiting`.
#[derive(Debug, Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitingConfig {
    /// Requests per second.
    #[serde(default)]
    pub second: Option<u64>,
    /// Requests per minute.
    #[serde(default)]
    pub minute: Option<u64>,
    /// Requests per hour.
    #[serde(default)]
    pub hour: Option<u64>,
    /// Requests per day.
    #[serde(default)]
    pub day: Option<u64>,
    /// Requests per 30 days.
    #[serde(default)]
    pub month: Option<u64>,
    /// What is counted together.
    #[serde(default)]
    pub limit_by: LimitBy,
    /// Header for `limit_by: header`.
    #[serde(default)]
    pub header_name: Option<String>,
    /// Where counters live: `local` (this node) or `redis` (the whole cluster, exact; every
    /// node needs `--redis`).
    #[serde(default)]
    pub policy: Policy,
    /// Do not send RateLimit-* / X-RateLimit-* headers.
    #[serde(default)]
    pub hide_client_headers: bool,
    /// Status when the limit is hit.
    #[serde(default = "too_many")]
    pub error_code: u16,
    /// Message when the limit is hit.
    #[serde(default = "default_message")]
    pub error_message: String,
}

impl RateLimitingConfig {
    fn limits(&self) -> Vec<(Period, u64)> {
        let all = [self.second, self.minute, self.hour, self.day, self.month];
        Period::ALL
            .into_iter()
            .zip(all)
            .filter_map(|(p, l)| l.map(|l| (p, l)))
            .collect()
    }
}

/// The `rate-limiting` factory; `cluster` is the node's Redis counters, if it has some.
#[derive(Default)]
pub struct RateLimiting {
    /// Shared counters for `policy: redis`.
    pub cluster: Option<Arc<ClusterCounters>>,
}

struct Compiled {
    limits: Arc<[(Period, u64)]>,
    by: LimitBy,
    header: Option<HeaderName>,
    hide: bool,
    status: StatusCode,
    message: String,
    counters: Counters,
}

/// `X-RateLimit-Limit-<Period>` and `X-RateLimit-Remaining-<Period>`; static names clone
/// without touching a reference count.
fn window_names(p: Period) -> (&'static HeaderName, &'static HeaderName) {
    static NAMES: [(HeaderName, HeaderName); 5] = [
        (
            HeaderName::from_static("x-ratelimit-limit-second"),
            HeaderName::from_static("x-ratelimit-remaining-second"),
        ),
        (
            HeaderName::from_static("x-ratelimit-limit-minute"),
            HeaderName::from_static("x-ratelimit-remaining-minute"),
        ),
        (
            HeaderName::from_static("x-ratelimit-limit-hour"),
            HeaderName::from_static("x-ratelimit-remaining-hour"),
        ),
        (
            HeaderName::from_static("x-ratelimit-limit-day"),
            HeaderName::from_static("x-ratelimit-remaining-day"),
        ),
        (
            HeaderName::from_static("x-ratelimit-limit-month"),
            HeaderName::from_static("x-ratelimit-remaining-month"),
        ),
    ];
    let (l, r) = &NAMES[p as usize];
    (l, r)
}

static LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

impl Factory for RateLimiting {
    fn name(&self) -> &'static str {
        "rate-limiting"
    }
    fn priority(&self) -> i32 {
        910
    }
    fn check(&self, v: &Value) -> Vec<(String, String)> {
        config::check::<RateLimitingConfig>(v, |c| {
            let mut e = Vec::new();
            if c.limits().is_empty() {
                e.push((
                    "minute".into(),
                    "set at least one of second, minute, hour, day, month".into(),
                ));
            }
            for (p, l) in c.limits() {
                if l == 0 {
                    e.push((p.name().to_lowercase(), "must be at least 1".into()));
                }
            }
            let mut last = 0;
            for (p, l) in c.limits() {
                if l < last {
                    e.push((
                        p.name().to_lowercase(),
                        "a longer period cannot have a smaller limit than a shorter one".into(),
                    ));
                }
                last = l;
            }
            check_limit_by(c.limit_by, c.header_name.as_deref(), c.error_code, &mut e);
            check_policy(c.policy, &self.cluster, &mut e);
            e
        })
    }
    fn build(&self, v: &Value, ctx: &BuildCtx) -> Result<Arc<dyn Plugin>, String> {
        let c: RateLimitingConfig = config::parse(v).map_err(|(p, m)| format!("{p}: {m}"))?;
        let limits = c.limits();
        let counters = Counters::of(c.policy, &self.cluster, ctx, v)?;
        Ok(Arc::new(Compiled {
            limits: limits.into(),
            by: c.limit_by,
            header: c
                .header_name
                .as_deref()
                .map(config::header_name)
                .transpose()?,
            hide: c.hide_client_headers,
            status: StatusCode::from_u16(c.error_code).map_err(|e| e.to_string())?,
            message: c.error_message,
            counters,
        }))
    }
    fn schema(&self) -> Value {
        config::schema::<RateLimitingConfig>()
    }
    fn filled(&self, config: &Value) -> Option<Value> {
        config::filled::<RateLimitingConfig>(config)
    }
}

impl Compiled {
    fn key(&self, ctx: &RequestCtx, req: &http::request::Parts) -> CounterKey {
        counter_key(self.by, self.header.as_ref(), ctx, req)
    }
}

/// Checks `limit_by`, `header_name` and `error_code` (shared with `limit-conn`).
pub fn check_limit_by(
    by: LimitBy,
    header_name: Option<&str>,
    error_code: u16,
    e: &mut Vec<(String, String)>,
) {
    match (by, header_name) {
        (LimitBy::Header, None) => e.push((
            "header_name".into(),
            "required with limit_by: header".into(),
        )),
        (_, Some(h)) => {
            if let Err(m) = config::header_name(h) {
                e.push(("header_name".into(), m));
            }
        }
        _ => {}
    }
    if !(400..600).contains(&error_code) {
        e.push(("error_code".into(), "must be 400-599".into()));
    }
}

/// The counter a request falls in, for `limit_by` (shared with `limit-conn`).
pub fn counter_key(
    by: LimitBy,
    header: Option<&HeaderName>,
    ctx: &RequestCtx,
    req: &http::request::Parts,
) -> CounterKey {
    let ip = KeyPart::Ip(ctx.client_ip);
    let by = match by {
        LimitBy::Consumer => ctx
            .consumer
            .as_ref()
            .map_or(ip, |c| KeyPart::Consumer(c.id)),
        LimitBy::Credential => ctx.credential.clone().map_or(ip, KeyPart::Credential),
        LimitBy::Ip => ip,
        LimitBy::Header => header
            .and_then(|h| req.headers.get(h))
            .and_then(|v| v.to_str().ok())
            .map_or(ip, |v| KeyPart::Header(v.to_string())),
        LimitBy::Path => KeyPart::Path(req.uri.path().to_string()),
        LimitBy::Service => KeyPart::Service(ctx.service_id),
        LimitBy::Route => KeyPart::Route(ctx.route_id),
    };
    CounterKey {
        route: ctx.route_id,
        by,
    }
}

impl Plugin for Compiled {
    /// With shared counters the decision is made here: from the node's lease when it has
    /// units (a ready future), else after asking Redis for a block.
    fn prepare(
        &self,
        ctx: &RequestCtx,
        req: &http::request::Parts,
    ) -> Option<gatehouse_proxy::plugin::PrepareFuture> {
        let Counters::Cluster(cluster) = &self.counters else {
            return None;
        };
        let key = self.key(ctx, req);
        let now = ctx.request.started_unix_ms;
        if let Some(d) = cluster.try_hit(&key, &self.limits, 1, now) {
            return Some(Box::pin(std::future::ready(Some(
                Box::new(d) as Box<dyn std::any::Any>
            ))));
        }
        let (cluster, limits) = (cluster.clone(), self.limits.clone());
        Some(Box::pin(async move {
            let d = cluster.hit(&key, &limits, 1, now).await;
            Some(Box::new(d) as Box<dyn std::any::Any>)
        }))
    }

    fn access(&self, ctx: &mut RequestCtx, req: &mut http::request::Parts) -> Flow {
        // The request's arrival time (read once by the proxy) places it in the windows.
        let d = match &self.counters {
            Counters::Local(local) => local.hit(
                &self.key(ctx, req),
                &self.limits,
                ctx.request.started_unix_ms,
            ),
            Counters::Cluster(_) => match ctx
                .prepared
                .take()
                .and_then(|p| p.downcast::<Decision>().ok())
            {
                Some(d) => *d,
                // prepare always decides for shared counters; refuse rather than pass
                // uncounted if that ever changes.
                None => Decision {
                    allowed: false,
                    usage: Default::default(),
                },
            },
        };
        ctx.limit = Some(LimitDecision { allowed: d.allowed });
        // The most constraining window decides the standard headers.
        let tight = d
            .usage
            .iter()
            .enumerate()
            .min_by_key(|(_, u)| (u.remaining, std::cmp::Reverse(u.reset_ms)))
            .map(|(i, _)| i);
        // Written to the response headers plugins add (taken back below on a 429).
        let first_added = ctx.response_headers.len();
        if let (false, Some(t)) = (self.hide, tight.map(|i| &d.usage[i])) {
            use gatehouse_proxy::plugin::AddedValue::Number;
            use std::borrow::Cow::Borrowed;
            let headers = &mut ctx.response_headers;
            headers.reserve(3 + 2 * d.usage.len());
            // The standard headers (for the tightest window) first, the per-window ones after.
            headers.push((Borrowed(&LIMIT), Number(t.limit)));
            headers.push((Borrowed(&REMAINING), Number(t.remaining)));
            headers.push((Borrowed(&RESET), Number(t.reset_ms.div_ceil(1000))));
            for u in d.usage.iter() {
                let (l, r) = window_names(u.period);
                headers.push((Borrowed(l), Number(u.limit)));
                headers.push((Borrowed(r), Number(u.remaining)));
            }
        }
        if d.allowed {
            return Flow::Continue;
        }
        let headers: Vec<_> = ctx.response_headers.drain(first_added..).collect();
        // Retry when the first exhausted window frees a slot.
        let retry = d
            .usage
            .iter()
            .filter(|u| u.remaining == 0)
            .map(|u| u.reset_ms)
            .min()
            .unwrap_or(1000);
        let mut flow = ctx.reject(self.status, "rate_limited", &self.message);
        if let Flow::Respond(r) = &mut flow {
            let h = r.headers_mut();
            for (n, v) in headers {
                h.append(n.into_owned(), v.to_header_value());
            }
            h.insert(
                http::header::RETRY_AFTER,
                HeaderValue::from(retry.div_ceil(1000).max(1)),
            );
        }
        flow
    }
}
