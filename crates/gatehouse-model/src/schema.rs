//! JSON Schema of the declarative format, generated from the entity types so it cannot drift.

use serde_json::{json, Map, Value};
use utoipa::OpenApi;

use crate::entities::*;
pub use crate::schema_rules::NAME;

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
    Algorithm,
    crate::ai::AiProvider,
    crate::ai::AiProviderKind,
    crate::ai::AiKey,
    crate::ai::AiModel,
    crate::ai::AiTarget,
    crate::ai::AiPrice
)))]
struct Components;

/// The entity schemas in OpenAPI form (for the admin API document), with the rules
/// validation enforces written into them as far as JSON Schema can say them.
pub fn components() -> Map<String, Value> {
    let derived = Components::openapi().components.unwrap_or_default();
    let mut schemas = match serde_json::to_value(derived.schemas) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    crate::schema_rules::apply(&mut schemas);
    schemas
}

/// The JSON Schema (draft 2020-12) of a declarative config file.
pub fn json_schema() -> Value {
    let comps = Value::Object(components());
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
