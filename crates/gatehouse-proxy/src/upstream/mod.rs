//! The upstream side of a request: pick a target, get a connection for the service's
//! transport, send, and hand back the response head with a streaming body.
//!
//! One connector per transport: HTTP/1.1 over TCP or TLS ([`exchange_h1`], pooled per
//! worker by target and TLS settings, Gatehouse's own codec in `h1.rs`) and HTTP/2 over TCP
//! or TLS ([`exchange_h2`], one multiplexed hyper connection per target and worker) for
//! `grpc`, `grpcs`, `h2c` and `h2` services. The handler picks one by the service's
//! [`Transport`]; both take the same [`Outbound`] and request and give the same answer.

pub mod connect;
mod http1;
pub mod http2;

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_model::ServiceProtocol;
use http::{HeaderValue, Request, Response};

use crate::body::{ProxyBody, RequestBody};
use crate::error::ProxyError;
use crate::h1::Extra;
use crate::h1server::UpgradeRx;
use crate::handler::{ConnInfo, Worker};
use crate::snapshot::{Backend, RouteRt, TargetRt};

pub(crate) use http1::body_error;
pub use http2::H2Connections;

/// How a service's targets are spoken to.
#[derive(Debug)]
pub struct Transport {
    /// The service's protocol.
    pub protocol: ServiceProtocol,
    /// The TLS client config (TLS protocols only).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Transport {
    /// Plain HTTP/1.1.
    pub fn plain() -> Transport {
        Transport {
            protocol: ServiceProtocol::Http,
            tls: None,
        }
    }
}

/// What the stages before the upstream decided about one request.
pub(crate) struct Outbound<'a> {
    /// The matched route (its service says where to send).
    pub route: &'a RouteRt,
    /// The request id, for logs.
    pub rid: &'a HeaderValue,
    /// Headers the gateway sets upstream (the Host is added per target).
    pub extra: &'a mut Extra,
    /// The client's host (for `preserve_host`).
    pub orig_host: Option<HeaderValue>,
    /// The client connection, when the request is a WebSocket upgrade.
    pub client_upgrade: Option<UpgradeRx>,
    /// The client connection (a WebSocket tunnel holds it under the connection cap).
    pub conn: &'a Rc<ConnInfo>,
    /// How long to wait for the response head (the service's `read_timeout`, or less when
    /// a gRPC client set `grpc-timeout`).
    pub head_timeout: Duration,
    /// Filled with the time from sending to the response head, the target and the
    /// retries, when plugins or the call log want them.
    pub facts: Option<&'a mut crate::plugin::RequestCtx>,
}

/// Sends the request over HTTP/1.1 to one of the service's targets.
pub(crate) use http1::exchange as exchange_h1;

/// Sends the request over HTTP/2 to one of the service's targets. Boxed: its state would
/// otherwise make every HTTP/1 request's future larger (and moving it costlier).
pub(crate) fn exchange_h2<'a>(
    worker: &'a Worker,
    out: Outbound<'a>,
    req: Request<RequestBody>,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Response<ProxyBody>, ProxyError>> + 'a>,
> {
    Box::pin(http2::exchange(worker, out, req))
}

/// Picks the next target to try, skipping the ones in `tried` while others remain.
fn pick<'s>(
    worker: &Worker,
    backend: &'s Backend,
    tried: &mut Vec<usize>,
) -> Result<(usize, &'s Arc<TargetRt>), ProxyError> {
    match backend {
        Backend::Single(t) => Ok((0, t)),
        Backend::Upstream { id, name, targets } => {
            if targets.is_empty() {
                return Err(ProxyError::NoTargets(name.to_string()));
            }
            if tried.len() >= targets.len() {
                tried.clear();
            }
            let mut b = worker.balancer.borrow_mut();
            let i = b
                .pick(*id, targets, tried)
                .ok_or_else(|| ProxyError::NoTargets(name.to_string()))?;
            Ok((i, &targets[i]))
        }
    }
}

/// The Host (HTTP/1) or `:authority` (HTTP/2) for a target.
fn authority(out: &Outbound<'_>, target: &TargetRt) -> HeaderValue {
    match (&out.orig_host, out.route.preserve_host) {
        (Some(h), true) => h.clone(),
        _ => target.host_header.clone(),
    }
}

/// The error for a failed connect.
fn connect_error(e: connect::ConnectError) -> ProxyError {
    match e {
        connect::ConnectError::Timeout(_) => ProxyError::ConnectTimeout,
        connect::ConnectError::Failed(..) => ProxyError::Unreachable,
        connect::ConnectError::Tls(..) => ProxyError::UpstreamTls,
    }
}
