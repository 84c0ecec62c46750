//! The JSON record logging plugins write: one object per request.

use gatehouse_proxy::plugin::CallRecord;
use serde_json::{json, Value};

fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1_000.0
}

/// The JSON record of one request. Holds no header or query string, so credentials never
/// reach a log.
pub fn to_json(rec: &CallRecord) -> Value {
    let ctx = rec.ctx;
    let r = &ctx.request;
    let upstream = ctx.upstream_latency.map(ms);
    let total = ms(rec.total);
    json!({
        "request_id": ctx.request_id.to_str().unwrap_or(""),
        "started_at": r.started_unix_ms,
        "client_ip": ctx.client_ip.to_string(),
        "request": {
            "method": r.method.as_str(),
            "host": r.host.as_ref().and_then(|h| h.to_str().ok()),
            "path": r.path,
            "size": r.body_bytes,
        },
        "response": { "status": rec.status.as_u16(), "size": rec.response_bytes, "complete": rec.complete },
        "route": { "id": ctx.route_id, "name": r.route_name.as_deref() },
        "service": { "id": ctx.service_id, "name": r.service_name.as_deref() },
        "consumer": ctx.consumer.as_ref().map(|c| json!({"id": c.id, "username": c.username.as_deref()})),
        "latencies": {
            "total_ms": total,
            "upstream_ms": upstream,
            "gateway_ms": upstream.map(|u| ((total - u) * 1000.0).round() / 1000.0),
        },
    })
}
