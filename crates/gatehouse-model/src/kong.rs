//! Kong's declarative format (decK files, `_format_version: "3.0"`) read into Gatehouse's.
//!
//! Gatehouse's format is Kong's model, so most of a decK file is read as it is. What this
//! module does is the rest, field by field, before the document is typed:
//! - fields Kong writes that mean nothing different here (`_transform: true`, `null`s, a
//!   route's `path_handling`, a certificate's `snis` as objects) are taken as they are or
//!   rewritten;
//! - fields whose behaviour differs are accepted with a **note** that says what Gatehouse
//!   does instead (request and response buffering, upstream balancing algorithms and health
//!   checks not built yet);
//! - fields that would change which requests a route or plugin takes, if ignored, are
//!   **errors** naming the Gatehouse equivalent (stream routes' `sources`/`destinations`, a
//!   route's `snis`, plugin `protocols` narrower than the route's, workspaces, vaults).
//!
//! Every note and error carries the document path, so `validate` prints it with its line.

use serde_json::{Map, Value};

use crate::error::FieldError;

/// `_format_version` values that mean "a Kong (decK) file".
pub fn is_kong_version(v: &str) -> bool {
    matches!(v, "3.0" | "3.1" | "3" | "2.1" | "2.0" | "1.1")
}

/// What reading a Kong file found: differences that fail it, and those it only notes.
#[derive(Debug, Default)]
pub struct Findings {
    /// Fields that cannot be honoured; the document is refused.
    pub errors: Vec<FieldError>,
    /// Fields accepted with a behaviour that differs from Kong's.
    pub notes: Vec<FieldError>,
}

impl Findings {
    fn error(&mut self, entity: &str, path: String, msg: impl Into<String>) {
        self.errors.push(FieldError::new(entity, path, msg));
    }
    fn note(&mut self, entity: &str, path: String, msg: impl Into<String>) {
        self.notes.push(FieldError::new(entity, path, msg));
    }
}

/// Top-level keys of decK files that Gatehouse has no counterpart for.
const UNSUPPORTED_TOP: &[(&str, &str)] = &[
    ("_workspace", "workspaces are Kong Enterprise; one Gatehouse node serves one config"),
    ("_konnect", "Konnect control planes are Kong's cloud; point `gatehouse config sync` at a node instead"),
    ("consumer_groups", "consumer groups are not built yet; give each consumer its own plugins"),
    ("vaults", "vaults are not built yet; secrets are sealed at rest in the store (docs/security.md)"),
    ("keys", "key entities are not built yet; give the jwt plugin a `jwks_uri` or a consumer `rsa_public_key`"),
    ("key_sets", "key sets are not built yet; give the jwt plugin a `jwks_uri`"),
    ("ca_certificates", "CA certificates are not separate entities; put the PEM in the service's `ca_certificates` (or a certificate's `client_ca`)"),
    ("snis", "SNIs are part of their certificate; list them in the certificate's `snis`"),
    ("filter_chains", "filter chains (Wasm) are not supported"),
    ("licenses", "licenses are Kong Enterprise"),
];

/// Rewrites a Kong document in place into Gatehouse's format and reports what differs.
pub fn translate(doc: &mut Value) -> Findings {
    let mut f = Findings::default();
    let Some(obj) = doc.as_object_mut() else {
        return f;
    };
    obj.insert("_format_version".into(), Value::String("1".into()));
    match obj.remove("_transform") {
        None | Some(Value::Bool(true)) => {}
        Some(_) => f.error(
            "document",
            "_transform".into(),
            "`_transform: false` (credentials already hashed by Kong) cannot be read: Kong's hashes are not Gatehouse's; give the keys and passwords in clear once",
        ),
    }
    if let Some(info) = obj.remove("_info") {
        if info.get("select_tags").is_some_and(|t| !t.is_null()) {
            f.note(
                "document",
                "_info.select_tags".into(),
                "select_tags scope decK to some entities; Gatehouse reads the whole file as the whole config",
            );
        }
    }
    for (key, why) in UNSUPPORTED_TOP {
        if let Some(v) = obj.get(*key) {
            let empty = v.is_null() || v.as_array().is_some_and(Vec::is_empty);
            if !empty {
                f.error("document", (*key).to_string(), *why);
            }
            obj.remove(*key);
        }
    }
    each(obj, "services", service, &mut f);
    each(obj, "routes", route, &mut f);
    each(obj, "consumers", consumer, &mut f);
    each(obj, "plugins", plugin, &mut f);
    each(obj, "upstreams", upstream, &mut f);
    each(obj, "certificates", certificate, &mut f);
    f
}

