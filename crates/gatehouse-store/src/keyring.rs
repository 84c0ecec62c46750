//! Encryption of secret fields at rest. The secrets the gateway must be able to read back
//! (HMAC secrets, JWT HS* secrets, certificate private keys) are stored as
//! `enc:v1:<key id>:<base64url(nonce ‖ ciphertext)>`, XChaCha20-Poly1305 with the field's
//! name and owner id as associated data (a ciphertext copied into another field or entity
//! does not decrypt).
//!
//! Keys come from `GATEHOUSE_KEYRING` (`id:base64key[,id:base64key…]`, the first encrypts)
//! or else from `<data dir>/keyring` (one `id base64key` per line, the first encrypts;
//! created 0600 with one random key on first start). Every key listed decrypts, so rotation
//! is: put a new key first, restart (or run `gatehouse keyring rotate`, which does both for
//! the file), and the node re-encrypts every secret with it at start; drop the old key once
//! no secret uses it (`gatehouse keyring prune`). See docs/security.md.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

use crate::StoreError;

/// The prefix of an encrypted value.
pub const PREFIX: &str = "enc:v1:";
/// Environment variable holding the keyring instead of the data-dir file.
pub const ENV: &str = "GATEHOUSE_KEYRING";

/// What went wrong with the keyring or an encrypted value.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// The keyring text is malformed.
    #[error("keyring {source_name}: line {line}: {message}")]
    Malformed {
        /// `GATEHOUSE_KEYRING` or the file path.
        source_name: String,
        /// 1-based line (or entry for the environment variable).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A value was encrypted with a key the keyring does not have.
    #[error("encrypted with key `{0}`, which the keyring does not have")]
    UnknownKey(String),
    /// A value does not decrypt (wrong key, tampered, or moved to another field).
    #[error("does not decrypt (tampered, or copied from another field)")]
    Tampered,
    /// The keyring file could not be read or written.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

impl From<KeyringError> for StoreError {
    fn from(e: KeyringError) -> Self {
        match e {
            KeyringError::Io(p, e) => StoreError::Io(p, e),
            e => StoreError::Keyring(e.to_string()),
        }
    }
}

#[derive(Clone)]
struct Key {
    id: String,
    cipher: XChaCha20Poly1305,
}

/// Where the keys came from (re-read when a value names a key not loaded yet: another
/// node or `gatehouse keyring rotate` may have added it).
#[derive(Debug, Clone)]
enum Source {
    Env,
    File(PathBuf),
    Fixed,
}

/// The keys that encrypt and decrypt secret fields.
pub struct Keyring {
    source: Source,
    keys: RwLock<Vec<Key>>,
}

fn parse_keys(text: &str, source_name: &str, sep: char) -> Result<Vec<Key>, KeyringError> {
    let mut keys = Vec::new();
    let entries: Vec<&str> = if sep == '\n' {
        text.lines().collect()
    } else {
        text.split(sep).collect()
    };
    for (i, raw) in entries.iter().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |message: &str| KeyringError::Malformed {
            source_name: source_name.to_string(),
            line: i + 1,
            message: message.to_string(),
        };
        let (id, b64) = line
            .split_once([' ', ':', '\t'])
            .ok_or_else(|| bad("expected `<id> <base64 key>`"))?;
        let (id, b64) = (id.trim(), b64.trim());
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad("a key id is letters, digits, `-` and `_`"));
        }
        let key = STANDARD
            .decode(b64)
            .or_else(|_| URL_SAFE_NO_PAD.decode(b64))
            .map_err(|_| bad("the key is not base64"))?;
        if key.len() != 32 {
            return Err(bad("a key is 32 bytes (44 base64 characters)"));
        }
        if keys.iter().any(|k: &Key| k.id == id) {
            return Err(bad("duplicate key id"));
        }
        let cipher = XChaCha20Poly1305::new_from_slice(&key).map_err(|_| bad("bad key length"))?;
        keys.push(Key {
            id: id.to_string(),
            cipher,
        });
    }
    if keys.is_empty() {
        return Err(KeyringError::Malformed {
            source_name: source_name.to_string(),
            line: 1,
            message: "no keys".into(),
        });
    }
    Ok(keys)
}

/// A new random key as a keyring line.
pub fn new_key_line() -> String {
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    let mut id = [0u8; 4];
    rand::rngs::OsRng.fill_bytes(&mut id);
    format!("k{} {}", hex::encode(id), STANDARD.encode(key))
}

