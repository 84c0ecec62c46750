//! Generic create/read/update/delete over the entity kinds, shared by every admin endpoint.

use axum::http::StatusCode;
use gatehouse_model::{
    Certificate, Config, Consumer, FieldError, Kind, Origins, Plugin, Route, Service, Upstream,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::error::ApiError;

/// What the admin API needs to know about an entity type.
pub trait Ent: Serialize + DeserializeOwned + Clone + Send + 'static {
    /// Its kind.
    const KIND: Kind;
    /// Its id.
    fn id(&self) -> Uuid;
    /// Sets its id.
    fn set_id(&mut self, id: Uuid);
    /// Its unique name, if the kind has names.
    fn name(&self) -> Option<&str>;
    /// Sets its name; false when the kind has none.
    fn set_name(&mut self, name: &str) -> bool;
    /// Its labels.
    fn tags(&self) -> &[String];
    /// When it was created (Unix seconds).
    fn created_at(&self) -> Option<u64>;
    /// Sets when it was created and last changed.
    fn set_times(&mut self, created: u64, updated: u64);
    /// The list holding this kind in a config.
    fn list(cfg: &Config) -> &Vec<Self>;
    /// The list holding this kind in a config, mutably.
    fn list_mut(cfg: &mut Config) -> &mut Vec<Self>;
}

/// The methods every entity kind implements alike (its list in the config, id, tags and
/// timestamps); the name methods differ and are written beside each use.
macro_rules! ent_common {
    ($list:ident) => {
        fn id(&self) -> Uuid {
            self.id
        }
        fn set_id(&mut self, id: Uuid) {
            self.id = id;
        }
        fn tags(&self) -> &[String] {
            &self.tags
        }
        fn created_at(&self) -> Option<u64> {
            self.created_at
        }
        fn set_times(&mut self, created: u64, updated: u64) {
            self.created_at = Some(created);
            self.updated_at = Some(updated);
        }
        fn list(cfg: &Config) -> &Vec<Self> {
            &cfg.$list
        }
        fn list_mut(cfg: &mut Config) -> &mut Vec<Self> {
            &mut cfg.$list
        }
    };
}

macro_rules! ent {
    ($t:ty, $kind:expr, $list:ident, $name:ident, named) => {
        impl Ent for $t {
            const KIND: Kind = $kind;
            ent_common!($list);
            fn name(&self) -> Option<&str> {
                self.$name.as_deref()
            }
            fn set_name(&mut self, name: &str) -> bool {
                self.$name = Some(name.to_string());
                true
            }
        }
    };
    ($t:ty, $kind:expr, $list:ident) => {
        impl Ent for $t {
            const KIND: Kind = $kind;
            ent_common!($list);
            fn name(&self) -> Option<&str> {
                None
            }
            fn set_name(&mut self, _name: &str) -> bool {
                false
            }
        }
    };
}

ent!(Service, Kind::Service, services, name, named);
ent!(Route, Kind::Route, routes, name, named);
ent!(Consumer, Kind::Consumer, consumers, username, named);
ent!(Plugin, Kind::Plugin, plugins);
ent!(Certificate, Kind::Certificate, certificates);

/// AI providers and models have required names.
macro_rules! ent_required_name {
    ($t:ty, $kind:expr, $list:ident) => {
        impl Ent for $t {
            const KIND: Kind = $kind;
            ent_common!($list);
            fn name(&self) -> Option<&str> {
                Some(&self.name)
            }
            fn set_name(&mut self, name: &str) -> bool {
                self.name = name.to_string();
                true
            }
        }
    };
}
ent_required_name!(gatehouse_model::AiProvider, Kind::AiProvider, ai_providers);
ent_required_name!(gatehouse_model::AiModel, Kind::AiModel, ai_models);

/// An upstream's name is required, not optional.
impl Ent for Upstream {
    const KIND: Kind = Kind::Upstream;
    ent_common!(upstreams);
    fn name(&self) -> Option<&str> {
        Some(&self.name)
    }
    fn set_name(&mut self, name: &str) -> bool {
        self.name = name.to_string();
        true
    }
}

