//! The one place config changes go through: admin writes, file reloads and store change
//! notifications all end in [`Control`], which validates, persists, compiles and swaps.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use gatehouse_model::{prepare, Config, ConfigError, Origins};
use gatehouse_proxy::plugin::Registry;
use gatehouse_proxy::{Shared, Snapshot};
use gatehouse_store::last_good::{Cached, LastGood};
use gatehouse_store::{diff, ConfigStore, StoreError, Versioned};

/// Times an admin write is re-applied on a fresh config after another node's write won.
const CONFLICT_RETRIES: usize = 5;

/// What a reload found through the store's change log.
enum Fresh {
    /// The store is at the running version.
    Unchanged(u64),
    /// The running config with the changes since applied.
    Patched(Box<Versioned>),
    /// The change log cannot tell (gap, replacement, restore, start): read everything.
    NeedsFullLoad,
}

/// Where the running config came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigSource {
    /// Nothing loaded yet.
    None,
    /// The store.
    Store,
    /// The last-good copy in the data dir (the store was unreachable at start).
    LastGood,
}

/// Why a config change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Validation failed; nothing changed.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Owns the running config and the path from a change to a live snapshot.
pub struct Control {
    store: Arc<dyn ConfigStore>,
    shared: Arc<Shared>,
    catalog: Arc<Registry>,
    current: RwLock<Arc<Versioned>>,
    write: tokio::sync::Mutex<()>,
    ready: AtomicBool,
    last_error: RwLock<Option<String>>,
    source: RwLock<ConfigSource>,
    last_good: Option<LastGood>,
    saving: tokio::sync::watch::Sender<Option<Arc<Versioned>>>,
    /// The admin token hash, copied into the last-good config.
    token_hash: RwLock<Option<String>>,
}

/// Frees a replaced snapshot and config later, on the blocking pool. Freeing a 100,000-route
/// router takes tens of milliseconds: not on the path of the change that replaced it, and —
/// holding the last reference for a moment while proxy workers move to the new snapshot —
/// not on a worker that happened to let go of it last.
fn retire<T: Send + 'static>(old: T) {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(async move {
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                let _ = tokio::task::spawn_blocking(move || drop(old)).await;
            });
        }
        Err(_) => drop(old),
    }
}

impl Control {
    /// A controller over `store` feeding `shared`.
    pub fn new(
        store: Arc<dyn ConfigStore>,
        shared: Arc<Shared>,
        catalog: Arc<Registry>,
    ) -> Arc<Control> {
        Control::with_last_good(store, shared, catalog, None)
    }

    /// A controller that also keeps every installed config in `last_good` (for stores
    /// outside the node), written in the background, latest first.
    pub fn with_last_good(
        store: Arc<dyn ConfigStore>,
        shared: Arc<Shared>,
        catalog: Arc<Registry>,
        last_good: Option<LastGood>,
    ) -> Arc<Control> {
        let (saving, _) = tokio::sync::watch::channel(None);
        let c = Arc::new(Control {
            store,
            shared,
            catalog,
            current: RwLock::new(Arc::new(Versioned::default())),
            write: tokio::sync::Mutex::new(()),
            ready: AtomicBool::new(false),
            last_error: RwLock::new(None),
            source: RwLock::new(ConfigSource::None),
            last_good,
            saving,
            token_hash: RwLock::new(None),
        });
        if c.last_good.is_some() {
            c.spawn_saver();
        }
        c
    }

    /// Where the running config came from.
    pub fn source(&self) -> ConfigSource {
        *self.source.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The admin token hash to keep with the last-good config.
    pub fn set_token_hash(&self, hash: &str) {
        *self
            .token_hash
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(hash.to_string());
    }

    /// Writes the newest installed config to the last-good copy, off the request path and
    /// at most once a second; a burst of writes ends in one file write of the last one.
    fn spawn_saver(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        let mut rx = self.saving.subscribe();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let Some(v) = rx.borrow_and_update().clone() else {
                    continue;
                };
                let Some(c) = me.upgrade() else { break };
                let token = c
                    .token_hash
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                let saved = tokio::task::spawn_blocking(move || {
                    let Some(lg) = c.last_good.as_ref() else {
                        return Ok(());
                    };
                    lg.save(&v.config, v.version, token.as_deref())
                })
                .await;
                match saved {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "cannot write the last-good config"),
                    Err(e) => tracing::error!(error = %e, "last-good config writer failed"),
                }
                // At most one write a second: a burst of edits to a large config costs one
                // file, and the copy is never more than a second behind once it settles.
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
    }

