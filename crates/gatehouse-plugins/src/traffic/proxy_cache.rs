//! `proxy-cache`: keeps answers in memory and serves them without calling the upstream.
//! Keyed by route, method, host, path, query (all or `vary_query_params`), `vary_headers`
//! and consumer. Bounded by bytes; per-entry TTL (`cache_ttl`, or the response's
//! `s-maxage`/`max-age` with `cache_control`). When many clients miss the same key at once,
//! one request goes upstream and the others wait for its answer (single-flight).
//! `X-Cache-Status: Hit | Miss | Bypass | Refresh`, `X-Cache-Key` on every answer.

use std::borrow::Cow;
use std::collections::HashMap as StdHashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gatehouse_proxy::body::ProxyBody;
use gatehouse_proxy::plugin::{
    BuildCtx, CallRecord, Factory, Flow, Plugin, PurgeableCache, RequestCtx, ResponseHead,
};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use utoipa::ToSchema;

use crate::config;

fn codes() -> Vec<u16> {
    vec![200, 301, 404]
}
fn methods() -> Vec<String> {
    vec!["GET".into(), "HEAD".into()]
}
fn types() -> Vec<String> {
    vec!["text/plain".into(), "application/json".into()]
}
fn ttl() -> u64 {
    300
}
fn memory() -> u64 {
    64 * 1024 * 1024
}
fn max_body() -> u64 {
    1024 * 1024
}
fn wait_ms() -> u64 {
    5_000
}

/// Settings of `proxy-cache`.
#[derive(Debug, Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProxyCacheConfig {
    /// Statuses that are stored.
    #[serde(default = "codes")]
    pub response_code: Vec<u16>,
    /// Methods that are served from and stored in the cache.
    #[serde(default = "methods")]
    pub request_method: Vec<String>,
    /// Content types (without parameters) that are stored.
    #[serde(default = "types")]
    pub content_type: Vec<String>,
    /// Seconds an entry lives.
    #[serde(default = "ttl")]
    pub cache_ttl: u64,
    /// Honour Cache-Control: request no-store/no-cache, response no-store/private/no-cache
    /// and s-maxage/max-age.
    #[serde(default)]
    pub cache_control: bool,
    /// Request headers that are part of the key.
    #[serde(default)]
    pub vary_headers: Vec<String>,
    /// Query parameters that are part of the key (empty: the whole query string).
    #[serde(default)]
    pub vary_query_params: Vec<String>,
    /// Bytes of bodies kept at most (least recently used go first).
    #[serde(default = "memory")]
    pub memory_size: u64,
    /// Largest body stored.
    #[serde(default = "max_body")]
    pub max_body_size: u64,
    /// Milliseconds a request waits for another one filling the same key.
    #[serde(default = "wait_ms")]
    pub lock_timeout: u64,
}

/// The `proxy-cache` factory.
pub struct ProxyCache;

struct Entry {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    stored: Instant,
    expires: Instant,
}

/// The entries of one proxy-cache instance; kept across reloads with the same config and
/// purgeable through the admin API.
pub struct Store {
    cache: moka::sync::Cache<String, Arc<Entry>>,
    /// Keys being filled: who waits is woken by the `Notify`; the request id names the
    /// leader (the one request that goes upstream).
    filling: Mutex<StdHashMap<String, (Arc<Notify>, HeaderValue)>>,
}

impl PurgeableCache for Store {
    fn purge_all(&self) -> usize {
        // `entry_count` lags behind inserts until moka runs its pending tasks (it said 0
        // right after filling); walking the live entries gives the true number.
        let n = self.cache.iter().count();
        self.cache.invalidate_all();
        self.cache.run_pending_tasks();
        n
    }
    fn purge_key(&self, key: &str) -> bool {
        self.cache.remove(key).is_some()
    }
}

impl Store {
    /// The keys being filled, each with its waiters' `Notify` and the filling request's id.
    fn filling(&self) -> MutexGuard<'_, StdHashMap<String, (Arc<Notify>, HeaderValue)>> {
        self.filling.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Gives up a claim this request made in `prepare` but will not fill.
    fn release_if_owner(&self, key: &str, request_id: &HeaderValue) {
        let owned = self
            .filling()
            .get(key)
            .is_some_and(|(_, owner)| owner == request_id);
        if owned {
            self.release(key);
        }
    }

    fn release(&self, key: &str) {
        if let Some(n) = self.filling().remove(key) {
            n.0.notify_waiters();
        }
    }
}

/// What this request does with the cache (kept in the request context).
#[derive(Clone)]
struct Fill {
    key: String,
    leader: bool,
}

struct Compiled {
    cfg: ProxyCacheConfig,
    methods: Vec<Method>,
    vary: Vec<HeaderName>,
    store: Arc<Store>,
}

static STATUS: HeaderName = HeaderName::from_static("x-cache-status");
static KEY: HeaderName = HeaderName::from_static("x-cache-key");

