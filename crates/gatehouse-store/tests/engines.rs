//! The same store contract, run against every database engine: SQLite (a temp file) and
//! PostgreSQL (a database of this test's own). Later stored features add their checks
//! here, so both engines keep behaving alike.

use std::sync::Arc;

use gatehouse_model::{Config, Kind, Route, Service};
use gatehouse_store::keyring::Keyring;
use gatehouse_store::postgres::PgStore;
use gatehouse_store::sqlite::SqliteStore;
use gatehouse_store::{Change, ConfigStore, Entity, NodeInfo, StoreError};
use gatehouse_testkit::backing::TestDb;
use uuid::Uuid;

fn service(name: &str) -> Service {
    serde_json::from_value(serde_json::json!({
        "id": Uuid::new_v4(), "name": name, "url": "http://127.0.0.1:9"
    }))
    .unwrap()
}

fn route(service: Uuid, path: &str) -> Route {
    serde_json::from_value(serde_json::json!({
        "id": Uuid::new_v4(), "service": service.to_string(), "paths": [path]
    }))
    .unwrap()
}

async fn contract(store: &dyn ConfigStore) {
    let v0 = store.load().await.unwrap().version;
    // Writes land in order, bump the version, and are read back.
    let s = service("orders");
    let r = route(s.id, "/orders");
    let v1 = store
        .apply(
            vec![
                Change::Put(Entity::Service(s.clone())),
                Change::Put(Entity::Route(r.clone())),
            ],
            v0,
        )
        .await
        .unwrap();
    assert_eq!(v1, v0 + 1);
    let got = store.load().await.unwrap();
    assert_eq!(got.version, v1);
    assert_eq!(got.config.services, vec![s.clone()]);
    assert_eq!(got.config.routes, vec![r.clone()]);
    assert_eq!(*store.watch().borrow(), v1);

    // A writer that started from an old version loses: nothing of its write lands.
    let stale = store
        .apply(vec![Change::Put(Entity::Service(service("lost")))], v0)
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { expected, found }) if expected == v0 && found == v1),
        "{stale:?}"
    );
    assert_eq!(store.load().await.unwrap().config.services.len(), 1);

    // Replace and delete.
    let mut s2 = s.clone();
    s2.retries = 2;
    let v2 = store
        .apply(
            vec![
                Change::Put(Entity::Service(s2.clone())),
                Change::Delete(Kind::Route, r.id),
            ],
            v1,
        )
        .await
        .unwrap();
    let got = store.load().await.unwrap();
    assert_eq!((got.version, got.config.services.clone()), (v2, vec![s2]));
    assert!(got.config.routes.is_empty());

    // A whole config of many entities in one go, read back in declaration order.
    let mut big = Config::default();
    let svc = service("bulk");
    for i in 0..12_000 {
        big.routes.push(route(svc.id, &format!("/r{i}")));
    }
    big.services.push(svc);
    let v3 = store.replace(big.clone()).await.unwrap();
    let got = store.load().await.unwrap();
    assert_eq!(got.version, v3);
    assert_eq!(got.config.routes, big.routes);

    // The node registry.
    let node = NodeInfo {
        id: Uuid::new_v4(),
        hostname: "n1".into(),
        addresses: vec!["proxy=127.0.0.1:8080".into()],
        version: "0.1.0".into(),
        config_version: v3,
        started_at: 1,
    };
    store.heartbeat(&node).await.unwrap();
    let mut again = node.clone();
    again.config_version = v3 + 1;
    store.heartbeat(&again).await.unwrap();
    let nodes = store.nodes().await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].info, again);
    assert!(!nodes[0].stale);

    // AI providers (keys sealed at rest, read back in the clear) and models.
    let provider: gatehouse_model::AiProvider = serde_json::from_value(serde_json::json!({
        "id": Uuid::new_v4(), "name": "oa", "kind": "openai",
        "keys": [{"key": "sk-stored-secret", "weight": 2}, {"key": "{env://OPENAI_KEY}"}]
    }))
    .unwrap();
    let model: gatehouse_model::AiModel = serde_json::from_value(serde_json::json!({
        "id": Uuid::new_v4(), "name": "gpt", "price": {"input": 1.5, "output": 2.0},
        "targets": [{"provider": provider.id.to_string(), "model": "gpt-4o", "priority": 1}]
    }))
    .unwrap();
    let v4 = store.load().await.unwrap().version;
    let v5 = store
        .apply(
            vec![
                Change::Put(Entity::AiProvider(provider.clone())),
                Change::Put(Entity::AiModel(model.clone())),
            ],
            v4,
        )
        .await
        .unwrap();
    let got = store.load().await.unwrap();
    assert_eq!(got.version, v5);
    assert_eq!(got.config.ai_providers, vec![provider]);
    assert_eq!(got.config.ai_models, vec![model]);
    if let Some(delta) = store.load_since(v4).await.unwrap() {
        assert_eq!(delta.puts.len(), 2, "{delta:?}");
    }

    // The admin token hash.
    store.set_admin_token_hash("ab".repeat(32)).await.unwrap();
    assert_eq!(
        store.admin_token_hash().await.unwrap(),
        Some("ab".repeat(32))
    );
}

