//! The common JSON error shape every gateway-made error answer uses:
//! `{"error": {"status": 404, "code": "no_route", "message": "…", "request_id": "…"}}`.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use serde_json::json;

use crate::body::ProxyBody;

/// Why the gateway answered instead of the upstream.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No route matched.
    #[error("no route matches this request")]
    NoRoute,
    /// The path could not be normalized.
    #[error("bad request path: {0}")]
    BadPath(#[from] crate::pathnorm::PathError),
    /// Body larger than the route allows.
    #[error("request body is larger than the limit of {0} bytes")]
    TooLarge(u64),
    /// The service's upstream has no target with weight above zero.
    #[error("upstream '{0}' has no targets to send to")]
    NoTargets(String),
    /// Every connect attempt failed.
    #[error("upstream is unreachable")]
    Unreachable,
    /// Every connect attempt timed out.
    #[error("timed out connecting to the upstream")]
    ConnectTimeout,
    /// The upstream did not answer in time.
    #[error("upstream did not answer in time")]
    UpstreamTimeout,
    /// The upstream broke the exchange.
    #[error("upstream failed to answer")]
    UpstreamError,
    /// The client stopped sending its body.
    #[error("timed out waiting for the request body")]
    ClientTimeout,
    /// The client's body stream broke.
    #[error("the request body could not be read")]
    ClientAborted,
    /// The TLS handshake with the upstream failed (untrusted certificate, wrong name…).
    #[error("the upstream's TLS certificate or handshake was refused")]
    UpstreamTls,
    /// A cleartext request to a route that accepts only TLS (Kong's 426).
    #[error("this route is served over HTTPS only")]
    HttpsRequired,
    /// A cleartext request to a TLS-only route that redirects (status, `Location`).
    #[error("this route is served over HTTPS only: {1}")]
    Redirect(StatusCode, String),
    /// A WebSocket upgrade on a route that does not allow it.
    #[error("WebSocket upgrades are not enabled on this route")]
    WebSocketNotEnabled,
}

impl ProxyError {
    /// HTTP status and machine-readable code.
    pub fn status_code(&self) -> (StatusCode, &'static str) {
        match self {
            ProxyError::NoRoute => (StatusCode::NOT_FOUND, "no_route"),
            ProxyError::BadPath(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ProxyError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "request_too_large"),
            ProxyError::NoTargets(_) => (StatusCode::SERVICE_UNAVAILABLE, "no_upstream_targets"),
            ProxyError::Unreachable => (StatusCode::BAD_GATEWAY, "upstream_unreachable"),
            ProxyError::ConnectTimeout => (StatusCode::GATEWAY_TIMEOUT, "upstream_connect_timeout"),
            ProxyError::UpstreamTimeout => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
            ProxyError::UpstreamError => (StatusCode::BAD_GATEWAY, "upstream_error"),
            ProxyError::ClientTimeout => (StatusCode::REQUEST_TIMEOUT, "request_body_timeout"),
            ProxyError::ClientAborted => (StatusCode::BAD_REQUEST, "bad_request_body"),
            ProxyError::WebSocketNotEnabled => (StatusCode::BAD_REQUEST, "websocket_not_enabled"),
            ProxyError::UpstreamTls => (StatusCode::BAD_GATEWAY, "upstream_tls_error"),
            ProxyError::HttpsRequired => (StatusCode::UPGRADE_REQUIRED, "https_required"),
            ProxyError::Redirect(s, _) => (*s, "https_required"),
        }
    }

    /// The answer to send to the client.
    pub fn to_response(&self, request_id: &HeaderValue) -> Response<ProxyBody> {
        let (status, code) = self.status_code();
        let mut resp = error_response(status, code, &self.to_string(), request_id);
        match self {
            ProxyError::Redirect(_, location) => {
                if let Ok(v) = HeaderValue::from_str(location) {
                    resp.headers_mut().insert(http::header::LOCATION, v);
                }
            }
            ProxyError::HttpsRequired => {
                resp.headers_mut().insert(
                    http::header::UPGRADE,
                    HeaderValue::from_static("TLS/1.2, HTTP/1.1"),
                );
            }
            _ => {}
        }
        resp
    }
}

/// Marks an answer the gateway made itself (not the upstream's), with its message: a gRPC
/// request gets such answers as gRPC statuses instead (see [`grpc_status`]).
#[derive(Debug, Clone)]
pub struct GatewayAnswer(pub std::sync::Arc<str>);

/// The `code` of an answer in the common error shape (for the call log).
#[derive(Debug, Clone)]
pub struct ErrorCode(pub std::sync::Arc<str>);

/// The gRPC status code for a gateway answer's HTTP status.
pub fn grpc_status(status: StatusCode) -> u8 {
    match status.as_u16() {
        400 => 3,        // INVALID_ARGUMENT
        401 => 16,       // UNAUTHENTICATED
        403 => 7,        // PERMISSION_DENIED
        404 | 405 => 12, // UNIMPLEMENTED
        408 | 504 => 4,  // DEADLINE_EXCEEDED
        413 | 429 => 8,  // RESOURCE_EXHAUSTED
        502 | 503 => 14, // UNAVAILABLE
        500 => 13,       // INTERNAL
        _ => 2,          // UNKNOWN
    }
}

/// Turns a gateway answer into a gRPC trailers-only answer: HTTP 200, the request's gRPC
/// content type (`application/grpc…` or `application/grpc-web…`), `grpc-status` and a
/// percent-encoded `grpc-message`, no body.
pub fn to_grpc(resp: Response<ProxyBody>, content_type: HeaderValue) -> Response<ProxyBody> {
    let Some(GatewayAnswer(message)) = resp.extensions().get::<GatewayAnswer>().cloned() else {
        return resp;
    };
    let code = grpc_status(resp.status());
    let mut out = Response::new(ProxyBody::empty());
    let h = out.headers_mut();
    h.insert(CONTENT_TYPE, content_type);
    h.insert("grpc-status", HeaderValue::from(u16::from(code)));
    if let Ok(v) = HeaderValue::from_str(&grpc_message(&message)) {
        h.insert("grpc-message", v);
    }
    for (k, v) in resp.headers() {
        // Challenges and limits stay useful to a gRPC client (as metadata).
        if k == http::header::WWW_AUTHENTICATE
            || k.as_str().starts_with("ratelimit")
            || k == http::header::RETRY_AFTER
        {
            h.append(k.clone(), v.clone());
        }
    }
    out
}

/// Percent-encodes a gRPC message (printable ASCII except `%` stays).
fn grpc_message(m: &str) -> String {
    let mut s = String::with_capacity(m.len());
    for b in m.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// Builds an error answer in the common shape.
pub fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: &HeaderValue,
) -> Response<ProxyBody> {
    let body = json!({"error": {
        "status": status.as_u16(),
        "code": code,
        "message": message,
        "request_id": request_id.to_str().unwrap_or(""),
    }});
    let bytes = Bytes::from(body.to_string());
    let mut resp = Response::new(ProxyBody::Full(None));
    resp.extensions_mut().insert(GatewayAnswer(message.into()));
    resp.extensions_mut().insert(ErrorCode(code.into()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    *resp.body_mut() = ProxyBody::full(bytes);
    resp
}
