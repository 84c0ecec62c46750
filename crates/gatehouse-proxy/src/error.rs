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
        }
    }

    /// The answer to send to the client.
    pub fn to_response(&self, request_id: &HeaderValue) -> Response<ProxyBody> {
        let (status, code) = self.status_code();
        error_response(status, code, &self.to_string(), request_id)
    }
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
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    *resp.body_mut() = ProxyBody::full(bytes);
    resp
}
