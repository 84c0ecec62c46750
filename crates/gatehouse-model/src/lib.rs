//! Gatehouse's configuration model: entities, the declarative file format, validation with
//! precise error locations, and the JSON Schema of the format. No I/O lives here.

pub mod ai;
pub mod entities;
pub mod error;
pub mod kong;
pub mod normalize;
pub mod pathspec;
pub mod plugin;
pub mod schema;
mod schema_rules;
pub mod secret;
pub mod tls;
pub mod validate;
pub mod yaml;
mod yaml_emit;

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde_json::Value;

pub use ai::{AiKey, AiModel, AiPrice, AiProvider, AiProviderKind, AiTarget};
pub use entities::{
    AclGroup, Algorithm, BasicAuthCredential, Certificate, ClientAuth, Config, Consumer,
    HmacAuthCredential, JwtSecret, KeyAuthCredential, Kind, MtlsCredential, Plugin, Route,
    RouteProtocol, Service, ServiceProtocol, Target, Upstream,
};
pub use error::{ConfigError, FieldError};
pub use normalize::Origins;
pub use plugin::{NoPlugins, PluginCatalog};

/// Removes the value at `path` (`a.b[2].c`, relative to `v`); false when there is none.
fn remove_at(v: &mut Value, path: &str) -> bool {
    let mut segs: Vec<String> = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            if i > 0 {
                segs.push(rest[..i].to_string());
            }
            rest = &rest[i..];
            while let Some(end) = rest.find(']') {
                segs.push(rest[..=end].to_string());
                rest = &rest[end + 1..];
            }
        } else if !rest.is_empty() {
            segs.push(rest.to_string());
        }
    }
    let Some((last, parents)) = segs.split_last() else {
        return false;
    };
    let mut cur = v;
    for s in parents {
        let next = match s.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
            Some(i) => i.parse::<usize>().ok().and_then(|i| cur.get_mut(i)),
            None => cur.get_mut(s.as_str()),
        };
        match next {
            Some(n) => cur = n,
            None => return false,
        }
    }
    match last.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
        Some(i) => match (i.parse::<usize>(), cur.as_array_mut()) {
            (Ok(i), Some(a)) if i < a.len() => {
                a.remove(i);
                true
            }
            _ => false,
        },
        None => cur
            .as_object_mut()
            .is_some_and(|o| o.remove(last.as_str()).is_some()),
    }
}

/// Deserializes one entity, reporting every field that does not fit: the offending field is
/// taken out and the rest tried again (a few times), so the entity survives with defaults
/// for its bad fields and the rest of validation still runs on it (its references, its
/// uniqueness) — one run of `validate` reports everything.
fn deserialize_at<T: DeserializeOwned>(
    v: &Value,
    path: &str,
    kind: &str,
    errors: &mut Vec<FieldError>,
) -> Option<T> {
    let mut v = v.clone();
    for _ in 0..16 {
        match serde_path_to_error::deserialize::<_, T>(&v) {
            Ok(t) => return Some(t),
            Err(e) => {
                let inner = e.path().to_string();
                let full = match (path.is_empty(), inner.as_str()) {
                    (_, ".") | (_, "") => path.to_string(),
                    (true, p) => p.to_string(),
                    (false, p) if p.starts_with('[') => format!("{path}{p}"),
                    (false, p) => format!("{path}.{p}"),
                };
                let name = v
                    .get("name")
                    .or_else(|| v.get("username"))
                    .and_then(Value::as_str);
                let entity = normalize::label_str(kind, name, path);
                let message = e.inner().to_string();
                errors.push(FieldError::new(entity, full, message.clone()));
                if inner == "." || inner.is_empty() || !remove_at(&mut v, &inner) {
                    // Nothing to take out (a required field is missing): keep the entity's
                    // identity so positions and references stay right; the error stands.
                    let mut ident = serde_json::Map::new();
                    for k in ["id", "name", "username"] {
                        if let Some(x) = v.get(k) {
                            ident.insert(k.to_string(), x.clone());
                        }
                    }
                    return serde_json::from_value(Value::Object(ident)).ok();
                }
            }
        }
    }
    None
}

