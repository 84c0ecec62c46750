//! The proxy request handler: one snapshot load, route lookup, header rewriting, balancing,
//! pooled upstream exchange, streamed response.

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::{BufMut, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri};

use crate::balancer::Balancer;
use crate::body::{ClientBody, LogCtx, LogState, LoggedBody, ProxyBody, RequestBody};
use crate::error::ProxyError;
use crate::h1::Extra;
use crate::pathnorm;
use crate::plugin::{
    AddedHeader, Chains, Flow, Instance, RequestCtx, RequestInfo, AUTH_PRIORITY_FLOOR,
};
use crate::pool::Pool;
use crate::settings::ProxySettings;
use crate::snapshot::{RouteRt, Snapshot};

/// State shared by all workers: the current snapshot and node settings.
pub struct Shared {
    /// The live config; replaced whole on reload.
    pub snapshot: ArcSwap<Snapshot>,
    /// Node settings.
    pub settings: ProxySettings,
}

impl Shared {
    /// Shared state starting from `snapshot`.
    pub fn new(snapshot: Snapshot, settings: ProxySettings) -> Arc<Shared> {
        Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            settings,
        })
    }
}

/// What the handler knows about the client connection.
pub struct ConnInfo {
    /// Client address.
    pub peer: SocketAddr,
    /// Whether the peer is a trusted proxy.
    pub trusted: bool,
    peer_ip: HeaderValue,
    local_port: HeaderValue,
    /// What the TLS handshake established (TLS connections only).
    pub tls: Option<Arc<crate::tls::server::TlsInfo>>,
    /// The connection's place under the listener's connection cap, given back when the
    /// last holder (the connection task, or a WebSocket tunnel it became) drops this.
    slot: Option<crate::server::ConnSlot>,
}

impl ConnInfo {
    /// Describes a freshly accepted connection.
    pub fn new(peer: SocketAddr, local: SocketAddr, settings: &ProxySettings) -> ConnInfo {
        let ip = peer.ip().to_canonical();
        let trusted = settings.trusted_proxies.iter().any(|n| n.contains(&ip));
        ConnInfo {
            peer: SocketAddr::new(ip, peer.port()),
            trusted,
            peer_ip: HeaderValue::from_str(&ip.to_string())
                .unwrap_or(HeaderValue::from_static("unknown")),
            local_port: HeaderValue::from(local.port()),
            tls: None,
            slot: None,
        }
    }

    /// The same, for a connection that completed a TLS handshake.
    pub fn with_tls(mut self, tls: crate::tls::server::TlsInfo) -> ConnInfo {
        self.tls = Some(Arc::new(tls));
        self
    }

    /// The same, holding a place under the listener's connection cap.
    pub fn with_slot(mut self, slot: crate::server::ConnSlot) -> ConnInfo {
        self.slot = Some(slot);
        self
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub(crate) static HOST: HeaderName = header::HOST;
static UPGRADE: HeaderName = header::UPGRADE;
static CONNECTION: HeaderName = header::CONNECTION;
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// Header carrying the request id, upstream and back to the client.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The client's address: the peer, or, when the peer is a trusted proxy, the right-most
/// address in `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_ip(
    conn: &ConnInfo,
    headers: &HeaderMap,
    settings: &ProxySettings,
) -> std::net::IpAddr {
    if !conn.trusted {
        return conn.peer.ip();
    }
    let mut found = conn.peer.ip();
    let hops = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<std::net::IpAddr>() else {
            break;
        };
        let ip = ip.to_canonical();
        found = ip;
        if !settings.trusted_proxies.iter().any(|n| n.contains(&ip)) {
            break;
        }
    }
    found
}

/// The plugins running for one request: its context and the chain in effect.
pub struct PluginRun {
    // Boxed: the context moves from the access phase to the logged body, and a pointer
    // moves for free where ~400 bytes would be copied at each step.
    ctx: Box<RequestCtx>,
    chain: Arc<[Instance]>,
}

