use super::*;

const GOOD: &str = r#"_format_version: "1"
services:
  - name: orders
    url: http://127.0.0.1:9001/v1
    routes:
      - name: orders-api
        paths: ["/orders", "=/exact", "~/items/(?P<id>\\d+)$"]
        methods: [GET, POST]
        hosts: ["api.example.com", "*.example.org"]
        headers: { x-version: ["2", "~^3\\."] }
  - name: pooled
    upstream: pool
routes:
  - name: top
    service: pooled
    paths: ["/users/{id}/orders"]
upstreams:
  - name: pool
    targets:
      - target: 127.0.0.1:9002
      - target: "[::1]:9003"
        weight: 5
consumers:
  - username: alice
"#;

#[test]
fn good_document_flattens_with_stable_ids() {
    let a = parse_document(GOOD, &NoPlugins).unwrap();
    let b = parse_document(GOOD, &NoPlugins).unwrap();
    assert_eq!(a, b, "ids must be deterministic");
    assert_eq!(a.services.len(), 2);
    assert_eq!(a.routes.len(), 2);
    assert!(a.services.iter().all(|s| s.routes.is_empty()));
    let orders = &a.services[0];
    assert_eq!(
        a.routes[0].service.as_deref(),
        Some(orders.id.to_string().as_str())
    );
    assert_eq!(
        a.services[1].upstream.as_deref(),
        Some(a.upstreams[0].id.to_string().as_str())
    );
    let doc = to_document(&a);
    assert_eq!(doc.routes[1].service.as_deref(), Some("pooled"));
}

#[test]
fn errors_name_entity_path_line_and_column() {
    let text = "_format_version: \"1\"\nservices:\n  - name: a\n    url: ftp://x\n    routes:\n      - paths: [\"nope\"]\n";
    let e = parse_document(text, &NoPlugins).unwrap_err();
    assert_eq!(e.errors.len(), 2, "{e}");
    let url = &e.errors[0];
    assert_eq!(url.entity, "service 'a'");
    assert_eq!(url.path, "services[0].url");
    assert_eq!((url.line, url.column), (Some(4), Some(10)));
    let p = &e.errors[1];
    assert_eq!(p.path, "services[0].routes[0].paths[0]");
    assert_eq!(p.line, Some(6));
    assert!(p.message.contains("must start with `/`"), "{p}");
}

#[test]
fn type_errors_from_every_entity_are_collected() {
    let text = "_format_version: \"1\"\nservices:\n  - name: a\n    urll: http://x\n  - name: b\n    retries: many\nbogus: 1\n";
    let e = parse_document(text, &NoPlugins).unwrap_err();
    assert_eq!(e.errors.len(), 5, "{e}");
    assert!(e.errors[0].message.contains("unknown field `urll`"), "{e}");
    assert_eq!(e.errors[0].line, Some(4), "{e}");
    assert_eq!(e.errors[1].path, "services[1].retries");
    assert_eq!(e.errors[1].line, Some(6));
    assert_eq!(e.errors[2].path, "bogus");
    // Validation still ran on what could be read: neither service has a `url`.
    assert_eq!(e.errors[3].path, "services[0].url");
    assert_eq!(e.errors[4].path, "services[1].url");
}

#[test]
fn one_run_reports_type_and_validation_errors_together() {
    // A bad timeout, an unknown plugin, a duplicate name and a route to a missing service.
    let text = "_format_version: \"1\"\nservices:\n  - name: a\n    url: http://h\n    read_timeout: soon\n  - name: a\n    url: http://h\nroutes:\n  - { name: r, service: nowhere, paths: [\"/\"] }\nplugins:\n  - name: no-such-plugin\n";
    let e = parse_document(text, &NoPlugins).unwrap_err();
    let paths: Vec<&str> = e.errors.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.contains(&"services[0].read_timeout"), "{e}");
    assert!(paths.contains(&"services[1].name"), "{e}");
    assert!(paths.contains(&"routes[0].service"), "{e}");
    assert!(paths.iter().any(|p| p.starts_with("plugins[0]")), "{e}");
    assert!(e.errors.len() >= 4, "{e}");
}

