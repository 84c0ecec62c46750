//! Declarative (DB-less) mode: the config is a YAML/JSON file, watched for changes (polled,
//! so editors that replace the file by renaming work too) and re-read on SIGHUP.
//! `POST /config` may replace it in memory until the file changes again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use gatehouse_model::{parse_document_noted, Config, PluginCatalog};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::{Change, ConfigStore, StoreError, StoreFuture, Versioned};

enum Source {
    File,
    Posted(Box<Config>),
}

struct State {
    version: u64,
    digest: [u8; 32],
    source: Source,
}

/// Config from a declarative file.
pub struct FileStore {
    path: PathBuf,
    token_path: PathBuf,
    catalog: Arc<dyn PluginCatalog>,
    state: Mutex<State>,
    tx: watch::Sender<u64>,
    node: crate::nodes::OneNode,
}

fn read(path: &Path) -> Result<String, StoreError> {
    std::fs::read_to_string(path).map_err(|e| StoreError::Io(path.display().to_string(), e))
}

impl FileStore {
    /// Opens the file (which must exist); the admin token hash is kept under `data_dir`.
    pub fn open(
        path: &Path,
        data_dir: &Path,
        catalog: Arc<dyn PluginCatalog>,
    ) -> Result<FileStore, StoreError> {
        let text = read(path)?;
        let (tx, _) = watch::channel(1);
        Ok(FileStore {
            path: path.to_path_buf(),
            token_path: data_dir.join("admin-token.sha256"),
            catalog,
            state: Mutex::new(State {
                version: 1,
                digest: Sha256::digest(text.as_bytes()).into(),
                source: Source::File,
            }),
            tx,
            node: Default::default(),
        })
    }

    fn check_file(&self) -> Result<u64, StoreError> {
        let text = read(&self.path)?;
        let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if digest != st.digest {
            st.digest = digest;
            st.version += 1;
            st.source = Source::File;
            self.tx.send_replace(st.version);
        }
        Ok(st.version)
    }

    /// Polls the file every `every` for changes.
    pub fn spawn_watcher(self: &Arc<Self>, every: Duration) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(s) = me.upgrade() else { break };
                if let Err(e) = s.check_file() {
                    tracing::warn!(error = %e, "cannot read config file");
                }
            }
        });
    }
}

impl ConfigStore for FileStore {
    fn backend(&self) -> &'static str {
        "file"
    }

    fn read_only(&self) -> bool {
        true
    }

    fn load(&self) -> StoreFuture<'_, Versioned> {
        Box::pin(async move {
            let (version, posted) = {
                let st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                let posted = match &st.source {
                    Source::Posted(c) => Some((**c).clone()),
                    Source::File => None,
                };
                (st.version, posted)
            };
            let config = match posted {
                Some(c) => c,
                None => {
                    let parsed = parse_document_noted(&read(&self.path)?, &*self.catalog, None)?;
                    for n in &parsed.notes {
                        tracing::warn!(file = %self.path.display(), line = n.line, entity = %n.entity, path = %n.path, "{}", n.message);
                    }
                    parsed.config
                }
            };
            Ok(Versioned {
                config,
                version,
                validated: true,
            })
        })
    }

    fn apply(&self, _changes: Vec<Change>, _expected: u64) -> StoreFuture<'_, u64> {
        Box::pin(async { Err(StoreError::ReadOnly) })
    }

    fn replace(&self, config: Config) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            st.version += 1;
            st.source = Source::Posted(Box::new(config));
            self.tx.send_replace(st.version);
            Ok(st.version)
        })
    }

    fn refresh(&self) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            // SIGHUP means "the file is the truth": pick up edits now, and drop a posted config.
            self.check_file()?;
            let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if matches!(st.source, Source::Posted(_)) {
                st.version += 1;
                st.source = Source::File;
                self.tx.send_replace(st.version);
            }
            Ok(st.version)
        })
    }

    fn watch(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }

    fn admin_token_hash(&self) -> StoreFuture<'_, Option<String>> {
        Box::pin(async move {
            match std::fs::read_to_string(&self.token_path) {
                Ok(s) => Ok(Some(s.trim().to_string())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(StoreError::Io(self.token_path.display().to_string(), e)),
            }
        })
    }

    fn set_admin_token_hash(&self, hash: String) -> StoreFuture<'_, ()> {
        Box::pin(async move { crate::private::write(&self.token_path, hash.as_bytes()) })
    }

    fn heartbeat(&self, node: &crate::NodeInfo) -> StoreFuture<'_, ()> {
        self.node.beat(node);
        Box::pin(async { Ok(()) })
    }

    fn nodes(&self) -> StoreFuture<'_, Vec<crate::NodeRow>> {
        let list = self.node.list();
        Box::pin(async move { Ok(list) })
    }
}