fn each(
    obj: &mut Map<String, Value>,
    key: &str,
    mut one: impl FnMut(&mut Map<String, Value>, &str, &mut Findings),
    f: &mut Findings,
) {
    if let Some(Value::Array(items)) = obj.get_mut(key) {
        for (i, item) in items.iter_mut().enumerate() {
            if let Some(m) = item.as_object_mut() {
                one(m, &format!("{key}[{i}]"), f);
            }
        }
    }
}

/// Kong writes every unset field as `null`; Gatehouse reads an absent field the same way.
fn drop_nulls(m: &mut Map<String, Value>) {
    m.retain(|_, v| !v.is_null());
}

fn label(kind: &str, m: &Map<String, Value>, path: &str) -> String {
    match m
        .get("name")
        .or_else(|| m.get("username"))
        .and_then(Value::as_str)
    {
        Some(n) => format!("{kind} '{n}'"),
        None => format!("{kind} at {path}"),
    }
}

fn service(s: &mut Map<String, Value>, path: &str, f: &mut Findings) {
    drop_nulls(s);
    let ent = label("service", s, path);
    if let Some(d) = s.remove("tls_verify_depth") {
        f.note(
            &ent,
            format!("{path}.tls_verify_depth"),
            format!("Gatehouse verifies the whole chain up to a trusted root; a depth limit ({d}) is not applied"),
        );
    }
    if let Some(Value::Array(cas)) = s.get("ca_certificates") {
        if cas
            .iter()
            .any(|c| c.as_str().is_some_and(|c| !c.contains("BEGIN")))
        {
            f.error(
                &ent,
                format!("{path}.ca_certificates"),
                "Kong lists CA certificate ids here; Gatehouse takes the PEM bundles themselves",
            );
        }
    }
    if let Some(Value::Object(c)) = s.get("client_certificate") {
        if let Some(id) = c.get("id").cloned() {
            s.insert("client_certificate".into(), id);
        }
    }
    each(
        s,
        "routes",
        |r, p, f| route(r, &format!("{path}.{p}"), f),
        f,
    );
    each(
        s,
        "plugins",
        |x, p, f| plugin(x, &format!("{path}.{p}"), f),
        f,
    );
}

/// Kong route protocols that are not HTTP: stream proxying and WebSocket-only routes.
const STREAM_PROTOCOLS: &[&str] = &["tcp", "tls", "udp", "tls_passthrough", "ws", "wss"];

fn route(r: &mut Map<String, Value>, path: &str, f: &mut Findings) {
    drop_nulls(r);
    let ent = label("route", r, path);
    if let Some(v) = r.remove("path_handling") {
        if v.as_str() == Some("v1") {
            f.note(
                &ent,
                format!("{path}.path_handling"),
                "Gatehouse joins the service path and the rest of the request path with exactly one `/` (Kong's `v0`); `v1`'s plain concatenation is not applied",
            );
        }
    }
    for field in ["request_buffering", "response_buffering"] {
        if let Some(v) = r.remove(field) {
            if v.as_bool() != Some(false) {
                let what = if field == "request_buffering" {
                    "request bodies to the service as they arrive (Kong's `request_buffering: false`); a plugin that needs the whole body (request-validator, request-transformer on bodies) reads it first, up to the body limit"
                } else {
                    "responses to the client as they arrive (Kong's `response_buffering: false`); proxy-cache and response-transformer on bodies read what they need"
                };
                f.note(
                    &ent,
                    format!("{path}.{field}"),
                    format!("Gatehouse streams {what}"),
                );
            }
        }
    }
    for field in ["sources", "destinations"] {
        if let Some(v) = r.remove(field) {
            if v.as_array().is_some_and(|a| !a.is_empty()) {
                f.error(
                    &ent,
                    format!("{path}.{field}"),
                    format!("`{field}` match Kong stream routes (tcp, tls, udp), which Gatehouse does not proxy; for client addresses on HTTP routes use the ip-restriction plugin"),
                );
            }
        }
    }
    if let Some(v) = r.remove("snis") {
        if v.as_array().is_some_and(|a| !a.is_empty()) {
            f.error(
                &ent,
                format!("{path}.snis"),
                "Gatehouse routes by `hosts` (the Host header, which a TLS client sends for the name it asked for); a route on the TLS SNI alone is not supported — list the names in `hosts`",
            );
        }
    }
    if let Some(Value::Array(ps)) = r.get_mut("protocols") {
        let mut i = 0;
        // Refused protocols are reported here and taken out, so the typed read does not
        // report them a second time.
        ps.retain(|p| {
            let at = i;
            i += 1;
            let Some(p) = p.as_str().filter(|p| STREAM_PROTOCOLS.contains(p)) else {
                return true;
            };
            let hint = if p.starts_with('w') {
                "WebSockets ride on `http`/`https` routes: set `websocket: true`"
            } else {
                "Gatehouse proxies HTTP, HTTPS and gRPC, not raw TCP, TLS or UDP streams"
            };
            f.error(
                &ent,
                format!("{path}.protocols[{at}]"),
                format!("`{p}`: {hint}"),
            );
            false
        });
    }
    if let Some(Value::Array(ps)) = r.get("paths") {
        for (i, p) in ps.iter().enumerate() {
            if p.as_str().is_some_and(|p| p.starts_with('~')) {
                f.note(
                    &ent,
                    format!("{path}.paths[{i}]"),
                    "Gatehouse ranks exact and prefix paths before regex paths (Kong: regex paths first, by `regex_priority`); for this regex to win over an overlapping prefix route, give this route a higher `priority`",
                );
            }
        }
    }
    if let Some(Value::Object(s)) = r.get("service") {
        if let Some(id) = s.get("id").or_else(|| s.get("name")).cloned() {
            r.insert("service".into(), id);
        }
    }
    each(
        r,
        "plugins",
        |x, p, f| plugin(x, &format!("{path}.{p}"), f),
        f,
    );
}

