//! The rules of `validate.rs` that JSON Schema can state, written into the entity schemas
//! derived from the types. A client generator (or schemathesis) reading the admin API's
//! OpenAPI document then knows what the server accepts; rules no schema can state (a PEM
//! that parses, a regex that compiles, a reference to an entity that exists) are answered
//! 422 by the admin API and listed in docs/admin-api.md.
//!
//! Keep this file next to `validate.rs`: a rule changed there changes here.

use serde_json::{json, Map, Value};

use crate::validate::MAX_TIMEOUT_MS;

/// Names of services, routes and upstreams (`validate::valid_name`).
pub const NAME: &str = "^[A-Za-z0-9._~-]{1,128}$";
const LABEL: &str = "[A-Za-z0-9_-]{1,63}";
const LOWER_LABEL: &str = "[a-z0-9_-]{1,63}";
/// 1-65535 (`validate::parse_host_port`).
const PORT: &str =
    "(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})";
const IPV6: &str = "\\[[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*\\]";
/// An HTTP token (`validate::valid_token`).
const TOKEN_CHARS: &str = "[A-Za-z0-9!#$%&'*+.^_`|~-]";
const JWT_SYMMETRIC: [&str; 3] = ["HS256", "HS384", "HS512"];
const JWT_ASYMMETRIC: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

fn host() -> String {
    format!("{LABEL}(\\.{LABEL})*")
}

fn host_port() -> String {
    format!("^({}|{IPV6})(:{PORT})?$", host())
}

/// Route hosts and certificate SNIs (`validate::check_host_pattern`).
fn host_pattern() -> Value {
    json!({"type": "string", "maxLength": 253,
        "pattern": format!("^(\\*\\.)?{LOWER_LABEL}(\\.{LOWER_LABEL})*$")})
}

/// Route paths (`pathspec::parse`): prefix or `=` exact paths of literal and `{param}`
/// segments, no `.`/`..` segments, no white space, controls, `?` or `#`; or a `~` regex
/// (that it compiles is checked by validation).
fn route_path() -> String {
    let any = "[^\\s\\x00-\\x1f\\x7f-\\x9f?#{}/]";
    let no_dot = "[^\\s\\x00-\\x1f\\x7f-\\x9f?#{}/.]";
    let literal = format!("({no_dot}|\\.{no_dot}|\\.\\.{any}){any}*");
    let param = "\\{[A-Za-z_][A-Za-z0-9_]*\\}";
    format!("^(=?(/({literal}|{param})?)+|~.+)$")
}

fn service_url() -> String {
    format!(
        "^(https?|grpcs?|h2c?)://({}|{IPV6})(:{PORT})?(/[^?#\\s]*)?$",
        host()
    )
}

/// Merges `rule` into the property `field` of schema `name` (or into the schema itself
/// when `field` is empty).
fn set(schemas: &mut Map<String, Value>, name: &str, field: &str, rule: Value) {
    let Some(schema) = schemas.get_mut(name) else {
        return;
    };
    let target = if field.is_empty() {
        Some(schema)
    } else {
        schema.get_mut("properties").and_then(|p| p.get_mut(field))
    };
    if let (Some(Value::Object(t)), Value::Object(r)) = (target, rule) {
        t.extend(r);
    }
}

/// `field` is given, and not as null (reads show unset fields as null).
fn given(field: &str) -> Value {
    json!({"required": [field], "properties": {field: {"not": {"type": "null"}}}})
}

fn timeout() -> Value {
    json!({"minimum": 1, "maximum": MAX_TIMEOUT_MS})
}

fn not_blank_without(forbidden: &str) -> Value {
    json!({"pattern": format!("^[^{forbidden}]*[^\\s{forbidden}][^{forbidden}]*$")})
}

/// Defaults of fields that answers omit when unset (`#[serde(default = …)]`), so that
/// the document states them and admin reads can show them.
fn defaults(s: &mut Map<String, Value>) {
    let timeout = json!(60_000);
    let table = [
        ("Service", "connect_timeout", timeout.clone()),
        ("Service", "read_timeout", timeout.clone()),
        ("Service", "write_timeout", timeout),
        ("Service", "retries", json!(5)),
        ("Service", "enabled", json!(true)),
        ("Route", "strip_path", json!(true)),
        ("Route", "preserve_host", json!(false)),
        ("Route", "websocket", json!(false)),
        ("Route", "priority", json!(0)),
        ("Route", "regex_priority", json!(0)),
        ("Upstream", "algorithm", json!("round-robin")),
        ("Target", "weight", json!(100)),
        ("JwtSecret", "algorithm", json!("HS256")),
        ("Plugin", "enabled", json!(true)),
        ("Plugin", "config", json!({})),
        ("Config", "_format_version", json!("1")),
    ];
    for (schema, field, value) in table {
        set(s, schema, field, json!({ "default": value }));
    }
}

