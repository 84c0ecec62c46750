//! JSON Schema of the declarative format, generated from the entity types so it cannot drift.

use serde_json::{json, Value};
use utoipa::OpenApi;

use crate::entities::*;

#[derive(OpenApi)]
#[openapi(components(schemas(
    Config,
    Service,
    Route,
    Upstream,
    Target,
    Consumer,
    KeyAuthCredential,
    AclGroup,
    BasicAuthCredential,
    HmacAuthCredential,
    JwtSecret,
    Plugin,
    Certificate,
    Algorithm
)))]
struct Components;

/// The entity schemas in OpenAPI form (for the admin API document).
pub fn components() -> utoipa::openapi::Components {
    Components::openapi().components.unwrap_or_default()
}

/// The JSON Schema (draft 2020-12) of a declarative config file.
pub fn json_schema() -> Value {
    let comps = serde_json::to_value(components().schemas).unwrap_or(Value::Null);
    let text = comps
        .to_string()
        .replace("#/components/schemas/", "#/$defs/");
    let defs: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://gatehouse.dev/schema/config-1.json",
        "title": "Gatehouse declarative configuration",
        "$ref": "#/$defs/Config",
        "$defs": defs,
    })
}

/// Like [`json_schema`], with each plugin's config schema under `$defs` as
/// `plugin-config:<name>` (and listed in `x-plugins`).
pub fn json_schema_with(catalog: &dyn crate::PluginCatalog) -> Value {
    let mut s = json_schema();
    let mut names = Vec::new();
    for (name, schema) in catalog.schemas() {
        s["$defs"][format!("plugin-config:{name}")] = schema;
        names.push(name);
    }
    s["x-plugins"] = json!(names);
    s
}