fn consumer(c: &mut Map<String, Value>, path: &str, f: &mut Findings) {
    drop_nulls(c);
    let ent = label("consumer", c, path);
    if c.remove("groups")
        .is_some_and(|g| g.as_array().is_some_and(|a| !a.is_empty()))
    {
        f.error(
            &ent,
            format!("{path}.groups"),
            "consumer groups are not built yet; give the consumer its own plugins",
        );
    }
    for list in [
        "keyauth_credentials",
        "basicauth_credentials",
        "hmacauth_credentials",
        "jwt_secrets",
        "acls",
        "mtls_credentials",
    ] {
        if let Some(Value::Array(items)) = c.get_mut(list) {
            for item in items.iter_mut().filter_map(Value::as_object_mut) {
                drop_nulls(item);
                item.remove("consumer");
                item.remove("created_at");
                if list == "keyauth_credentials" {
                    item.remove("ttl");
                }
            }
        }
    }
    each(
        c,
        "plugins",
        |x, p, f| plugin(x, &format!("{path}.{p}"), f),
        f,
    );
}

fn plugin(p: &mut Map<String, Value>, path: &str, f: &mut Findings) {
    let name = p
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_string();
    let ent = format!("plugin '{name}' at {path}");
    for k in ["service", "route", "consumer"] {
        match p.get(k) {
            Some(Value::Null) => {
                p.remove(k);
            }
            Some(Value::Object(o)) => {
                if let Some(id) = o.get("id").or_else(|| o.get("name")).cloned() {
                    p.insert(k.into(), id);
                }
            }
            _ => {}
        }
    }
    if let Some(v) = p.remove("protocols") {
        let list: Vec<&str> = v
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let covers_http = list.contains(&"http") && list.contains(&"https");
        if !list.is_empty() && !covers_http {
            f.error(
                &ent,
                format!("{path}.protocols"),
                "Gatehouse runs a plugin on every request its scope takes; to apply it to some protocols only, split the route by `protocols` and put the plugin on one of them",
            );
        }
    }
    if p.remove("ordering").is_some_and(|o| !o.is_null()) {
        f.error(
            &ent,
            format!("{path}.ordering"),
            "dynamic plugin ordering is Kong Enterprise; Gatehouse runs plugins by their fixed priority (docs/plugins/README.md)",
        );
    }
    if p.get("consumer_group").is_some_and(|g| !g.is_null()) {
        f.error(
            &ent,
            format!("{path}.consumer_group"),
            "consumer groups are not built yet",
        );
    }
    p.remove("consumer_group");
    if p.get("instance_name").is_some_and(Value::is_null) {
        p.remove("instance_name");
    }
    if let Some(Value::Object(cfg)) = p.get_mut("config") {
        // decK writes every plugin field, unset ones as null: the plugin's default applies.
        cfg.retain(|_, v| !v.is_null());
        kong_only_config(&name, cfg);
    }
}

