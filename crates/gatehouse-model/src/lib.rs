//! Gatehouse's configuration model: entities, the declarative file format, validation with
//! precise error locations, and the JSON Schema of the format. No I/O lives here.

pub mod entities;
pub mod error;
pub mod normalize;
pub mod pathspec;
pub mod plugin;
pub mod schema;
pub mod secret;
pub mod tls;
pub mod validate;
pub mod yaml;

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde_json::Value;

pub use entities::{
    AclGroup, Algorithm, BasicAuthCredential, Certificate, ClientAuth, Config, Consumer,
    HmacAuthCredential, JwtSecret, KeyAuthCredential, Kind, MtlsCredential, Plugin, Route,
    RouteProtocol, Service, ServiceProtocol, Target, Upstream,
};
pub use error::{ConfigError, FieldError};
pub use normalize::Origins;
pub use plugin::{NoPlugins, PluginCatalog};

fn deserialize_at<T: DeserializeOwned>(
    v: &Value,
    path: &str,
    kind: &str,
    errors: &mut Vec<FieldError>,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(v) {
        Ok(t) => Some(t),
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
            errors.push(FieldError::new(entity, full, e.inner().to_string()));
            None
        }
    }
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
        ) {
            errors.push(FieldError::new(
                "document",
                k.clone(),
                format!("unknown key `{k}` (expected _format_version, services, routes, upstreams, consumers, plugins, certificates)"),
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
    mut cfg: Config,
    extra_origins: &Origins,
    catalog: &dyn PluginCatalog,
    previous: Option<&Config>,
) -> Result<Config, ConfigError> {
    let mut errors = Vec::new();
    let mut origins = normalize::flatten(&mut cfg, &mut errors);
    if let Some(p) = previous {
        secret::restore_redacted(&mut cfg, p);
    }
    origins.extend(extra_origins.iter().map(|(k, v)| (*k, v.clone())));
    errors.extend(validate::validate(&mut cfg, &origins, catalog));
    if errors.is_empty() {
        Ok(cfg)
    } else {
        Err(errors.into())
    }
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
    let spanned = yaml::parse(text).map_err(|e| {
        ConfigError::from(vec![FieldError {
            entity: "document".into(),
            path: String::new(),
            message: format!("syntax error: {}", e.message),
            line: Some(e.line),
            column: Some(e.column),
        }])
    })?;
    let mut errors = Vec::new();
    let cfg = from_value(&spanned.value, &mut errors);
    let result = if errors.is_empty() {
        prepare_after(cfg, &HashMap::new(), catalog, previous)
    } else {
        Err(errors.into())
    };
    result.map_err(|mut e| {
        for fe in &mut e.errors {
            if let Some(p) = spanned.locate(&fe.path) {
                fe.line = Some(p.line);
                fe.column = Some(p.column);
            }
        }
        e
    })
}

/// Renders a flat config for people: references by name where the target has one.
pub fn to_document(cfg: &Config) -> Config {
    let mut out = cfg.clone();
    let mut names: HashMap<String, String> = HashMap::new();
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
    out
}

#[cfg(test)]
mod tests;
