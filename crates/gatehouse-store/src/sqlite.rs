//! The embedded default store: one SQLite file (WAL mode), migrated on open.

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gatehouse_model::{Config, Kind};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Row, Sqlite, Transaction};
use tokio::sync::watch;

use crate::diff::into_entities;
use crate::keyring::Keyring;
use crate::sealed;
use crate::{Change, ConfigStore, Entity, NodeInfo, NodeRow, StoreError, StoreFuture, Versioned};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Write transactions take the write lock when they begin. A deferred one that read first
/// fails with "database is locked" at its first write if another connection wrote in the
/// meantime (the heartbeat does, every few seconds) — SQLite cannot wait there; here the
/// busy timeout waits instead.
const WRITE: &str = "BEGIN IMMEDIATE";

/// Config in a SQLite database.
pub struct SqliteStore {
    pool: SqlitePool,
    tx: watch::Sender<u64>,
    keyring: std::sync::Arc<Keyring>,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

async fn version(tx: &mut Transaction<'_, Sqlite>) -> Result<u64, StoreError> {
    let v: String = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'config_version'")
        .fetch_one(&mut **tx)
        .await?;
    Ok(v.parse().unwrap_or(0))
}

async fn bump(tx: &mut Transaction<'_, Sqlite>) -> Result<u64, StoreError> {
    let v = version(tx).await? + 1;
    sqlx::query("UPDATE meta SET value = ? WHERE key = 'config_version'")
        .bind(v.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(v)
}

async fn put(
    tx: &mut Transaction<'_, Sqlite>,
    e: &Entity,
    keyring: &Keyring,
) -> Result<(), StoreError> {
    let body = crate::rows::encode(e, keyring)?;
    let pos: String = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'next_position'")
        .fetch_one(&mut **tx)
        .await?;
    let pos: i64 = pos.parse().unwrap_or(1);
    sqlx::query(
        "INSERT INTO entities (kind, id, position, body, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (kind, id) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
    )
    .bind(e.kind().as_str())
    .bind(e.id().to_string())
    .bind(pos)
    .bind(body)
    .bind(now())
    .bind(now())
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE meta SET value = ? WHERE key = 'next_position'")
        .bind((pos + 1).to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database at `path`; secret fields are
    /// sealed with `keyring`, and any sealed with an older key (or not at all) are sealed
    /// again with its first key.
    pub async fn open(
        path: &Path,
        keyring: std::sync::Arc<Keyring>,
    ) -> Result<SqliteStore, StoreError> {
        // The database holds secrets: 0600, and SQLite gives its -wal and -shm files the
        // database file's mode.
        if let Some(dir) = path.parent() {
            crate::private::create_dir(dir)?;
        }
        crate::private::ensure_file(path)?;
        for suffix in ["-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            crate::private::restrict(Path::new(&p))?;
        }
        let url = format!("sqlite://{}", path.display());
        let opts = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        MIGRATOR.run(&pool).await?;
        let (tx, _) = watch::channel(0);
        let store = SqliteStore { pool, tx, keyring };
        let v = store.current_version().await?;
        store.tx.send_replace(v);
        let resealed = store.reseal().await?;
        if resealed > 0 {
            tracing::info!(
                entities = resealed,
                key = %store.keyring.primary_id(),
                "sealed secrets at rest with the keyring's first key"
            );
        }
        Ok(store)
    }

    /// Seals again every entity whose secrets are plain or sealed with a key other than the
    /// keyring's first; returns how many. The config itself (and its version) is unchanged.
    pub async fn reseal(&self) -> Result<usize, StoreError> {
        let mut tx = self.pool.begin_with(WRITE).await?;
        let q = format!(
            "SELECT kind, id, body FROM entities WHERE kind IN ({})",
            sealed::kinds_sql()
        );
        let rows = sqlx::query(&q).fetch_all(&mut *tx).await?;
        let mut n = 0;
        for row in rows {
            let (kind, id, body): (String, String, String) = (
                row.try_get("kind")?,
                row.try_get("id")?,
                row.try_get("body")?,
            );
            let Some(v) = crate::rows::resealed(&kind, &id, &body, &self.keyring)? else {
                continue;
            };
            sqlx::query("UPDATE entities SET body = ? WHERE kind = ? AND id = ?")
                .bind(v)
                .bind(&kind)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            n += 1;
        }
        tx.commit().await?;
        Ok(n)
    }

    /// The keyring key ids that sealed secrets in the database name.
    pub async fn sealed_key_ids(&self) -> Result<Vec<String>, StoreError> {
        let q = format!(
            "SELECT kind, body FROM entities WHERE kind IN ({})",
            sealed::kinds_sql()
        );
        let rows = sqlx::query(&q).fetch_all(&self.pool).await?;
        let mut ids = Vec::new();
        for row in rows {
            let (kind, body): (String, String) = (row.try_get("kind")?, row.try_get("body")?);
            if let (Some(k), Ok(mut v)) = (
                Kind::parse(&kind),
                serde_json::from_str::<serde_json::Value>(&body),
            ) {
                for id in sealed::key_ids(k, &mut v) {
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
            }
        }
        Ok(ids)
    }

    async fn current_version(&self) -> Result<u64, StoreError> {
        let v: String = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'config_version'")
            .fetch_one(&self.pool)
            .await?;
        Ok(v.parse().unwrap_or(0))
    }

    /// Re-reads the version every `every`, so writes by another process are noticed.
    pub fn spawn_poller(self: &std::sync::Arc<Self>, every: Duration) {
        let me = std::sync::Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(s) = me.upgrade() else { break };
                if let Err(e) = s.refresh().await {
                    tracing::warn!(error = %e, "config version poll failed");
                }
            }
        });
    }
}

impl ConfigStore for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn read_only(&self) -> bool {
        false
    }