/// Writes every rule in.
pub fn apply(s: &mut Map<String, Value>) {
    defaults(s);
    ids_are_uuids(s);
    for kind in ["Service", "Route", "Upstream"] {
        set(s, kind, "name", json!({"pattern": NAME}));
    }
    service(s);
    route(s);
    set(s, "Target", "target", json!({"pattern": host_port()}));
    set(s, "Target", "weight", json!({"maximum": 65535}));
    consumer(s);
    credentials(s);
    set(s, "Plugin", "config", json!({"type": "object"}));
    for scope in ["service", "route", "consumer"] {
        set(s, "Plugin", scope, json!({"minLength": 1}));
    }
    set(s, "Certificate", "snis", json!({"items": host_pattern()}));
    set(
        s,
        "Certificate",
        "",
        json!({"not": {"allOf": [given("client_auth"), {"not": given("client_ca")}]}}),
    );
    ai(s);
    set(
        s,
        "Config",
        "_format_version",
        json!({"enum": ["1", "3.0"]}),
    );
    set(s, "Config", "", json!({"required": ["_format_version"]}));
    // `plugins:` with nothing after it (YAML null) is an empty list.
    for list in [
        "services",
        "routes",
        "upstreams",
        "consumers",
        "plugins",
        "certificates",
        "ai_providers",
        "ai_models",
    ] {
        set(s, "Config", list, json!({"type": ["array", "null"]}));
    }
}

/// `ai::check`'s rules.
fn ai(s: &mut Map<String, Value>) {
    let text = json!({"minLength": 1, "maxLength": 256, "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]*$"});
    set(s, "AiProvider", "name", json!({"pattern": NAME}));
    set(
        s,
        "AiProvider",
        "base_url",
        json!({"pattern": format!("^https?://({}|{IPV6})(:{PORT})?(/[^?#\\s]*)?$", host())}),
    );
    for t in ["connect_timeout", "first_token_timeout", "timeout"] {
        set(
            s,
            "AiProvider",
            t,
            json!({"minimum": 1, "maximum": MAX_TIMEOUT_MS}),
        );
    }
    set(
        s,
        "AiKey",
        "key",
        json!({"minLength": 1, "maxLength": 4096, "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f{]*$|^\\{(env://[A-Za-z0-9_]+|file:///[^}]*)\\}$"}),
    );
    set(s, "AiKey", "weight", json!({"minimum": 1, "maximum": 1000}));
    set(s, "AiModel", "name", text.clone());
    set(s, "AiModel", "targets", json!({"minItems": 1}));
    set(s, "AiTarget", "model", text);
    set(s, "AiTarget", "provider", json!({"minLength": 1}));
    set(
        s,
        "AiTarget",
        "weight",
        json!({"minimum": 1, "maximum": 1000}),
    );
    for f in ["input", "output", "cached_input", "cache_write"] {
        set(s, "AiPrice", f, json!({"minimum": 0, "maximum": 1_000_000}));
    }
}

/// Ids are optional but, when given, never null (a `Uuid`, not an `Option`).
fn ids_are_uuids(s: &mut Map<String, Value>) {
    for schema in s.values_mut() {
        if let Some(id) = schema.pointer_mut("/properties/id") {
            if id.get("format").and_then(Value::as_str) == Some("uuid") {
                id["type"] = json!("string");
            }
        }
    }
}

fn service(s: &mut Map<String, Value>) {
    set(s, "Service", "url", json!({"pattern": service_url()}));
    set(s, "Service", "upstream", json!({"minLength": 1}));
    set(
        s,
        "Service",
        "host",
        json!({"pattern": format!("^({}|{IPV6}|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*)$", host())}),
    );
    set(
        s,
        "Service",
        "port",
        json!({"minimum": 1, "maximum": 65535}),
    );
    set(s, "Service", "path", json!({"pattern": "^(/[^?# ]*)?$"}));
    set(
        s,
        "Service",
        "client_certificate",
        json!({"format": "uuid"}),
    );
    for f in ["connect_timeout", "read_timeout", "write_timeout"] {
        set(s, "Service", f, timeout());
    }
    set(s, "Service", "retries", json!({"maximum": 100}));
    // Exactly one of `url`, `upstream` and Kong's `host`; `port` only with `host`, and
    // `path` not with `url` (its path goes in the URL).
    set(
        s,
        "Service",
        "",
        json!({
            "oneOf": [given("url"), given("upstream"), given("host")],
            "not": {"anyOf": [
                {"allOf": [given("url"), given("path")]},
                {"allOf": [given("port"), {"not": given("host")}]},
            ]},
        }),
    );
}