impl Keyring {
    /// The keyring for a node: `GATEHOUSE_KEYRING` if set, else `<data_dir>/keyring`
    /// (created with one random key if missing).
    pub fn load(data_dir: &Path) -> Result<Keyring, KeyringError> {
        if let Ok(text) = std::env::var(ENV) {
            let keys = parse_keys(&text, ENV, ',')?;
            return Ok(Keyring {
                source: Source::Env,
                keys: RwLock::new(keys),
            });
        }
        let path = data_dir.join("keyring");
        if !path.exists() {
            crate::private::write(&path, format!("{}\n", new_key_line()).as_bytes()).map_err(
                |e| match e {
                    StoreError::Io(p, e) => KeyringError::Io(p, e),
                    e => KeyringError::Io(
                        path.display().to_string(),
                        std::io::Error::other(e.to_string()),
                    ),
                },
            )?;
            tracing::info!(file = %path.display(), "created a keyring for secrets at rest; back it up with the database");
        }
        let keys = Self::read_file(&path)?;
        Ok(Keyring {
            source: Source::File(path),
            keys: RwLock::new(keys),
        })
    }

    fn read_file(path: &Path) -> Result<Vec<Key>, KeyringError> {
        let _ = crate::private::restrict(path);
        let text = std::fs::read_to_string(path)
            .map_err(|e| KeyringError::Io(path.display().to_string(), e))?;
        parse_keys(&text, &path.display().to_string(), '\n')
    }

    /// A keyring with fixed keys (`id base64` lines; tests and tools).
    pub fn from_text(text: &str) -> Result<Keyring, KeyringError> {
        Ok(Keyring {
            source: Source::Fixed,
            keys: RwLock::new(parse_keys(text, "keyring", '\n')?),
        })
    }

    /// The id of the key that encrypts.
    pub fn primary_id(&self) -> String {
        self.keys
            .read()
            .map(|k| k.first().map(|k| k.id.clone()).unwrap_or_default())
            .unwrap_or_default()
    }

    /// Ids of every key, the encrypting one first.
    pub fn ids(&self) -> Vec<String> {
        self.keys
            .read()
            .map(|k| k.iter().map(|k| k.id.clone()).collect())
            .unwrap_or_default()
    }

    /// Re-reads the source (a value named a key not loaded yet).
    fn reload(&self) -> Result<(), KeyringError> {
        let keys = match &self.source {
            Source::Env => return Ok(()),
            Source::Fixed => return Ok(()),
            Source::File(p) => Self::read_file(p)?,
        };
        if let Ok(mut k) = self.keys.write() {
            *k = keys;
        }
        Ok(())
    }

    /// Encrypts `plain` for the field `aad` (field name and owner id).
    pub fn encrypt(&self, plain: &str, aad: &str) -> Result<String, KeyringError> {
        let keys = self.keys.read().map_err(|_| KeyringError::Tampered)?;
        let key = keys
            .first()
            .ok_or(KeyringError::UnknownKey(String::new()))?;
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = key
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| KeyringError::Tampered)?;
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ct);
        Ok(format!(
            "{PREFIX}{}:{}",
            key.id,
            URL_SAFE_NO_PAD.encode(blob)
        ))
    }

    /// The key id an encrypted value names (`None` for a plain value).
    pub fn key_of(value: &str) -> Option<&str> {
        value
            .strip_prefix(PREFIX)?
            .split_once(':')
            .map(|(id, _)| id)
    }

    /// Decrypts a value made by [`Keyring::encrypt`] for the same `aad`; a plain value (from
    /// before encryption, or a declarative file) comes back as it is.
    pub fn decrypt(&self, value: &str, aad: &str) -> Result<String, KeyringError> {
        let Some(rest) = value.strip_prefix(PREFIX) else {
            return Ok(value.to_string());
        };
        let (id, b64) = rest.split_once(':').ok_or(KeyringError::Tampered)?;
        let has = |k: &Keyring| {
            k.keys
                .read()
                .map(|keys| keys.iter().any(|x| x.id == id))
                .unwrap_or(false)
        };
        if !has(self) {
            self.reload()?;
            if !has(self) {
                return Err(KeyringError::UnknownKey(id.to_string()));
            }
        }
        let keys = self.keys.read().map_err(|_| KeyringError::Tampered)?;
        let key = keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| KeyringError::UnknownKey(id.to_string()))?;
        let blob = URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|_| KeyringError::Tampered)?;
        if blob.len() < 24 {
            return Err(KeyringError::Tampered);
        }
        let (nonce, ct) = blob.split_at(24);
        let plain = key
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| KeyringError::Tampered)?;
        String::from_utf8(plain).map_err(|_| KeyringError::Tampered)
    }
}

