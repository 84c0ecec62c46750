//! One call's record as the call log keeps it: plain owned data, made on the request path
//! from what the proxy and plugins knew (names are shared `Arc`s, not copies).

use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

/// The AI part of a call `ai-proxy` answered.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AiPart {
    /// Provider entity name.
    pub provider: String,
    /// Public model name.
    pub model: String,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Cost in micro-dollars.
    pub cost_micros: u64,
    /// The usage was counted by the gateway.
    pub estimated: bool,
}

/// One call.
#[derive(Debug, Clone)]
pub struct Call {
    /// When the request arrived (Unix ms).
    pub ts_ms: i64,
    /// Request id (`X-Request-Id`).
    pub request_id: String,
    /// W3C trace id, when the request is traced.
    pub trace_id: Option<String>,
    /// Route (id, name); `None` when no route matched.
    pub route: Option<(Uuid, Option<Arc<str>>)>,
    /// Service (id, name).
    pub service: Option<(Uuid, Option<Arc<str>>)>,
    /// Consumer (id, username).
    pub consumer: Option<(Uuid, Option<Arc<str>>)>,
    /// Client address.
    pub client_ip: IpAddr,
    /// Method.
    pub method: String,
    /// Host header.
    pub host: Option<String>,
    /// Path (no query string: it may hold credentials).
    pub path: String,
    /// Status sent.
    pub status: u16,
    /// Whole time, µs.
    pub total_us: u64,
    /// Upstream time (request sent → answer head), µs.
    pub upstream_us: Option<u64>,
    /// Request body bytes (Content-Length), when known.
    pub bytes_in: Option<u64>,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// Upstream target (host, port) that answered.
    pub upstream: Option<(Arc<str>, u16)>,
    /// Upstream attempts beyond the first (connect failures, stale connections).
    pub retries: u32,
    /// Error code of an answer the gateway made itself (`no_route`, `unauthorized`…).
    pub error: Option<Arc<str>>,
    /// The response body was sent whole.
    pub complete: bool,
    /// AI usage.
    pub ai: Option<AiPart>,
}

/// "2xx", "4xx"… for a status.
pub fn status_class(status: u16) -> u16 {
    status / 100
}

impl Call {
    /// The record as the API shows it.
    pub fn to_json(&self) -> Value {
        let named = |p: &Option<(Uuid, Option<Arc<str>>)>| match p {
            Some((id, name)) => json!({"id": id, "name": name.as_deref()}),
            None => Value::Null,
        };
        json!({
            "request_id": self.request_id,
            "trace_id": self.trace_id,
            "started_at": self.ts_ms,
            "client_ip": self.client_ip.to_string(),
            "request": {"method": self.method, "host": self.host, "path": self.path, "size": self.bytes_in},
            "response": {"status": self.status, "size": self.bytes_out, "complete": self.complete},
            "route": named(&self.route),
            "service": named(&self.service),
            "consumer": match &self.consumer {
                Some((id, name)) => json!({"id": id, "username": name.as_deref()}),
                None => Value::Null,
            },
            "latencies": {
                "total_ms": self.total_us as f64 / 1000.0,
                "upstream_ms": self.upstream_us.map(|u| u as f64 / 1000.0),
                "gateway_ms": self.upstream_us.map(|u| self.total_us.saturating_sub(u) as f64 / 1000.0),
            },
            "upstream": self.upstream.as_ref().map(|(h, p)| format!("{h}:{p}")),
            "retries": self.retries,
            "error": self.error.as_deref(),
            "ai": self.ai,
        })
    }
}