fn route(s: &mut Map<String, Value>) {
    set(s, "Route", "service", json!({"minLength": 1}));
    set(s, "Route", "hosts", json!({"items": host_pattern()}));
    set(
        s,
        "Route",
        "paths",
        json!({"items": {"type": "string", "pattern": route_path()}}),
    );
    set(
        s,
        "Route",
        "methods",
        json!({"items": {"type": "string", "pattern": "^[A-Z0-9!#$%&'*+.^_`|~-]+$"}}),
    );
    set(
        s,
        "Route",
        "headers",
        json!({
            "propertyNames": {
                "type": "string",
                "pattern": format!("^{TOKEN_CHARS}+$"),
                "not": {"pattern": "^[Hh][Oo][Ss][Tt]$"},
            },
            "additionalProperties": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        }),
    );
    set(s, "Route", "request_body_limit", json!({"minimum": 1}));
    set(
        s,
        "Route",
        "https_redirect_status_code",
        json!({"enum": [426, 301, 302, 307, 308, null]}),
    );
    // At least one match condition.
    let any_of: Vec<Value> = ["hosts", "paths", "methods"]
        .iter()
        .map(|f| json!({"required": [f], "properties": {*f: {"minItems": 1}}}))
        .chain([json!({"required": ["headers"], "properties": {"headers": {"minProperties": 1}}})])
        .collect();
    set(s, "Route", "", json!({"anyOf": any_of}));
}

fn consumer(s: &mut Map<String, Value>) {
    set(
        s,
        "Consumer",
        "username",
        json!({"minLength": 1, "maxLength": 128}),
    );
    set(
        s,
        "Consumer",
        "",
        json!({"anyOf": [given("username"), given("custom_id")]}),
    );
    // Credentials inside a consumer body must carry their secret (the credential
    // endpoints generate a key-auth key when none is given).
    set(
        s,
        "Consumer",
        "keyauth_credentials",
        json!({"items": {"allOf": [
            {"$ref": "#/components/schemas/KeyAuthCredential"},
            {"anyOf": [given("key"), given("key_hash")]},
        ]}}),
    );
}

fn credentials(s: &mut Map<String, Value>) {
    set(s, "KeyAuthCredential", "key", json!({"minLength": 1}));
    set(
        s,
        "BasicAuthCredential",
        "password",
        json!({"minLength": 1}),
    );
    // A secret in the clear or its stored hash, not both.
    for (cred, clear) in [
        ("KeyAuthCredential", "key"),
        ("BasicAuthCredential", "password"),
    ] {
        let hash = format!("{clear}_hash");
        set(
            s,
            cred,
            "",
            json!({"not": {"allOf": [given(clear), given(&hash)]}}),
        );
    }
    set(
        s,
        "KeyAuthCredential",
        "key_hash",
        json!({"pattern": "^[0-9A-Fa-f]{64}$"}),
    );
    set(s, "BasicAuthCredential", "username", not_blank_without(":"));
    set(
        s,
        "BasicAuthCredential",
        "password_hash",
        json!({"pattern": "^\\$argon2(id|i|d)\\$"}),
    );
    set(
        s,
        "BasicAuthCredential",
        "",
        json!({"anyOf": [given("password"), given("password_hash")]}),
    );
    set(
        s,
        "HmacAuthCredential",
        "username",
        json!({"pattern": "^[^\"]+$"}),
    );
    set(s, "HmacAuthCredential", "secret", json!({"minLength": 16}));
    set(s, "JwtSecret", "key", json!({"minLength": 1}));
    let algorithms: Vec<&str> = JWT_SYMMETRIC
        .iter()
        .chain(&JWT_ASYMMETRIC)
        .copied()
        .collect();
    set(s, "JwtSecret", "algorithm", json!({"enum": algorithms}));
    set(s, "JwtSecret", "secret", json!({"minLength": 16}));
    set(
        s,
        "JwtSecret",
        "rsa_public_key",
        json!({"pattern": "PUBLIC KEY"}),
    );
    // HS* (the default) needs a secret.
    set(
        s,
        "JwtSecret",
        "",
        json!({"anyOf": [
            given("secret"),
            {"required": ["algorithm"], "properties": {"algorithm": {"enum": JWT_ASYMMETRIC}}},
        ]}),
    );
    set(
        s,
        "MtlsCredential",
        "subject_name",
        json!({"pattern": "\\S"}),
    );
    set(s, "AclGroup", "group", not_blank_without(","));
}