/// Reads a JSON value shaped like the declarative format into a [`Config`], collecting a
/// typed error for every entity that does not fit (not just the first).
pub fn from_value(v: &Value, errors: &mut Vec<FieldError>) -> Config {
    let mut cfg = Config::default();
    let Some(obj) = v.as_object() else {
        errors.push(FieldError::new(
            "document",
            "",
            "the document must be a mapping with `_format_version`",
        ));
        return cfg;
    };
    match obj.get("_format_version") {
        Some(Value::String(s)) => cfg.format_version = s.clone(),
        Some(Value::Number(n)) => cfg.format_version = n.to_string(),
        Some(_) => errors.push(FieldError::new(
            "document",
            "_format_version",
            "must be the string \"1\"",
        )),
        None => errors.push(FieldError::new(
            "document",
            "_format_version",
            "missing; add `_format_version: \"1\"`",
        )),
    }
    fn list<T: DeserializeOwned>(
        obj: &serde_json::Map<String, Value>,
        key: &str,
        kind: &str,
        errors: &mut Vec<FieldError>,
    ) -> Vec<T> {
        match obj.get(key) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| deserialize_at(item, &format!("{key}[{i}]"), kind, errors))
                .collect(),
            Some(_) => {
                errors.push(FieldError::new("document", key, "must be a list"));
                Vec::new()
            }
        }
    }
    cfg.services = list(obj, "services", "service", errors);
    cfg.routes = list(obj, "routes", "route", errors);
    cfg.upstreams = list(obj, "upstreams", "upstream", errors);
    cfg.consumers = list(obj, "consumers", "consumer", errors);
    cfg.plugins = list(obj, "plugins", "plugin", errors);
    cfg.certificates = list(obj, "certificates", "certificate", errors);
    cfg.ai_providers = list(obj, "ai_providers", "ai_provider", errors);
    cfg.ai_models = list(obj, "ai_models", "ai_model", errors);
    for k in obj.keys() {
        if !matches!(
            k.as_str(),
            "_format_version"
                | "services"
                | "routes"
                | "upstreams"
                | "consumers"
                | "plugins"
                | "certificates"
                | "ai_providers"
                | "ai_models"
        ) {
            errors.push(FieldError::new(
                "document",
                k.clone(),
                format!("unknown key `{k}` (expected _format_version, services, routes, upstreams, consumers, plugins, certificates, ai_providers, ai_models)"),
            ));
        }
    }
    cfg
}

/// Flattens, assigns ids, resolves references and validates. `extra_origins` overrides where
/// errors for some entities point (the admin API points them at the request body).
pub fn prepare(
    cfg: Config,
    extra_origins: &Origins,
    catalog: &dyn PluginCatalog,
) -> Result<Config, ConfigError> {
    prepare_after(cfg, extra_origins, catalog, None)
}

/// [`prepare`] for a config that replaces `previous`: write-only secrets that a read showed
/// as [`secret::REDACTED`] keep their stored values (matched by id).
pub fn prepare_after(
    cfg: Config,
    extra_origins: &Origins,
    catalog: &dyn PluginCatalog,
    previous: Option<&Config>,
) -> Result<Config, ConfigError> {
    check(cfg, Some(extra_origins), catalog, previous)
}

/// Flattens and validates; `edit` is `None` for a document (errors point where the
/// document wrote each entity) or what an edit wrote (see [`relative_origins`]).
fn check(
    mut cfg: Config,
    edit: Option<&Origins>,
    catalog: &dyn PluginCatalog,
    previous: Option<&Config>,
) -> Result<Config, ConfigError> {
    let mut errors = Vec::new();
    let flat = normalize::flatten(&mut cfg, &mut errors);
    if let Some(p) = previous {
        secret::restore_redacted(&mut cfg, p);
    }
    let origins = match edit {
        None => flat,
        Some(extra) => relative_origins(&flat, extra),
    };
    errors.extend(validate::validate(&mut cfg, &origins, catalog));
    if errors.is_empty() {
        Ok(cfg)
    } else {
        Err(errors.into())
    }
}

