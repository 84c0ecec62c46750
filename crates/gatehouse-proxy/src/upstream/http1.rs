//! HTTP/1.1 to a target, over TCP or TLS: a pooled connection, Gatehouse's own codec
//! (`h1::Conn`), retries on connect failure, one resend when a reused connection turns out
//! closed, and the WebSocket hand-over on a `101`.

use http::{header, Method, Request, Response, StatusCode};
use http_body::Body as _;

use super::{authority, connect_error, pick, Outbound};
use crate::body::{BodyError, ProxyBody, RequestBody};
use crate::error::ProxyError;
use crate::h1::{H1Error, ResponseBody};
use crate::handler::{has_token, Worker, HOST};

pub(crate) async fn exchange(
    worker: &Worker,
    out: &mut Outbound<'_>,
    req: &mut Request<RequestBody>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let svc = &*out.route.service;
    let rid = out.rid;
    let method = req.method().clone();
    let idempotent = matches!(
        method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    );
    let has_body = !req.body().is_end_stream();
    // The Host header is the last extra, set per target.
    let host_slot = out.extra.len();
    let mut tried: Vec<usize> = Vec::new();
    let mut failures = 0u32;
    let mut stale = 0u32;
    loop {
        let (idx, target) = pick(worker, &svc.backend, &mut tried)?;
        out.extra.truncate(host_slot);
        out.extra.set(&HOST, authority(out, target));
        let lease = match worker
            .pool
            .get(target, &svc.transport, svc.connect_timeout, stale > 0)
            .await
        {
            Ok(l) => l,
            Err(e) => {
                log_connect_failure(rid, &e);
                failures += 1;
                if failures > svc.retries {
                    return Err(connect_error(e));
                }
                tried.push(idx);
                continue;
            }
        };
        let mut conn = lease.conn;
        let t0 = out.facts.is_some().then(std::time::Instant::now);
        if let Some(f) = out.facts.as_mut() {
            f.upstream_target = Some((target.host.clone(), target.port));
            f.upstream_retries = failures + stale;
        }
        let head = match conn.send(req, out.extra, svc.write_timeout).await {
            Err(H1Error::Io(e)) if has_body => {
                return early_answer(worker, out, req, conn, &method, &e).await;
            }
            Ok(_) => match worker
                .coarse
                .timeout(out.head_timeout, conn.read_head(&method))
                .await
            {
                Ok(r) => r,
                Err(_) => return Err(ProxyError::UpstreamTimeout),
            },
            Err(e) => Err(e),
        };
        let (resp, framing) = match head {
            Ok(h) => {
                if let (Some(f), Some(t0)) = (out.facts.as_mut(), t0) {
                    f.upstream_latency = Some(t0.elapsed());
                }
                h
            }
            Err(H1Error::Body(e)) => return Err(body_error(&e)),
            Err(H1Error::WriteTimeout(_)) => return Err(ProxyError::UpstreamTimeout),
            Err(e @ (H1Error::ClosedEarly | H1Error::Io(_)))
                if lease.reused && !has_body && idempotent && stale < 3 =>
            {
                // The pooled connection was closed by the upstream as we reused it: the
                // request cannot have been processed; resend it on a fresh connection.
                tracing::debug!(request_id = %rid.to_str().unwrap_or(""), error = %e, "stale pooled connection; retrying");
                stale += 1;
                continue;
            }
            Err(e) => {
                tracing::debug!(request_id = %rid.to_str().unwrap_or(""), error = %e, reused = lease.reused, "upstream exchange failed");
                return Err(ProxyError::UpstreamError);
            }
        };
        let (parts, ()) = resp.into_parts();
        if parts.status == StatusCode::SWITCHING_PROTOCOLS {
            return switch(out, parts, conn);
        }
        // Hop-by-hop headers were left out when the head was parsed (h1::Conn::parse_head).
        let release = worker.pool.release_to(target.key.clone());
        let body = ResponseBody::new(conn, framing, release, svc.read_timeout);
        return Ok(Response::from_parts(parts, ProxyBody::Upstream(body)));
    }
}

/// The upstream stopped taking the request body — it answered early (a 413 or a 401 before
/// the upload ended) and closed, or just closed. The client gets what it would have got had
/// the upstream read everything: the rest of the body is read and dropped up to the body
/// limit (past it: 413, as for any too-large body), then the upstream's early answer goes
/// back if it wrote one; without one, 502.
async fn early_answer(
    worker: &Worker,
    out: &Outbound<'_>,
    req: &mut Request<RequestBody>,
    mut conn: crate::h1::Conn,
    method: &Method,
    cause: &std::io::Error,
) -> Result<Response<ProxyBody>, ProxyError> {
    tracing::debug!(request_id = %out.rid.to_str().unwrap_or(""), error = %cause, "upstream stopped reading the request body");
    let body = req.body_mut();
    while let Some(frame) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut *body).poll_frame(cx)).await
    {
        if let Err(e) = frame {
            return Err(body_error(&e));
        }
    }
    match worker
        .coarse
        .timeout(out.head_timeout, conn.read_head(method))
        .await
    {
        Ok(Ok((resp, framing))) if resp.status() != StatusCode::SWITCHING_PROTOCOLS => {
            let (parts, ()) = resp.into_parts();
            let body = ResponseBody::closing(conn, framing, out.route.service.read_timeout);
            Ok(Response::from_parts(parts, ProxyBody::Upstream(body)))
        }
        _ => Err(ProxyError::UpstreamError),
    }
}

/// Follows a `101` only when the client asked for a WebSocket and the upstream agreed to
/// exactly that; joins the two connections in a tunnel task.
fn switch(
    out: &mut Outbound<'_>,
    parts: http::response::Parts,
    conn: crate::h1::Conn,
) -> Result<Response<ProxyBody>, ProxyError> {
    let agreed = has_token(&parts.headers, &header::UPGRADE, "websocket");
    let (Some(client), true) = (out.client_upgrade.take(), agreed) else {
        tracing::debug!(request_id = %out.rid.to_str().unwrap_or(""), "upstream switched protocols unasked; refused");
        return Err(ProxyError::UpstreamError);
    };
    let (upstream, leftover) = conn.into_parts();
    let idle = out.route.service.read_timeout;
    let holder = out.conn.clone();
    tokio::task::spawn_local(async move {
        let _slot = holder;
        let Some(c) = client.upgraded().await else {
            return;
        };
        crate::tunnel::run(c.io, c.leftover, upstream, leftover, idle).await;
    });
    Ok(Response::from_parts(parts, ProxyBody::empty()))
}

/// The answer for a request body that failed while it was being sent.
pub(crate) fn body_error(e: &crate::body::BoxError) -> ProxyError {
    match e.downcast_ref::<BodyError>() {
        Some(BodyError::TooLarge(n)) => ProxyError::TooLarge(*n),
        Some(BodyError::Idle(_)) => ProxyError::ClientTimeout,
        None => ProxyError::ClientAborted,
    }
}

pub(super) fn log_connect_failure(rid: &http::HeaderValue, e: &super::connect::ConnectError) {
    match e {
        // A TLS failure is a configuration problem someone has to fix: say why, loudly.
        super::connect::ConnectError::Tls(..) => {
            tracing::warn!(request_id = %rid.to_str().unwrap_or(""), error = %e, "upstream TLS handshake failed")
        }
        _ => {
            tracing::debug!(request_id = %rid.to_str().unwrap_or(""), error = %e, "connect failed")
        }
    }
}