impl PluginRun {
    /// Runs the access phase; switches to the consumer's chain once authentication is done.
    async fn access(&mut self, chains: &Chains, req: &mut http::request::Parts) -> Flow {
        let mut i = 0;
        let mut switched = false;
        loop {
            let past_auth = i >= self.chain.len() || self.chain[i].priority < AUTH_PRIORITY_FLOOR;
            if !switched && past_auth {
                switched = true;
                if let Some(c) = self
                    .ctx
                    .consumer
                    .as_ref()
                    .and_then(|c| chains.by_consumer.get(&c.id))
                {
                    self.chain = c.clone();
                    i = self
                        .chain
                        .iter()
                        .position(|x| x.priority < AUTH_PRIORITY_FLOOR)
                        .unwrap_or(self.chain.len());
                    continue;
                }
            }
            let Some(inst) = self.chain.get(i) else {
                return Flow::Continue;
            };
            if let Some(work) = inst.plugin.prepare(&self.ctx, req) {
                self.ctx.prepared = work.await;
            }
            let Some(inst) = self.chain.get(i) else {
                return Flow::Continue;
            };
            let flow = inst.plugin.access(&mut self.ctx, req);
            self.ctx.prepared = None;
            if let Flow::Respond(r) = flow {
                return Flow::Respond(r);
            }
            i += 1;
        }
    }

    /// Response and log phases, on whatever answer the request got.
    /// Also hands back the headers plugins asked to add, for the server side to write.
    fn finish(
        mut self,
        resp: Response<ProxyBody>,
        sink: Option<&crate::settings::CallSinkRef>,
    ) -> (Response<ProxyBody>, Vec<AddedHeader>) {
        let (mut parts, mut body) = resp.into_parts();
        if let Some(c) = parts.extensions.get::<crate::error::ErrorCode>() {
            self.ctx.error_code = Some(c.0.clone());
        }
        for inst in self.chain.iter() {
            inst.plugin.response(&mut self.ctx, &mut parts);
        }
        let added = std::mem::take(&mut self.ctx.response_headers);
        let streams: Vec<Box<dyn crate::plugin::StreamFilter>> = self
            .chain
            .iter()
            .filter_map(|i| i.plugin.stream_response(&self.ctx, &parts))
            .collect();
        if !streams.is_empty() {
            parts.headers.remove(header::CONTENT_LENGTH);
            body = ProxyBody::Filtered(Box::new(crate::body::FilteredBody::new(body, streams)));
        }
        let filters: Vec<Arc<dyn crate::plugin::Plugin>> = self
            .chain
            .iter()
            .filter(|i| i.plugin.wants_response_body(&self.ctx, &parts))
            .map(|i| i.plugin.clone())
            .collect();
        let wants_log = sink.is_some() || self.chain.iter().any(|i| i.plugin.wants_log());
        if filters.is_empty() && !wants_log {
            return (Response::from_parts(parts, body), added);
        }
        let ctx = if filters.is_empty() {
            // Only the log phase needs the context: it moves into the logged body.
            LogCtx::Owned(self.ctx)
        } else {
            let ctx = std::rc::Rc::new(*self.ctx);
            parts.headers.remove(header::CONTENT_LENGTH);
            let head = crate::plugin::ResponseHead {
                status: parts.status,
                headers: parts.headers.clone(),
            };
            body = ProxyBody::Transformed(Box::new(crate::body::TransformBody::new(
                body,
                filters,
                ctx.clone(),
                head,
            )));
            if !wants_log {
                return (Response::from_parts(parts, body), added);
            }
            LogCtx::Shared(ctx)
        };
        let log = LogState {
            chain: self.chain,
            ctx,
            status: parts.status,
            sink: sink.cloned(),
        };
        (
            Response::from_parts(
                parts,
                ProxyBody::Logged(Box::new(LoggedBody::new(body, log))),
            ),
            added,
        )
    }
}

/// Headers that follow a response's own: those plugins added and `X-Request-Id` (which
/// replaces any the upstream sent).
pub struct AfterHeaders {
    /// The request id.
    pub request_id: HeaderValue,
    /// Added by plugins, in order.
    pub headers: Vec<AddedHeader>,
}