/// Where each entity of an edited config was written, as the editor saw it. `extra` names
/// what the edit wrote (the admin API: the body's entity, at `""`); the positions `flat`
/// gives inside the flattened config mean nothing to that user, except beneath an edited
/// entity (`routes[0]` nested in a service body): those stay, relative to it. Entities the
/// edit did not write are named by name or id.
fn relative_origins(flat: &Origins, extra: &Origins) -> Origins {
    let mut out = Origins::new();
    for (id, base) in extra {
        out.insert(*id, base.clone());
        let Some(at) = flat.get(id) else { continue };
        let prefix = format!("{at}.");
        for (k, v) in flat {
            if let Some(rest) = v.strip_prefix(&prefix) {
                let path = if base.is_empty() {
                    rest.to_string()
                } else {
                    format!("{base}.{rest}")
                };
                out.entry(*k).or_insert(path);
            }
        }
    }
    out
}

/// Parses, flattens and validates a declarative document (YAML or JSON text). Errors carry
/// line and column.
pub fn parse_document(text: &str, catalog: &dyn PluginCatalog) -> Result<Config, ConfigError> {
    parse_document_after(text, catalog, None)
}

/// [`parse_document`] for a document that replaces `previous` (see [`prepare_after`]).
pub fn parse_document_after(
    text: &str,
    catalog: &dyn PluginCatalog,
    previous: Option<&Config>,
) -> Result<Config, ConfigError> {
    parse_document_noted(text, catalog, previous).map(|p| p.config)
}

/// A document read into a config, with what was noted on the way.
#[derive(Debug)]
pub struct Parsed {
    /// The flat, validated config.
    pub config: Config,
    /// Fields accepted whose behaviour differs from the format they came from (a Kong
    /// file's `request_buffering`, …), with line and column.
    pub notes: Vec<FieldError>,
}

/// [`parse_document_after`], also returning the notes (see [`kong`]).
pub fn parse_document_noted(
    text: &str,
    catalog: &dyn PluginCatalog,
    previous: Option<&Config>,
) -> Result<Parsed, ConfigError> {
    let spanned = yaml::parse(text).or_else(|e| {
        // JSON is YAML, except that JSON writes a character beyond the BMP as a
        // `\ud83d\ude00` surrogate pair, which YAML readers refuse: read such a document
        // as JSON (its positions are then not the file's).
        match serde_json::from_str::<Value>(text) {
            Ok(v) => Ok(yaml::Spanned {
                value: v,
                positions: Default::default(),
            }),
            Err(_) => Err(e),
        }
    });
    let mut spanned = spanned.map_err(|e| ConfigError {
        errors: vec![FieldError {
            entity: "document".into(),
            path: String::new(),
            message: format!("syntax error: {}", e.message),
            line: Some(e.line),
            column: Some(e.column),
        }],
        malformed: true,
    })?;
    let mut errors = Vec::new();
    let mut notes = Vec::new();
    whole_numbers(&mut spanned.value);
    let kong_file = spanned
        .value
        .get("_format_version")
        .and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .is_some_and(|v| kong::is_kong_version(&v));
    // What Kong's format has that Gatehouse does not take (CA certificate ids, …) is a rule
    // a well-formed document breaks (422), not a malformed document (400).
    let mut kong_errors = Vec::new();
    let cfg = if kong_file {
        let mut value = spanned.value.clone();
        let found = kong::translate(&mut value);
        kong_errors = found.errors;
        notes = found.notes;
        from_value(&value, &mut errors)
    } else {
        from_value(&spanned.value, &mut errors)
    };
    // Validation runs even after type errors, on what could be read, so one run reports
    // everything; a field that already has an error gets no second one from validation.
    let malformed = !errors.is_empty();
    errors.extend(kong_errors);
    let result: Result<Config, ConfigError> = match check(cfg, None, catalog, previous) {
        Ok(cfg) if errors.is_empty() => Ok(cfg),
        Ok(_) => Err(errors.into()),
        Err(e) => {
            let seen: Vec<String> = errors.iter().map(|e| e.path.clone()).collect();
            errors.extend(e.errors.into_iter().filter(|v| {
                !seen.iter().any(|p| {
                    !p.is_empty() && (v.path == *p || v.path.starts_with(&format!("{p}.")))
                })
            }));
            Err(errors.into())
        }
    };
    let place = |fe: &mut FieldError| {
        if let Some(p) = spanned.locate(&fe.path) {
            fe.line = Some(p.line);
            fe.column = Some(p.column);
        }
    };
    notes.iter_mut().for_each(place);
    match result {
        Ok(config) => Ok(Parsed { config, notes }),
        Err(mut e) => {
            e.errors.iter_mut().for_each(place);
            e.malformed = malformed;
            Err(e)
        }
    }
}

