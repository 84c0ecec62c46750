//! Opening the store a node was given — a declarative file, SQLite (the default) or
//! PostgreSQL (a cluster) — and `gatehouse migrate`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use gatehouse_model::PluginCatalog;
use gatehouse_store::file::FileStore;
use gatehouse_store::keyring::Keyring;
use gatehouse_store::last_good::{Cached, LastGood};
use gatehouse_store::postgres::{redacted, PgStore};
use gatehouse_store::sqlite::SqliteStore;
use gatehouse_store::{ConfigStore, StoreError};

use crate::cli::ServeArgs;

/// The engine a `--store` URL names.
#[derive(Debug, PartialEq)]
pub enum StoreUrl {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database (the URL as given).
    Postgres(String),
}

/// Reads `--store`; none means `<data dir>/gatehouse.db`.
pub fn parse(store: Option<&str>, data_dir: &Path) -> Result<StoreUrl> {
    let Some(s) = store.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(StoreUrl::Sqlite(data_dir.join("gatehouse.db")));
    };
    if s.starts_with("postgres://") || s.starts_with("postgresql://") {
        return Ok(StoreUrl::Postgres(s.to_string()));
    }
    if let Some(path) = s
        .strip_prefix("sqlite://")
        .or_else(|| s.strip_prefix("sqlite:"))
    {
        anyhow::ensure!(
            !path.is_empty(),
            "--store `{s}`: the SQLite URL names no file"
        );
        return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
    }
    anyhow::bail!(
        "--store `{}`: use sqlite://PATH or postgres://user:password@host:port/db",
        redacted(s)
    )
}

/// A node's store, and what it starts from.
pub struct Opened {
    /// The store.
    pub store: Arc<dyn ConfigStore>,
    /// The last-good copy, for stores outside the node.
    pub last_good: Option<LastGood>,
    /// Set when the store was unreachable: the copy the node starts from.
    pub cached: Option<Cached>,
}

fn keyring(data_dir: &Path) -> Result<Arc<Keyring>> {
    Ok(Arc::new(
        Keyring::load(data_dir).context("loading the keyring for secrets at rest")?,
    ))
}

/// Opens the store of `serve`.
pub async fn open(args: &ServeArgs, catalog: Arc<dyn PluginCatalog>) -> Result<Opened> {
    if let Some(path) = &args.config {
        let s = Arc::new(
            FileStore::open(path, &args.data_dir, catalog)
                .with_context(|| format!("opening {}", path.display()))?,
        );
        s.spawn_watcher(Duration::from_secs(1));
        return Ok(Opened {
            store: s,
            last_good: None,
            cached: None,
        });
    }
    match parse(args.store.as_deref(), &args.data_dir)? {
        StoreUrl::Sqlite(db) => {
            let s = Arc::new(
                SqliteStore::open(&db, keyring(&args.data_dir)?)
                    .await
                    .with_context(|| format!("opening {}", db.display()))?,
            );
            s.spawn_poller(Duration::from_secs(2));
            Ok(Opened {
                store: s,
                last_good: None,
                cached: None,
            })
        }
        StoreUrl::Postgres(url) => open_postgres(&url, &args.data_dir, &*catalog).await,
    }
}

/// PostgreSQL: migrate and follow it; if it is unreachable, start from the last-good copy
/// (and follow it once it is back).
async fn open_postgres(url: &str, data_dir: &Path, catalog: &dyn PluginCatalog) -> Result<Opened> {
    let ring = keyring(data_dir)?;
    let pg = Arc::new(
        PgStore::connect_lazy(url, ring.clone())
            .with_context(|| format!("--store {}", redacted(url)))?
            .with_build(build_id(catalog)),
    );
    let last_good = LastGood::new(data_dir, ring);
    let cached = match pg.migrate().await {
        Ok(_) => None,
        Err(StoreError::Unavailable(why)) => {
            let cached = last_good
                .load()
                .with_context(|| format!("reading {}", last_good.path().display()))?
                .with_context(|| {
                    format!(
                        "the config store {} is unreachable ({why}) and {} holds no last-good config to start from",
                        redacted(url),
                        last_good.path().display()
                    )
                })?;
            tracing::warn!(
                store = %redacted(url),
                error = %why,
                version = cached.version,
                written_at = cached.written_at,
                file = %last_good.path().display(),
                "config store unreachable at start: serving the last-good config; writes answer 503 until the store is back"
            );
            Some(cached)
        }
        Err(e) => {
            return Err(e).with_context(|| format!("migrating {}", redacted(url)));
        }
    };
    pg.spawn_feed(Duration::from_secs(1));
    tracing::info!(store = %redacted(url), "config store: postgres");
    Ok(Opened {
        store: pg,
        last_good: Some(last_good),
        cached,
    })
}

/// This build's validation rules: its version and the digest of the config format's JSON
/// Schema (every plugin's included). Nodes with the same id accept each other's validated
/// writes without validating them again.
fn build_id(catalog: &dyn PluginCatalog) -> String {
    let schema = gatehouse_model::schema::json_schema_with(catalog).to_string();
    let digest = gatehouse_store::sha256_hex(&format!("{}\n{schema}", env!("CARGO_PKG_VERSION")));
    format!("{}+{}", env!("CARGO_PKG_VERSION"), &digest[..16])
}

/// `gatehouse migrate`: creates or upgrades the schema and says which version it is at.
pub fn migrate(store: Option<&str>, data_dir: &Path) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    rt.block_on(async {
        match parse(store, data_dir)? {
            StoreUrl::Sqlite(db) => {
                SqliteStore::open(&db, keyring(data_dir)?)
                    .await
                    .with_context(|| format!("migrating {}", db.display()))?;
                println!("{}: schema up to date", db.display());
            }
            StoreUrl::Postgres(url) => {
                let pg = PgStore::connect_lazy(&url, keyring(data_dir)?)?;
                let v = pg
                    .migrate()
                    .await
                    .with_context(|| format!("migrating {}", redacted(&url)))?;
                println!("{}: schema up to date (config version {v})", redacted(&url));
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls() {
        let d = Path::new("/data");
        assert_eq!(
            parse(None, d).unwrap(),
            StoreUrl::Sqlite("/data/gatehouse.db".into())
        );
        assert_eq!(
            parse(Some("sqlite:///var/gh.db"), d).unwrap(),
            StoreUrl::Sqlite("/var/gh.db".into())
        );
        assert_eq!(
            parse(Some("sqlite://rel.db"), d).unwrap(),
            StoreUrl::Sqlite("rel.db".into())
        );
        assert!(matches!(
            parse(Some("postgresql://u@h/db"), d).unwrap(),
            StoreUrl::Postgres(_)
        ));
        let e = parse(Some("mysql://u:hunter2@h/db"), d)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sqlite://PATH") && !e.contains("hunter2"), "{e}");
        assert!(parse(Some("sqlite://"), d).is_err());
    }
}
