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
