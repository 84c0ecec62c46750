//! HTTP/2 to a target (gRPC, `h2c`, `h2`): one multiplexed hyper connection per target and
//! worker, opened on first use and replaced when it closes. Request and response bodies
//! stream both ways at once, trailers included (gRPC's status travels in them).

use std::cell::RefCell;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use foldhash::{HashMap, HashMapExt};
use http::header::{self, HeaderMap};
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioIo, TokioTimer};

use super::connect::{connect, ConnectError};
use super::{authority, connect_error, pick, Outbound, Transport};
use crate::body::{BodyError, BoxError, IdleTimer, ProxyBody, RequestBody};
use crate::error::ProxyError;
use crate::handler::{Worker, HOST};
use crate::snapshot::TargetRt;

/// The HTTP/2 connections of one worker, by pool key.
#[derive(Default)]
pub struct H2Connections {
    conns: RefCell<HashMap<Arc<str>, SendRequest<RequestBody>>>,
}

impl H2Connections {
    /// An empty set.
    pub fn new() -> H2Connections {
        H2Connections {
            conns: RefCell::new(HashMap::new()),
        }
    }

    /// A sender on a live connection to `target`, opening one if needed.
    async fn sender(
        &self,
        target: &TargetRt,
        transport: &Transport,
        timeout: Duration,
    ) -> Result<SendRequest<RequestBody>, ConnectError> {
        if let Some(s) = self.conns.borrow().get(&*target.key) {
            if !s.is_closed() {
                return Ok(s.clone());
            }
        }
        let stream = connect(target, transport, timeout).await?;
        let mut builder = hyper::client::conn::http2::Builder::new(crate::server::LocalExec);
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(false);
        let (send, conn) = tokio::time::timeout(timeout, builder.handshake(TokioIo::new(stream)))
            .await
            .map_err(|_| ConnectError::Timeout(target.key.clone()))?
            .map_err(|e| ConnectError::Failed(target.key.clone(), std::io::Error::other(e)))?;
        let key = target.key.clone();
        tokio::task::spawn_local(async move {
            if let Err(e) = conn.await {
                tracing::debug!(target = %key, error = %e, "upstream HTTP/2 connection ended");
            }
        });
        self.conns
            .borrow_mut()
            .insert(target.key.clone(), send.clone());
        Ok(send)
    }
}

/// The headers of the request toward an HTTP/2 upstream: the client's end-to-end headers
/// (`te: trailers` kept, as gRPC needs it), then the gateway's, without Host (it becomes
/// `:authority`) and without Content-Length (hyper frames the body).
fn upstream_headers(client: &HeaderMap, out: &Outbound<'_>) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(client.len() + out.extra.len());
    for (name, value) in client {
        let te_trailers = name == header::TE && value.as_bytes().eq_ignore_ascii_case(b"trailers");
        if (crate::h1::is_hop_by_hop(name) && !te_trailers)
            || name == header::HOST
            || name == header::CONTENT_LENGTH
        {
            continue;
        }
        h.append(name.clone(), value.clone());
    }
    for (name, value) in out.extra.iter() {
        if *name != HOST {
            h.insert(name.clone(), value.clone());
        }
    }
    h
}

pub(super) async fn exchange(
    worker: &Worker,
    mut out: Outbound<'_>,
    req: Request<RequestBody>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let svc = &*out.route.service;
    let (parts, body) = req.into_parts();
    let headers = upstream_headers(&parts.headers, &out);
    let scheme = if svc.transport.tls.is_some() {
        Scheme::HTTPS
    } else {
        Scheme::HTTP
    };
    let mut tried: Vec<usize> = Vec::new();
    let mut failures = 0u32;
    let (target, mut sender) = loop {
        let (idx, target) = pick(worker, &svc.backend, &mut tried)?;
        match worker
            .h2
            .sender(target, &svc.transport, svc.connect_timeout)
            .await
        {
            Ok(s) => break (target, s),
            Err(e) => {
                super::http1::log_connect_failure(out.rid, &e);
                failures += 1;
                if failures > svc.retries {
                    return Err(connect_error(e));
                }
                tried.push(idx);
            }
        }
    };
    let authority = Authority::try_from(authority(&out, target).as_bytes())
        .map_err(|_| ProxyError::UpstreamError)?;
    let pq = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let uri = Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(pq)
        .build()
        .map_err(|_| ProxyError::UpstreamError)?;
    let mut up = Request::new(body);
    *up.method_mut() = parts.method;
    *up.uri_mut() = uri;
    *up.headers_mut() = headers;
    let t0 = out.facts.is_some().then(std::time::Instant::now);
    if let Some(f) = out.facts.as_mut() {
        f.upstream_target = Some((target.host.clone(), target.port));
        f.upstream_retries = failures;
    }
    let sent = async {
        std::future::poll_fn(|cx| sender.poll_ready(cx)).await?;
        sender.send_request(up).await
    };
    let resp = match worker.coarse.timeout(out.head_timeout, sent).await {
        Err(_) => return Err(ProxyError::UpstreamTimeout),
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(send_error(out.rid, &e)),
    };
    if let (Some(f), Some(t0)) = (out.facts.as_mut(), t0) {
        f.upstream_latency = Some(t0.elapsed());
    }
    let (parts, body) = resp.into_parts();
    Ok(Response::from_parts(
        parts,
        ProxyBody::H2(Box::new(H2Body::new(body, svc.read_timeout))),
    ))
}

/// The answer for a failed HTTP/2 exchange: the client's body, or the upstream.
fn send_error(rid: &http::HeaderValue, e: &hyper::Error) -> ProxyError {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(b) = s.downcast_ref::<BodyError>() {
            return match b {
                BodyError::TooLarge(n) => ProxyError::TooLarge(*n),
                BodyError::Idle(_) => ProxyError::ClientTimeout,
            };
        }
        source = s.source();
    }
    tracing::debug!(request_id = %rid.to_str().unwrap_or(""), error = %e, "upstream HTTP/2 exchange failed");
    ProxyError::UpstreamError
}

/// A response body from an HTTP/2 upstream, frames (trailers too) passed on as they come,
/// failing when nothing arrives for the service's `read_timeout`.
pub struct H2Body {
    inner: hyper::body::Incoming,
    idle: Duration,
    timer: IdleTimer,
}

impl H2Body {
    fn new(inner: hyper::body::Incoming, idle: Duration) -> H2Body {
        H2Body {
            inner,
            idle,
            timer: IdleTimer::default(),
        }
    }
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(r) => {
                this.timer.progress();
                Poll::Ready(r.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                if this.timer.expired(cx, this.idle) {
                    return Poll::Ready(Some(Err(Box::new(BodyError::Idle(this.idle)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