impl Factory for ProxyCache {
    fn name(&self) -> &'static str {
        "proxy-cache"
    }
    fn priority(&self) -> i32 {
        100
    }
    fn check(&self, v: &Value) -> Vec<(String, String)> {
        config::check::<ProxyCacheConfig>(v, |c| {
            let mut e = Vec::new();
            for (i, m) in c.request_method.iter().enumerate() {
                if !matches!(m.as_str(), "GET" | "HEAD" | "POST") {
                    e.push((format!("request_method[{i}]"), "GET, HEAD or POST".into()));
                }
            }
            for (i, code) in c.response_code.iter().enumerate() {
                if !(100..600).contains(code) {
                    e.push((format!("response_code[{i}]"), "must be 100-599".into()));
                }
            }
            for (i, h) in c.vary_headers.iter().enumerate() {
                if let Err(m) = config::header_name(h) {
                    e.push((format!("vary_headers[{i}]"), m));
                }
            }
            if c.cache_ttl == 0 {
                e.push(("cache_ttl".into(), "must be at least 1 second".into()));
            }
            if c.memory_size < c.max_body_size {
                e.push((
                    "memory_size".into(),
                    "must be at least max_body_size".into(),
                ));
            }
            e
        })
    }
    fn build(&self, v: &Value, ctx: &BuildCtx) -> Result<Arc<dyn Plugin>, String> {
        let cfg: ProxyCacheConfig = config::parse(v).map_err(|(p, m)| format!("{p}: {m}"))?;
        let methods = cfg
            .request_method
            .iter()
            .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
            .collect();
        let vary = cfg
            .vary_headers
            .iter()
            .map(|h| config::header_name(h))
            .collect::<Result<_, _>>()?;
        let capacity = cfg.memory_size;
        let store = ctx.state.get_or_insert(ctx.id, v, || Store {
            cache: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .weigher(|k: &String, e: &Arc<Entry>| {
                    u32::try_from(k.len() + e.body.len() + 256).unwrap_or(u32::MAX)
                })
                .build(),
            filling: Mutex::new(StdHashMap::new()),
        });
        let weak: std::sync::Weak<dyn PurgeableCache> =
            Arc::downgrade(&store) as std::sync::Weak<dyn PurgeableCache>;
        ctx.state.register_cache(weak);
        Ok(Arc::new(Compiled {
            cfg,
            methods,
            vary,
            store,
        }))
    }
    fn schema(&self) -> Value {
        config::schema::<ProxyCacheConfig>()
    }
    fn filled(&self, config: &Value) -> Option<Value> {
        config::filled::<ProxyCacheConfig>(config)
    }
}

fn directives(v: Option<&HeaderValue>) -> Vec<String> {
    v.and_then(|v| v.to_str().ok())
        .map(|s| {
            s.split(',')
                .map(|d| d.trim().to_ascii_lowercase())
                .collect()
        })
        .unwrap_or_default()
}

impl Compiled {
    fn key(&self, ctx: &RequestCtx, req: &http::request::Parts) -> String {
        let mut h = Sha256::new();
        h.update(ctx.route_id.as_bytes());
        h.update(req.method.as_str().as_bytes());
        h.update([0]);
        if let Some(host) = &ctx.request.host {
            h.update(host.as_bytes());
        }
        h.update([0]);
        h.update(req.uri.path().as_bytes());
        h.update([0]);
        if let Some(q) = req.uri.query() {
            if self.cfg.vary_query_params.is_empty() {
                h.update(q.as_bytes());
            } else {
                let mut pairs: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .filter(|(k, _)| self.cfg.vary_query_params.contains(k))
                    .collect();
                pairs.sort();
                for (k, v) in pairs {
                    h.update(k.as_bytes());
                    h.update(b"=");
                    h.update(v.as_bytes());
                    h.update(b"&");
                }
            }
        }
        for n in &self.vary {
            h.update([0]);
            for v in req.headers.get_all(n) {
                h.update(v.as_bytes());
            }
        }
        if let Some(c) = &ctx.consumer {
            h.update(c.id.as_bytes());
        }
        let d = h.finalize();
        d.iter().take(16).map(|b| format!("{b:02x}")).collect()
    }

    fn fresh(&self, key: &str) -> Option<Arc<Entry>> {
        self.store
            .cache
            .get(key)
            .filter(|e| e.expires > Instant::now())
    }

    fn mark(ctx: &mut RequestCtx, status: &'static str, key: Option<&str>) {
        ctx.response_headers.push((
            Cow::Borrowed(&STATUS),
            HeaderValue::from_static(status).into(),
        ));
        if let Some(v) = key.and_then(|k| HeaderValue::from_str(k).ok()) {
            ctx.response_headers.push((Cow::Borrowed(&KEY), v.into()));
        }
    }
}