    fn load(&self) -> StoreFuture<'_, Versioned> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            let version = version(&mut tx).await?;
            let rows = sqlx::query("SELECT kind, id, body FROM entities ORDER BY position")
                .fetch_all(&mut *tx)
                .await?;
            tx.commit().await?;
            let mut entities = Vec::with_capacity(rows.len());
            for row in rows {
                let kind: String = row.try_get("kind")?;
                let id: String = row.try_get("id")?;
                let body: String = row.try_get("body")?;
                entities.push(crate::rows::decode(&kind, &id, &body, &self.keyring)?);
            }
            let cfg = crate::rows::assemble(entities);
            // Re-validated on load: the database may have been written by another version.
            Ok(Versioned {
                config: cfg,
                version,
                validated: false,
            })
        })
    }

    fn apply(&self, changes: Vec<Change>, expected: u64) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let mut tx = self.pool.begin_with(WRITE).await?;
            let found = version(&mut tx).await?;
            if found != expected {
                return Err(StoreError::Conflict { expected, found });
            }
            for c in &changes {
                match c {
                    Change::Put(e) => put(&mut tx, e, &self.keyring).await?,
                    Change::Delete(k, id) => {
                        sqlx::query("DELETE FROM entities WHERE kind = ? AND id = ?")
                            .bind(k.as_str())
                            .bind(id.to_string())
                            .execute(&mut *tx)
                            .await?;
                    }
                }
            }
            let v = bump(&mut tx).await?;
            tx.commit().await?;
            self.tx.send_replace(v);
            Ok(v)
        })
    }

    fn replace(&self, config: Config) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let mut tx = self.pool.begin_with(WRITE).await?;
            sqlx::query("DELETE FROM entities")
                .execute(&mut *tx)
                .await?;
            for e in into_entities(config) {
                put(&mut tx, &e, &self.keyring).await?;
            }
            let v = bump(&mut tx).await?;
            tx.commit().await?;
            self.tx.send_replace(v);
            Ok(v)
        })
    }

    fn refresh(&self) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let v = self.current_version().await?;
            Ok(crate::announce(&self.tx, v))
        })
    }

    fn watch(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }

    fn admin_token_hash(&self) -> StoreFuture<'_, Option<String>> {
        Box::pin(async move {
            Ok(
                sqlx::query_scalar("SELECT value FROM meta WHERE key = 'admin_token_sha256'")
                    .fetch_optional(&self.pool)
                    .await?,
            )
        })
    }

    fn set_admin_token_hash(&self, hash: String) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            sqlx::query("INSERT INTO meta (key, value) VALUES ('admin_token_sha256', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
                .bind(hash)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
    }

    fn heartbeat(&self, node: &NodeInfo) -> StoreFuture<'_, ()> {
        let node = node.clone();
        Box::pin(async move {
            let now = now();
            sqlx::query(
                "INSERT INTO nodes (id, hostname, addresses, version, config_version, started_at, last_seen)
                 VALUES (?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (id) DO UPDATE SET hostname = excluded.hostname, addresses = excluded.addresses,
                   version = excluded.version, config_version = excluded.config_version,
                   started_at = excluded.started_at, last_seen = excluded.last_seen",
            )
            .bind(node.id.to_string())
            .bind(&node.hostname)
            .bind(serde_json::to_string(&node.addresses).unwrap_or_default())
            .bind(&node.version)
            .bind(node.config_version as i64)
            .bind(node.started_at)
            .bind(now)
            .execute(&self.pool)
            .await?;
            sqlx::query("DELETE FROM nodes WHERE last_seen < ?")
                .bind(now - crate::nodes::FORGET_AFTER_SECS)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
    }

    fn nodes(&self) -> StoreFuture<'_, Vec<NodeRow>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT id, hostname, addresses, version, config_version, started_at, last_seen
                 FROM nodes ORDER BY last_seen DESC, id",
            )
            .fetch_all(&self.pool)
            .await?;
            let now = now();
            rows.into_iter()
                .map(|r| crate::nodes::from_row(&r, now))
                .collect()
        })
    }
}
