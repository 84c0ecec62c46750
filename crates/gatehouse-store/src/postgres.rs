//! The cluster store: one PostgreSQL database shared by every node.
//!
//! - **Writes** run in one transaction that locks the `config_version` row, checks it is the
//!   version the writer started from (optimistic concurrency: a stale writer gets
//!   [`StoreError::Conflict`] and the controller retries its edit on the fresh config), writes
//!   the changed rows, bumps the version and `pg_notify`s it — delivered at commit.
//! - **The change feed** is LISTEN on [`CHANNEL`] (a write on any node reaches the others in
//!   milliseconds) plus a poll of the version every second, which covers notifications lost
//!   while a listener reconnects.
//! - **Outages**: the pool connects lazily and gives up on a connection after
//!   [`ACQUIRE_TIMEOUT`], so a write while PostgreSQL is down fails fast (503
//!   `store_unavailable`) and proxying never waits on the database. [`PgStore::health`] says
//!   since when the store is unreachable; the poll notices its return, runs migrations if
//!   they never ran, and the feed resumes.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use gatehouse_model::Config;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};
use tokio::sync::watch;

use crate::diff::into_entities;
use crate::keyring::Keyring;
use crate::{
    Change, ConfigStore, Entity, NodeInfo, NodeRow, StoreError, StoreFuture, StoreHealth, Versioned,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The NOTIFY channel that carries new config versions.
pub const CHANNEL: &str = "gatehouse_config";
/// How long a query waits for a connection before the store counts as unreachable.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// Rows written per statement by bulk writes (`POST /config` of a large config).
const BATCH: usize = 5_000;

/// Config in PostgreSQL.
pub struct PgStore {
    pool: PgPool,
    tx: watch::Sender<u64>,
    keyring: Arc<Keyring>,
    health: Mutex<StoreHealth>,
    migrated: AtomicBool,
    build: String,
}

/// True for failures that mean "the database is not there" rather than "the query is wrong".
fn is_outage(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_)
    ) || e
        .as_database_error()
        .and_then(|d| d.code())
        // Class 57 (operator intervention: shutdown, crash) and 08 (connection exception).
        .is_some_and(|c| c.starts_with("57") || c.starts_with("08"))
}

fn store_err(e: sqlx::Error) -> StoreError {
    if is_outage(&e) {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Db(e)
    }
}

/// The URL with its password replaced, for logs and `/status`.
pub fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((user, host)) => match user.split_once(':') {
                Some((name, _)) => format!("{scheme}://{name}:***@{host}"),
                None => url.to_string(),
            },
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

async fn version(tx: &mut Transaction<'_, Postgres>, lock: bool) -> Result<u64, sqlx::Error> {
    let q = if lock {
        "SELECT value FROM meta WHERE key = 'config_version' FOR UPDATE"
    } else {
        "SELECT value FROM meta WHERE key = 'config_version'"
    };
    let v: String = sqlx::query_scalar(q).fetch_one(&mut **tx).await?;
    Ok(v.parse().unwrap_or(0))
}

