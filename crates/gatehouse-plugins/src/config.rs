//! Shared helpers for plugin configs: parsing with field paths, schemas, header values.

use http::HeaderValue;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Parses a plugin config; on failure the path inside `config` and the message.
pub fn parse<T: DeserializeOwned>(config: &Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(config).map_err(|e| {
        let p = e.path().to_string();
        (
            if p == "." { String::new() } else { p },
            e.inner().to_string(),
        )
    })
}

/// `check` for a config type that also has semantic rules.
pub fn check<T: DeserializeOwned>(
    config: &Value,
    rules: impl FnOnce(&T) -> Vec<(String, String)>,
) -> Vec<(String, String)> {
    match parse::<T>(config) {
        Ok(t) => rules(&t),
        Err(e) => vec![e],
    }
}

/// A config as the plugin reads it: every field, defaults filled in (what admin reads show,
/// as Kong's do). `None` when it does not parse.
pub fn filled<T: DeserializeOwned + serde::Serialize>(config: &Value) -> Option<Value> {
    parse::<T>(config)
        .ok()
        .and_then(|t| serde_json::to_value(t).ok())
}

/// JSON Schema of a config type, self-contained: the types it uses (an enum of modes…)
/// are written in place of references, so that the schema can stand alone in the
/// OpenAPI document and in `gatehouse schema`.
pub fn schema<T: utoipa::ToSchema>() -> Value {
    let mut deps = Vec::new();
    T::schemas(&mut deps);
    let defs: std::collections::HashMap<String, Value> = deps
        .into_iter()
        .map(|(name, s)| (name, serde_json::to_value(s).unwrap_or(Value::Null)))
        .collect();
    let mut v = serde_json::to_value(T::schema()).unwrap_or(Value::Null);
    inline_refs(&mut v, &defs, 0);
    v
}

/// Deepest chain of nested config types inlined (config types are not recursive; this
/// only bounds the walk).
const MAX_INLINE_DEPTH: usize = 16;

fn inline_refs(v: &mut Value, defs: &std::collections::HashMap<String, Value>, depth: usize) {
    if depth > MAX_INLINE_DEPTH {
        return;
    }
    let target = v
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
        .and_then(|name| defs.get(name));
    if let Some(def) = target {
        let mut def = def.clone();
        if let (Value::Object(d), Value::Object(here)) = (&mut def, &*v) {
            // Keep what the field said beside its reference (description, default).
            for (k, x) in here.iter().filter(|(k, _)| *k != "$ref") {
                d.insert(k.clone(), x.clone());
            }
        }
        *v = def;
        inline_refs(v, defs, depth + 1);
        return;
    }
    match v {
        Value::Object(m) => m.values_mut().for_each(|x| inline_refs(x, defs, depth)),
        Value::Array(a) => a.iter_mut().for_each(|x| inline_refs(x, defs, depth)),
        _ => {}
    }
}

/// A header value from plugin-produced text, refusing CR/LF and other control characters
/// (header injection).
pub fn header_value(s: &str) -> Result<HeaderValue, String> {
    if s.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
        return Err("header values must not contain control characters (CR/LF)".into());
    }
    HeaderValue::from_str(s).map_err(|e| e.to_string())
}

/// A header name from config.
pub fn header_name(s: &str) -> Result<http::HeaderName, String> {
    http::HeaderName::from_bytes(s.as_bytes()).map_err(|_| format!("`{s}` is not a header name"))
}