/// Unix seconds now (Kong's timestamps are seconds too).
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// True when an entity's tags satisfy `?tags=`: `a,b` needs all, `a/b` any one (Kong's
/// syntax; the two are not mixed).
pub fn tags_match(tags: &[String], filter: &str) -> bool {
    let has = |t: &str| tags.iter().any(|x| x == t);
    if filter.contains('/') {
        filter.split('/').any(has)
    } else {
        filter.split(',').all(has)
    }
}

/// Index of the entity whose id or name is `key`.
pub fn find<T: Ent>(cfg: &Config, key: &str) -> Option<usize> {
    let list = T::list(cfg);
    if let Ok(id) = key.parse::<Uuid>() {
        if let Some(i) = list.iter().position(|e| e.id() == id) {
            return Some(i);
        }
    }
    list.iter().position(|e| e.name() == Some(key))
}

/// Like [`find`] but 404 when absent.
pub fn must_find<T: Ent>(cfg: &Config, key: &str) -> Result<usize, ApiError> {
    find::<T>(cfg, key).ok_or_else(|| ApiError::not_found(T::KIND.as_str(), key))
}

/// The name of a kind's schema in the OpenAPI document.
pub fn schema_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Service => "Service",
        Kind::Route => "Route",
        Kind::Upstream => "Upstream",
        Kind::Consumer => "Consumer",
        Kind::Plugin => "Plugin",
        Kind::Certificate => "Certificate",
        Kind::AiProvider => "AiProvider",
        Kind::AiModel => "AiModel",
    }
}

/// Parses a request body as an entity, naming the failing field.
pub fn parse<T: Ent>(body: Value) -> Result<T, ApiError> {
    if !body.is_object() {
        return Err(ApiError::invalid(vec![FieldError::new(
            T::KIND.as_str(),
            "",
            "the body must be a JSON object",
        )]));
    }
    serde_path_to_error::deserialize(&body).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        ApiError::invalid(vec![FieldError::new(
            T::KIND.as_str(),
            path,
            e.inner().to_string(),
        )])
    })
}

/// JSON of an entity (with its secrets: for edits, never for answers).
pub fn to_json<T: Ent>(e: &T) -> Value {
    serde_json::to_value(e).unwrap_or(Value::Null)
}

/// JSON of an entity as reads show it: write-only secrets redacted, and every field
/// shown — with its default when unset — so that a read can be edited and PUT back.
pub fn to_public_json<T: Ent>(e: &T) -> Value {
    let mut v = to_json(e);
    gatehouse_model::secret::redact(T::KIND, &mut v);
    with_defaults(schema_name(T::KIND), &mut v);
    if T::KIND == Kind::Plugin {
        crate::openapi::fill_plugin_config(&mut v);
    }
    v
}

/// Fields only declarative files nest (a service's routes and plugins): not part of an
/// entity as the admin API reads and writes it.
const NESTED_ONLY: [&str; 2] = ["routes", "plugins"];

/// Adds each field of schema `name` that `v` lacks, with the schema's default, or the
/// empty value of its type (null, `[]`, `{}`).
pub fn with_defaults(name: &str, v: &mut Value) {
    let schemas = crate::openapi::schemas();
    // `Plugin` is one alternative per plugin name; its fields are in `PluginCommon`.
    let Some(props) = schemas
        .get(&format!("{name}Common"))
        .or_else(|| schemas.get(name))
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
    else {
        return;
    };
    let Some(obj) = v.as_object_mut() else {
        return;
    };
    for (field, schema) in props {
        if obj.contains_key(field) || NESTED_ONLY.contains(&field.as_str()) {
            continue;
        }
        obj.insert(field.clone(), empty_of(schema));
    }
}

fn empty_of(schema: &Value) -> Value {
    if let Some(d) = schema.get("default") {
        return d.clone();
    }
    let types = crate::form::types(schema);
    if types.contains(&"null") {
        Value::Null
    } else if types.contains(&"array") {
        Value::Array(Vec::new())
    } else if types.contains(&"object") {
        Value::Object(Default::default())
    } else {
        Value::Null
    }
}

/// Adds a new entity (fresh id unless given; 409 when the id is taken).
pub fn insert<T: Ent>(cfg: &mut Config, origins: &mut Origins, mut e: T) -> Result<Uuid, ApiError> {
    if e.id().is_nil() {
        e.set_id(Uuid::new_v4());
    } else if T::list(cfg).iter().any(|x| x.id() == e.id()) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("a {} with id {} exists", T::KIND.as_str(), e.id()),
        ));
    }
    let id = e.id();
    let now = now();
    e.set_times(now, now);
    origins.insert(id, String::new());
    T::list_mut(cfg).push(e);
    Ok(id)
}