/// One worker thread's handler state (owned by that thread only).
pub struct Worker {
    shared: Arc<Shared>,
    // Deliberately Rc<Arc<_>>: requests clone the Rc (no atomic op, no cross-core cache-line
    // traffic); the Arc is cloned only when a new config is swapped in.
    #[allow(clippy::redundant_allocation)]
    cached: RefCell<Rc<Arc<Snapshot>>>,
    pub(crate) pool: Rc<Pool>,
    pub(crate) balancer: RefCell<Balancer>,
    /// HTTP/2 connections to upstreams.
    pub(crate) h2: crate::upstream::H2Connections,
    id_prefix: u64,
    id_counter: Cell<u64>,
    ids: RefCell<BytesMut>,
    /// Coarse timeouts for the hot path (ticked by the worker).
    pub coarse: Rc<crate::coarse::Coarse>,
}

/// Writes `v` as 16 lowercase hex digits into `out` (16 bytes long).
fn hex16(v: u64, out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, d) in out.iter_mut().take(16).enumerate() {
        *d = HEX[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
}

pub(crate) fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn valid_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 200 && b.iter().all(|c| c.is_ascii_graphic())
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn upstream_uri(
    route: &RouteRt,
    path: &str,
    path_changed: bool,
    matched_len: usize,
    orig: &Uri,
) -> Result<Uri, ProxyError> {
    let base = &*route.service.base_path;
    let rest = if route.strip_path {
        &path[matched_len.min(path.len())..]
    } else {
        path
    };
    // Nothing to rewrite (no base path, nothing stripped — a route on `/` strips nothing —
    // and the path was already normal): forward the request's own path and query.
    if base.is_empty() && !path_changed && rest.len() == path.len() {
        let pq = orig
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        return Ok(Uri::from(pq));
    }
    let query = orig.query();
    let mut s =
        String::with_capacity(base.len() + rest.len() + query.map_or(0, |q| q.len() + 1) + 1);
    s.push_str(base);
    if rest.is_empty() || rest == "/" {
        if s.is_empty() {
            s.push('/');
        }
    } else {
        if !rest.starts_with('/') {
            s.push('/');
        }
        s.push_str(rest);
    }
    if let Some(q) = query {
        s.push('?');
        s.push_str(q);
    }
    Uri::try_from(s).map_err(|_| ProxyError::BadPath(pathnorm::PathError::BadEscape))
}

impl Worker {
    /// A worker with its own pool and balancer state.
    pub fn new(shared: Arc<Shared>) -> Rc<Worker> {
        let settings = &shared.settings;
        let coarse = Rc::new(crate::coarse::Coarse::default());
        let pool = Pool::new(
            settings.upstream_max_idle,
            settings.upstream_idle_timeout,
            coarse.clone(),
        );
        let cached = RefCell::new(Rc::new(shared.snapshot.load_full()));
        Rc::new(Worker {
            shared,
            cached,
            pool,
            balancer: RefCell::new(Balancer::default()),
            h2: crate::upstream::H2Connections::new(),
            id_prefix: rand::random(),
            id_counter: Cell::new(0),
            ids: RefCell::new(BytesMut::new()),
            coarse,
        })
    }

    /// The node settings.
    pub fn settings(&self) -> &ProxySettings {
        &self.shared.settings
    }

    #[allow(clippy::redundant_allocation)]
    pub(crate) fn snapshot(&self) -> Rc<Arc<Snapshot>> {
        let current = self.shared.snapshot.load();
        let mut cached = self.cached.borrow_mut();
        if !Arc::ptr_eq(&current, &**cached) {
            *cached = Rc::new(arc_swap::Guard::into_inner(current));
        }
        cached.clone()
    }

    pub(crate) fn new_request_id(&self) -> HeaderValue {
        let n = self.id_counter.get().wrapping_add(1);
        self.id_counter.set(n);
        // Ids are cut from a shared block (one allocation per 128 ids); cloning one is a
        // reference-count increment rather than the allocation a fresh buffer's first
        // clone costs.
        let mut ids = self.ids.borrow_mut();
        if ids.capacity() < 32 {
            *ids = BytesMut::with_capacity(32 * 128);
        }
        let mut text = [0u8; 32];
        let (high, low) = text.split_at_mut(16);
        hex16(self.id_prefix, high);
        hex16(n, low);
        ids.extend_from_slice(&text);
        // Only hex digits were written, which are valid header bytes.
        HeaderValue::from_maybe_shared(ids.split().freeze())
            .unwrap_or(HeaderValue::from_static("0"))
    }

    /// Serves one request (HTTP/2 via hyper); never fails (errors become JSON answers).
    pub async fn handle(
        self: Rc<Self>,
        conn: Rc<ConnInfo>,
        mut req: Request<ClientBody>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        if let Err(msg) = self.check_h2_head(&mut req, conn.trusted) {
            let rid = self.new_request_id();
            let mut resp =
                crate::error::error_response(StatusCode::BAD_REQUEST, "bad_request", msg, &rid);
            resp.headers_mut().insert(X_REQUEST_ID.clone(), rid);
            return Ok(resp);
        }
        let (mut resp, after) = self.serve(conn, req).await;
        let h = resp.headers_mut();
        for (n, v) in after.headers {
            h.append(n.into_owned(), v.to_header_value());
        }
        h.insert(X_REQUEST_ID.clone(), after.request_id);
        Ok(resp)
    }

    /// The checks h1server makes while parsing, for a request hyper's HTTP/2 server parsed:
    /// one valid Host at most, and the same as `:authority`; no headers with underscores
    /// unless allowed; no gateway-owned headers from an untrusted peer.
    fn check_h2_head(
        &self,
        req: &mut Request<ClientBody>,
        trusted: bool,
    ) -> Result<(), &'static str> {
        if let Some(a) = req.uri().authority() {
            if a.as_str().contains('@') || !crate::wire::valid_host(a.as_str().as_bytes()) {
                return Err("invalid :authority");
            }
        }
        let hosts = req.headers().get_all(header::HOST);
        let mut it = hosts.iter();
        if let Some(h) = it.next() {
            if it.next().is_some() {
                return Err("more than one Host header");
            }
            if !crate::wire::valid_host(h.as_bytes()) {
                return Err("invalid Host header");
            }
            if let Some(a) = req.uri().authority() {
                if !h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes()) {
                    return Err("the Host header differs from :authority");
                }
            }
        }
        let underscores = !self.shared.settings.allow_underscores_in_headers;
        let dropped = |k: &HeaderName| {
            (underscores && k.as_str().contains('_'))
                || (!trusted && crate::wire::is_gateway_owned(k.as_str().as_bytes()))
        };
        if req.headers().keys().any(dropped) {
            let h = req.headers_mut();
            let names: Vec<HeaderName> = h.keys().filter(|k| dropped(k)).cloned().collect();
            for n in names {
                h.remove(n);
            }
        }
        Ok(())
    }

    /// Serves one request; the headers in [`AfterHeaders`] are not in the response's map:
    /// the HTTP/1 server writes them straight after it (no hashing, no map growth).
    pub async fn serve(
        self: Rc<Self>,
        conn: Rc<ConnInfo>,
        req: Request<ClientBody>,
    ) -> (Response<ProxyBody>, AfterHeaders) {
        let rid = match req.headers().get(&X_REQUEST_ID) {
            Some(v) if conn.trusted && valid_request_id(v) => v.clone(),
            _ => self.new_request_id(),
        };
        let snap = self.snapshot();
        let method = req.method().clone();
        let grpc = grpc_content_type(req.headers());
        // What the call log needs of a request no route takes (only when it is on).
        let unrouted = self.shared.settings.call_sink.as_ref().map(|_| Unrouted {
            started: std::time::Instant::now(),
            client_ip: client_ip(&conn, req.headers(), &self.shared.settings),
            path: req.uri().path().to_string(),
            host: req.headers().get(header::HOST).cloned(),
            body_bytes: content_length(req.headers()),
        });
        let mut run: Option<PluginRun> = None;
        let mut resp = match self
            .proxy(&snap, &conn, &rid, req, grpc.is_some(), &mut run)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                let (status, _) = e.status_code();
                if status.is_server_error() {
                    tracing::warn!(request_id = %rid.to_str().unwrap_or(""), %method, error = %e, "request failed");
                }
                e.to_response(&rid)
            }
        };
        if let Some(ct) = grpc {
            // Answers the gateway made itself go to gRPC (and gRPC-Web) clients as gRPC
            // statuses.
            resp = crate::error::to_grpc(resp, ct);
        }
        let mut headers = Vec::new();
        let sink = self.shared.settings.call_sink.as_ref();
        match run {
            Some(run) => (resp, headers) = run.finish(resp, sink),
            // Answered before a route's plugins ran (no route, a bad request).
            None => {
                if let Some(sink) = sink {
                    self.record_unrouted(sink, &rid, &method, unrouted, &resp);
                }
            }
        }
        (
            resp,
            AfterHeaders {
                request_id: rid,
                headers,
            },
        )
    }

    /// The call log's record of a request answered before any route's plugins ran.
    fn record_unrouted(
        &self,
        sink: &crate::settings::CallSinkRef,
        rid: &HeaderValue,
        method: &http::Method,
        unrouted: Option<Unrouted>,
        resp: &Response<ProxyBody>,
    ) {
        let Some(u) = unrouted else {
            return;
        };
        let mut ctx = RequestCtx::new(
            rid.clone(),
            u.client_ip,
            (uuid::Uuid::nil(), uuid::Uuid::nil()),
            RequestInfo {
                method: method.clone(),
                path: u.path,
                host: u.host,
                route_name: None,
                service_name: None,
                body_bytes: u.body_bytes,
                started: u.started,
                started_unix_ms: self.coarse.unix_ms(u.started),
            },
            Vec::new(),
        );
        ctx.error_code = resp
            .extensions()
            .get::<crate::error::ErrorCode>()
            .map(|c| c.0.clone());
        let bytes = http_body::Body::size_hint(resp.body()).exact().unwrap_or(0);
        sink.0.record(&crate::plugin::CallRecord {
            ctx: &ctx,
            status: resp.status(),
            response_bytes: bytes,
            total: u.started.elapsed(),
            complete: true,
        });
    }

    /// The request path, as a short list of stages: route, plugins, forwarding headers,
    /// body, upstream exchange.
    async fn proxy(
        &self,
        snap: &Snapshot,
        conn: &Rc<ConnInfo>,
        rid: &HeaderValue,
        req: Request<ClientBody>,
        grpc: bool,
        run: &mut Option<PluginRun>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (mut parts, body) = req.into_parts();
        let routed = route(snap, conn, &parts)?;
        let route = &snap.routes[routed.index];
        let host = routed.host.clone();
        if route.chains.is_empty() && self.shared.settings.call_sink.is_none() {
            // No plugin can change the request: the path may stay borrowed from it.
            parts.uri = upstream_uri(
                route,
                &routed.path,
                matches!(routed.path, std::borrow::Cow::Owned(_)),
                routed.matched_len,
                &parts.uri,
            )?;
        } else {
            let routed = routed.into_owned();
            if let Some(early) = self
                .plugins(conn, rid, routed, route, &mut parts, run)
                .await?
            {
                return Ok(early);
            }
        }
        let limit = self.body_limit(route, run, &parts)?;
        if let Some(r) = run.as_mut() {
            if let Some(inst) = r.chain.iter().find(|i| i.plugin.serves()).cloned() {
                return serve_by_plugin(&inst, r, parts, body, limit, route).await;
            }
        }
        let mut extra = Extra::default();
        forwarding_headers(&mut extra, conn, &parts.headers, host.as_ref(), rid);
        // Only a WebSocket upgrade (h1server hands over the client connection for nothing
        // else) is forwarded, and only on routes that allow it. Any other Upgrade, and
        // HTTP2-Settings, were dropped as hop-by-hop: the request goes as plain HTTP.
        let client_upgrade = parts.extensions.remove::<crate::h1server::UpgradeRx>();
        if client_upgrade.is_some() {
            if !route.websocket {
                return Err(ProxyError::WebSocketNotEnabled);
            }
            extra.set(&UPGRADE, HeaderValue::from_static("websocket"));
            extra.set(&CONNECTION, HeaderValue::from_static("upgrade"));
        }
        let svc = &*route.service;
        // Only a gRPC request has a deadline of its own (and only then is it looked up).
        let head_timeout = match grpc.then(|| grpc_timeout(&parts.headers)).flatten() {
            Some(t) => t.min(svc.read_timeout),
            None => svc.read_timeout,
        };
        let body = RequestBody::new(body, limit, svc.write_timeout);
        let body = match run
            .as_mut()
            .filter(|r| r.chain.iter().any(|i| i.plugin.wants_request_body()))
        {
            None => body,
            Some(r) => match rewrite_body(body, r, &mut parts).await? {
                Ok(b) => b,
                Err(early) => return Ok(early),
            },
        };
        let mut out = crate::upstream::Outbound {
            route,
            rid,
            extra: &mut extra,
            orig_host: host,
            client_upgrade,
            conn,
            head_timeout,
            facts: run.as_mut().map(|r| &mut *r.ctx),
        };
        let mut req = Request::from_parts(parts, body);
        if svc.transport.protocol.http2() {
            crate::upstream::exchange_h2(self, out, req).await
        } else {
            crate::upstream::exchange_h1(self, &mut out, &mut req).await
        }
    }

    /// The plugins' access phase and the path to send upstream. `Some` is an early answer.
    async fn plugins(
        &self,
        conn: &ConnInfo,
        rid: &HeaderValue,
        routed: Routed<'static>,
        route: &RouteRt,
        parts: &mut http::request::Parts,
        run: &mut Option<PluginRun>,
    ) -> Result<Option<Response<ProxyBody>>, ProxyError> {
        let svc = &*route.service;
        let started = std::time::Instant::now();
        let path_changed = routed.changed;
        let mut ctx = Box::new(RequestCtx::new(
            rid.clone(),
            client_ip(conn, &parts.headers, &self.shared.settings),
            (route.id, svc.id),
            RequestInfo {
                method: parts.method.clone(),
                path: routed.path.into_owned(),
                host: routed.host,
                route_name: route.name.clone(),
                service_name: svc.name.clone(),
                body_bytes: content_length(&parts.headers),
                started,
                started_unix_ms: self.coarse.unix_ms(started),
            },
            routed.params,
        ));
        ctx.tls = conn.tls.clone();
        ctx.outcall = Some(crate::outcall::Outcall::new(self.pool.clone()));
        let r = run.insert(PluginRun {
            ctx,
            chain: route.chains.base.clone(),
        });
        if let Flow::Respond(early) = r.access(&route.chains, parts).await {
            return Ok(Some(*early));
        }
        parts.uri = match r.ctx.upstream_path.take() {
            Some(p) => {
                Uri::try_from(p).map_err(|_| ProxyError::BadPath(pathnorm::PathError::BadEscape))?
            }
            None => upstream_uri(
                route,
                &r.ctx.request.path,
                path_changed,
                routed.matched_len,
                &parts.uri,
            )?,
        };
        Ok(None)
    }

    /// The body limit in force (route, or a plugin's smaller one); a Content-Length over it
    /// is refused before anything is sent.
    fn body_limit(
        &self,
        route: &RouteRt,
        run: &Option<PluginRun>,
        parts: &http::request::Parts,
    ) -> Result<u64, ProxyError> {
        let mut limit = route
            .body_limit
            .unwrap_or(self.shared.settings.max_body_bytes);
        if let Some(l) = run.as_ref().and_then(|r| r.ctx.body_limit) {
            limit = limit.min(l);
        }
        if content_length(&parts.headers).is_some_and(|n| n > limit) {
            return Err(ProxyError::TooLarge(limit));
        }
        Ok(limit)
    }
}