#[test]
fn references_and_uniqueness() {
    let text = r#"_format_version: "1"
services:
  - { name: a, url: "http://h" }
  - { name: a, upstream: missing }
routes:
  - { service: nope, paths: ["/x"] }
  - { service: a }
plugins:
  - name: key-auth
"#;
    let e = parse_document(text, &NoPlugins).unwrap_err();
    let msgs: Vec<String> = e.errors.iter().map(|e| e.to_string()).collect();
    let all = msgs.join("\n");
    assert!(
        all.contains("services[1].name: name `a` is already used"),
        "{all}"
    );
    assert!(all.contains("no upstream named `missing`"), "{all}");
    assert!(
        all.contains("routes[0].service: no service named `nope`"),
        "{all}"
    );
    assert!(
        all.contains("routes[1].paths: a route needs at least one of"),
        "{all}"
    );
    assert!(all.contains("unknown plugin `key-auth`"), "{all}");
}

#[test]
fn syntax_error_is_located() {
    let e = parse_document("_format_version: \"1\"\nservices: [\n", &NoPlugins).unwrap_err();
    assert!(e.errors[0].message.starts_with("syntax error"));
    assert!(e.errors[0].line.is_some());
}

#[test]
fn json_schema_has_all_entities() {
    let s = schema::json_schema();
    for k in [
        "Config",
        "Service",
        "Route",
        "Upstream",
        "Target",
        "Consumer",
        "Plugin",
        "Certificate",
    ] {
        assert!(s["$defs"][k].is_object(), "missing {k}");
    }
    assert!(!s.to_string().contains("#/components/"));
}

#[test]
fn service_url_parsing() {
    use validate::parse_service_url;
    let u = parse_service_url("http://[::1]:8080/base/").unwrap();
    assert_eq!(
        (u.host.as_str(), u.port, u.path.as_str()),
        ("::1", 8080, "/base")
    );
    assert_eq!(parse_service_url("http://example.com").unwrap().port, 80);
    assert!(parse_service_url("http://h:0").is_err());
    let u = parse_service_url("https://h").unwrap();
    assert_eq!((u.protocol, u.port), (crate::ServiceProtocol::Https, 443));
    assert_eq!(
        parse_service_url("grpcs://h:50051").unwrap().protocol,
        crate::ServiceProtocol::Grpcs
    );
    assert!(parse_service_url("ftp://h")
        .unwrap_err()
        .contains("must start with http://"));
    assert!(parse_service_url("http://u@h").is_err());
}

#[test]
fn kong_split_form_becomes_url_or_upstream() {
    let doc = "_format_version: \"1\"\nupstreams:\n  - name: pool\n    targets: [{ target: \"127.0.0.1:1\" }]\nservices:\n  - name: a\n    protocol: https\n    host: api.example.com\n    path: /v1\n  - name: b\n    host: pool\n    path: /x\n  - name: c\n    url: http://h\n    host: other\n";
    let e = parse_document(doc, &NoPlugins).unwrap_err();
    assert_eq!(e.errors.len(), 1, "{e}");
    assert_eq!(e.errors[0].path, "services[2].host");
    let ok = doc.split("  - name: c").next().unwrap();
    let cfg = parse_document(ok, &NoPlugins).unwrap();
    assert_eq!(
        cfg.services[0].url.as_deref(),
        Some("https://api.example.com:443/v1")
    );
    assert_eq!(
        cfg.services[1].upstream,
        Some(cfg.upstreams[0].id.to_string())
    );
    assert_eq!(cfg.services[1].path.as_deref(), Some("/x"));
}

#[test]
fn whole_floats_read_as_integers_across_the_u64_range() {
    let mut v = serde_json::json!([
        2.0,
        9007199254740992.0,
        -9007199254740993.0,
        1.8e19,
        2.5,
        3e19
    ]);
    crate::whole_numbers(&mut v);
    assert_eq!(v[0], serde_json::json!(2));
    assert_eq!(v[1], serde_json::json!(9007199254740992u64));
    assert!(v[2].is_i64());
    assert_eq!(v[3], serde_json::json!(18000000000000000000u64));
    assert!(v[4].is_f64(), "a fraction stays a float");
    assert!(
        v[5].is_f64(),
        "beyond u64 stays a float (and is refused as too large)"
    );
}
