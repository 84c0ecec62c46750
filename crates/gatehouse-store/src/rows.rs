//! Entity rows as every database engine stores them: kind, id and a JSON body whose secret
//! fields are sealed. Shared by the SQLite and PostgreSQL stores (and the last-good copy) so
//! the engines cannot drift apart in what they write.

use gatehouse_model::{Config, Kind};

use crate::keyring::Keyring;
use crate::{sealed, Entity, StoreError};

/// The stored JSON text of an entity, secrets sealed with the keyring's first key.
pub fn encode(e: &Entity, keyring: &Keyring) -> Result<String, StoreError> {
    match e {
        Entity::Service(x) => encode_plain(e.kind(), x),
        Entity::Route(x) => encode_plain(e.kind(), x),
        Entity::Upstream(x) => encode_plain(e.kind(), x),
        Entity::Plugin(x) => encode_plain(e.kind(), x),
        Entity::AiModel(x) => encode_plain(e.kind(), x),
        Entity::Consumer(_) | Entity::Certificate(_) | Entity::AiProvider(_) => {
            let mut body = e.to_json();
            sealed::seal(e.kind(), &mut body, keyring)?;
            Ok(body.to_string())
        }
    }
}

/// Kinds without secret fields serialize straight to text (no JSON tree in between).
pub(crate) fn encode_plain<T: serde::Serialize>(kind: Kind, v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt {
        kind: kind.as_str().to_string(),
        id: String::new(),
        message: e.to_string(),
    })
}

/// The entity a stored row holds; a row that does not parse or open names itself.
/// Kinds without secret fields parse straight from the text into their type (no JSON tree
/// in between: at 100,000 rows the tree costs more time and memory than the entities).
pub fn decode(kind: &str, id: &str, body: &str, keyring: &Keyring) -> Result<Entity, StoreError> {
    let corrupt = |message: String| StoreError::Corrupt {
        kind: kind.to_string(),
        id: id.to_string(),
        message,
    };
    let k = Kind::parse(kind).ok_or_else(|| corrupt("unknown kind".into()))?;
    let typed = |r: Result<Entity, serde_json::Error>| r.map_err(|e| corrupt(e.to_string()));
    match k {
        Kind::Service => typed(serde_json::from_str(body).map(Entity::Service)),
        Kind::Route => typed(serde_json::from_str(body).map(Entity::Route)),
        Kind::Upstream => typed(serde_json::from_str(body).map(Entity::Upstream)),
        Kind::Plugin => typed(serde_json::from_str(body).map(Entity::Plugin)),
        Kind::AiModel => typed(serde_json::from_str(body).map(Entity::AiModel)),
        Kind::Consumer | Kind::Certificate | Kind::AiProvider => {
            let mut v: serde_json::Value =
                serde_json::from_str(body).map_err(|e| corrupt(e.to_string()))?;
            sealed::unseal(k, &mut v, keyring).map_err(|e| corrupt(e.to_string()))?;
            Entity::from_json(k, v).map_err(|e| corrupt(e.to_string()))
        }
    }
}

/// A config from entities read in declaration order. Rows have unique (kind, id) keys, so
/// each entity is appended: no lookups, linear in the number of entities (100,000 routes
/// load without a quadratic search).
pub fn assemble(entities: impl IntoIterator<Item = Entity>) -> Config {
    let mut cfg = Config::default();
    for e in entities {
        match e {
            Entity::Service(e) => cfg.services.push(e),
            Entity::Route(e) => cfg.routes.push(e),
            Entity::Upstream(e) => cfg.upstreams.push(e),
            Entity::Consumer(e) => cfg.consumers.push(e),
            Entity::Plugin(e) => cfg.plugins.push(e),
            Entity::Certificate(e) => cfg.certificates.push(e),
            Entity::AiProvider(e) => cfg.ai_providers.push(e),
            Entity::AiModel(e) => cfg.ai_models.push(e),
        }
    }
    cfg
}

/// The row's body sealed again with the keyring's first key, when it holds secrets that
/// are plain or sealed with another key; `None` when it is fine as it is (or not JSON: a
/// corrupt row is reported by the next load, not here).
pub fn resealed(
    kind: &str,
    id: &str,
    body: &str,
    keyring: &Keyring,
) -> Result<Option<String>, StoreError> {
    let Some(k) = Kind::parse(kind) else {
        return Ok(None);
    };
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(body) else {
        return Ok(None);
    };
    if !sealed::needs_reseal(k, &mut v, keyring) {
        return Ok(None);
    }
    sealed::seal(k, &mut v, keyring).map_err(|e| StoreError::Corrupt {
        kind: kind.to_string(),
        id: id.to_string(),
        message: e.to_string(),
    })?;
    Ok(Some(v.to_string()))
}