/// A request as the call log sees it before routing.
struct Unrouted {
    started: std::time::Instant,
    client_ip: std::net::IpAddr,
    path: String,
    host: Option<HeaderValue>,
    body_bytes: Option<u64>,
}

/// The route a request matched, and what routing learned about it.
struct Routed<'a> {
    index: usize,
    /// The host the client asked for (the target's authority, else Host).
    host: Option<HeaderValue>,
    /// The normalized path (borrowed from the request when it already was normal).
    path: std::borrow::Cow<'a, str>,
    /// Normalization changed the path.
    changed: bool,
    matched_len: usize,
    params: Vec<(String, String)>,
}

impl Routed<'_> {
    /// The same with the path owned (plugins may change the request it borrowed from).
    fn into_owned(self) -> Routed<'static> {
        Routed {
            index: self.index,
            host: self.host,
            path: std::borrow::Cow::Owned(self.path.into_owned()),
            changed: self.changed,
            matched_len: self.matched_len,
            params: self.params,
        }
    }
}

/// Finds the route; refuses what its `protocols` do not accept.
fn route<'a>(
    snap: &Snapshot,
    conn: &ConnInfo,
    parts: &'a http::request::Parts,
) -> Result<Routed<'a>, ProxyError> {
    // The target's authority (HTTP/2 `:authority`; HTTP/1 absolute form, which h1server also
    // put into Host) wins over a Host header.
    let host: Option<HeaderValue> = parts
        .uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        .or_else(|| parts.headers.get(header::HOST).cloned());
    let host_str = host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("");
    let path = pathnorm::normalize(parts.uri.path())?;
    let m = snap
        .router
        .find(host_str, &parts.method, &path, &parts.headers)
        .ok_or(ProxyError::NoRoute)?;
    let r = &snap.routes[m.route];
    if conn.tls.is_some() {
        if !r.tls {
            return Err(ProxyError::NoRoute);
        }
    } else if !r.cleartext {
        if r.https_redirect == StatusCode::UPGRADE_REQUIRED {
            return Err(ProxyError::HttpsRequired);
        }
        let location = format!(
            "https://{}{}",
            host_str.split(':').next().unwrap_or(host_str),
            parts.uri.path_and_query().map_or("/", |p| p.as_str())
        );
        return Err(ProxyError::Redirect(r.https_redirect, location));
    }
    Ok(Routed {
        index: m.route,
        host,
        changed: matches!(path, std::borrow::Cow::Owned(_)),
        matched_len: m.matched_len,
        params: m.params,
        path,
    })
}

