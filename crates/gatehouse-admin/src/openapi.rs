//! Finishes the admin API's OpenAPI document so that it tells the truth: the statuses each
//! operation can answer (with the error shape), the body types it reads, the constraints
//! validation enforces (from `gatehouse_model::schema`), each plugin's config by name, and
//! merge-patch bodies. `scripts/schemathesis.toml` and the `openapi_contract` test keep it
//! honest.

use std::sync::OnceLock;

use gatehouse_model::PluginCatalog;
use serde_json::{json, Map, Value};

static SCHEMAS: OnceLock<Map<String, Value>> = OnceLock::new();
static CATALOG: OnceLock<std::sync::Arc<dyn PluginCatalog>> = OnceLock::new();

/// A plugin read's `config` with every field of the plugin, defaults filled in (as
/// Kong's reads show it). Left as stored when the plugin cannot read it.
pub fn fill_plugin_config(plugin: &mut Value) {
    let Some(catalog) = CATALOG.get() else {
        return;
    };
    let name = plugin
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_string);
    if let (Some(name), Some(config)) = (name, plugin.get_mut("config")) {
        if let Some(full) = catalog.filled(&name, config) {
            *config = full;
        }
    }
}

/// The document's component schemas (empty before [`finish`] ran), for typing form bodies.
pub fn schemas() -> &'static Map<String, Value> {
    static EMPTY: OnceLock<Map<String, Value>> = OnceLock::new();
    SCHEMAS.get().unwrap_or_else(|| EMPTY.get_or_init(Map::new))
}

/// The entity kinds whose PATCH takes a merge patch of them.
const PATCHABLE: [&str; 8] = [
    "Service",
    "Route",
    "Upstream",
    "Consumer",
    "Plugin",
    "Certificate",
    "AiProvider",
    "AiModel",
];

/// Credential schemas, whose answers add the owning `consumer`.
const CREDENTIALS: [&str; 5] = [
    "KeyAuthCredential",
    "BasicAuthCredential",
    "HmacAuthCredential",
    "JwtSecret",
    "AclGroup",
];

const ERROR: &str = "#/components/schemas/ErrorBody";