/// Fields of Kong's plugin configs that Gatehouse's plugins do not have, with the value
/// decK writes when the user did not set them. At that value the field is dropped (it asks
/// for nothing); at any other the plugin's own validation refuses it, listing its fields.
const KONG_ONLY_DEFAULTS: &[(&str, &str, &str)] = &[
    ("*", "realm", "null"),
    ("rate-limiting", "fault_tolerant", "true"),
    ("rate-limiting", "sync_rate", "-1"),
    ("rate-limiting", "path", "null"),
    ("rate-limiting", "year", "null"),
    ("rate-limiting", "redis_port", "6379"),
    ("rate-limiting", "redis_timeout", "2000"),
    ("rate-limiting", "redis_database", "0"),
    ("rate-limiting", "redis_ssl", "false"),
    ("rate-limiting", "redis_ssl_verify", "false"),
    ("key-auth", "key_in_body", "false"),
    ("jwt", "secret_is_base64", "false"),
    ("cors", "private_network", "false"),
    ("acl", "include_consumer_groups", "false"),
    ("acl", "always_use_authenticated_groups", "false"),
    ("basic-auth", "brute_force_protection", "null"),
    ("file-log", "reopen", "false"),
    ("http-log", "content_type", "\"application/json\""),
    ("http-log", "keepalive", "60000"),
    ("http-log", "retry_count", "null"),
    ("http-log", "queue_size", "null"),
    ("http-log", "flush_timeout", "null"),
    ("proxy-cache", "strategy", "\"memory\""),
    ("proxy-cache", "storage_ttl", "null"),
    ("proxy-cache", "ignore_uri_case", "false"),
    ("prometheus", "per_consumer", "false"),
    ("prometheus", "status_code_metrics", "false"),
    ("prometheus", "latency_metrics", "false"),
    ("prometheus", "bandwidth_metrics", "false"),
    ("prometheus", "upstream_health_metrics", "false"),
    ("prometheus", "ai_metrics", "false"),
    ("request-termination", "echo", "false"),
    ("request-termination", "trigger", "null"),
];

fn kong_only_config(plugin: &str, cfg: &mut Map<String, Value>) {
    for (p, field, default) in KONG_ONLY_DEFAULTS {
        if *p != "*" && *p != plugin {
            continue;
        }
        let Some(v) = cfg.get(*field) else { continue };
        let is_default = serde_json::from_str::<Value>(default).is_ok_and(|d| d == *v)
            // Prometheus's extra metrics are all on in Gatehouse: asking for them is fine.
            || plugin == "prometheus";
        if is_default {
            cfg.remove(*field);
        }
    }
    // Kong ≥ 3.6 groups Redis settings in one object; decK writes it with nulls when the
    // policy is local.
    if let Some(r) = cfg.get("redis") {
        let unused = r
            .as_object()
            .is_none_or(|o| o.values().all(|v| v.is_null() || *v == Value::Bool(false)));
        if unused || cfg.get("policy").and_then(Value::as_str) == Some("local") {
            cfg.remove("redis");
        }
    }
}

fn upstream(u: &mut Map<String, Value>, path: &str, f: &mut Findings) {
    drop_nulls(u);
    let ent = label("upstream", u, path);
    if let Some(a) = u.get("algorithm").and_then(Value::as_str) {
        if a != "round-robin" {
            f.note(
                &ent,
                format!("{path}.algorithm"),
                format!("`{a}` is not built yet; Gatehouse balances this upstream by weighted round robin"),
            );
            u.remove("algorithm");
        }
    }
    for k in [
        "slots",
        "hash_on",
        "hash_fallback",
        "hash_on_header",
        "hash_fallback_header",
        "hash_on_cookie",
        "hash_on_cookie_path",
        "hash_on_query_arg",
        "hash_fallback_query_arg",
        "hash_on_uri_capture",
        "hash_fallback_uri_capture",
        "use_srv_name",
        "host_header",
        "client_certificate",
    ] {
        if let Some(v) = u.remove(k) {
            let default = match k {
                "slots" => true,
                "hash_on" | "hash_fallback" => v.as_str() == Some("none"),
                "hash_on_cookie_path" => v.as_str() == Some("/"),
                "use_srv_name" => v.as_bool() == Some(false),
                _ => false,
            };
            if !default {
                f.note(
                    &ent,
                    format!("{path}.{k}"),
                    "not applied: Gatehouse's upstreams have no such setting yet",
                );
            }
        }
    }
    if let Some(h) = u.remove("healthchecks") {
        if health_checks_on(&h) {
            f.note(
                &ent,
                format!("{path}.healthchecks"),
                "health checks are not built yet: a target leaves the rotation only while connecting to it fails",
            );
        }
    }
    if let Some(Value::Array(ts)) = u.get_mut("targets") {
        for t in ts.iter_mut().filter_map(Value::as_object_mut) {
            drop_nulls(t);
            t.remove("upstream");
        }
    }
}