/// Bumps the version and tells every listener (delivered when the transaction commits).
async fn bump(tx: &mut Transaction<'_, Postgres>, from: u64) -> Result<u64, sqlx::Error> {
    let v = from + 1;
    sqlx::query("UPDATE meta SET value = $1 WHERE key = 'config_version'")
        .bind(v.to_string())
        .execute(&mut **tx)
        .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(v.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(v)
}

/// Inserts or replaces entities, [`BATCH`] rows per statement (order kept: new rows get
/// positions in the order given).
async fn upsert(
    tx: &mut Transaction<'_, Postgres>,
    items: &[Entity],
    keyring: &Keyring,
) -> Result<(), StoreError> {
    for chunk in items.chunks(BATCH) {
        let mut kinds = Vec::with_capacity(chunk.len());
        let mut ids = Vec::with_capacity(chunk.len());
        let mut bodies = Vec::with_capacity(chunk.len());
        for e in chunk {
            kinds.push(e.kind().as_str().to_string());
            ids.push(e.id().to_string());
            bodies.push(crate::rows::encode(e, keyring)?);
        }
        sqlx::query(
            "INSERT INTO entities (kind, id, body)
             SELECT k, i, b FROM UNNEST($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS t(k, i, b, n)
             ORDER BY n
             ON CONFLICT (kind, id) DO UPDATE SET body = excluded.body, updated_at = now()",
        )
        .bind(kinds)
        .bind(ids)
        .bind(bodies)
        .execute(&mut **tx)
        .await
        .map_err(store_err)?;
    }
    Ok(())
}

/// Versions of the change log kept: a node further behind reads the whole config.
const KEEP_CHANGES: i64 = 1_000;

/// Records what version `v` touched, and forgets versions older than [`KEEP_CHANGES`].
async fn log_changes(
    tx: &mut Transaction<'_, Postgres>,
    v: u64,
    touched: Vec<(String, String)>,
    build: &str,
) -> Result<(), sqlx::Error> {
    let (kinds, ids): (Vec<String>, Vec<String>) = touched.into_iter().unzip();
    sqlx::query("INSERT INTO changes (version, kind, id, build) SELECT $1, k, i, $4 FROM UNNEST($2::text[], $3::text[]) AS t(k, i)")
        .bind(v as i64)
        .bind(kinds)
        .bind(ids)
        .bind(build)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM changes WHERE version < $1")
        .bind(v as i64 - KEEP_CHANGES)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl PgStore {
    /// A store over `url` (`postgres://user:password@host:port/db?sslmode=…`). Connects
    /// lazily: nothing is contacted until [`PgStore::migrate`] or the first query, so a node
    /// can start (from its last-good config) while PostgreSQL is down.
    pub fn connect_lazy(url: &str, keyring: Arc<Keyring>) -> Result<PgStore, StoreError> {
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", redacted(url))))?
            .application_name("gatehouse");
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(Duration::from_secs(300))
            .connect_lazy_with(opts);
        let (tx, _) = watch::channel(0);
        Ok(PgStore {
            pool,
            tx,
            keyring,
            health: Mutex::new(StoreHealth::default()),
            migrated: AtomicBool::new(false),
            build: String::new(),
        })
    }

    /// Names this node's build (version and config schema) in what it writes; readers of
    /// the same build skip validating it again. Without it every reader validates.
    pub fn with_build(mut self, build: String) -> PgStore {
        self.build = build;
        self
    }

    /// Creates or upgrades the schema (under PostgreSQL's advisory lock, so nodes starting
    /// together migrate once), seals secrets with the keyring's first key, and reads the
    /// version. Called at start; again by the poller if the database was down then.
    pub async fn migrate(&self) -> Result<u64, StoreError> {
        let r = MIGRATOR.run(&self.pool).await;
        if let Err(sqlx::migrate::MigrateError::Execute(inner)) = &r {
            if is_outage(inner) {
                let msg = inner.to_string();
                self.observe_failure(&msg);
                return Err(StoreError::Unavailable(msg));
            }
        }
        r?;
        self.migrated.store(true, Ordering::Release);
        let resealed = self.reseal().await?;
        if resealed > 0 {
            tracing::info!(entities = resealed, key = %self.keyring.primary_id(), "sealed secrets at rest with the keyring's first key");
        }
        let v = self.current_version().await?;
        self.tx.send_replace(v);
        Ok(v)
    }

    /// Seals again every stored secret that is plain or sealed with another key.
    async fn reseal(&self) -> Result<usize, StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_err)?;
        let q = format!(
            "SELECT kind, id, body FROM entities WHERE kind IN ({}) FOR UPDATE",
            crate::sealed::kinds_sql()
        );
        let rows = sqlx::query(&q)
            .fetch_all(&mut *tx)
            .await
            .map_err(store_err)?;
        let mut n = 0;
        for row in rows {
            let (kind, id, body): (String, String, String) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            let Some(v) = crate::rows::resealed(&kind, &id, &body, &self.keyring)? else {
                continue;
            };
            sqlx::query("UPDATE entities SET body = $1 WHERE kind = $2 AND id = $3")
                .bind(v)
                .bind(&kind)
                .bind(&id)
                .execute(&mut *tx)
                .await
                .map_err(store_err)?;
            n += 1;
        }
        tx.commit().await.map_err(store_err)?;
        Ok(n)
    }

    fn observe_failure(&self, msg: &str) {
        let mut h = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        if h.reachable {
            tracing::error!(error = %msg, "config store unreachable: serving the running config; writes answer 503 until it is back");
            h.reachable = false;
            h.down_since = Some(crate::unix_now());
        }
        h.error = Some(msg.to_string());
    }

    fn observe<T>(&self, r: Result<T, sqlx::Error>) -> Result<T, StoreError> {
        match r {
            Ok(v) => {
                let mut h = self.health.lock().unwrap_or_else(PoisonError::into_inner);
                if !h.reachable {
                    tracing::info!("config store reachable again");
                    *h = StoreHealth::default();
                }
                Ok(v)
            }
            Err(e) => {
                if is_outage(&e) {
                    self.observe_failure(&e.to_string());
                }
                Err(store_err(e))
            }
        }
    }

    /// A read-only transaction on one snapshot of the database, and the config version in
    /// it: what is read next matches that version.
    async fn read_snapshot(&self) -> Result<(Transaction<'static, Postgres>, u64), StoreError> {
        let mut tx = self.observe(self.pool.begin().await)?;
        let r = sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await;
        self.observe(r)?;
        let v = self.observe(version(&mut tx, false).await)?;
        Ok((tx, v))
    }

    async fn current_version(&self) -> Result<u64, StoreError> {
        let r =
            sqlx::query_scalar::<_, String>("SELECT value FROM meta WHERE key = 'config_version'")
                .fetch_one(&self.pool)
                .await;
        Ok(self.observe(r)?.parse().unwrap_or(0))
    }

    /// Follows the change feed: LISTEN for versions, and poll every `poll` (which also
    /// notices the database coming back and migrates it if that never happened).
    pub fn spawn_feed(self: &Arc<Self>, poll: Duration) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(poll).await;
                let Some(s) = me.upgrade() else { break };
                if !s.migrated.load(Ordering::Acquire) {
                    if let Err(e) = s.migrate().await {
                        tracing::debug!(error = %e, "store still unreachable");
                    }
                    continue;
                }
                if let Err(e) = s.refresh().await {
                    tracing::debug!(error = %e, "config version poll failed");
                }
            }
        });
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(s) = me.upgrade() else { break };
                if let Err(e) = s.listen().await {
                    tracing::debug!(error = %e, "config change listener stopped; reconnecting");
                }
                drop(s);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    /// One LISTEN session: returns when the connection fails.
    async fn listen(&self) -> Result<(), sqlx::Error> {
        let mut l = PgListener::connect_with(&self.pool).await?;
        // Reconnection is this loop's job (with the poll covering the gap), not the
        // listener's: a silent reconnect would hide the outage from `/status`.
        l.ignore_pool_close_event(true);
        l.listen(CHANNEL).await?;
        // Anything written between the last poll and this LISTEN is picked up now.
        let _ = self.refresh().await;
        loop {
            match l.try_recv().await? {
                Some(n) => {
                    let v: u64 = n.payload().parse().unwrap_or(0);
                    if v > *self.tx.borrow() {
                        self.tx.send_replace(v);
                    }
                }
                None => return Ok(()),
            }
        }
    }
}

