//! The admin API through the real binary (embedded SQLite mode unless said otherwise).

mod common;

use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn crud_takes_effect_at_once_and_persists() {
    let up = Upstream::start("a");
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in(&bin(), dir.path(), &[]);
    assert!(
        dir.path().join("gatehouse.db").exists(),
        "SQLite store created in the data dir"
    );

    let svc = gw
        .admin_ok(
            "POST",
            "/services",
            json!({"name": "orders", "url": up.url()}),
        )
        .await;
    assert!(svc["id"].as_str().unwrap().len() == 36);
    let route = gw
        .admin_ok(
            "POST",
            "/services/orders/routes",
            json!({"name": "orders-api", "paths": ["/orders"]}),
        )
        .await;
    assert_eq!(route["service"], svc["id"]);
    let r = get(&gw.proxy, "/orders/1").await;
    assert_eq!(
        r.status, 200,
        "a write takes effect before the admin call returns"
    );
    assert_eq!(r.json()["path"], "/1");

    // Read by id and by name; list; nested list.
    let by_name = gw.admin_ok("GET", "/routes/orders-api", Value::Null).await;
    let by_id = gw
        .admin_ok(
            "GET",
            &format!("/routes/{}", route["id"].as_str().unwrap()),
            Value::Null,
        )
        .await;
    assert_eq!(by_name, by_id);
    let list = gw
        .admin_ok("GET", "/services/orders/routes", Value::Null)
        .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);

    // PATCH merges; PUT replaces/creates.
    let patched = gw
        .admin_ok("PATCH", "/routes/orders-api", json!({"strip_path": false}))
        .await;
    assert_eq!(patched["paths"], json!(["/orders"]));
    assert_eq!(
        get(&gw.proxy, "/orders/1").await.json()["path"],
        "/orders/1"
    );
    let r = gw
        .admin(
            "PUT",
            "/services/billing",
            &json!({"url": up.url()}).to_string(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["name"], "billing");
    let r = gw
        .admin(
            "PUT",
            "/services/billing",
            &json!({"url": format!("{}/v2", up.url())}).to_string(),
        )
        .await;
    assert_eq!(r.status, 200);

    // Upstreams and targets.
    gw.admin_ok("POST", "/upstreams", json!({"name": "pool"}))
        .await;
    gw.admin_ok(
        "POST",
        "/upstreams/pool/targets",
        json!({"target": up.addr.to_string(), "weight": 10}),
    )
    .await;
    let t = gw
        .admin_ok("GET", "/upstreams/pool/targets", Value::Null)
        .await;
    assert_eq!(t["data"][0]["weight"], 10);
    gw.admin_ok(
        "PATCH",
        "/services/billing",
        json!({"url": null, "upstream": "pool"}),
    )
    .await;
    gw.admin_ok(
        "POST",
        "/routes",
        json!({"service": "billing", "paths": ["/bill"]}),
    )
    .await;
    assert_eq!(get(&gw.proxy, "/bill/x").await.status, 200);
    let r = gw.admin("DELETE", "/upstreams/pool", "").await;
    assert_eq!(
        r.status,
        409,
        "an upstream in use cannot be deleted: {}",
        r.text()
    );
    let tgt = up.addr.to_string();
    let r = gw
        .admin("DELETE", &format!("/upstreams/pool/targets/{tgt}"), "")
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(get(&gw.proxy, "/bill/x").await.status, 503);

    // Delete: a service with routes is refused, the route goes first.
    assert_eq!(gw.admin("DELETE", "/services/orders", "").await.status, 409);
    assert_eq!(
        gw.admin("DELETE", "/routes/orders-api", "").await.status,
        204
    );
    assert_eq!(gw.admin("DELETE", "/services/orders", "").await.status, 204);
    assert_eq!(get(&gw.proxy, "/orders/1").await.status, 404);
    assert_eq!(gw.admin("GET", "/services/orders", "").await.status, 404);

    // Consumers and certificates round-trip.
    gw.admin_ok(
        "POST",
        "/consumers",
        json!({"username": "alice", "custom_id": "a-1"}),
    )
    .await;
    assert_eq!(
        gw.admin_ok("GET", "/consumers/alice", Value::Null).await["custom_id"],
        "a-1"
    );

    // Restart on the same data dir: everything is still there.
    drop(gw);
    let gw = Gateway::start_in(&bin(), dir.path(), &[]);
    assert_eq!(get(&gw.proxy, "/bill/x").await.status, 503);
    let svcs = gw.admin_ok("GET", "/services", Value::Null).await;
    assert_eq!(svcs["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        gw.admin_ok("GET", "/consumers/alice", Value::Null).await["username"],
        "alice"
    );
}

#[tokio::test]
async fn errors_name_the_field_and_change_nothing() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&bin(), &[]);
    gw.admin_ok(
        "POST",
        "/services",
        json!({"name": "s", "url": up.url(), "routes": [{"name": "r", "paths": ["/s"]}]}),
    )
    .await;
    let cases = [
        (
            "POST",
            "/routes",
            json!({"service": "s", "paths": ["nope"]}),
            "paths[0]",
        ),
        (
            "POST",
            "/routes",
            json!({"service": "missing", "paths": ["/x"]}),
            "service",
        ),
        (
            "POST",
            "/routes",
            json!({"service": "s", "pathz": ["/x"]}),
            "pathz",
        ),
        (
            "POST",
            "/services",
            json!({"name": "s", "url": up.url()}),
            "name",
        ),
        (
            "POST",
            "/services",
            json!({"name": "t", "url": "ftp://x"}),
            "url",
        ),
        (
            "POST",
            "/services",
            json!({"name": "t", "url": up.url(), "read_timeout": "soon"}),
            "read_timeout",
        ),
        (
            "POST",
            "/plugins",
            json!({"name": "no-such-plugin"}),
            "name",
        ),
        (
            "PATCH",
            "/routes/r",
            json!({"methods": ["get"]}),
            "methods[0]",
        ),
    ];
    for (method, path, body, field) in cases {
        let r = gw.admin(method, path, &body.to_string()).await;
        // A name another entity has is a conflict (409, as in Kong); a body that does not
        // fit the schema (unknown field, wrong type) is 400; one that fits but breaks a
        // rule is 422.
        let (status, code) = if body["name"] == "s" {
            (409, "conflict")
        } else if body.get("pathz").is_some() || body.get("read_timeout").is_some() {
            (400, "invalid_config")
        } else {
            (422, "invalid_config")
        };
        assert_eq!(r.status, status, "{method} {path} {body}: {}", r.text());
        let j = r.json();
        assert_eq!(j["error"]["code"], code);
        assert!(!j["error"]["request_id"].as_str().unwrap().is_empty());
        let details = j["error"]["details"].as_array().unwrap();
        assert!(
            details
                .iter()
                .any(|d| d["path"].as_str().unwrap().ends_with(field)),
            "{field} not named in {j}"
        );
    }
    let r = gw.admin("POST", "/routes", "{not json").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "bad_json");
    // Nothing changed.
    let routes = gw.admin_ok("GET", "/routes", Value::Null).await;
    assert_eq!(routes["data"].as_array().unwrap().len(), 1);
    assert_eq!(get(&gw.proxy, "/s").await.status, 200);
    let r = gw.admin("GET", "/no/such/endpoint", "").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "not_found");
}

