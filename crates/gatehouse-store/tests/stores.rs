//! Both stores against real files: SQLite (a real database in a temp dir) and declarative.

use std::sync::Arc;

use gatehouse_model::{parse_document, prepare, Config, NoPlugins, Origins};
use gatehouse_store::file::FileStore;
use gatehouse_store::sqlite::SqliteStore;
use gatehouse_store::{diff, ConfigStore, StoreError};

fn ring(dir: &std::path::Path) -> Arc<gatehouse_store::keyring::Keyring> {
    Arc::new(gatehouse_store::keyring::Keyring::load(dir).unwrap())
}

const DOC: &str = "_format_version: \"1\"\nservices:\n  - name: a\n    url: http://127.0.0.1:1\n    routes:\n      - { name: r1, paths: [\"/1\"] }\n      - { name: r2, paths: [\"/2\"] }\n";

#[tokio::test]
async fn sqlite_versions_diffs_conflicts_and_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("g.db"), ring(dir.path()))
        .await
        .unwrap();
    let v0 = store.load().await.unwrap();
    assert_eq!(v0.config, Config::default());
    let rx = store.watch();

    let cfg = parse_document(DOC, &NoPlugins).unwrap();
    let v1 = store
        .apply(diff::diff(&v0.config, &cfg), v0.version)
        .await
        .unwrap();
    assert_eq!(v1, v0.version + 1);
    assert!(rx.has_changed().unwrap());
    let loaded = store.load().await.unwrap();
    assert_eq!(loaded.config, cfg, "round-trips, in declaration order");

    // Stale writer is refused.
    let err = store.apply(vec![], v0.version).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");

    // Changing one route writes one row and keeps the order.
    let mut edited = cfg.clone();
    edited.routes[0].paths = vec!["/one".into()];
    let changes = diff::diff(&cfg, &edited);
    assert_eq!(changes.len(), 1);
    store.apply(changes, v1).await.unwrap();
    let loaded = store.load().await.unwrap();
    assert_eq!(loaded.config.routes[0].paths, vec!["/one".to_string()]);
    assert_eq!(loaded.config.routes[1].name.as_deref(), Some("r2"));

    // Replace, token hash, reopen.
    let v = store.replace(Config::default()).await.unwrap();
    store.set_admin_token_hash("abc".into()).await.unwrap();
    drop(store);
    let store = SqliteStore::open(&dir.path().join("g.db"), ring(dir.path()))
        .await
        .unwrap();
    let loaded = store.load().await.unwrap();
    assert_eq!(loaded.version, v);
    assert!(loaded.config.routes.is_empty());
    assert_eq!(
        store.admin_token_hash().await.unwrap().as_deref(),
        Some("abc")
    );
    let again = prepare(loaded.config, &Origins::new(), &NoPlugins).unwrap();
    assert!(again.services.is_empty());
}

#[tokio::test]
async fn file_store_notices_changes_and_is_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.yaml");
    std::fs::write(&path, DOC).unwrap();
    let store = Arc::new(FileStore::open(&path, dir.path(), Arc::new(NoPlugins)).unwrap());
    let v1 = store.load().await.unwrap();
    assert_eq!(v1.config.routes.len(), 2);
    assert!(matches!(
        store.apply(vec![], v1.version).await,
        Err(StoreError::ReadOnly)
    ));

    // Unchanged file: SIGHUP does not bump the version.
    assert_eq!(store.refresh().await.unwrap(), v1.version);
    std::fs::write(&path, DOC.replace("/2", "/two")).unwrap();
    let v2 = store.refresh().await.unwrap();
    assert_eq!(v2, v1.version + 1);
    assert_eq!(
        store.load().await.unwrap().config.routes[1].paths,
        vec!["/two".to_string()]
    );

    // A posted config wins until SIGHUP.
    let v3 = store.replace(Config::default()).await.unwrap();
    assert!(store.load().await.unwrap().config.routes.is_empty());
    let v4 = store.refresh().await.unwrap();
    assert!(v4 > v3);
    assert_eq!(store.load().await.unwrap().config.routes.len(), 2);

    // Invalid file: load reports it with a line.
    std::fs::write(&path, "_format_version: \"1\"\nservices:\n  - url: 5\n").unwrap();
    store.refresh().await.unwrap();
    let err = store.load().await.unwrap_err();
    assert!(err.to_string().contains("line 3"), "{err}");

    assert_eq!(store.admin_token_hash().await.unwrap(), None);
    store.set_admin_token_hash("h".into()).await.unwrap();
    assert_eq!(
        store.admin_token_hash().await.unwrap().as_deref(),
        Some("h")
    );
}