/// Config writes while the registry heartbeats on other connections: none may fail (a
/// deferred SQLite transaction that read first used to fail with "database is locked").
async fn writes_beside_heartbeats(store: Arc<dyn ConfigStore>) {
    let beating = store.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let beats = tokio::spawn(async move {
        let node = NodeInfo {
            id: Uuid::new_v4(),
            hostname: "n".into(),
            addresses: vec![],
            version: "0".into(),
            config_version: 0,
            started_at: 0,
        };
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            beating.heartbeat(&node).await.unwrap();
        }
    });
    let mut v = store.load().await.unwrap().version;
    for i in 0..60 {
        v = store
            .apply(
                vec![Change::Put(Entity::Service(service(&format!("hb{i}"))))],
                v,
            )
            .await
            .unwrap_or_else(|e| panic!("write {i} beside heartbeats: {e}"));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    beats.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let ring = Arc::new(Keyring::load(dir.path()).unwrap());
    let store = SqliteStore::open(&dir.path().join("gh.db"), ring)
        .await
        .unwrap();
    contract(&store).await;
    writes_beside_heartbeats(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_the_contract() {
    let db = TestDb::create();
    let dir = tempfile::tempdir().unwrap();
    let ring = Arc::new(Keyring::load(dir.path()).unwrap());
    let store = PgStore::connect_lazy(&db.url(), ring.clone()).unwrap();
    store.migrate().await.unwrap();
    contract(&store).await;
    // Other nodes read what a version changed, not the whole config.
    let v = store.load().await.unwrap().version;
    let s = service("delta");
    let v2 = store
        .apply(vec![Change::Put(Entity::Service(s.clone()))], v)
        .await
        .unwrap();
    let d = store.load_since(v).await.unwrap().expect("a delta");
    assert_eq!(
        (d.version, d.puts.clone()),
        (v2, vec![Entity::Service(s.clone())])
    );
    assert!(d.deletes.is_empty());
    let v3 = store
        .apply(vec![Change::Delete(Kind::Service, s.id)], v2)
        .await
        .unwrap();
    let d = store.load_since(v).await.unwrap().expect("a delta");
    assert_eq!(d.version, v3);
    assert!(d.puts.is_empty(), "created then deleted: nothing to put");
    assert_eq!(d.deletes, vec![(Kind::Service, s.id)]);
    let mut cfg = store.load().await.unwrap().config;
    let before = cfg.clone();
    cfg.services.push(s.clone());
    gatehouse_store::diff::patch(&mut cfg, store.load_since(v).await.unwrap().unwrap());
    assert_eq!(cfg, before, "patching reproduces the store's config");
    let none = store.load_since(v3).await.unwrap().expect("an empty delta");
    assert_eq!(none.version, v3, "nothing new");
    assert!(none.puts.is_empty() && none.deletes.is_empty());
    // Across a whole-config replacement there is no delta: a full load.
    let v4 = store.replace(Config::default()).await.unwrap();
    assert!(store.load_since(v3).await.unwrap().is_none());
    assert_eq!(store.load().await.unwrap().version, v4);
    assert!(!store
        .load_since(v)
        .await
        .unwrap()
        .is_some_and(|d| d.same_build));
    // Readers of the writer's build trust its validation; others validate again.
    let b1 = PgStore::connect_lazy(&db.url(), ring.clone())
        .unwrap()
        .with_build("b1".into());
    let b2 = PgStore::connect_lazy(&db.url(), ring.clone())
        .unwrap()
        .with_build("b2".into());
    let v5 = b1
        .apply(vec![Change::Put(Entity::Service(service("built")))], v4)
        .await
        .unwrap();
    assert!(b1.load_since(v4).await.unwrap().unwrap().same_build);
    assert!(!b2.load_since(v4).await.unwrap().unwrap().same_build);
    assert_eq!(b2.load_since(v4).await.unwrap().unwrap().version, v5);
    // A second node on the same database: migrations are already there, and it reads what
    // the first wrote.
    let other = PgStore::connect_lazy(&db.url(), ring).unwrap();
    let v = other.migrate().await.unwrap();
    assert_eq!(other.load().await.unwrap().version, v);
    assert!(other.health().reachable);
    writes_beside_heartbeats(Arc::new(other)).await;
}

#[tokio::test]
async fn postgres_unreachable_is_an_outage_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let ring = Arc::new(Keyring::load(dir.path()).unwrap());
    let addr = gatehouse_testkit::closed_port();
    let store = PgStore::connect_lazy(&format!("postgres://postgres:pw@{addr}/x"), ring).unwrap();
    let e = store.migrate().await.unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    let h = store.health();
    assert!(!h.reachable && h.down_since.is_some() && h.error.is_some());
    assert!(matches!(
        store.load().await,
        Err(StoreError::Unavailable(_))
    ));
}