    /// Starts from the last-good copy (the store is unreachable): validated and compiled
    /// like any config; the first config the store gives later replaces it whatever its
    /// version.
    pub fn start_from(&self, cached: Cached) -> Result<u64, ControlError> {
        let cfg = prepare(cached.config, &Origins::new(), &*self.catalog)?;
        let snap = Snapshot::compile(&cfg, cached.version, &self.catalog)?;
        self.install(cfg, snap, cached.version);
        *self.source.write().unwrap_or_else(PoisonError::into_inner) = ConfigSource::LastGood;
        Ok(cached.version)
    }

    /// The store behind this controller.
    pub fn store(&self) -> &Arc<dyn ConfigStore> {
        &self.store
    }

    /// The plugins: validation of their configs and compilation of instances.
    pub fn catalog(&self) -> &Arc<Registry> {
        &self.catalog
    }

    /// The running config and its version.
    pub fn current(&self) -> Arc<Versioned> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// True once a config has been loaded.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The last reload failure, if the latest attempt failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn install(&self, config: Config, mut snap: Snapshot, version: u64) {
        snap.version = version;
        let old_snap = self.shared.snapshot.swap(Arc::new(snap));
        let v = Arc::new(Versioned {
            config,
            version,
            validated: true,
        });
        let old_cfg = std::mem::replace(
            &mut *self.current.write().unwrap_or_else(PoisonError::into_inner),
            v.clone(),
        );
        retire((old_snap, old_cfg));
        *self.source.write().unwrap_or_else(PoisonError::into_inner) = ConfigSource::Store;
        if self.last_good.is_some() {
            self.saving.send_replace(Some(v));
        }
        *self
            .last_error
            .write()
            .unwrap_or_else(PoisonError::into_inner) = None;
        self.ready.store(true, Ordering::Release);
    }

    /// Loads the store's config if it is newer than the running one. On failure the running
    /// config stays and the error is returned (and remembered for `/status`).
    pub async fn reload(&self) -> Result<u64, ControlError> {
        let _g = self.write.lock().await;
        let result: Result<u64, ControlError> = async {
            let t0 = std::time::Instant::now();
            let v = match self.delta().await? {
                Fresh::Unchanged(version) => return Ok(version),
                Fresh::Patched(v) => *v,
                Fresh::NeedsFullLoad => self.store.load().await?,
            };
            let loaded = t0.elapsed();
            // Any other version is installed, a lower one too: the database may have been
            // restored from a backup (this node's own writes are committed before it
            // reloads, so a load never returns something older than what it wrote). A
            // config from the last-good copy gives way to the store's even at the same
            // version number.
            let from_store = self.source() == ConfigSource::Store;
            if self.is_ready() && from_store && v.version == self.current().version {
                return Ok(self.current().version);
            }
            let cfg = if v.validated {
                v.config
            } else {
                prepare(v.config, &Origins::new(), &*self.catalog)?
            };
            let validated = t0.elapsed();
            let snap = Snapshot::compile(&cfg, v.version, &self.catalog)?;
            let n = cfg.routes.len();
            self.install(cfg, snap, v.version);
            tracing::info!(
                version = v.version,
                routes = n,
                load_ms = loaded.as_millis() as u64,
                validate_ms = (validated - loaded).as_millis() as u64,
                compile_ms = (t0.elapsed() - validated).as_millis() as u64,
                "config loaded"
            );
            Ok(v.version)
        }
        .await;
        if let Err(e) = &result {
            *self
                .last_error
                .write()
                .unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
        }
        result
    }

    /// The store's config as the running one plus what changed since, when the store can
    /// say (PostgreSQL's change log): a one-route edit elsewhere reads one row, not the
    /// whole config.
    async fn delta(&self) -> Result<Fresh, ControlError> {
        if !self.is_ready() || self.source() != ConfigSource::Store {
            return Ok(Fresh::NeedsFullLoad);
        }
        let cur = self.current();
        let Some(delta) = self.store.load_since(cur.version).await? else {
            return Ok(Fresh::NeedsFullLoad);
        };
        if delta.version == cur.version {
            // Nothing new (this node's own write, seen again through the feed).
            return Ok(Fresh::Unchanged(cur.version));
        }
        let (version, validated) = (delta.version, delta.same_build);
        let mut config = cur.config.clone();
        diff::patch(&mut config, delta);
        Ok(Fresh::Patched(Box::new(Versioned {
            config,
            version,
            validated,
        })))
    }

    /// Applies an edit to a copy of the running config; validates, persists and swaps it in
    /// before returning, so the next request already sees it.
    ///
    /// When another node wrote first (the store's version moved on), the edit is applied
    /// again to the store's newer config — a merge: writes to different entities both land,
    /// and two writes to the same entity end as the later one, as with a single node. Only
    /// after [`CONFLICT_RETRIES`] lost races does the caller get 409.
    pub async fn mutate<F, T>(
        &self,
        mut edit: F,
    ) -> Result<(Arc<Versioned>, T), crate::api::ApiError>
    where
        F: FnMut(&mut Config, &mut Origins) -> Result<T, crate::api::ApiError>,
    {
        let mut tries = 0;
        loop {
            match self.mutate_once(&mut edit).await {
                Err(ControlError::Store(StoreError::Conflict { .. }))
                    if tries < CONFLICT_RETRIES =>
                {
                    tries += 1;
                    tracing::debug!(
                        tries,
                        "another node wrote first; applying the edit again on its config"
                    );
                    self.reload().await?;
                }
                Err(e) => return Err(e.into()),
                Ok(Err(api)) => return Err(api),
                Ok(Ok(done)) => return Ok(done),
            }
        }
    }

    /// One attempt of [`Control::mutate`]: an edit's own error is the inner result.
    async fn mutate_once<F, T>(
        &self,
        edit: &mut F,
    ) -> Result<Result<(Arc<Versioned>, T), crate::api::ApiError>, ControlError>
    where
        F: FnMut(&mut Config, &mut Origins) -> Result<T, crate::api::ApiError>,
    {
        let _g = self.write.lock().await;
        if self.store.read_only() {
            return Err(StoreError::ReadOnly.into());
        }
        let cur = self.current();
        let mut cfg = cur.config.clone();
        let mut origins = Origins::new();
        let out = match edit(&mut cfg, &mut origins) {
            Ok(out) => out,
            Err(e) => return Ok(Err(e)),
        };
        let cfg = gatehouse_model::prepare_after(cfg, &origins, &*self.catalog, Some(&cur.config))?;
        let snap = Snapshot::compile(&cfg, 0, &self.catalog)?;
        let changes = diff::diff(&cur.config, &cfg);
        let version = if changes.is_empty() {
            cur.version
        } else {
            self.store.apply(changes, cur.version).await?
        };
        self.install(cfg, snap, version);
        Ok(Ok((self.current(), out)))
    }

    /// Replaces the whole config (already flat and validated) — `POST /config`.
    pub async fn replace(&self, cfg: Config) -> Result<u64, ControlError> {
        let _g = self.write.lock().await;
        let snap = Snapshot::compile(&cfg, 0, &self.catalog)?;
        let version = self.store.replace(cfg.clone()).await?;
        self.install(cfg, snap, version);
        Ok(version)
    }

    /// Follows the store's change feed until the process ends.
    pub fn spawn_reloader(self: &Arc<Self>) {
        let me = self.clone();
        let mut rx = self.store.watch();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                if let Err(e) = me.reload().await {
                    tracing::error!(error = %e, "config reload rejected; the running config stays");
                }
            }
        });
    }
}