/// `gatehouse keyring rotate`: puts a new key first in the keyring file, keeping the
/// others (values they encrypted still decrypt). Returns the new key's id.
pub fn rotate_file(data_dir: &Path) -> Result<String, KeyringError> {
    let path = data_dir.join("keyring");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let line = new_key_line();
    let id = line.split(' ').next().unwrap_or_default().to_string();
    crate::private::write(&path, format!("{line}\n{old}").as_bytes()).map_err(|e| {
        KeyringError::Io(
            path.display().to_string(),
            std::io::Error::other(e.to_string()),
        )
    })?;
    Ok(id)
}

/// `gatehouse keyring prune`: drops from the keyring file every key but the first and those
/// in `used`. Returns the ids dropped.
pub fn prune_file(data_dir: &Path, used: &[String]) -> Result<Vec<String>, KeyringError> {
    let path = data_dir.join("keyring");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| KeyringError::Io(path.display().to_string(), e))?;
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for (i, line) in text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .enumerate()
    {
        let id = line
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        if i == 0 || used.contains(&id) {
            kept.push(line.to_string());
        } else {
            dropped.push(id);
        }
    }
    crate::private::write(&path, (kept.join("\n") + "\n").as_bytes()).map_err(|e| {
        KeyringError::Io(
            path.display().to_string(),
            std::io::Error::other(e.to_string()),
        )
    })?;
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_aad_binding_and_rotation() {
        let a = new_key_line();
        let b = new_key_line();
        let ring = Keyring::from_text(&a).unwrap();
        let enc = ring.encrypt("s3cret-value", "hmac.secret:1").unwrap();
        assert!(enc.starts_with(PREFIX) && !enc.contains("s3cret"), "{enc}");
        assert_eq!(ring.decrypt(&enc, "hmac.secret:1").unwrap(), "s3cret-value");
        assert!(matches!(
            ring.decrypt(&enc, "hmac.secret:2"),
            Err(KeyringError::Tampered)
        ));
        assert_eq!(ring.decrypt("plain", "x").unwrap(), "plain");
        // A newer keyring (new key first) still reads what the old key wrote.
        let newer = Keyring::from_text(&format!("{b}\n{a}")).unwrap();
        assert_eq!(
            newer.decrypt(&enc, "hmac.secret:1").unwrap(),
            "s3cret-value"
        );
        let re = newer.encrypt("s3cret-value", "hmac.secret:1").unwrap();
        assert_eq!(Keyring::key_of(&re), Some(newer.primary_id().as_str()));
        // The old keyring does not know the new key.
        assert!(matches!(
            ring.decrypt(&re, "hmac.secret:1"),
            Err(KeyringError::UnknownKey(_))
        ));
    }

    #[test]
    fn malformed_keyrings_name_the_line() {
        let e = Keyring::from_text("k1 notbase64!!").err().unwrap();
        assert!(e.to_string().contains("line 1"), "{e}");
        let e = Keyring::from_text("k1 AAAA").err().unwrap();
        assert!(e.to_string().contains("32 bytes"), "{e}");
        assert!(Keyring::from_text("# only a comment\n").is_err());
    }

    #[test]
    fn file_keyring_created_private_rotated_and_pruned() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ring = Keyring::load(dir.path()).unwrap();
        let p = dir.path().join("keyring");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let enc = ring.encrypt("v", "f:1").unwrap();
        let first = ring.primary_id();
        let new_id = rotate_file(dir.path()).unwrap();
        // A value under a key the loaded ring does not have makes it re-read the file.
        let other = Keyring::load(dir.path()).unwrap();
        assert_eq!(other.primary_id(), new_id);
        let enc2 = other.encrypt("w", "f:2").unwrap();
        assert_eq!(ring.decrypt(&enc2, "f:2").unwrap(), "w");
        assert_eq!(other.decrypt(&enc, "f:1").unwrap(), "v");
        let dropped = prune_file(dir.path(), &[]).unwrap();
        assert_eq!(dropped, vec![first]);
    }
}
