//! One call-store contract, run on SQLite and on PostgreSQL (a database of the test's own):
//! batches written, every search filter, cursor paging, lookup by request id, rollups
//! written by two writers (two nodes) and merged into series, top-N and usage, retention
//! settings and pruning (PostgreSQL drops whole day partitions).

use std::sync::Arc;

use gatehouse_telemetry::query::{
    self, Dims, Filter, Ref, Retention, SeriesQuery, TopBy, TopQuery,
};
use gatehouse_telemetry::rollup::{Resolution, Rollups};
use gatehouse_telemetry::{AiPart, Call, CallStore};
use uuid::Uuid;

const DAY: i64 = 86_400_000;

fn call(ts: i64, n: u64, consumer: Option<Uuid>) -> Call {
    Call {
        ts_ms: ts,
        request_id: format!("req-{ts}-{n}"),
        trace_id: None,
        route: Some((
            Uuid::from_u128(if n.is_multiple_of(2) { 1 } else { 2 }),
            Some(Arc::from(if n.is_multiple_of(2) { "even" } else { "odd" })),
        )),
        service: Some((Uuid::from_u128(10), Some(Arc::from("billing")))),
        consumer: consumer.map(|c| (c, Some(Arc::from("alice")))),
        client_ip: "192.0.2.7".parse().unwrap(),
        method: "GET".into(),
        host: Some("api.example".into()),
        path: format!("/v1/items/{n}"),
        status: if n.is_multiple_of(10) { 503 } else { 200 },
        total_us: 1_000 * (n + 1),
        upstream_us: Some(900 * (n + 1)),
        bytes_in: None,
        bytes_out: 100,
        upstream: Some((Arc::from("10.0.0.1"), 8080)),
        retries: 0,
        error: (n.is_multiple_of(10)).then(|| Arc::from("upstream_error")),
        complete: true,
        ai: (n == 7).then(|| AiPart {
            provider: "oa".into(),
            model: "gpt".into(),
            input_tokens: 5,
            output_tokens: 7,
            cost_micros: 12,
            estimated: false,
        }),
    }
}

