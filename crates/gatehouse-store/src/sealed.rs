//! Which fields of a stored entity are secrets the gateway must read back, and sealing
//! them with the [`Keyring`] on the way into a database and out of it.

use gatehouse_model::Kind;
use serde_json::Value;

use crate::keyring::{Keyring, KeyringError};

/// The kinds whose stored rows hold secrets: what resealing and `keyring prune` look at.
pub const KINDS: [Kind; 3] = [Kind::Consumer, Kind::Certificate, Kind::AiProvider];

/// [`KINDS`] as an SQL list (`'consumer', 'certificate', …`).
pub fn kinds_sql() -> String {
    KINDS
        .iter()
        .map(|k| format!("'{}'", k.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Calls `f` with each secret field of an entity's JSON and its associated data (field
/// name and owner id, so a sealed value only opens where it was sealed).
fn each_secret(
    kind: Kind,
    v: &mut Value,
    mut f: impl FnMut(&mut Value, &str) -> Result<(), KeyringError>,
) -> Result<(), KeyringError> {
    match kind {
        Kind::Consumer => {
            for (list, field) in [
                ("hmacauth_credentials", "secret"),
                ("jwt_secrets", "secret"),
            ] {
                if let Some(Value::Array(items)) = v.get_mut(list) {
                    for item in items {
                        let id = item
                            .get("id")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string();
                        if let Some(s) = item.get_mut(field).filter(|s| s.is_string()) {
                            f(s, &format!("consumer.{list}.{field}:{id}"))?;
                        }
                    }
                }
            }
        }
        Kind::Certificate => {
            let id = v
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if let Some(s) = v.get_mut("key").filter(|s| s.is_string()) {
                f(s, &format!("certificate.key:{id}"))?;
            }
        }
        Kind::AiProvider => {
            let id = v
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if let Some(Value::Array(keys)) = v.get_mut("keys") {
                for (j, k) in keys.iter_mut().enumerate() {
                    if let Some(s) = k.get_mut("key").filter(|s| s.is_string()) {
                        f(s, &format!("ai_provider.keys.{j}:{id}"))?;
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Encrypts the secret fields of `v` (an entity of `kind`) with the keyring's first key.
pub fn seal(kind: Kind, v: &mut Value, ring: &Keyring) -> Result<(), KeyringError> {
    each_secret(kind, v, |s, aad| {
        if let Some(plain) = s.as_str() {
            let plain = ring.decrypt(plain, aad)?;
            *s = Value::String(ring.encrypt(&plain, aad)?);
        }
        Ok(())
    })
}

/// Decrypts the secret fields of `v`; plain values (stored before encryption) stay as
/// they are.
pub fn unseal(kind: Kind, v: &mut Value, ring: &Keyring) -> Result<(), KeyringError> {
    each_secret(kind, v, |s, aad| {
        if let Some(sealed) = s.as_str() {
            *s = Value::String(ring.decrypt(sealed, aad)?);
        }
        Ok(())
    })
}

/// True when some secret field of `v` is plain or sealed with a key other than the
/// keyring's first (it should be sealed again).
pub fn needs_reseal(kind: Kind, v: &mut Value, ring: &Keyring) -> bool {
    let primary = ring.primary_id();
    let mut stale = false;
    let _ = each_secret(kind, v, |s, _| {
        if Keyring::key_of(s.as_str().unwrap_or_default()) != Some(primary.as_str()) {
            stale = true;
        }
        Ok(())
    });
    stale
}

/// The key ids sealed values of `v` name.
pub fn key_ids(kind: Kind, v: &mut Value) -> Vec<String> {
    let mut ids = Vec::new();
    let _ = each_secret(kind, v, |s, _| {
        if let Some(id) = Keyring::key_of(s.as_str().unwrap_or_default()) {
            ids.push(id.to_string());
        }
        Ok(())
    });
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ai_provider_keys_are_sealed_each_in_its_place() {
        let ring = Keyring::from_text(&crate::keyring::new_key_line()).unwrap();
        let mut v = serde_json::json!({"id": "p1", "name": "oa", "kind": "openai",
            "keys": [{"key": "sk-one"}, {"key": "sk-two", "weight": 3}]});
        seal(Kind::AiProvider, &mut v, &ring).unwrap();
        let text = v.to_string();
        assert!(
            !text.contains("sk-one") && !text.contains("sk-two"),
            "{text}"
        );
        // A sealed key moved to another position does not open there.
        let mut swapped = v.clone();
        let (a, b) = (v["keys"][0]["key"].clone(), v["keys"][1]["key"].clone());
        swapped["keys"][0]["key"] = b;
        swapped["keys"][1]["key"] = a;
        assert!(unseal(Kind::AiProvider, &mut swapped, &ring).is_err());
        unseal(Kind::AiProvider, &mut v, &ring).unwrap();
        assert_eq!(v["keys"][1]["key"], "sk-two");
        assert_eq!(v["keys"][1]["weight"], 3);
    }
}