const SECRETS: &str = "_format_version: \"1\"\nconsumers:\n  - username: alice\n    hmacauth_credentials: [{ username: alice-hmac, secret: hmac-secret-0123456789 }]\n    jwt_secrets: [{ key: alice-iss, secret: jwt-secret-0123456789abcdef }]\nai_providers:\n  - { name: oa, kind: openai, keys: [{ key: sk-provider-secret-0123456789 }] }\n";

/// The raw bodies of every stored row, as SQLite has them on disk.
async fn raw_bodies(db: &std::path::Path) -> String {
    let out = std::process::Command::new("sqlite3")
        .arg(db)
        .arg("SELECT body FROM entities")
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        // No sqlite3 tool: read the file bytes (WAL included) instead.
        _ => {
            let mut all = std::fs::read(db).unwrap_or_default();
            let mut wal = db.as_os_str().to_owned();
            wal.push("-wal");
            all.extend(std::fs::read(&wal).unwrap_or_default());
            String::from_utf8_lossy(&all).into_owned()
        }
    }
}

#[tokio::test]
async fn secrets_are_sealed_at_rest_and_resealed_after_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let store = SqliteStore::open(&db, ring(dir.path())).await.unwrap();
    let cfg = parse_document(SECRETS, &NoPlugins).unwrap();
    store.replace(cfg.clone()).await.unwrap();
    let loaded = store.load().await.unwrap().config;
    assert_eq!(
        loaded.consumers[0].hmacauth_credentials[0].secret,
        "hmac-secret-0123456789"
    );
    assert_eq!(
        loaded.consumers[0].jwt_secrets[0].secret.as_deref(),
        Some("jwt-secret-0123456789abcdef")
    );
    let raw = raw_bodies(&db).await;
    assert!(!raw.contains("hmac-secret-0123456789"), "{raw}");
    assert!(!raw.contains("jwt-secret-0123456789"), "{raw}");
    assert!(!raw.contains("sk-provider-secret"), "{raw}");
    assert_eq!(
        loaded.ai_providers[0].keys[0].key,
        "sk-provider-secret-0123456789"
    );
    let first = ring(dir.path()).primary_id();
    assert_eq!(store.sealed_key_ids().await.unwrap(), vec![first.clone()]);
    drop(store);

    // Rotate: a new first key; reopening seals everything again with it.
    let new_id = gatehouse_store::keyring::rotate_file(dir.path()).unwrap();
    let store = SqliteStore::open(&db, ring(dir.path())).await.unwrap();
    assert_eq!(store.sealed_key_ids().await.unwrap(), vec![new_id]);
    assert_eq!(store.load().await.unwrap().config, loaded);
    let dropped =
        gatehouse_store::keyring::prune_file(dir.path(), &store.sealed_key_ids().await.unwrap())
            .unwrap();
    assert_eq!(dropped, vec![first]);
    drop(store);
    // Every secret (AI provider keys too) was resealed: the pruned key is not needed.
    let store = SqliteStore::open(&db, ring(dir.path())).await.unwrap();
    assert_eq!(store.load().await.unwrap().config, loaded);
    drop(store);

    // Without the key, the store says which key is missing instead of serving garbage.
    std::fs::write(
        dir.path().join("keyring"),
        format!("{}\n", gatehouse_store::keyring::new_key_line()),
    )
    .unwrap();
    let store = SqliteStore::open(&db, ring(dir.path())).await;
    let err = match store {
        Err(e) => e.to_string(),
        Ok(s) => s
            .load()
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default(),
    };
    assert!(err.contains("which the keyring does not have"), "{err}");

    // Data files are readable by the owner only.
    use std::os::unix::fs::PermissionsExt;
    for f in [db.clone(), dir.path().join("keyring")] {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
}
