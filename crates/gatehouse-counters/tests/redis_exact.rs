//! Exactness of the lease algorithm against a real Redis: several "nodes" (separate
//! `ClusterCounters`, as separate processes would have) hammer one counter from many tasks;
//! at most N pass, and not much less. Keys live under a prefix of the test's own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use gatehouse_counters::cluster::ClusterCounters;
use gatehouse_counters::{CounterKey, KeyPart, Period};
use gatehouse_testkit::backing::{redis_url, TestPrefix};

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Runs `per_task × tasks × nodes` hits on one counter limited to `limit` per hour (one
/// window for the whole run); returns how many passed.
async fn run(nodes: usize, tasks: usize, per_task: usize, limit: u64, cost: u64) -> u64 {
    let prefix = TestPrefix::new_on(&redis_url());
    let mut all = Vec::new();
    for _ in 0..nodes {
        let c = ClusterCounters::connect(&redis_url(), &prefix.prefix, None)
            .await
            .unwrap();
        c.set_live_nodes(nodes);
        assert!(
            !c.is_degraded(),
            "redis at {} is not reachable",
            redis_url()
        );
        all.push(c);
    }
    let key = CounterKey {
        route: uuid::Uuid::new_v4(),
        by: KeyPart::Header("tenant-a".into()),
    };
    let limits = [(Period::Second, u64::MAX / 4), (Period::Hour, limit)];
    let passed = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for c in &all {
        for _ in 0..tasks {
            let (c, key, passed) = (c.clone(), key.clone(), passed.clone());
            handles.push(tokio::spawn(async move {
                for _ in 0..per_task {
                    let now = now_ms();
                    let d = match c.try_hit(&key, &limits, cost, now) {
                        Some(d) => d,
                        None => c.hit(&key, &limits, cost, now).await,
                    };
                    if d.allowed {
                        passed.fetch_add(cost, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    for h in handles {
        h.await.unwrap();
    }
    for c in &all {
        assert!(!c.is_degraded(), "a node fell back to local counting");
    }
    passed.load(Ordering::Relaxed)
}

/// Reserve-and-settle across two nodes (what AI budgets do): each reserves a worst case,
/// refunds the unused part; the freed units serve the other node too, and the total of
/// what was kept never passes the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_free_quota_for_the_whole_cluster() {
    let prefix = TestPrefix::new_on(&redis_url());
    let a = ClusterCounters::connect(&redis_url(), &prefix.prefix, None)
        .await
        .unwrap();
    let b = ClusterCounters::connect(&redis_url(), &prefix.prefix, None)
        .await
        .unwrap();
    for c in [&a, &b] {
        c.set_live_nodes(2);
        c.spawn_upkeep();
    }
    let key = CounterKey {
        route: uuid::Uuid::new_v4(),
        by: KeyPart::Name("budget".into()),
    };
    let limits = [(Period::Hour, 1_000)];
    let hit = |c: &Arc<ClusterCounters>, cost: u64| {
        let (c, key) = (c.clone(), key.clone());
        async move {
            let now = now_ms();
            match c.try_hit(&key, &limits, cost, now) {
                Some(d) => (d.allowed, now),
                None => (c.hit(&key, &limits, cost, now).await.allowed, now),
            }
        }
    };
    // A reserves 600 and keeps 100; B can then reserve 800 (1,000 − 100 − 100 margin).
    let (ok, at) = hit(&a, 600).await;
    assert!(ok);
    let (refused, _) = hit(&b, 800).await;
    assert!(!refused, "600 held by A: 800 more would pass 1,000");
    a.refund(&key, &limits, 500, at).await;
    // The refund sits in A's lease until A is idle, then goes back to Redis (≤ 1.5 s);
    // units B leased for its refused try come back the same way.
    let mut passed = false;
    for _ in 0..60 {
        if hit(&b, 800).await.0 {
            passed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(passed, "A's refund never reached B");
    // 100 kept by A + 800 by B: 100 left, and no more.
    assert!(!hit(&a, 200).await.0);
    assert!(!hit(&b, 200).await.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_most_n_and_not_much_less_across_nodes() {
    for (nodes, tasks, per_task, limit) in [
        (3, 8, 200, 1_000),
        (5, 4, 100, 777),
        (2, 16, 50, 100),
        (4, 2, 10, 5),
    ] {
        let passed = run(nodes, tasks, per_task, limit, 1).await;
        let offered = (nodes * tasks * per_task) as u64;
        assert!(passed <= limit, "{passed} > {limit} ({nodes} nodes)");
        // Everything offered beyond the limit: the limit must be (nearly) reached.
        let floor = limit.min(offered) * 95 / 100;
        assert!(
            passed >= floor,
            "{passed} < {floor} ({nodes} nodes, limit {limit})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn costs_above_one_never_overrun() {
    // Token-style costs (an AI token limit spends many units per request).
    let passed = run(3, 4, 100, 10_000, 37).await;
    assert!(passed <= 10_000, "{passed}");
    assert!(passed >= 10_000 - 3 * 37 * 2, "{passed}");
}

#[tokio::test]
async fn an_unreachable_redis_degrades_to_local_counting() {
    let port = gatehouse_testkit::closed_port().port();
    let c = ClusterCounters::connect(&format!("redis://127.0.0.1:{port}"), "x", None)
        .await
        .unwrap();
    assert!(c.is_degraded());
    c.set_live_nodes(4);
    let key = CounterKey {
        route: uuid::Uuid::nil(),
        by: KeyPart::Header("k".into()),
    };
    let limits = [(Period::Minute, 40)];
    let now = now_ms();
    let passed = (0..30)
        .filter(|_| {
            c.try_hit(&key, &limits, 1, now)
                .expect("degraded decides locally")
                .allowed
        })
        .count();
    assert_eq!(passed, 10, "40 / 4 live nodes");
    let st = c.status();
    assert!(st.degraded && st.reason.is_some() && st.since.is_some());
}

/// The same exactness through a Redis Cluster and through Sentinel.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_and_sentinel_deployments_count_exactly() {
    use gatehouse_testkit::backing::{PrivateRedisCluster, PrivateSentinel};
    let cluster = PrivateRedisCluster::start();
    let sentinel = PrivateSentinel::start();
    for url in [cluster.url(), sentinel.url()] {
        let mut nodes = Vec::new();
        for _ in 0..2 {
            let c = ClusterCounters::connect(&url, "gh", None).await.unwrap();
            assert!(!c.is_degraded(), "{url}: {:?}", c.status());
            c.set_live_nodes(2);
            nodes.push(c);
        }
        // Several counters, so keys land in different slots of the cluster.
        for tenant in ["a", "b", "c", "d"] {
            let key = CounterKey {
                route: uuid::Uuid::new_v4(),
                by: KeyPart::Header(tenant.into()),
            };
            let limits = [(Period::Hour, 50)];
            let mut passed = 0;
            for i in 0..150 {
                let c = &nodes[i % 2];
                let now = now_ms();
                let d = match c.try_hit(&key, &limits, 1, now) {
                    Some(d) => d,
                    None => c.hit(&key, &limits, 1, now).await,
                };
                passed += u64::from(d.allowed);
            }
            assert_eq!(passed, 50, "{url} tenant {tenant}");
        }
        for c in &nodes {
            assert!(!c.is_degraded(), "{url}: {:?}", c.status());
        }
    }
}

/// `rediss://` with a private CA: verified, and exact.
#[tokio::test]
async fn tls_redis_with_a_private_ca() {
    use gatehouse_testkit::pki::{KeyKind, Pki};
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "redis");
    let cert = pki.server(&["127.0.0.1"], KeyKind::P256);
    let redis =
        gatehouse_testkit::backing::PrivateRedis::start_tls(&cert.cert_file, &cert.key_file);
    let url = redis.url();
    assert!(url.starts_with("rediss://"));
    // Without the CA the server is not trusted: degraded, with the reason.
    let untrusted = ClusterCounters::connect(&url, "gh", None).await.unwrap();
    assert!(untrusted.is_degraded());
    let c = ClusterCounters::connect(&url, "gh", Some(pki.ca.clone().into_bytes()))
        .await
        .unwrap();
    assert!(!c.is_degraded(), "{:?}", c.status());
    let key = CounterKey {
        route: uuid::Uuid::new_v4(),
        by: KeyPart::Header("t".into()),
    };
    let limits = [(Period::Hour, 7)];
    let mut passed = 0;
    for _ in 0..20 {
        let now = now_ms();
        let d = match c.try_hit(&key, &limits, 1, now) {
            Some(d) => d,
            None => c.hit(&key, &limits, 1, now).await,
        };
        passed += u64::from(d.allowed);
    }
    assert_eq!(passed, 7);
}