#[tokio::test]
async fn admin_token_is_generated_once_and_stored_hashed() {
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        std::process::Command::new(bin())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--status-listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir.path())
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let stop = |child: std::process::Child| {
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let _ = std::process::Command::new("kill")
            .arg(child.id().to_string())
            .status();
        String::from_utf8_lossy(&child.wait_with_output().unwrap().stderr).into_owned()
    };
    let log = stop(start());
    let token = log
        .split("Authorization: Bearer ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no token printed: {log}"))
        .to_string();
    assert!(token.len() >= 32);
    let mut stored = Vec::new();
    for f in ["gatehouse.db", "gatehouse.db-wal"] {
        stored.extend(std::fs::read(dir.path().join(f)).unwrap_or_default());
    }
    assert!(!stored.is_empty());
    assert!(
        !stored.windows(token.len()).any(|w| w == token.as_bytes()),
        "the token is not stored in clear"
    );

    // Second start: no new token is printed, and the first one works.
    let log2 = stop(start());
    assert!(
        !log2.contains("Authorization: Bearer"),
        "token printed again: {log2}"
    );
    let mut gw = Gateway::start_with_token(&bin(), dir.path(), &[], None);
    gw.token = token;
    assert_eq!(gw.admin("GET", "/status", "").await.status, 200);
    assert!(!gw.log_text().contains("Authorization: Bearer"));
}