async fn contract(store: CallStore, other_node: CallStore) {
    let now = gatehouse_telemetry::pipeline::now_ms();
    let alice = Uuid::from_u128(99);
    let today: Vec<Call> = (0..250)
        .map(|n| call(now - 1_000 + n as i64, n, (n < 30).then_some(alice)))
        .collect();
    let old: Vec<Call> = (0..20)
        .map(|n| call(now - 10 * DAY + n as i64, n, None))
        .collect();
    store.insert(&today).await.unwrap();
    store.insert(&old).await.unwrap();
    assert_eq!(store.counts().await.unwrap().0, 270);

    let base = Filter {
        from: now - 60_000,
        to: now + 1,
        size: 1000,
        ..Filter::default()
    };
    let n = |f: Filter| {
        let store = store.clone();
        async move { store.search(&f).await.unwrap().data.len() }
    };
    assert_eq!(n(base.clone()).await, 250);
    assert_eq!(
        n(Filter {
            status: Some((500, 599)),
            ..base.clone()
        })
        .await,
        25
    );
    assert_eq!(
        n(Filter {
            consumer: Some(Ref::Id(alice)),
            ..base.clone()
        })
        .await,
        30
    );
    assert_eq!(
        n(Filter {
            consumer: Some(Ref::Name("alice".into())),
            ..base.clone()
        })
        .await,
        30
    );
    assert_eq!(
        n(Filter {
            route: Some(Ref::Id(Uuid::from_u128(1))),
            ..base.clone()
        })
        .await,
        125
    );
    assert_eq!(
        n(Filter {
            min_latency_ms: Some(200.0),
            ..base.clone()
        })
        .await,
        51
    );
    assert_eq!(
        n(Filter {
            q: Some("items/1_".into()),
            ..base.clone()
        })
        .await,
        0,
        "`_` is literal"
    );
    assert_eq!(
        n(Filter {
            q: Some("items/24".into()),
            ..base.clone()
        })
        .await,
        11
    );
    assert_eq!(
        n(Filter {
            from: 0,
            ..base.clone()
        })
        .await,
        270
    );
    // Paging: newest first, each call once.
    let mut f = Filter {
        size: 40,
        ..base.clone()
    };
    let mut seen = Vec::new();
    loop {
        let page = store.search(&f).await.unwrap();
        seen.extend(page.data.iter().map(|c| c.ts_ms));
        match page.next {
            Some(c) => f.cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 250);
    assert!(seen.windows(2).all(|w| w[0] >= w[1]), "newest first");
    // One call, read back whole.
    let one = store.by_request_id(&today[7].request_id).await.unwrap();
    assert_eq!(one.len(), 1);
    let c = &one[0];
    assert_eq!(c.ai.as_ref().unwrap().output_tokens, 7);
    assert_eq!(c.upstream.as_ref().unwrap().1, 8080);
    assert_eq!(c.route.as_ref().unwrap().1.as_deref(), Some("odd"));
    assert_eq!(c.client_ip.to_string(), "192.0.2.7");

    // Rollups from two writers (two nodes): merged by the queries.
    let (mut a, mut b) = (Rollups::default(), Rollups::default());
    for c in &today[..150] {
        a.add(c);
    }
    for c in &today[150..] {
        b.add(c);
    }
    store.write_rollups(&a.take_dirty(now)).await.unwrap();
    other_node.write_rollups(&b.take_dirty(now)).await.unwrap();
    // Written again (the next second's flush): replaced, not added.
    for c in &today[..10] {
        a.add(c);
    }
    store.write_rollups(&a.take_dirty(now)).await.unwrap();
    let q = SeriesQuery {
        res: Resolution::Hour,
        from: Resolution::Hour.bucket(now - 60_000),
        to: now + 1,
        dims: Dims::default(),
    };
    let points = store.timeseries(&q).await.unwrap();
    let total: u64 = points
        .iter()
        .map(|p| p.v["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 260, "150 + 10 again + 100: {points:?}");
    let top = store
        .top(&TopQuery {
            by: TopBy::Routes,
            n: 5,
            res: Resolution::Day,
            from: Resolution::Day.bucket(now),
            to: now + 1,
            dims: Dims::default(),
        })
        .await
        .unwrap();
    assert_eq!(top.len(), 2);
    let errors = store
        .top(&TopQuery {
            by: TopBy::ErrorRoutes,
            n: 5,
            res: Resolution::Day,
            from: Resolution::Day.bucket(now),
            to: now + 1,
            dims: Dims::default(),
        })
        .await
        .unwrap();
    assert_eq!(
        errors[0].name.as_deref(),
        Some("even"),
        "every 10th call failed: all even"
    );
    let usage = store
        .usage(&SeriesQuery {
            dims: Dims {
                consumer: Some(alice),
                ..Dims::default()
            },
            ..q.clone()
        })
        .await
        .unwrap();
    assert_eq!(usage[0].v["requests"], 40, "30 + the 10 counted again");
    let p99 = points[0].v["latency_ms"]["p99"].as_f64().unwrap();
    assert!(p99 > 200.0 && p99 < 260.0, "p99 {p99}");

    // Retention.
    assert_eq!(store.retention().await.unwrap(), Retention::default());
    let r = Retention {
        raw_days: 3,
        minute_days: 3,
        hour_days: 30,
        day_days: 365,
    };
    store.set_retention(&r).await.unwrap();
    assert_eq!(store.retention().await.unwrap(), r);
    let mut deleted = 0;
    for _ in 0..10 {
        match store.prune_batch(now, &r).await.unwrap() {
            0 => break,
            n => deleted += n,
        }
    }
    assert!(deleted >= 20, "{deleted}");
    assert_eq!(store.counts().await.unwrap().0, 250, "today's calls stay");
    assert!(query::filter(&Default::default(), now).is_ok());
}

#[tokio::test]
async fn sqlite_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calls.db");
    let a = CallStore::open_sqlite(&path, "node-a/1".into())
        .await
        .unwrap();
    let b = CallStore::open_sqlite(&path, "node-b/1".into())
        .await
        .unwrap();
    contract(a, b).await;
}

#[tokio::test]
async fn postgres_keeps_the_contract() {
    let db = gatehouse_testkit::backing::TestDb::create();
    let a = CallStore::open_postgres(&db.url(), "node-a/1".into())
        .await
        .unwrap();
    let b = CallStore::open_postgres(&db.url(), "node-b/1".into())
        .await
        .unwrap();
    assert_eq!(a.engine(), "postgres");
    contract(a, b).await;
}