/// The headers the gateway sets upstream: X-Forwarded-For/-Proto/-Host/-Port, X-Real-IP,
/// X-Request-Id (those a trusted proxy sent are kept). Written next to the request's own
/// when the head is serialized (`h1::Extra`): the client's header map is left as it came.
fn forwarding_headers(
    extra: &mut Extra,
    conn: &ConnInfo,
    h: &HeaderMap,
    host: Option<&HeaderValue>,
    rid: &HeaderValue,
) {
    let trusted = conn.trusted;
    if trusted && h.contains_key(&X_FORWARDED_FOR) {
        let mut joined = BytesMut::new();
        for v in h.get_all(&X_FORWARDED_FOR) {
            joined.put_slice(v.as_bytes());
            joined.put_slice(b", ");
        }
        joined.put_slice(conn.peer_ip.as_bytes());
        if let Ok(v) = HeaderValue::from_maybe_shared(joined.freeze()) {
            extra.set(&X_FORWARDED_FOR, v);
        }
    } else {
        extra.set(&X_FORWARDED_FOR, conn.peer_ip.clone());
    }
    if !(trusted && h.contains_key(&X_FORWARDED_PROTO)) {
        let proto = if conn.tls.is_some() { "https" } else { "http" };
        extra.set(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !(trusted && h.contains_key(&X_FORWARDED_HOST)) {
        if let Some(v) = host {
            extra.set(&X_FORWARDED_HOST, v.clone());
        }
    }
    if !(trusted && h.contains_key(&X_FORWARDED_PORT)) {
        extra.set(&X_FORWARDED_PORT, conn.local_port.clone());
    }
    if !(trusted && h.contains_key(&X_REAL_IP)) {
        extra.set(&X_REAL_IP, conn.peer_ip.clone());
    }
    extra.set(&X_REQUEST_ID, rid.clone());
}

/// The request body read whole (within the limit) and passed through the plugins that
/// rewrite bodies (`Err` is a plugin's early answer).
async fn read_rewritten(
    body: RequestBody,
    r: &mut PluginRun,
    parts: &mut http::request::Parts,
) -> Result<Result<bytes::Bytes, Response<ProxyBody>>, ProxyError> {
    let mut bytes = http_body_util::BodyExt::collect(body)
        .await
        .map_err(|e| crate::upstream::body_error(&e))?
        .to_bytes();
    let chain = r.chain.clone();
    for inst in chain.iter().filter(|i| i.plugin.wants_request_body()) {
        match inst.plugin.request_body(&mut r.ctx, parts, bytes) {
            Ok(b) => bytes = b,
            Err(Flow::Respond(early)) => return Ok(Err(*early)),
            Err(Flow::Continue) => return Err(ProxyError::ClientAborted),
        }
    }
    Ok(Ok(bytes))
}

/// The request body for plugins that rewrite bodies (see [`read_rewritten`]). Other
/// requests stream.
async fn rewrite_body(
    body: RequestBody,
    r: &mut PluginRun,
    parts: &mut http::request::Parts,
) -> Result<Result<RequestBody, Response<ProxyBody>>, ProxyError> {
    // The upstream gets the new body's own Content-Length (the connector frames it).
    Ok(read_rewritten(body, r, parts)
        .await?
        .map(RequestBody::buffered))
}

/// A request a plugin answers itself: the body read whole within the limit and through the
/// body-rewriting plugins (a prompt template) first; a WebSocket upgrade is refused (such
/// plugins speak plain HTTP).
async fn serve_by_plugin(
    inst: &crate::plugin::Instance,
    r: &mut PluginRun,
    mut parts: http::request::Parts,
    body: ClientBody,
    limit: u64,
    route: &RouteRt,
) -> Result<Response<ProxyBody>, ProxyError> {
    if parts
        .extensions
        .remove::<crate::h1server::UpgradeRx>()
        .is_some()
    {
        return Err(ProxyError::WebSocketNotEnabled);
    }
    let body = RequestBody::new(body, limit, route.service.write_timeout);
    match read_rewritten(body, r, &mut parts).await? {
        Ok(bytes) => Ok(inst.plugin.serve(&mut r.ctx, parts, bytes).await),
        Err(early) => Ok(early),
    }
}

/// The content type of a gRPC or gRPC-Web request (what its error answers carry).
fn grpc_content_type(h: &HeaderMap) -> Option<HeaderValue> {
    h.get(header::CONTENT_TYPE)
        .filter(|v| v.as_bytes().starts_with(b"application/grpc"))
        .cloned()
}

/// The deadline a gRPC client set (`grpc-timeout: 5S`, units H M S m u n).
fn grpc_timeout(h: &HeaderMap) -> Option<std::time::Duration> {
    let v = h.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (n, unit) = v.split_at(v.len() - 1);
    let n: u64 = n.parse().ok()?;
    use std::time::Duration as D;
    Some(match unit {
        "H" => D::from_secs(n.saturating_mul(3600)),
        "M" => D::from_secs(n.saturating_mul(60)),
        "S" => D::from_secs(n),
        "m" => D::from_millis(n),
        "u" => D::from_micros(n),
        "n" => D::from_nanos(n),
        _ => return None,
    })
}
