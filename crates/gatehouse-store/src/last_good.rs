//! The last good config, kept in the data dir by nodes whose store is remote (PostgreSQL):
//! when the store is unreachable at boot, the node starts from this copy instead of
//! answering 404 to everything (what APISIX and APIPark users get after a restart during a
//! database outage). Written after every config a node installs, atomically and owner-only
//! (0600); secret fields are sealed with the keyring exactly as in the database.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use gatehouse_model::Config;
use serde::{Deserialize, Serialize};

use crate::keyring::Keyring;
use gatehouse_model::Kind;

use crate::{rows, Entity, StoreError};

/// File name inside the data dir.
pub const FILE: &str = "last-good-config.json";
const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Row {
    kind: String,
    id: String,
    body: String,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    format: u32,
    version: u64,
    written_at: i64,
    #[serde(default)]
    admin_token_sha256: Option<String>,
    entities: Vec<Row>,
}

/// A config read back from the copy.
#[derive(Debug)]
pub struct Cached {
    /// The config (validated again before use).
    pub config: Config,
    /// The store version it had.
    pub version: u64,
    /// Unix seconds it was written.
    pub written_at: i64,
    /// The admin token hash the cluster had, so the admin API authenticates offline.
    pub admin_token_sha256: Option<String>,
}

/// Reads and writes `<data dir>/last-good-config.json`.
pub struct LastGood {
    path: PathBuf,
    keyring: Arc<Keyring>,
}

impl LastGood {
    /// The copy in `data_dir`.
    pub fn new(data_dir: &Path, keyring: Arc<Keyring>) -> LastGood {
        LastGood {
            path: data_dir.join(FILE),
            keyring,
        }
    }

    /// Where the copy is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the copy (replacing the previous one atomically).
    pub fn save(
        &self,
        cfg: &Config,
        version: u64,
        admin_token_sha256: Option<&str>,
    ) -> Result<(), StoreError> {
        // Written straight from the config (no copy of its 100,000 routes); only the kinds
        // with secret fields go through sealing.
        let mut list = Vec::new();
        let mut plain = |kind: Kind, id: uuid::Uuid, body: String| {
            list.push(Row {
                kind: kind.as_str().to_string(),
                id: id.to_string(),
                body,
            })
        };
        for e in &cfg.upstreams {
            plain(Kind::Upstream, e.id, rows::encode_plain(Kind::Upstream, e)?);
        }
        for e in &cfg.services {
            plain(Kind::Service, e.id, rows::encode_plain(Kind::Service, e)?);
        }
        for e in &cfg.routes {
            plain(Kind::Route, e.id, rows::encode_plain(Kind::Route, e)?);
        }
        for e in &cfg.consumers {
            let body = rows::encode(&Entity::Consumer(e.clone()), &self.keyring)?;
            plain(Kind::Consumer, e.id, body);
        }
        for e in &cfg.plugins {
            plain(Kind::Plugin, e.id, rows::encode_plain(Kind::Plugin, e)?);
        }
        for e in &cfg.certificates {
            let body = rows::encode(&Entity::Certificate(e.clone()), &self.keyring)?;
            plain(Kind::Certificate, e.id, body);
        }
        for e in &cfg.ai_providers {
            let body = rows::encode(&Entity::AiProvider(e.clone()), &self.keyring)?;
            plain(Kind::AiProvider, e.id, body);
        }
        for e in &cfg.ai_models {
            plain(Kind::AiModel, e.id, rows::encode_plain(Kind::AiModel, e)?);
        }
        let stored = Stored {
            format: FORMAT,
            version,
            written_at: crate::unix_now(),
            admin_token_sha256: admin_token_sha256.map(str::to_string),
            entities: list,
        };
        let text = serde_json::to_vec(&stored).map_err(|e| StoreError::Corrupt {
            kind: "last-good config".into(),
            id: self.path.display().to_string(),
            message: e.to_string(),
        })?;
        crate::private::write(&self.path, &text)
    }

    /// Reads the copy; `None` when there is none.
    pub fn load(&self) -> Result<Option<Cached>, StoreError> {
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::Io(self.path.display().to_string(), e)),
        };
        let corrupt = |message: String| StoreError::Corrupt {
            kind: "last-good config".into(),
            id: self.path.display().to_string(),
            message,
        };
        let stored: Stored = serde_json::from_slice(&text).map_err(|e| corrupt(e.to_string()))?;
        if stored.format != FORMAT {
            return Err(corrupt(format!("unknown format {}", stored.format)));
        }
        let mut list = Vec::with_capacity(stored.entities.len());
        for r in &stored.entities {
            list.push(rows::decode(&r.kind, &r.id, &r.body, &self.keyring)?);
        }
        Ok(Some(Cached {
            config: rows::assemble(list),
            version: stored.version,
            written_at: stored.written_at,
            admin_token_sha256: stored.admin_token_sha256,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn round_trips_sealed_and_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Arc::new(Keyring::load(dir.path()).unwrap());
        let lg = LastGood::new(dir.path(), ring.clone());
        assert!(lg.load().unwrap().is_none());
        let cfg = gatehouse_model::parse_document(
            "_format_version: \"1\"\nconsumers:\n- username: a\n  hmacauth_credentials:\n  - username: a\n    secret: s3cret-value-0123456789\nservices:\n- name: s\n  url: http://127.0.0.1:1\n  routes:\n  - paths: [/x]\n",
            &gatehouse_model::NoPlugins,
        )
        .unwrap();
        lg.save(&cfg, 42, Some("abc")).unwrap();
        let text = std::fs::read_to_string(lg.path()).unwrap();
        assert!(!text.contains("s3cret-value"), "secrets are sealed");
        let mode = std::fs::metadata(lg.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "owner only");
        let back = lg.load().unwrap().unwrap();
        assert_eq!(back.version, 42);
        assert_eq!(back.admin_token_sha256.as_deref(), Some("abc"));
        assert_eq!(back.config, cfg);
        // Another keyring cannot open it: a clear error, not a silent empty config.
        let other = tempfile::tempdir().unwrap();
        let lg2 = LastGood::new(dir.path(), Arc::new(Keyring::load(other.path()).unwrap()));
        assert!(lg2.load().is_err());
    }
}
