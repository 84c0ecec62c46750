//! Per-request cost of each plugin's access phase (criterion).
//! Run: `cargo bench -p gatehouse-plugins --bench plugins`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use gatehouse_model::{parse_document, PluginCatalog};
use gatehouse_proxy::plugin::{BuildCtx, RequestCtx};
use http::HeaderValue;
use serde_json::json;

fn ctx(consumer: Option<std::sync::Arc<gatehouse_proxy::plugin::ConsumerRt>>) -> RequestCtx {
    let mut ctx = RequestCtx::new(
        HeaderValue::from_static("0123456789abcdef0123456789abcdef"),
        IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
        (uuid::Uuid::nil(), uuid::Uuid::nil()),
        gatehouse_proxy::plugin::RequestInfo {
            method: http::Method::GET,
            path: "/orders/1".into(),
            host: None,
            route_name: None,
            service_name: None,
            body_bytes: None,
            started: std::time::Instant::now(),
            started_unix_ms: 0,
        },
        Vec::new(),
    );
    ctx.consumer = consumer;
    ctx
}

fn bench(c: &mut criterion::Criterion) {
    let registry = gatehouse_plugins::registry();
    let cfg = parse_document(
        "_format_version: \"1\"\nconsumers:\n  - username: alice\n    keyauth_credentials: [{ key: alice-secret-key }]\n    acls: [{ group: gold }]\n",
        &registry,
    )
    .expect("config");
    let cases = [
        ("key-auth", json!({})),
        (
            "ip-restriction",
            json!({"allow": ["10.0.0.0/8", "192.168.0.0/16"], "deny": ["10.6.6.6"]}),
        ),
        ("request-size-limiting", json!({"allowed_payload_size": 1})),
        ("correlation-id", json!({"generator": "uuid#counter"})),
        ("request-termination", json!({"status_code": 503})),
        ("acl", json!({"allow": ["gold"]})),
        (
            "cors",
            json!({"origins": ["https://app.example.com"], "credentials": true}),
        ),
        (
            "rate-limiting",
            json!({"second": 1000000000u64, "hour": 1000000000u64, "limit_by": "consumer"}),
        ),
        ("file-log", json!({"path": "/dev/null"})),
        ("prometheus", json!({})),
        ("basic-auth", json!({})),
        ("hmac-auth", json!({})),
        ("jwt", json!({})),
        ("proxy-cache", json!({})),
        (
            "request-validator",
            json!({"parameter_schema": [{"name": "x", "in": "query", "schema": {"type": "integer"}}]}),
        ),
        (
            "response-transformer",
            json!({"add": {"headers": ["x-added:1"]}}),
        ),
        (
            "http-log",
            json!({"http_endpoint": "http://127.0.0.1:9", "queue": {"max_entries": 1000}}),
        ),
        (
            "request-transformer",
            json!({"add": {"headers": ["x-added:1"], "querystring": ["q:v"]}, "remove": {"headers": ["apikey"]}}),
        ),
        ("limit-conn", json!({"conn": 1000000000u32})),
    ];
    assert_eq!(
        registry.names().len(),
        cases.len(),
        "every plugin has a benchmark case"
    );
    let (parts, ()) = http::Request::get("/orders/1?x=1")
        .header("host", "api.example.com")
        .header("apikey", "alice-secret-key")
        .header("content-length", "0")
        .body(())
        .expect("request")
        .into_parts();
    let alice = std::sync::Arc::new(gatehouse_proxy::plugin::ConsumerRt {
        id: cfg.consumers[0].id,
        username: Some("alice".into()),
        custom_id: None,
    });
    for (name, conf) in cases {
        let f = registry.get(name).expect("plugin");
        let shared = gatehouse_proxy::plugin::PerSnapshot::default();
        let ctx_b = BuildCtx {
            id: uuid::Uuid::nil(),
            config: &cfg,
            state: &registry.state,
            shared: &shared,
        };
        let plugin = f.build(&conf, &ctx_b).expect("build");
        if plugin.wants_log() {
            let x = ctx(Some(alice.clone()));
            c.bench_function(&format!("{name} log"), |b| {
                b.iter(|| {
                    let rec = gatehouse_proxy::plugin::CallRecord {
                        ctx: &x,
                        status: http::StatusCode::OK,
                        response_bytes: 1234,
                        total: std::time::Duration::from_micros(900),
                        complete: true,
                    };
                    plugin.log(black_box(&rec))
                })
            });
        }
        c.bench_function(&format!("{name} access"), |b| {
            b.iter(|| {
                let mut p = parts.clone();
                let mut x = ctx(Some(alice.clone()));
                black_box(matches!(
                    plugin.access(&mut x, &mut p),
                    gatehouse_proxy::plugin::Flow::Continue
                ))
            })
        });
    }
    c.bench_function("baseline: clone request parts + context", |b| {
        b.iter(|| {
            let p = parts.clone();
            black_box((p, ctx(Some(alice.clone()))))
        })
    });
}

criterion::criterion_group!(benches, bench);
criterion::criterion_main!(benches);