/// The finished document.
pub fn finish(doc: &utoipa::openapi::OpenApi, catalog: std::sync::Arc<dyn PluginCatalog>) -> Value {
    let _ = CATALOG.set(catalog.clone());
    let catalog = &*catalog;
    let mut doc = serde_json::to_value(doc).unwrap_or(Value::Null);
    let mut schemas = match doc.pointer("/components/schemas") {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    schemas.extend(gatehouse_model::schema::components());
    plugin_schemas(&mut schemas, catalog);
    patch_schemas(&mut schemas);
    credential_answers(&mut schemas);
    if let Some(mut route) = schemas.get("Route").cloned() {
        // `POST /routes` and `PUT /routes/{route}` need the service that nested
        // creates take from the path.
        route["required"] = json!(["service"]);
        route["properties"]["service"]["type"] = json!("string");
        schemas.insert("NewRoute".into(), route);
    }
    if let Some(Value::Object(paths)) = doc.get_mut("paths") {
        for (path, item) in paths.iter_mut() {
            let Value::Object(ops) = item else { continue };
            for (method, op) in ops.iter_mut() {
                operation(path, method, op);
            }
        }
    }
    schemas.values_mut().for_each(unsigned_64);
    if let Some(paths) = doc.get_mut("paths") {
        unsigned_64(paths);
    }
    doc["components"]["schemas"] = Value::Object(schemas.clone());
    let _ = SCHEMAS.set(schemas);
    doc
}

/// A `u64` is derived as `format: int64` (which tops out at 2^63-1); the server takes
/// every u64, so say that instead.
fn unsigned_64(v: &mut Value) {
    match v {
        Value::Object(m) => {
            let unsigned = m.get("format") == Some(&json!("int64"))
                && m.get("minimum").and_then(Value::as_u64) == Some(0);
            if unsigned {
                m.remove("format");
                m.insert("maximum".into(), json!(u64::MAX));
            }
            m.values_mut().for_each(unsigned_64);
        }
        Value::Array(a) => a.iter_mut().for_each(unsigned_64),
        _ => {}
    }
}

/// `PluginConfig.<name>` per plugin, and `Plugin` as one alternative per plugin name
/// with that plugin's config — what validation checks.
fn plugin_schemas(schemas: &mut Map<String, Value>, catalog: &dyn PluginCatalog) {
    let mut names = Vec::new();
    for (name, schema) in catalog.schemas() {
        schemas.insert(format!("PluginConfig.{name}"), schema);
        names.push(name);
    }
    let Some(mut base) = schemas.get("Plugin").cloned() else {
        return;
    };
    base["properties"]["name"]["enum"] = json!(names);
    schemas.insert("PluginCommon".into(), base.clone());
    let variants: Vec<Value> = names
        .iter()
        .map(|name| {
            let mut v = base.clone();
            v["properties"]["name"] = json!({"const": name, "type": "string"});
            v["properties"]["config"] =
                json!({"$ref": format!("#/components/schemas/PluginConfig.{name}")});
            v.as_object_mut().map(|o| o.remove("description"));
            v
        })
        .collect();
    schemas.insert(
        "Plugin".into(),
        json!({
            "description": base.get("description").cloned().unwrap_or(Value::Null),
            "oneOf": variants,
        }),
    );
}

/// `<Kind>Patch`: every field optional, and `null` removes a field that has a default.
fn patch_schemas(schemas: &mut Map<String, Value>) {
    for kind in PATCHABLE {
        let source = if kind == "Plugin" {
            "PluginCommon"
        } else {
            kind
        };
        let Some(mut s) = schemas.get(source).cloned() else {
            continue;
        };
        let required: Vec<String> = s
            .get("required")
            .and_then(Value::as_array)
            .map(|r| {
                r.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        if let Some(o) = s.as_object_mut() {
            for k in [
                "required",
                "anyOf",
                "oneOf",
                "allOf",
                "not",
                "dependentRequired",
            ] {
                o.remove(k);
            }
            o.insert(
                "description".into(),
                json!(format!("A JSON merge patch (RFC 7396) of a {kind}.")),
            );
        }
        if let Some(Value::Object(props)) = s.get_mut("properties") {
            for (name, p) in props.iter_mut() {
                if !required.contains(name) {
                    *p = json!({"anyOf": [p.take(), {"type": "null"}]});
                }
            }
        }
        schemas.insert(format!("{kind}Patch"), s);
    }
}

/// `<Credential>Answer`: the credential plus its consumer, as answers show it.
fn credential_answers(schemas: &mut Map<String, Value>) {
    for name in CREDENTIALS {
        let Some(mut s) = schemas.get(name).cloned() else {
            continue;
        };
        s["properties"]["consumer"] = json!({
            "type": "object",
            "properties": {"id": {"type": "string", "format": "uuid"}},
            "required": ["id"],
        });
        // A create's answer shows the generated key once, beside its hash.
        if let Some(o) = s.as_object_mut() {
            o.remove("anyOf");
            o.remove("not");
        }
        schemas.insert(format!("{name}Answer"), s);
    }
}

fn error(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": ERROR}}}})
}

/// Statuses, bodies, parameters and a unique operation id for one operation.
fn operation(path: &str, method: &str, op: &mut Value) {
    op["operationId"] = json!(operation_id(path, method));
    let has_path_params = path.contains('{');
    let has_query = op
        .get("parameters")
        .and_then(Value::as_array)
        .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
    let has_body = op.get("requestBody").is_some();
    let write = method != "get";
    let entity_write = write && !path.starts_with("/proxy-cache") && !path.starts_with("/call-log");
    params(path, op, method);
    body(path, method, op);
    answers(path, op);

    let mut add = vec![(
        "401",
        "no valid admin token (`Authorization: Bearer …` or `Gatehouse-Admin-Token`)",
    )];
    if has_path_params || has_query || has_body {
        add.push((
            "400",
            "a malformed request: a parameter, or a body that does not fit its schema",
        ));
    }
    if has_path_params {
        add.push(("404", "no such entity"));
    }
    if entity_write {
        add.push((
            "409",
            "a name, key or id another entity has; or the entity is in use",
        ));
        add.push((
            "422",
            "the body fits the schema but breaks a rule it cannot state: a reference to an entity that does not exist, a PEM that does not parse, a regex that does not compile, a plugin setting out of range",
        ));
        add.push(("503", "the config store is unavailable"));
        if path != "/config" {
            add.push((
                "405",
                "the node runs from a declarative file (read-only admin API)",
            ));
        }
    }
    if has_body {
        add.push(("413", "the body is larger than 64 MiB"));
        add.push(("415", "the body is neither JSON nor a form"));
    }
    let responses = op["responses"].as_object_mut();
    if let Some(r) = responses {
        for (status, description) in add {
            r.entry(status.to_string())
                .or_insert_with(|| error(description));
            if let Some(Value::Object(o)) = r.get_mut(status) {
                o.insert("description".into(), json!(description));
                o.insert(
                    "content".into(),
                    json!({"application/json": {"schema": {"$ref": ERROR}}}),
                );
            }
        }
        for (_, resp) in r.iter_mut() {
            if resp.get("description").and_then(Value::as_str) == Some("") {
                resp["description"] = json!("success");
            }
        }
    }
}

fn operation_id(path: &str, method: &str) -> String {
    let mut id = method.to_string();
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        id.push('_');
        match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(p) => {
                id.push_str("by_");
                id.push_str(p);
            }
            None => id.push_str(&seg.replace(['-', '.'], "_")),
        }
    }
    if path == "/" {
        id.push_str("_root");
    }
    id
}

/// Paging and format parameters state what the handlers accept.
fn params(path: &str, op: &mut Value, method: &str) {
    let Some(Value::Array(ps)) = op.get_mut("parameters") else {
        return;
    };
    for p in ps.iter_mut() {
        let schema = match (p["in"].as_str(), p["name"].as_str()) {
            (Some("query"), Some("size")) => {
                json!({"type": "integer", "minimum": 1, "maximum": 1000})
            }
            (Some("query"), Some("offset")) => {
                json!({"type": "string", "pattern": "^[0-9]{1,15}$"})
            }
            // The call log's parameters, from the limits its parser applies.
            (Some(_), Some(name))
                if path.starts_with("/calls") || path.starts_with("/analytics") =>
            {
                match call_log_param(name) {
                    Some(s) => s,
                    None => continue,
                }
            }
            (Some("query"), Some("format")) => {
                json!({"type": "string", "enum": ["yaml", "yml", "json"]})
            }
            (Some("query"), Some("tags")) => json!({"type": "string"}),
            // A consumer is addressed by its username, which may hold any character a
            // path segment can.
            (Some("path"), Some("consumer")) if method == "put" => json!({
                "type": "string",
                "pattern": "^[^/]{1,128}$",
            }),
            // PUT creates the entity when absent, named as addressed.
            (Some("path"), Some(_)) if method == "put" => json!({
                "type": "string",
                "pattern": format!("^([0-9A-Fa-f]{{8}}-[0-9A-Fa-f]{{4}}-[0-9A-Fa-f]{{4}}-[0-9A-Fa-f]{{4}}-[0-9A-Fa-f]{{12}}|{})$",
                    gatehouse_model::schema::NAME.trim_start_matches('^').trim_end_matches('$')),
            }),
            _ => continue,
        };
        p["schema"] = schema;
    }
}

/// The schema of a call-log search or analytics parameter (`gatehouse_telemetry::query`
/// checks the same).
fn call_log_param(name: &str) -> Option<Value> {
    use gatehouse_telemetry::query as q;
    let text = |max: usize| json!({"type": "string", "minLength": 1, "maxLength": max, "pattern": q::TEXT_PATTERN});
    Some(match name {
        "from" | "to" => json!({"type": "string", "pattern": q::TIME_PATTERN}),
        "service" | "route" | "consumer" => {
            json!({"type": "string", "minLength": 1, "maxLength": q::MAX_REF})
        }
        "status" => json!({"type": "string", "pattern": q::STATUS_PATTERN}),
        "min_latency_ms" => {
            json!({"type": "number", "minimum": 0, "exclusiveMaximum": q::MAX_LATENCY_MS})
        }
        "request_id" => text(q::MAX_REQUEST_ID),
        "method" => text(q::MAX_METHOD),
        "q" => text(q::MAX_Q),
        "size" => json!({"type": "integer", "minimum": 1, "maximum": q::MAX_PAGE}),
        "cursor" => json!({"type": "string", "pattern": q::CURSOR_PATTERN}),
        "format" => json!({"type": "string", "enum": ["jsonl", "csv"]}),
        "resolution" => json!({"type": "string", "enum": ["minute", "hour", "day"]}),
        "n" => json!({"type": "integer", "minimum": 1, "maximum": q::MAX_TOP}),
        "by" => {
            json!({"type": "string", "enum": ["services", "routes", "consumers", "error-routes"]})
        }
        _ => return None,
    })
}

/// Request bodies: JSON; PATCH takes a merge patch; `/config` takes YAML too; key-auth keys
/// may be left to the server.
/// `AiProvider` → `ai-provider` (how a kind's admin path is written).
fn kebab(kind: &str) -> String {
    let mut out = String::with_capacity(kind.len() + 2);
    for (i, c) in kind.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

fn body(path: &str, method: &str, op: &mut Value) {
    let Some(rb) = op.get_mut("requestBody") else {
        return;
    };
    let Some(schema) = rb.pointer("/content/application~1json/schema").cloned() else {
        return;
    };
    let name = schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
        .unwrap_or("");
    let schema = match (method, name) {
        ("patch", _) => {
            let kind = PATCHABLE
                .iter()
                .find(|k| path.starts_with(&format!("/{}s", kebab(k))))
                .copied()
                .unwrap_or("Service");
            json!({"$ref": format!("#/components/schemas/{kind}Patch")})
        }
        ("post", "Route") if path == "/routes" => json!({"$ref": "#/components/schemas/NewRoute"}),
        ("put", "Route") => json!({"$ref": "#/components/schemas/NewRoute"}),
        _ => schema,
    };
    if path == "/config" {
        rb["content"] = json!({
            "application/json": {"schema": schema},
            "application/yaml": {"schema": schema},
        });
        return;
    }
    let patch_type = if method == "patch" {
        json!({"application/merge-patch+json": {"schema": schema}})
    } else {
        json!({})
    };
    // Kong-style form bodies are read into this same JSON (docs/admin-api.md); the document
    // lists JSON only, because a form cannot carry types: `tags=false` is the text "false",
    // so a client generator's invalid cases for forms are valid text to the server.
    rb["content"] = json!({
        "application/json": {"schema": schema},
    });
    if let (Some(c), Value::Object(extra)) = (rb["content"].as_object_mut(), patch_type) {
        c.extend(extra);
    }
    rb["required"] = json!(!path.ends_with("/key-auth"));
}

/// Answers: credentials with their consumer; `GET /config` in YAML or JSON.
fn answers(path: &str, op: &mut Value) {
    let Some(Value::Object(r)) = op.get_mut("responses") else {
        return;
    };
    for (status, resp) in r.iter_mut() {
        if !status.starts_with('2') {
            continue;
        }
        if let Some(s) = resp.pointer_mut("/content/application~1json/schema") {
            if let Some(name) = s
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/components/schemas/"))
            {
                if CREDENTIALS.contains(&name) {
                    *s = json!({"$ref": format!("#/components/schemas/{name}Answer")});
                }
            }
        }
        if path == "/config" && status == "200" {
            let schema = resp
                .pointer("/content/application~1json/schema")
                .cloned()
                .unwrap_or(json!({}));
            resp["content"] = json!({
                "application/yaml": {"schema": schema},
                "application/json": {"schema": schema},
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_ids_are_unique_words() {
        assert_eq!(
            operation_id("/services/{service}/routes", "get"),
            "get_services_by_service_routes"
        );
        assert_eq!(operation_id("/", "get"), "get_root");
        assert_eq!(
            operation_id("/key-auths/{id}", "delete"),
            "delete_key_auths_by_id"
        );
    }
}
