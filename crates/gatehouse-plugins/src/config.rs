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

/// JSON Schema of a config type.
pub fn schema<T: utoipa::PartialSchema>() -> Value {
    serde_json::to_value(T::schema()).unwrap_or(Value::Null)
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
