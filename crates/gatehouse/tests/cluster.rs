//! A cluster of three real gateway processes: config shared through PostgreSQL, counters
//! through Redis, and what happens when either goes away. Outage tests run private
//! PostgreSQL and Redis servers (never the shared ones other tests use).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use gatehouse_testkit::backing::{PrivatePostgres, PrivateRedis, TestDb, TestPrefix};
use serde_json::{json, Value};

/// Starts a node on `store` in `dir`, with the keyring of `first` (every node of a cluster
/// must open the secrets the others sealed).
fn node(dir: &Path, keyring_from: Option<&Path>, extra: &[&str]) -> Gateway {
    if let Some(src) = keyring_from {
        std::fs::copy(src.join("keyring"), dir.join("keyring")).expect("copy keyring");
    }
    Gateway::start_in(&bin(), dir, extra)
}

async fn status(g: &Gateway) -> Value {
    g.admin_ok("GET", "/status", Value::Null).await
}

/// Polls `check` every 20 ms until it holds; returns how long that took.
async fn until<F, Fut>(what: &str, within: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn serves(g: &Gateway, path: &str) -> bool {
    get(&g.proxy, path).await.status == 200
}

fn no_panics(nodes: &[&Gateway]) {
    for g in nodes {
        let log = g.log_text();
        assert!(!log.contains("panicked"), "a node panicked:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_share_postgres_and_keep_serving_without_it() {
    let pg = PrivatePostgres::start();
    let db = TestDb::create_on(&pg.base());
    let url = db.url();
    let up = Upstream::start("orders");
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let store = ["--store", url.as_str()];
    let a = node(dirs[0].path(), None, &store);
    let b = node(dirs[1].path(), Some(dirs[0].path()), &store);
    let mut c = node(dirs[2].path(), Some(dirs[0].path()), &store);

    // A write on A is served by C.
    a.admin_ok(
        "POST",
        "/services",
        json!({"name": "orders", "url": up.url()}),
    )
    .await;
    a.admin_ok(
        "POST",
        "/services/orders/routes",
        json!({"paths": ["/orders"]}),
    )
    .await;
    let took = until("C serves A's route", Duration::from_secs(5), || {
        serves(&c, "/orders")
    })
    .await;
    eprintln!("a write on node A was served by node C after {took:?}");

    // Concurrent writes on two nodes: none is lost (the loser of each race applies its
    // edit again on the winner's config).
    let writes = (0..10).flat_map(|i| {
        [(&a, format!("a{i}")), (&b, format!("b{i}"))].map(|(g, name)| async move {
            g.admin(
                "POST",
                "/services",
                &json!({"name": name, "url": "http://127.0.0.1:9"}).to_string(),
            )
            .await
            .status
        })
    });
    let statuses = futures_util::future::join_all(writes).await;
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    until("C has all 21 services", Duration::from_secs(5), || async {
        status(&c).await["entities"]["services"] == 21
    })
    .await;

    // The registry lists the three nodes; /status names the store and its health.
    until("three live nodes", Duration::from_secs(15), || async {
        let nodes = b.admin_ok("GET", "/cluster/nodes", Value::Null).await;
        let list = nodes["data"].as_array().cloned().unwrap_or_default();
        list.len() == 3 && list.iter().all(|n| n["stale"] == false)
    })
    .await;
    let nodes = b.admin_ok("GET", "/cluster/nodes", Value::Null).await;
    for n in nodes["data"].as_array().unwrap() {
        assert!(
            n["addresses"][0].as_str().unwrap().starts_with("proxy="),
            "{n}"
        );
        assert_eq!(n["version"], env!("CARGO_PKG_VERSION"));
        assert!(
            n["hostname"].is_string() && n["last_seen"].is_i64() && n["config_version"].is_u64()
        );
    }
    let st = status(&c).await;
    assert_eq!(st["store"], "postgres");
    assert_eq!(st["store_health"]["reachable"], true);
    assert_eq!(st["config_source"], "store");

    // Each node keeps its last good config, owner-only.
    let copy = dirs[2].path().join("last-good-config.json");
    until(
        "C wrote its last-good copy",
        Duration::from_secs(5),
        || async {
            std::fs::read_to_string(&copy).is_ok_and(|t| t.contains("a9") && t.contains("b9"))
        },
    )
    .await;
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // PostgreSQL goes down: every node keeps proxying, writes answer 503 store_unavailable.
    pg.down();
    for g in [&a, &b, &c] {
        assert!(
            serves(g, "/orders").await,
            "a node stopped serving without its store"
        );
    }
    let r = a
        .admin(
            "POST",
            "/services",
            &json!({"name": "during", "url": "http://127.0.0.1:9"}).to_string(),
        )
        .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "store_unavailable");
    assert!(!r.json()["error"]["request_id"]
        .as_str()
        .unwrap_or("")
        .is_empty());
    until(
        "A reports the store unreachable",
        Duration::from_secs(10),
        || async { status(&a).await["store_health"]["reachable"] == false },
    )
    .await;

    // A node restarted meanwhile starts from its last-good config.
    drop(c);
    c = node(dirs[2].path(), None, &store);
    assert!(
        serves(&c, "/orders").await,
        "the restarted node lost its routes"
    );
    let st = status(&c).await;
    assert_eq!(st["config_source"], "last_good", "{st}");
    assert_eq!(st["entities"]["services"], 21);
    assert!(
        c.log_text().contains("serving the last-good config"),
        "{}",
        c.log_text()
    );

    // PostgreSQL comes back: writes work again without restarting anything, and reach
    // every node (the restarted one included).
    pg.up();
    until("writes work again", Duration::from_secs(20), || async {
        a.admin(
            "POST",
            "/services/orders/routes",
            &json!({"name": "later", "paths": ["/later"]}).to_string(),
        )
        .await
        .status
            == 201
    })
    .await;
    for g in [&a, &b, &c] {
        until(
            "every node serves the new route",
            Duration::from_secs(10),
            || serves(g, "/later"),
        )
        .await;
    }
    until(
        "C follows the store again",
        Duration::from_secs(10),
        || async {
            let st = status(&c).await;
            st["config_source"] == "store" && st["store_health"]["reachable"] == true
        },
    )
    .await;
    no_panics(&[&a, &b, &c]);
}

/// Sends `n` requests for `path`, spread over the nodes round robin, 12 at a time; returns
/// the count of each status.
async fn spread(
    nodes: &[&Gateway],
    path: &str,
    n: usize,
) -> std::collections::BTreeMap<u16, usize> {
    let addrs: Vec<String> = nodes.iter().map(|g| g.proxy.clone()).collect();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(12));
    let tasks = (0..n).map(|i| {
        let (addr, sem, path) = (
            addrs[i % addrs.len()].clone(),
            sem.clone(),
            path.to_string(),
        );
        tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            get(&addr, &path).await.status.as_u16()
        })
    });
    let mut counts = std::collections::BTreeMap::new();
    for t in futures_util::future::join_all(tasks).await {
        *counts.entry(t.unwrap()).or_insert(0) += 1;
    }
    counts
}