/// True when a Kong `healthchecks` object turns any check on (decK writes the whole object,
/// with zero intervals and thresholds, for upstreams that have none).
fn health_checks_on(h: &Value) -> bool {
    let num = |v: Option<&Value>| v.and_then(Value::as_f64).unwrap_or(0.0) > 0.0;
    let active = h.get("active");
    let passive = h.get("passive");
    let a = |k: &str, f: &str| num(active.and_then(|a| a.get(k)).and_then(|x| x.get(f)));
    let p = |k: &str, f: &str| num(passive.and_then(|a| a.get(k)).and_then(|x| x.get(f)));
    a("healthy", "interval")
        || a("unhealthy", "interval")
        || p("unhealthy", "http_failures")
        || p("unhealthy", "tcp_failures")
        || p("unhealthy", "timeouts")
}

fn certificate(c: &mut Map<String, Value>, path: &str, f: &mut Findings) {
    drop_nulls(c);
    let ent = format!("certificate at {path}");
    if let Some(Value::Array(snis)) = c.get_mut("snis") {
        for s in snis.iter_mut() {
            if let Some(n) = s.get("name").cloned() {
                *s = n;
            }
        }
    }
    for k in ["cert_alt", "key_alt"] {
        if c.remove(k).is_some() {
            f.error(
                &ent,
                format!("{path}.{k}"),
                "a second (alternate) certificate per entity is not supported; add it as its own certificate with the same snis",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rewrites_what_means_the_same_and_reports_the_rest() {
        let mut doc = json!({
            "_format_version": "3.0",
            "_transform": true,
            "services": [{
                "name": "s", "url": "http://a", "tls_verify_depth": null,
                "routes": [{"name": "r", "paths": ["/x"], "path_handling": "v0",
                            "request_buffering": true, "response_buffering": false,
                            "sources": null, "snis": [], "protocols": ["http", "https"]}],
                "plugins": [{"name": "cors", "enabled": true, "protocols": ["grpc", "grpcs", "http", "https"],
                             "config": {"origins": ["*"], "max_age": null}}]
            }],
            "certificates": [{"cert": "C", "key": "K", "snis": [{"name": "a.example"}]}],
            "upstreams": [{"name": "u", "algorithm": "round-robin", "slots": 10000, "hash_on": "none",
                           "healthchecks": {"active": {"healthy": {"interval": 0}}}}]
        });
        let f = translate(&mut doc);
        assert!(f.errors.is_empty(), "{:?}", f.errors);
        assert_eq!(f.notes.len(), 1, "{:?}", f.notes);
        assert_eq!(f.notes[0].path, "services[0].routes[0].request_buffering");
        assert_eq!(doc["_format_version"], "1");
        assert_eq!(doc["certificates"][0]["snis"], json!(["a.example"]));
        assert!(doc["services"][0]["plugins"][0]["config"]
            .get("max_age")
            .is_none());
        assert!(doc["services"][0]["routes"][0]
            .get("path_handling")
            .is_none());
        assert!(doc["upstreams"][0].get("slots").is_none());
    }

    #[test]
    fn refuses_what_would_widen_a_route_or_plugin() {
        let mut doc = json!({
            "_format_version": "3.0",
            "routes": [{"name": "r", "snis": ["a.example"], "sources": [{"ip": "10.0.0.0/8"}],
                        "protocols": ["tcp"]}],
            "plugins": [{"name": "request-termination", "protocols": ["grpc"]}],
            "vaults": [{"name": "env"}]
        });
        let f = translate(&mut doc);
        let paths: Vec<&str> = f.errors.iter().map(|e| e.path.as_str()).collect();
        for p in [
            "routes[0].snis",
            "routes[0].sources",
            "routes[0].protocols[0]",
            "plugins[0].protocols",
            "vaults",
        ] {
            assert!(paths.contains(&p), "{p} in {paths:?}");
        }
    }
}
