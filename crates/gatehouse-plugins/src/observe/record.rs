//! The JSON record logging plugins write: one object per request.

use gatehouse_proxy::plugin::CallRecord;
use serde::Serialize;
use uuid::Uuid;

fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1_000.0
}

#[derive(Serialize)]
struct Line<'a> {
    request_id: &'a str,
    started_at: u64,
    client_ip: std::net::IpAddr,
    request: Req<'a>,
    response: Resp,
    route: Named<'a>,
    service: Named<'a>,
    consumer: Option<Who<'a>>,
    latencies: Latencies,
}

#[derive(Serialize)]
struct Req<'a> {
    method: &'a str,
    host: Option<&'a str>,
    path: &'a str,
    size: Option<u64>,
}

#[derive(Serialize)]
struct Resp {
    status: u16,
    size: u64,
    complete: bool,
}

#[derive(Serialize)]
struct Named<'a> {
    id: Uuid,
    name: Option<&'a str>,
}

#[derive(Serialize)]
struct Who<'a> {
    id: Uuid,
    username: Option<&'a str>,
}

#[derive(Serialize)]
struct Latencies {
    total_ms: f64,
    upstream_ms: Option<f64>,
    gateway_ms: Option<f64>,
}

/// The JSON record of one request, as one line (no newline). Holds no header or query
/// string, so credentials never reach a log. Serialized straight from borrowed fields.
pub fn to_line(rec: &CallRecord) -> String {
    let ctx = rec.ctx;
    let r = &ctx.request;
    let upstream = ctx.upstream_latency.map(ms);
    let total = ms(rec.total);
    let line = Line {
        request_id: ctx.request_id.to_str().unwrap_or(""),
        started_at: r.started_unix_ms,
        client_ip: ctx.client_ip,
        request: Req {
            method: r.method.as_str(),
            host: r.host.as_ref().and_then(|h| h.to_str().ok()),
            path: &r.path,
            size: r.body_bytes,
        },
        response: Resp {
            status: rec.status.as_u16(),
            size: rec.response_bytes,
            complete: rec.complete,
        },
        route: Named {
            id: ctx.route_id,
            name: r.route_name.as_deref(),
        },
        service: Named {
            id: ctx.service_id,
            name: r.service_name.as_deref(),
        },
        consumer: ctx.consumer.as_ref().map(|c| Who {
            id: c.id,
            username: c.username.as_deref(),
        }),
        latencies: Latencies {
            total_ms: total,
            upstream_ms: upstream,
            gateway_ms: upstream.map(|u| ((total - u) * 1000.0).round() / 1000.0),
        },
    };
    let mut out = Vec::with_capacity(512);
    if serde_json::to_writer(&mut out, &line).is_err() {
        return String::new();
    }
    // serde_json writes valid UTF-8.
    String::from_utf8(out).unwrap_or_default()
}