/// Waits, if needed, so the next few seconds stay inside one clock minute (a per-minute
/// limit then counts one window).
async fn away_from_minute_boundary(needed: u64) {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 60;
    if s + needed >= 59 {
        tokio::time::sleep(Duration::from_secs(61 - s)).await;
    }
}

/// Creates a service, route and `policy: redis` rate limit on `writer`, then waits until
/// every node serves the config that holds the limit: the route alone (three writes) can
/// reach a node before its plugin does, and requests there would pass unlimited.
async fn limited_route(
    writer: &Gateway,
    nodes: &[&Gateway],
    name: &str,
    minute: u64,
    upstream: &str,
) {
    writer
        .admin_ok("POST", "/services", json!({"name": name, "url": upstream}))
        .await;
    writer
        .admin_ok(
            "POST",
            &format!("/services/{name}/routes"),
            json!({"name": name, "paths": [format!("/{name}")]}),
        )
        .await;
    writer
        .admin_ok(
            "POST",
            &format!("/routes/{name}/plugins"),
            json!({"name": "rate-limiting", "config": {"minute": minute, "policy": "redis", "limit_by": "route"}}),
        )
        .await;
    let version = status(writer).await["config_version"].as_u64().unwrap();
    for g in nodes {
        until(
            "the limit on every node",
            Duration::from_secs(5),
            || async { status(g).await["config_version"].as_u64() >= Some(version) },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_limits_are_exact_across_nodes_and_degrade_without_redis() {
    let db = TestDb::create();
    let mut redis = PrivateRedis::start();
    let prefix = TestPrefix::new_on(&redis.url());
    let up = Upstream::start("limited");
    let url = db.url();
    let redis_url = redis.url();
    let args = [
        "--store",
        url.as_str(),
        "--redis",
        redis_url.as_str(),
        "--redis-prefix",
        prefix.prefix.as_str(),
    ];
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = node(dirs[0].path(), None, &args);
    let b = node(dirs[1].path(), Some(dirs[0].path()), &args);
    let c = node(dirs[2].path(), Some(dirs[0].path()), &args);
    let all = [&a, &b, &c];

    // A node without Redis refuses `policy: redis` with a clear error.
    let lone = Gateway::start(&bin(), &[]);
    lone.admin_ok("POST", "/services", json!({"name": "x", "url": up.url()}))
        .await;
    let r = lone
        .admin(
            "POST",
            "/services/x/plugins",
            &json!({"name": "rate-limiting", "config": {"minute": 5, "policy": "redis"}})
                .to_string(),
        )
        .await;
    assert!(r.status.is_client_error(), "{}", r.text());
    assert!(r.text().contains("--redis"), "{}", r.text());
    drop(lone);

    // 100 per minute across three nodes, 1,000 requests spread over them: 95 to 100 pass.
    away_from_minute_boundary(15).await;
    limited_route(&a, &all, "exact", 100, &up.url()).await;
    let counts = spread(&all, "/exact", 1000).await;
    let passed = counts.get(&200).copied().unwrap_or(0);
    eprintln!("limit 100/min over 3 nodes, 1000 requests: {counts:?}");
    let degraded: Vec<String> = all
        .iter()
        .flat_map(|g| {
            g.log_text()
                .lines()
                .filter(|l| l.contains("redis"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!((95..=100).contains(&passed), "{counts:?} {degraded:#?}");
    assert_eq!(
        passed + counts.get(&429).copied().unwrap_or(0),
        1000,
        "{counts:?}"
    );
    for g in all {
        let st = status(g).await;
        assert_eq!(st["counters"]["backend"], "redis");
        assert_eq!(st["counters"]["degraded"], false);
        assert!(!st["counters"]["url"].as_str().unwrap().is_empty());
    }

    // Redis goes away: limits degrade to limit / live nodes on each node, said in /status
    // and the metric; requests keep being answered.
    for g in all {
        until(
            "registry counts three live nodes",
            Duration::from_secs(20),
            || async { status(g).await["counters"]["live_nodes"] == 3 },
        )
        .await;
    }
    limited_route(&a, &all, "degraded", 30, &up.url()).await;
    redis.down();
    away_from_minute_boundary(10).await;
    for g in all {
        let mut passed = 0;
        for _ in 0..20 {
            let s = get(&g.proxy, "/degraded").await.status;
            assert!(s == 200 || s == 429, "{s}");
            passed += usize::from(s == 200);
        }
        // The first request may still have been decided by the lease; from then on the
        // node counts 30 / 3 = 10 locally.
        assert!((10..=11).contains(&passed), "node passed {passed} of 20");
        let st = status(g).await;
        assert_eq!(st["counters"]["degraded"], true, "{st}");
        assert!(st["counters"]["reason"].is_string());
        let (_, metrics, _) = curl(&[&format!("http://{}/metrics", g.status)]);
        assert!(
            metrics.contains("gatehouse_counter_store_degraded 1"),
            "{metrics}"
        );
        assert!(g.log_text().contains("redis unreachable"));
    }

    // Redis returns: exact counting again, without restarts.
    redis.up();
    for g in all {
        until("exact again", Duration::from_secs(10), || async {
            status(g).await["counters"]["degraded"] == false
        })
        .await;
    }
    away_from_minute_boundary(15).await;
    limited_route(&a, &all, "after", 50, &up.url()).await;
    let counts = spread(&all, "/after", 300).await;
    let passed = counts.get(&200).copied().unwrap_or(0);
    assert!((47..=50).contains(&passed), "{counts:?}");
    let (_, metrics, _) = curl(&[&format!("http://{}/metrics", a.status)]);
    assert!(
        metrics.contains("gatehouse_counter_store_degraded 0"),
        "{metrics}"
    );
    no_panics(&all);
}
