//! Router benchmarks: lookup among 10,000 and 100,000 mixed routes (prefix, `{param}`,
//! regex, hosts) and a full reload (validate + compile + swap) of configs that size.
//! Run: `cargo bench -p gatehouse-proxy --bench router`.

use std::hint::black_box;
use std::sync::Arc;

use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, Criterion};
use gatehouse_model::{prepare, Config, NoPlugins, Origins, Route, Service};
use gatehouse_proxy::router::{RouteSpec, Router};
use gatehouse_proxy::Snapshot;
use http::{HeaderMap, Method};

fn route_paths(i: usize) -> (Vec<String>, Vec<String>) {
    match i % 10 {
        0..=5 => (vec![], vec![format!("/svc{i}/items")]),
        6 | 7 => (vec![], vec![format!("/api/{i}/users/{{id}}/orders")]),
        8 => (vec![], vec![format!("~/rx{i}/\\d+$")]),
        _ => (vec![format!("host{i}.example.com")], vec!["/".to_string()]),
    }
}

fn specs(n: usize) -> Vec<RouteSpec> {
    (0..n)
        .map(|i| {
            let (hosts, paths) = route_paths(i);
            RouteSpec {
                hosts,
                paths,
                methods: if i % 3 == 0 {
                    vec!["GET".into()]
                } else {
                    vec![]
                },
                ..Default::default()
            }
        })
        .collect()
}

fn requests(n: usize) -> Vec<(String, String)> {
    (0..1000)
        .map(|k| {
            let i = (k * 7919) % n;
            let path = match i % 10 {
                0..=5 => format!("/svc{i}/items/42"),
                6 | 7 => format!("/api/{i}/users/99/orders/1"),
                8 => format!("/rx{i}/12345"),
                _ => "/anything/here".to_string(),
            };
            let host = if i % 10 == 9 {
                format!("host{i}.example.com")
            } else {
                "api.example.net".to_string()
            };
            (host, path)
        })
        .collect()
}

fn config(n: usize) -> Config {
    let mut cfg = Config::default();
    for s in 0..20 {
        cfg.services.push(serde_json::from_value::<Service>(serde_json::json!({"name": format!("s{s}"), "url": format!("http://10.0.0.{s}:8080")})).unwrap());
    }
    for i in 0..n {
        let (hosts, paths) = route_paths(i);
        let mut r: Route = serde_json::from_value(
            serde_json::json!({"name": format!("r{i}"), "service": format!("s{}", i % 20)}),
        )
        .unwrap();
        r.hosts = hosts;
        r.paths = paths;
        cfg.routes.push(r);
    }
    cfg
}

fn bench(c: &mut Criterion) {
    bench_n(c, 10_000, "10k");
    bench_n(c, 100_000, "100k");
}

fn bench_n(c: &mut Criterion, n: usize, label: &str) {
    let router = Router::new(&specs(n)).unwrap();
    let reqs = requests(n);
    let headers = HeaderMap::new();
    for (h, p) in &reqs {
        assert!(
            router.find(h, &Method::GET, p, &headers).is_some(),
            "{h}{p} must match"
        );
    }
    let mut k = 0;
    c.bench_function(&format!("router lookup, {label} routes"), |b| {
        b.iter(|| {
            let (h, p) = &reqs[k % reqs.len()];
            k += 1;
            black_box(router.find(black_box(h), &Method::GET, black_box(p), &headers))
        })
    });
    c.bench_function(&format!("router lookup miss, {label} routes"), |b| {
        b.iter(|| {
            black_box(router.find(
                "nohost.example",
                &Method::GET,
                black_box("/zzz/nothing/here"),
                &headers,
            ))
        })
    });

    let cfg = config(n);
    let registry = gatehouse_proxy::plugin::Registry::default();
    let live = ArcSwap::from_pointee(Snapshot::empty());
    let mut group = c.benchmark_group("reload");
    group.sample_size(10);
    group.bench_function(format!("validate + compile + swap, {label} routes"), |b| {
        b.iter(|| {
            let flat = prepare(cfg.clone(), &Origins::new(), &NoPlugins).unwrap();
            let snap = Snapshot::compile(&flat, 2, &registry).unwrap();
            live.store(Arc::new(snap));
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
