//! Hashing of secrets that the config keeps only in hashed form.

use sha2::{Digest, Sha256};

/// Hex SHA-256 of a secret (API keys, admin tokens).
pub fn sha256_hex(secret: &str) -> String {
    let d = Sha256::digest(secret.as_bytes());
    let mut s = String::with_capacity(64);
    for b in d {
        s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    s
}

/// Argon2id hash (PHC string, random salt) of a password.
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// True when `password` matches an argon2 PHC hash.
pub fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(hash).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// True when `hash` is a PHC string argon2 can verify against.
pub fn is_password_hash(hash: &str) -> bool {
    argon2::password_hash::PasswordHash::new(hash)
        .is_ok_and(|h| h.algorithm.as_str().starts_with("argon2"))
}

/// What reads show in place of a write-only secret (a certificate's private key). Written
/// back unchanged (a dump posted again, a PUT of what GET returned), it keeps the stored
/// secret of the entity with the same id.
pub const REDACTED: &str = "REDACTED";

/// Hides the write-only secrets of an entity's JSON (of `kind`) for a read.
pub fn redact(kind: crate::Kind, v: &mut serde_json::Value) {
    if kind == crate::Kind::Certificate {
        if let Some(k) = v.get_mut("key").filter(|k| k.is_string()) {
            *k = serde_json::Value::String(REDACTED.into());
        }
    }
    if kind == crate::Kind::AiProvider {
        if let Some(serde_json::Value::Array(keys)) = v.get_mut("keys") {
            for k in keys.iter_mut().filter_map(|k| k.get_mut("key")) {
                if k.as_str().is_some_and(crate::ai::is_literal_key) {
                    *k = serde_json::Value::String(REDACTED.into());
                }
            }
        }
    }
}

/// Hides a provider's literal keys (references such as `{env://NAME}` are no secret).
pub fn redact_ai_keys(p: &mut crate::ai::AiProvider) {
    for k in p
        .keys
        .iter_mut()
        .filter(|k| crate::ai::is_literal_key(&k.key))
    {
        k.key = REDACTED.into();
    }
}

/// Puts back the secrets a read redacted: a certificate whose key is [`REDACTED`] gets the
/// key of the certificate with the same id in `previous` (left as it is otherwise, so
/// validation says the key is missing).
pub fn restore_redacted(cfg: &mut crate::Config, previous: &crate::Config) {
    for c in cfg.certificates.iter_mut().filter(|c| c.key == REDACTED) {
        if let Some(old) = previous.certificates.iter().find(|o| o.id == c.id) {
            c.key = old.key.clone();
        }
    }
    // A provider's key read back as REDACTED keeps the key at the same position of the
    // provider with the same id.
    for p in cfg.ai_providers.iter_mut() {
        let Some(old) = previous.ai_providers.iter().find(|o| o.id == p.id) else {
            continue;
        };
        for (j, k) in p.keys.iter_mut().enumerate() {
            if k.key == REDACTED {
                if let Some(o) = old.keys.get(j) {
                    k.key = o.key.clone();
                }
            }
        }
    }
}