/// Replaces the entity at `idx`, keeping its id and place.
pub fn replace_at<T: Ent>(
    cfg: &mut Config,
    origins: &mut Origins,
    idx: usize,
    mut e: T,
) -> Result<Uuid, ApiError> {
    let id = T::list(cfg)[idx].id();
    if !e.id().is_nil() && e.id() != id {
        let mut err = ApiError::invalid(vec![FieldError::new(
            T::KIND.as_str(),
            "id",
            "the id of an entity cannot change",
        )]);
        err.status = StatusCode::CONFLICT;
        err.code = "conflict";
        return Err(err);
    }
    e.set_id(id);
    let now = now();
    e.set_times(T::list(cfg)[idx].created_at().unwrap_or(now), now);
    origins.insert(id, String::new());
    T::list_mut(cfg)[idx] = e;
    Ok(id)
}

/// A merge patch is an object of the entity's fields: an unknown field is an error even
/// when its value is null (which merging alone would drop without a word).
pub fn check_patch(kind: Kind, schema: &str, patch: &Value) -> Result<(), ApiError> {
    let Value::Object(fields) = patch else {
        return Err(ApiError::invalid(vec![FieldError::new(
            kind.as_str(),
            "",
            "a merge patch must be a JSON object",
        )]));
    };
    let known = crate::openapi::schemas()
        .get(schema)
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object);
    if let Some(known) = known {
        if let Some(unknown) = fields.keys().find(|k| !known.contains_key(*k)) {
            let mut names: Vec<&str> = known.keys().map(String::as_str).collect();
            names.sort_unstable();
            return Err(ApiError::invalid(vec![FieldError::new(
                kind.as_str(),
                unknown.clone(),
                format!(
                    "unknown field `{unknown}`, expected one of {}",
                    names.join(", ")
                ),
            )]));
        }
    }
    Ok(())
}

/// JSON merge patch (RFC 7396).
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Removes an entity and what cannot live without it; refuses when others depend on it.
pub fn remove<T: Ent>(cfg: &mut Config, idx: usize) -> Result<(), ApiError> {
    let id = T::list(cfg)[idx].id().to_string();
    let conflict = |what: String| ApiError::new(StatusCode::CONFLICT, "in_use", what);
    match T::KIND {
        Kind::Service => {
            let users: Vec<String> = cfg
                .routes
                .iter()
                .filter(|r| r.service.as_deref() == Some(&id))
                .map(|r| r.name.clone().unwrap_or_else(|| r.id.to_string()))
                .collect();
            if !users.is_empty() {
                return Err(conflict(format!(
                    "service is used by routes {}; delete or move them first",
                    users.join(", ")
                )));
            }
            cfg.plugins.retain(|p| p.service.as_deref() != Some(&id));
        }
        Kind::Upstream => {
            let users: Vec<String> = cfg
                .services
                .iter()
                .filter(|s| s.upstream.as_deref() == Some(&id))
                .map(|s| s.name.clone().unwrap_or_else(|| s.id.to_string()))
                .collect();
            if !users.is_empty() {
                return Err(conflict(format!(
                    "upstream is used by services {}; change them first",
                    users.join(", ")
                )));
            }
        }
        Kind::Route => cfg.plugins.retain(|p| p.route.as_deref() != Some(&id)),
        Kind::Consumer => cfg.plugins.retain(|p| p.consumer.as_deref() != Some(&id)),
        Kind::AiProvider => {
            let users: Vec<&str> = cfg
                .ai_models
                .iter()
                .filter(|m| m.targets.iter().any(|t| t.provider == id))
                .map(|m| m.name.as_str())
                .collect();
            if !users.is_empty() {
                return Err(conflict(format!(
                    "ai_provider is used by ai_models {}; change them first",
                    users.join(", ")
                )));
            }
        }
        Kind::Plugin | Kind::Certificate | Kind::AiModel => {}
    }
    T::list_mut(cfg).remove(idx);
    Ok(())
}
