//! The one place config changes go through: admin writes, file reloads and store change
//! notifications all end in [`Control`], which validates, persists, compiles and swaps.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use gatehouse_model::{prepare, Config, ConfigError, Origins};
use gatehouse_proxy::plugin::Registry;
use gatehouse_proxy::{Shared, Snapshot};
use gatehouse_store::{diff, ConfigStore, StoreError, Versioned};

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
}

impl Control {
    /// A controller over `store` feeding `shared`.
    pub fn new(
        store: Arc<dyn ConfigStore>,
        shared: Arc<Shared>,
        catalog: Arc<Registry>,
    ) -> Arc<Control> {
        Arc::new(Control {
            store,
            shared,
            catalog,
            current: RwLock::new(Arc::new(Versioned::default())),
            write: tokio::sync::Mutex::new(()),
            ready: AtomicBool::new(false),
            last_error: RwLock::new(None),
        })
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
        self.shared.snapshot.store(Arc::new(snap));
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(Versioned {
            config,
            version,
            validated: true,
        });
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
            let v = self.store.load().await?;
            if self.is_ready() && v.version <= self.current().version {
                return Ok(self.current().version);
            }
            let cfg = if v.validated {
                v.config
            } else {
                prepare(v.config, &Origins::new(), &*self.catalog)?
            };
            let snap = Snapshot::compile(&cfg, v.version, &self.catalog)?;
            let n = cfg.routes.len();
            self.install(cfg, snap, v.version);
            tracing::info!(version = v.version, routes = n, "config loaded");
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

    /// Applies an edit to a copy of the running config; validates, persists and swaps it in
    /// before returning, so the next request already sees it.
    pub async fn mutate<F, T>(&self, edit: F) -> Result<(Arc<Versioned>, T), crate::api::ApiError>
    where
        F: FnOnce(&mut Config, &mut Origins) -> Result<T, crate::api::ApiError>,
    {
        let _g = self.write.lock().await;
        if self.store.read_only() {
            return Err(StoreError::ReadOnly.into());
        }
        let cur = self.current();
        let mut cfg = cur.config.clone();
        let mut origins = Origins::new();
        let out = edit(&mut cfg, &mut origins)?;
        let cfg = gatehouse_model::prepare_after(cfg, &origins, &*self.catalog, Some(&cur.config))
            .map_err(ControlError::from)?;
        let snap = Snapshot::compile(&cfg, 0, &self.catalog).map_err(ControlError::from)?;
        let changes = diff::diff(&cur.config, &cfg);
        let version = if changes.is_empty() {
            cur.version
        } else {
            self.store
                .apply(changes, cur.version)
                .await
                .map_err(ControlError::from)?
        };
        self.install(cfg, snap, version);
        Ok((self.current(), out))
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