impl Plugin for Compiled {
    fn prepare(
        &self,
        ctx: &RequestCtx,
        req: &http::request::Parts,
    ) -> Option<gatehouse_proxy::plugin::PrepareFuture> {
        if !self.methods.contains(&req.method) {
            return None;
        }
        let key = self.key(ctx, req);
        if self.fresh(&key).is_some() {
            return None;
        }
        // Check and claim under one lock: with several workers, two first requests for a
        // key must not both find it unclaimed and both go upstream.
        let notify = {
            let mut filling = self.store.filling();
            match filling.get(&key) {
                Some((n, _)) => n.clone(),
                None => {
                    filling.insert(key, (Arc::new(Notify::new()), ctx.request_id.clone()));
                    return None;
                }
            }
        };
        let limit = Duration::from_millis(self.cfg.lock_timeout);
        let store = self.store.clone();
        Some(Box::pin(async move {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Filled (and released) before this waiter was registered: nothing to wait for.
            let still_filling = store
                .filling()
                .get(&key)
                .is_some_and(|(n, _)| Arc::ptr_eq(n, &notify));
            if still_filling {
                let _ = tokio::time::timeout(limit, notified).await;
            }
            None
        }))
    }

    fn access(&self, ctx: &mut RequestCtx, req: &mut http::request::Parts) -> Flow {
        if !self.methods.contains(&req.method) {
            Self::mark(ctx, "Bypass", None);
            return Flow::Continue;
        }
        let key = self.key(ctx, req);
        let asked = if self.cfg.cache_control {
            directives(req.headers.get(header::CACHE_CONTROL))
        } else {
            Vec::new()
        };
        if asked.iter().any(|d| d == "no-store") {
            self.store.release_if_owner(&key, &ctx.request_id);
            Self::mark(ctx, "Bypass", Some(&key));
            return Flow::Continue;
        }
        let refresh = asked.iter().any(|d| d == "no-cache");
        if !refresh {
            if let Some(e) = self.fresh(&key) {
                let mut r = Response::new(ProxyBody::full(e.body.clone()));
                *r.status_mut() = e.status;
                *r.headers_mut() = e.headers.clone();
                r.headers_mut()
                    .insert(header::AGE, HeaderValue::from(e.stored.elapsed().as_secs()));
                r.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(e.body.len()));
                self.store.release_if_owner(&key, &ctx.request_id);
                Self::mark(ctx, "Hit", Some(&key));
                return Flow::Respond(Box::new(r));
            }
        }
        Self::mark(ctx, if refresh { "Refresh" } else { "Miss" }, Some(&key));
        let leader = {
            let mut filling = self.store.filling();
            match filling.get(&key) {
                // Claimed by this request just before (prepare).
                Some((_, owner)) => *owner == ctx.request_id,
                None => {
                    filling.insert(
                        key.clone(),
                        (Arc::new(Notify::new()), ctx.request_id.clone()),
                    );
                    true
                }
            }
        };
        ctx.extensions.insert(Fill { key, leader });
        Flow::Continue
    }

    fn wants_response_body(&self, ctx: &RequestCtx, resp: &http::response::Parts) -> bool {
        let Some(fill) = ctx.extensions.get::<Fill>() else {
            return false;
        };
        let _ = fill;
        if !self.cfg.response_code.contains(&resp.status.as_u16()) {
            return false;
        }
        let ct = resp
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let base = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if !self
            .cfg
            .content_type
            .iter()
            .any(|t| t.eq_ignore_ascii_case(&base))
        {
            return false;
        }
        let len = resp
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if len.is_some_and(|n| n > self.cfg.max_body_size) {
            return false;
        }
        if self.cfg.cache_control {
            let d = directives(resp.headers.get(header::CACHE_CONTROL));
            if d.iter()
                .any(|x| x == "no-store" || x == "private" || x == "no-cache")
            {
                return false;
            }
        }
        true
    }

    fn response_body(&self, ctx: &RequestCtx, head: &ResponseHead, body: Bytes) -> Bytes {
        let Some(fill) = ctx.extensions.get::<Fill>() else {
            return body;
        };
        if body.len() as u64 <= self.cfg.max_body_size {
            let mut ttl = Duration::from_secs(self.cfg.cache_ttl);
            if self.cfg.cache_control {
                for d in directives(head.headers.get(header::CACHE_CONTROL)) {
                    if let Some(v) = d
                        .strip_prefix("s-maxage=")
                        .or_else(|| d.strip_prefix("max-age="))
                    {
                        if let Ok(s) = v.parse::<u64>() {
                            ttl = Duration::from_secs(s);
                        }
                    }
                }
            }
            let mut headers = head.headers.clone();
            for n in [&STATUS, &KEY] {
                headers.remove(n);
            }
            if !ttl.is_zero() {
                let now = Instant::now();
                self.store.cache.insert(
                    fill.key.clone(),
                    Arc::new(Entry {
                        status: head.status,
                        headers,
                        body: body.clone(),
                        stored: now,
                        expires: now + ttl,
                    }),
                );
            }
        }
        if fill.leader {
            self.store.release(&fill.key);
        }
        body
    }

    fn wants_log(&self) -> bool {
        true
    }

    fn log(&self, rec: &CallRecord) {
        // Whatever happened (not cacheable, error, client gone), waiters must not hang.
        if let Some(fill) = rec.ctx.extensions.get::<Fill>().filter(|f| f.leader) {
            self.store.release(&fill.key);
        }
    }
}