#[tokio::test]
async fn auth_headers() {
    let gw = Gateway::start(&bin(), &[]);
    for headers in [
        vec![],
        vec![("authorization", "Bearer wrong-token-value")],
        vec![("gatehouse-admin-token", "nope")],
    ] {
        let r = request(&gw.admin, "GET", "/services", &headers, "")
            .await
            .unwrap();
        assert_eq!(r.status, 401);
        assert_eq!(r.json()["error"]["code"], "unauthorized");
        assert!(r.header("x-request-id").is_some());
    }
    let t = gw.token.clone();
    let r = request(
        &gw.admin,
        "GET",
        "/services",
        &[("gatehouse-admin-token", &t)],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let r = request(&gw.admin, "GET", "/openapi.json", &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, 401, "even the OpenAPI document needs the token");
}

#[tokio::test]
async fn openapi_lists_every_route_and_every_route_exists() {
    let gw = Gateway::start(&bin(), &[]);
    let doc = gw.admin_ok("GET", "/openapi.json", Value::Null).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    // The documented endpoint list (docs/admin-api.md) must match the OpenAPI document.
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/admin-api.md"
    ))
    .unwrap();
    let mut documented = std::collections::BTreeSet::new();
    for line in docs.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() > 3 && ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&cells[1]) {
            documented.insert((
                cells[1].to_lowercase(),
                cells[2].trim_matches('`').to_string(),
            ));
        }
    }
    let mut in_spec = std::collections::BTreeSet::new();
    for (p, ops) in paths {
        for m in ops.as_object().unwrap().keys() {
            in_spec.insert((m.clone(), p.clone()));
        }
    }
    assert_eq!(
        documented, in_spec,
        "docs/admin-api.md and /openapi.json disagree"
    );
    // Every operation in the document is served (not the router's 404 fallback).
    for (m, p) in &in_spec {
        let concrete = p
            .replace("{service}", "x")
            .replace("{route}", "x")
            .replace("{upstream}", "x")
            .replace("{consumer}", "x")
            .replace("{plugin}", "x")
            .replace("{certificate}", "x")
            .replace("{ai_provider}", "x")
            .replace("{ai_model}", "x")
            .replace("{target}", "x")
            .replace("{key}", "x")
            .replace("{id}", "x");
        let r = gw.admin(&m.to_uppercase(), &concrete, "{}").await;
        assert!(
            !(r.status == 404 && r.text().contains("no such admin endpoint")),
            "{m} {p} is documented but not served"
        );
        assert_ne!(
            r.status, 405,
            "{m} {p} is documented but the method is not served"
        );
    }
    assert!(doc["components"]["schemas"]["Route"].is_object());
    for p in ["key-auth", "rate-limiting", "jwt", "request-transformer"] {
        assert!(
            doc["components"]["schemas"][format!("PluginConfig.{p}")].is_object(),
            "{p} config schema in the OpenAPI document"
        );
    }
}