/// `2.0` is the integer 2 in JSON (and in JSON Schema's `integer`): written as such, so
/// that integer fields take it (serde does not turn a float into an integer).
pub fn whole_numbers(v: &mut Value) {
    match v {
        Value::Number(n) if n.is_f64() => {
            // A float with no fraction is an integer; below 2^63 in magnitude an i64 holds it
            // exactly, below 2^64 a u64 does (`9007199254740992.0` is a valid `u64`).
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0) {
                if f.abs() < i64::MAX as f64 {
                    *v = Value::from(f as i64);
                } else if (0.0..u64::MAX as f64).contains(&f) {
                    *v = Value::from(f as u64);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(whole_numbers),
        Value::Object(m) => m.values_mut().for_each(whole_numbers),
        _ => {}
    }
}

/// Each named entity's name by its id (services, routes, upstreams, consumers by
/// username): how references are shown to people.
pub(crate) fn names_by_id(cfg: &Config) -> HashMap<String, String> {
    let mut names = HashMap::new();
    for s in &cfg.services {
        if let Some(n) = &s.name {
            names.insert(s.id.to_string(), n.clone());
        }
    }
    for r in &cfg.routes {
        if let Some(n) = &r.name {
            names.insert(r.id.to_string(), n.clone());
        }
    }
    for u in &cfg.upstreams {
        names.insert(u.id.to_string(), u.name.clone());
    }
    for c in &cfg.consumers {
        if let Some(n) = &c.username {
            names.insert(c.id.to_string(), n.clone());
        }
    }
    for p in &cfg.ai_providers {
        names.insert(p.id.to_string(), p.name.clone());
    }
    names
}

/// Renders a flat config for people: references by name where the target has one.
pub fn to_document(cfg: &Config) -> Config {
    let mut out = cfg.clone();
    let names = names_by_id(cfg);
    let rename = |r: &mut Option<String>| {
        if let Some(n) = r.as_ref().and_then(|id| names.get(id)) {
            *r = Some(n.clone());
        }
    };
    for s in &mut out.services {
        rename(&mut s.upstream);
    }
    for r in &mut out.routes {
        rename(&mut r.service);
    }
    for p in &mut out.plugins {
        rename(&mut p.service);
        rename(&mut p.route);
        rename(&mut p.consumer);
    }
    for c in &mut out.certificates {
        c.key = secret::REDACTED.into();
    }
    for m in &mut out.ai_models {
        for t in &mut m.targets {
            if let Some(n) = names.get(&t.provider) {
                t.provider = n.clone();
            }
        }
    }
    for p in &mut out.ai_providers {
        secret::redact_ai_keys(p);
    }
    out
}

#[cfg(test)]
mod tests;