impl ConfigStore for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn read_only(&self) -> bool {
        false
    }

    fn remote(&self) -> bool {
        true
    }

    fn health(&self) -> StoreHealth {
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn load(&self) -> StoreFuture<'_, Versioned> {
        Box::pin(async move {
            let (mut tx, version) = self.read_snapshot().await?;
            // Rows are decoded as they stream in: no second copy of the whole table.
            let mut list = Vec::new();
            {
                use futures_util::TryStreamExt;
                let mut rows = sqlx::query("SELECT kind, id, body FROM entities ORDER BY position")
                    .fetch(&mut *tx);
                while let Some(row) = rows.try_next().await.map_err(store_err)? {
                    let (kind, id, body): (&str, &str, &str) =
                        (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
                    list.push(crate::rows::decode(kind, id, body, &self.keyring)?);
                }
            }
            self.observe(tx.commit().await)?;
            Ok(Versioned {
                config: crate::rows::assemble(list),
                version,
                // Another node (maybe another build) wrote it: validated again here.
                validated: false,
            })
        })
    }

    fn load_since(&self, from: u64) -> StoreFuture<'_, Option<crate::Delta>> {
        Box::pin(async move {
            let (mut tx, to) = self.read_snapshot().await?;
            if to == from {
                return Ok(Some(crate::Delta {
                    version: to,
                    same_build: true,
                    ..Default::default()
                }));
            }
            if to < from {
                return Ok(None);
            }
            let rows =
                sqlx::query("SELECT version, kind, id, build FROM changes WHERE version > $1")
                    .bind(from as i64)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(store_err)?;
            // Every version in between must be logged, and none may be a replacement.
            let mut versions = std::collections::BTreeSet::new();
            let mut keys = std::collections::BTreeSet::new();
            let mut same_build = !self.build.is_empty();
            for r in &rows {
                let (v, kind, id, build): (i64, String, String, String) =
                    (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
                same_build &= build == self.build;
                if kind == "*" {
                    return Ok(None);
                }
                versions.insert(v);
                keys.insert((kind, id));
            }
            if versions.len() as u64 != to - from {
                return Ok(None);
            }
            let (kinds, ids): (Vec<String>, Vec<String>) = keys.iter().cloned().unzip();
            let found = sqlx::query(
                "SELECT e.kind, e.id, e.body FROM entities e
                 JOIN UNNEST($1::text[], $2::text[]) AS t(k, i) ON e.kind = t.k AND e.id = t.i
                 ORDER BY e.position",
            )
            .bind(kinds)
            .bind(ids)
            .fetch_all(&mut *tx)
            .await
            .map_err(store_err)?;
            self.observe(tx.commit().await)?;
            let mut puts = Vec::with_capacity(found.len());
            for row in &found {
                let (kind, id, body): (&str, &str, &str) =
                    (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
                keys.remove(&(kind.to_string(), id.to_string()));
                puts.push(crate::rows::decode(kind, id, body, &self.keyring)?);
            }
            // Logged but no longer there: deleted.
            let deletes = keys
                .into_iter()
                .filter_map(|(k, id)| Some((gatehouse_model::Kind::parse(&k)?, id.parse().ok()?)))
                .collect();
            Ok(Some(crate::Delta {
                version: to,
                puts,
                deletes,
                same_build,
            }))
        })
    }

    fn apply(&self, changes: Vec<Change>, expected: u64) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let mut tx = self.observe(self.pool.begin().await)?;
            let found = version(&mut tx, true).await.map_err(store_err)?;
            if found != expected {
                return Err(StoreError::Conflict { expected, found });
            }
            let touched: Vec<(String, String)> = changes
                .iter()
                .map(|c| match c {
                    Change::Put(e) => (e.kind().as_str().to_string(), e.id().to_string()),
                    Change::Delete(k, id) => (k.as_str().to_string(), id.to_string()),
                })
                .collect();
            let mut puts = Vec::new();
            for c in changes {
                match c {
                    Change::Put(e) => puts.push(e),
                    Change::Delete(k, id) => {
                        sqlx::query("DELETE FROM entities WHERE kind = $1 AND id = $2")
                            .bind(k.as_str())
                            .bind(id.to_string())
                            .execute(&mut *tx)
                            .await
                            .map_err(store_err)?;
                    }
                }
            }
            upsert(&mut tx, &puts, &self.keyring).await?;
            let v = bump(&mut tx, found).await.map_err(store_err)?;
            log_changes(&mut tx, v, touched, &self.build)
                .await
                .map_err(store_err)?;
            self.observe(tx.commit().await)?;
            self.tx.send_replace(v);
            Ok(v)
        })
    }

    fn replace(&self, config: Config) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let mut tx = self.observe(self.pool.begin().await)?;
            let found = version(&mut tx, true).await.map_err(store_err)?;
            sqlx::query("DELETE FROM entities")
                .execute(&mut *tx)
                .await
                .map_err(store_err)?;
            upsert(&mut tx, &into_entities(config), &self.keyring).await?;
            let v = bump(&mut tx, found).await.map_err(store_err)?;
            log_changes(&mut tx, v, vec![("*".into(), "*".into())], &self.build)
                .await
                .map_err(store_err)?;
            self.observe(tx.commit().await)?;
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
            let r = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'admin_token_sha256'")
                .fetch_optional(&self.pool)
                .await;
            self.observe(r)
        })
    }

    fn set_admin_token_hash(&self, hash: String) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let r = sqlx::query(
                "INSERT INTO meta (key, value) VALUES ('admin_token_sha256', $1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(hash)
            .execute(&self.pool)
            .await;
            self.observe(r).map(drop)
        })
    }

    fn heartbeat(&self, node: &NodeInfo) -> StoreFuture<'_, ()> {
        let node = node.clone();
        Box::pin(async move {
            // The database's clock judges staleness, so node clocks may differ.
            let r = sqlx::query(
                "INSERT INTO nodes (id, hostname, addresses, version, config_version, started_at, last_seen)
                 VALUES ($1, $2, $3, $4, $5, $6, EXTRACT(EPOCH FROM now())::bigint)
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
            .execute(&self.pool)
            .await;
            self.observe(r)?;
            let r = sqlx::query(
                "DELETE FROM nodes WHERE last_seen < EXTRACT(EPOCH FROM now())::bigint - $1",
            )
            .bind(crate::nodes::FORGET_AFTER_SECS)
            .execute(&self.pool)
            .await;
            self.observe(r).map(drop)
        })
    }

    fn nodes(&self) -> StoreFuture<'_, Vec<NodeRow>> {
        Box::pin(async move {
            let r = sqlx::query(
                "SELECT id, hostname, addresses, version, config_version, started_at, last_seen,
                        EXTRACT(EPOCH FROM now())::bigint AS now
                 FROM nodes ORDER BY last_seen DESC, id",
            )
            .fetch_all(&self.pool)
            .await;
            let rows = self.observe(r)?;
            rows.iter()
                .map(|r| {
                    let now: i64 = r.try_get("now")?;
                    crate::nodes::from_row(r, now)
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(
            redacted("postgres://gh:s3cret@db:5432/gh"),
            "postgres://gh:***@db:5432/gh"
        );
        for plain in ["postgres://db/gh", "postgres://gh@db/gh"] {
            assert_eq!(redacted(plain), plain, "nothing to hide");
        }
        assert_eq!(redacted("postgres://a:b@c@db/gh"), "postgres://a:***@db/gh");
    }
}