#[tokio::test]
async fn config_dump_and_replace() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&bin(), &[]);
    let doc = format!(
        "_format_version: \"1\"\nservices:\n  - name: s1\n    url: {}\n    routes:\n      - name: r1\n        paths: [\"/one\"]\n",
        up.url()
    );
    let r = request(
        &gw.admin,
        "POST",
        "/config",
        &[("authorization", &format!("Bearer {}", gw.token))],
        &doc,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["entities"]["routes"], 1);
    assert_eq!(get(&gw.proxy, "/one").await.status, 200);
    let yaml = gw.admin("GET", "/config", "").await;
    assert_eq!(
        yaml.header("content-type").as_deref(),
        Some("application/yaml")
    );
    assert!(yaml.text().contains("name: r1"), "{}", yaml.text());
    assert!(
        yaml.text().contains("service: s1"),
        "references by name: {}",
        yaml.text()
    );
    let json = gw.admin_ok("GET", "/config?format=json", Value::Null).await;
    assert_eq!(json["_format_version"], "1");
    // The dump is itself a valid document: posting it back changes nothing.
    let r = request(
        &gw.admin,
        "POST",
        "/config",
        &[("authorization", &format!("Bearer {}", gw.token))],
        &yaml.text(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(get(&gw.proxy, "/one").await.status, 200);
    // A bad document is rejected whole with line numbers; the running config stays.
    let bad = "_format_version: \"1\"\nservices:\n  - name: s2\n    url: nope\n";
    let r = request(
        &gw.admin,
        "POST",
        "/config",
        &[("authorization", &format!("Bearer {}", gw.token))],
        bad,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 422);
    let d = &r.json()["error"]["details"][0];
    assert_eq!(d["path"], "services[0].url");
    assert_eq!(d["line"], 4);
    assert_eq!(get(&gw.proxy, "/one").await.status, 200);
    let st = gw.admin_ok("GET", "/status", Value::Null).await;
    assert_eq!(st["store"], "sqlite");
    assert_eq!(st["entities"]["services"], 1);
    let schema = gw.admin_ok("GET", "/schemas/config", Value::Null).await;
    assert!(schema["$defs"]["Route"].is_object());
}

#[tokio::test]
async fn declarative_mode_is_read_only_except_post_config() {
    let up = Upstream::start("a");
    let dir = tempfile::tempdir().unwrap();
    let gw = start_with_config(
        dir.path(),
        &format!(
            "_format_version: \"1\"\nservices:\n  - url: {}\n    routes: [{{ paths: [\"/\"] }}]\n",
            up.url()
        ),
        &[],
    );
    let r = gw
        .admin("POST", "/services", &json!({"url": up.url()}).to_string())
        .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.json()["error"]["code"], "read_only");
    let st = gw.admin_ok("GET", "/status", Value::Null).await;
    assert_eq!(st["store"], "file");
    assert_eq!(st["read_only"], true);
    let doc = format!("_format_version: \"1\"\nservices:\n  - url: {}\n    routes: [{{ paths: [\"/posted\"] }}]\n", up.url());
    let r = request(
        &gw.admin,
        "POST",
        "/config",
        &[("authorization", &format!("Bearer {}", gw.token))],
        &doc,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(get(&gw.proxy, "/posted").await.status, 200);
    assert_eq!(get(&gw.proxy, "/other").await.status, 404);
}

/// Reads show every field, unset ones with their default (as Kong's do), and what a read
/// shows can be PUT back unchanged — for every kind, and for credentials.
#[tokio::test]
async fn reads_show_every_field_and_put_back() {
    let gw = Gateway::start(&bin(), &[]);
    let up = gw
        .admin_ok(
            "POST",
            "/upstreams",
            json!({"name": "pool", "targets": [{"target": "127.0.0.1:9"}]}),
        )
        .await;
    assert_eq!(up["algorithm"], "round-robin");
    assert_eq!(up["targets"][0]["weight"], 100);
    let svc = gw
        .admin_ok(
            "POST",
            "/services",
            json!({"name": "orders", "url": "http://127.0.0.1:9"}),
        )
        .await;
    for (field, want) in [
        ("connect_timeout", json!(60000)),
        ("retries", json!(5)),
        ("enabled", json!(true)),
        ("upstream", Value::Null),
        ("tls_verify", Value::Null),
        ("ca_certificates", json!([])),
        ("tags", json!([])),
    ] {
        assert_eq!(svc[field], want, "service field {field}: {svc}");
    }
    assert!(
        svc.get("routes").is_none(),
        "nested-only fields stay out: {svc}"
    );
    let route = gw
        .admin_ok(
            "POST",
            "/routes",
            json!({"name": "r", "service": "orders", "paths": ["/o"]}),
        )
        .await;
    for (field, want) in [
        ("strip_path", json!(true)),
        ("preserve_host", json!(false)),
        ("websocket", json!(false)),
        ("priority", json!(0)),
        ("regex_priority", json!(0)),
        ("hosts", json!([])),
        ("headers", json!({})),
        ("https_redirect_status_code", Value::Null),
    ] {
        assert_eq!(route[field], want, "route field {field}: {route}");
    }
    let consumer = gw
        .admin_ok("POST", "/consumers", json!({"username": "bob"}))
        .await;
    assert_eq!(consumer["custom_id"], Value::Null);
    let plugin = gw
        .admin_ok("POST", "/plugins", json!({"name": "correlation-id"}))
        .await;
    assert_eq!(plugin["enabled"], true, "{plugin}");
    assert_eq!(plugin["service"], Value::Null, "{plugin}");
    // A plugin's config shows every field of the plugin, defaults filled in, as Kong's.
    let limit = gw
        .admin_ok(
            "POST",
            "/plugins",
            json!({"name": "rate-limiting", "config": {"minute": 5}}),
        )
        .await;
    for (field, want) in [
        ("minute", json!(5)),
        ("hour", Value::Null),
        ("policy", json!("local")),
        ("limit_by", json!("consumer")),
        ("error_code", json!(429)),
    ] {
        assert_eq!(
            limit["config"][field], want,
            "rate-limiting config {field}: {limit}"
        );
    }
    let key_auth = gw
        .admin_ok("POST", "/plugins", json!({"name": "key-auth"}))
        .await;
    assert_eq!(
        key_auth["config"]["key_names"],
        json!(["apikey"]),
        "{key_auth}"
    );
    let cred = gw
        .admin_ok(
            "POST",
            "/consumers/bob/hmac-auth",
            json!({"username": "bob-h", "secret": "0123456789abcdef"}),
        )
        .await;
    assert_eq!(cred["tags"], json!([]));

    for path in [
        format!("/upstreams/{}", up["id"].as_str().unwrap()),
        format!("/services/{}", svc["id"].as_str().unwrap()),
        format!("/routes/{}", route["id"].as_str().unwrap()),
        format!("/consumers/{}", consumer["id"].as_str().unwrap()),
        format!("/plugins/{}", plugin["id"].as_str().unwrap()),
        format!("/plugins/{}", limit["id"].as_str().unwrap()),
        format!("/plugins/{}", key_auth["id"].as_str().unwrap()),
    ] {
        let read = gw.admin_ok("GET", &path, Value::Null).await;
        let put = gw.admin_ok("PUT", &path, read.clone()).await;
        let mut a = read.clone();
        let mut b = put.clone();
        for v in [&mut a, &mut b] {
            v.as_object_mut().unwrap().remove("updated_at");
        }
        assert_eq!(a, b, "PUT {path} of its own read changed it");
    }
}

/// The statuses the OpenAPI document promises for bodies: 400 when a body does not fit
/// its schema (or is missing), 422 when it fits but breaks a rule the schema cannot state,
/// 409 for a name or id that is taken or an id that would change, 415 for other media.
#[tokio::test]
async fn body_statuses_follow_the_document() {
    let gw = Gateway::start(&bin(), &[]);
    gw.admin_ok(
        "POST",
        "/services",
        json!({"name": "a", "url": "http://127.0.0.1:9"}),
    )
    .await;
    // Credential ids are unique across consumers and kinds.
    for user in ["ann", "bo"] {
        gw.admin_ok("POST", "/consumers", json!({"username": user}))
            .await;
    }
    let cid = "00000000-0000-4000-8000-0000000000c1";
    gw.admin_ok(
        "POST",
        "/consumers/ann/acls",
        json!({"id": cid, "group": "g"}),
    )
    .await;
    let twin = format!(r#"{{"id": "{cid}", "username": "bo-h", "secret": "0123456789abcdef"}}"#);
    let cases: Vec<(&str, &str, &str, u16, &str)> = vec![
        ("POST", "/consumers/bo/hmac-auth", &twin, 409, "conflict"),
        (
            "POST",
            "/services",
            r#"{"name": "b", "url": 5}"#,
            400,
            "invalid_config",
        ),
        (
            "POST",
            "/services",
            r#"{"name": "b", "nope": 1}"#,
            400,
            "invalid_config",
        ),
        ("POST", "/services", "{", 400, "bad_json"),
        ("POST", "/services", "", 400, "bad_request"),
        ("PATCH", "/services/a", "", 400, "bad_request"),
        ("PATCH", "/services/a", "[1]", 400, "invalid_config"),
        (
            "POST",
            "/services",
            r#"{"name": "b", "upstream": "missing"}"#,
            422,
            "invalid_config",
        ),
        (
            "POST",
            "/routes",
            r#"{"service": "missing", "paths": ["/x"]}"#,
            422,
            "invalid_config",
        ),
        (
            "POST",
            "/routes",
            r#"{"service": "a", "paths": ["~/x("]}"#,
            422,
            "invalid_config",
        ),
        (
            "POST",
            "/services",
            r#"{"name": "a", "url": "http://127.0.0.1:9"}"#,
            409,
            "conflict",
        ),
        (
            "PUT",
            "/services/c",
            r#"{"name": "d", "url": "http://127.0.0.1:9"}"#,
            409,
            "conflict",
        ),
        (
            "PATCH",
            "/services/a",
            r#"{"id": "00000000-0000-0000-0000-000000000001"}"#,
            409,
            "conflict",
        ),
        ("POST", "/config", "", 400, "bad_request"),
        ("POST", "/config", "services: [", 400, "invalid_config"),
        (
            "POST",
            "/config",
            "_format_version: \"1\"\nservices: [{name: x}]\n",
            422,
            "invalid_config",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let r = gw.admin(method, path, body).await;
        assert_eq!(r.status, status, "{method} {path} {body:?}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], code, "{method} {path} {body:?}");
        assert!(!r.json()["error"]["request_id"].as_str().unwrap().is_empty());
    }
    let auth = format!("Bearer {}", gw.token);
    let r = request(
        &gw.admin,
        "POST",
        "/config",
        &[("authorization", &auth), ("content-type", "text/html")],
        "_format_version: \"1\"\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 415, "{}", r.text());
    // Nothing of the refused writes stayed.
    let list = gw.admin_ok("GET", "/services", Value::Null).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
}
