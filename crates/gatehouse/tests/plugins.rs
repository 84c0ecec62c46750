//! The plugin pipeline and the first plugins, through the real binary.

mod common;

use common::*;
use serde_json::{json, Value};

fn setup(yaml_body: &str, extra: &[&str]) -> (tempfile::TempDir, Gateway) {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!("_format_version: \"1\"\n{yaml_body}");
    let gw = start_with_config(dir.path(), &yaml, extra);
    (dir, gw)
}

fn err_code(r: &gatehouse_testkit::Reply) -> String {
    let j = r.json();
    assert_eq!(
        j["error"]["request_id"].as_str(),
        r.header("x-request-id").as_deref(),
        "common error shape"
    );
    j["error"]["code"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn key_auth_identifies_consumers_and_consumer_scoped_plugins_apply() {
    let up = Upstream::start("a");
    let (_d, gw) = setup(
        &format!(
            r#"services:
  - name: s
    url: {}
    routes:
      - name: private
        paths: ["/private"]
        plugins:
          - name: key-auth
      - name: hidden
        paths: ["/hidden"]
        plugins:
          - name: key-auth
            config: {{ hide_credentials: true, key_names: [apikey, x-api-key] }}
      - name: open
        paths: ["/open"]
        plugins:
          - name: key-auth
            config: {{ anonymous: guest }}
consumers:
  - username: alice
    custom_id: crm-1
    keyauth_credentials: [{{ key: alice-secret-key }}]
  - username: bob
    keyauth_credentials: [{{ key: bob-secret-key }}]
    plugins:
      - name: request-termination
        config: {{ status_code: 403, message: "bob is suspended" }}
  - username: guest
"#,
            up.url()
        ),
        &[],
    );
    // No key, wrong key: the same 401, no hint whether a consumer exists.
    let r = get(&gw.proxy, "/private").await;
    assert_eq!(r.status, 401);
    assert_eq!(err_code(&r), "unauthorized");
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some("Key realm=\"gatehouse\"")
    );
    let r = request(&gw.proxy, "GET", "/private", &[("apikey", "nope")], "")
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(up.hits(), 0);

    // A valid key: the upstream learns who it is; forged identity headers are replaced.
    let r = request(
        &gw.proxy,
        "GET",
        "/private",
        &[
            ("apikey", "alice-secret-key"),
            ("x-consumer-username", "admin"),
        ],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let h = &r.json()["headers"];
    assert_eq!(h["x-consumer-username"], json!(["alice"]));
    assert_eq!(h["x-consumer-custom-id"], json!(["crm-1"]));
    assert!(h["x-consumer-id"][0].as_str().unwrap().len() == 36);
    assert!(h["x-credential-identifier"][0].as_str().unwrap().len() == 36);
    assert_eq!(
        h["apikey"],
        json!(["alice-secret-key"]),
        "not hidden unless asked"
    );

    // Query string, and hide_credentials.
    let r = get(&gw.proxy, "/private?apikey=alice-secret-key&x=1").await;
    assert_eq!(r.status, 200);
    let r = get(&gw.proxy, "/hidden?x=1&apikey=alice-secret-key").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["query"], "x=1", "key removed from the query");
    let r = request(
        &gw.proxy,
        "GET",
        "/hidden",
        &[("x-api-key", "alice-secret-key")],
        "",
    )
    .await
    .unwrap();
    assert!(
        r.json()["headers"].get("x-api-key").is_none(),
        "key header removed"
    );

    // Consumer-scoped plugin: bob authenticates, then his own chain answers.
    let r = request(
        &gw.proxy,
        "GET",
        "/private",
        &[("apikey", "bob-secret-key")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(err_code(&r), "terminated");
    assert!(r.text().contains("bob is suspended"));

    // Anonymous fallback.
    let r = get(&gw.proxy, "/open").await;
    assert_eq!(r.status, 200);
    let h = &r.json()["headers"];
    assert_eq!(h["x-consumer-username"], json!(["guest"]));
    assert_eq!(h["x-anonymous-consumer"], json!(["true"]));
}

#[tokio::test]
async fn keys_are_never_stored_in_clear() {
    let up = Upstream::start("a");
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in(&bin(), dir.path(), &[]);
    gw.admin_ok(
        "POST",
        "/services",
        json!({"name": "s", "url": up.url(), "routes": [{"paths": ["/"]}]}),
    )
    .await;
    gw.admin_ok("POST", "/plugins", json!({"name": "key-auth"}))
        .await;
    let c = gw
        .admin_ok(
            "POST",
            "/consumers",
            json!({"username": "carol", "keyauth_credentials": [{"key": "carol-very-secret"}]}),
        )
        .await;
    assert!(c["keyauth_credentials"][0].get("key").is_none());
    assert_eq!(
        c["keyauth_credentials"][0]["key_hash"]
            .as_str()
            .unwrap()
            .len(),
        64
    );
    let r = request(
        &gw.proxy,
        "GET",
        "/",
        &[("apikey", "carol-very-secret")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert!(!gw
        .admin("GET", "/config", "")
        .await
        .text()
        .contains("carol-very-secret"));
    let mut stored = Vec::new();
    for f in ["gatehouse.db", "gatehouse.db-wal"] {
        stored.extend(std::fs::read(dir.path().join(f)).unwrap_or_default());
    }
    assert!(!stored.windows(17).any(|w| w == b"carol-very-secret"));
    // A duplicate key is refused, naming the field.
    let r = gw
        .admin(
            "POST",
            "/consumers",
            &json!({"username": "dave", "keyauth_credentials": [{"key": "carol-very-secret"}]})
                .to_string(),
        )
        .await;
    assert_eq!(r.status, 409, "a key another consumer has is a conflict");
    assert!(r.text().contains("keyauth_credentials[0]"), "{}", r.text());
}

#[tokio::test]
async fn ip_restriction_uses_the_real_client_address() {
    let up = Upstream::start("a");
    let (_d, gw) = setup(
        &format!(
            r#"services:
  - url: {}
    routes:
      - paths: ["/deny-local"]
        plugins: [{{ name: ip-restriction, config: {{ deny: ["127.0.0.0/8"] }} }}]
      - paths: ["/only-ten"]
        plugins: [{{ name: ip-restriction, config: {{ allow: ["10.0.0.0/8", "::1"], status: 401, message: "not from here" }} }}]
"#,
            up.url()
        ),
        &[],
    );
    let r = get(&gw.proxy, "/deny-local").await;
    assert_eq!(r.status, 403);
    assert_eq!(err_code(&r), "ip_forbidden");
    // A forged X-Forwarded-For from an untrusted peer does not help.
    let r = request(
        &gw.proxy,
        "GET",
        "/only-ten",
        &[("x-forwarded-for", "10.1.2.3")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 401);
    assert!(r.text().contains("not from here"));
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn ip_restriction_behind_a_trusted_proxy() {
    let up = Upstream::start("a");
    let (_d, gw) = setup(
        &format!("services:\n  - url: {}\n    routes:\n      - paths: [\"/\"]\n        plugins: [{{ name: ip-restriction, config: {{ allow: [\"10.0.0.0/8\"] }} }}]\n", up.url()),
        &["--trusted-proxies", "127.0.0.1,192.168.0.0/16"],
    );
    let ok = request(
        &gw.proxy,
        "GET",
        "/",
        &[("x-forwarded-for", "10.9.9.9, 192.168.1.1")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(ok.status, 200, "right-most untrusted hop is the client");
    let r = request(
        &gw.proxy,
        "GET",
        "/",
        &[("x-forwarded-for", "10.9.9.9, 8.8.8.8")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(
        r.status, 403,
        "8.8.8.8 is the client: an untrusted hop cannot be skipped"
    );
}

#[tokio::test]
async fn termination_size_limit_correlation_and_scope_precedence() {
    let up = Upstream::start("a");
    let (_d, gw) = setup(
        &format!(
            r#"services:
  - name: s
    url: {}
    plugins:
      - name: correlation-id
        config: {{ header_name: X-Service-Corr }}
    routes:
      - name: maint
        paths: ["/maint"]
        plugins:
          - name: request-termination
            config: {{ status_code: 503, body: "<h1>maintenance</h1>", content_type: text/html }}
      - name: small
        paths: ["/small"]
        plugins:
          - name: request-size-limiting
            config: {{ allowed_payload_size: 8, size_unit: bytes }}
      - name: corr
        paths: ["/corr"]
        plugins:
          - name: correlation-id
            config: {{ header_name: X-Route-Corr, generator: "uuid#counter", echo_downstream: true }}
      - name: plain
        paths: ["/plain"]
plugins:
  - name: correlation-id
    config: {{ header_name: X-Global-Corr }}
"#,
            up.url()
        ),
        &[],
    );
    let r = get(&gw.proxy, "/maint").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("content-type").as_deref(), Some("text/html"));
    assert_eq!(r.text(), "<h1>maintenance</h1>");
    assert!(r.header("x-request-id").is_some());

    let r = request(&gw.proxy, "POST", "/small", &[], "12345678")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let r = request(&gw.proxy, "POST", "/small", &[], "123456789")
        .await
        .unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(err_code(&r), "request_too_large");
    let (_, out, _) = curl(&[
        "-i",
        "-X",
        "POST",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        "123456789abc",
        &format!("http://{}/small", gw.proxy),
    ]);
    assert!(
        out.starts_with("HTTP/1.1 413"),
        "streamed bodies are counted too: {out}"
    );

    // Most specific instance wins: route over service over global.
    let r = get(&gw.proxy, "/corr").await;
    let h = &r.json()["headers"];
    assert!(
        h.get("x-route-corr").is_some()
            && h.get("x-service-corr").is_none()
            && h.get("x-global-corr").is_none(),
        "{h}"
    );
    assert!(
        r.header("x-route-corr").unwrap().contains('#'),
        "echoed downstream"
    );
    let h = get(&gw.proxy, "/plain").await.json()["headers"].clone();
    assert!(
        h.get("x-service-corr").is_some() && h.get("x-global-corr").is_none(),
        "{h}"
    );
    // A client-supplied id is kept.
    let r = request(
        &gw.proxy,
        "GET",
        "/plain",
        &[("x-service-corr", "given-1")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.json()["headers"]["x-service-corr"], json!(["given-1"]));
}

#[tokio::test]
async fn plugin_config_errors_name_the_field() {
    let gw = Gateway::start(&bin(), &[]);
    let cases = [
        (
            json!({"name": "ip-restriction", "config": {"allow": ["not-an-ip"]}}),
            "config.allow[0]",
        ),
        (
            json!({"name": "ip-restriction", "config": {"alow": []}}),
            "config.alow",
        ),
        (
            json!({"name": "key-auth", "config": {"key_names": []}}),
            "config.key_names",
        ),
        (
            json!({"name": "request-termination", "config": {"status_code": 99}}),
            "config.status_code",
        ),
        (
            json!({"name": "correlation-id", "config": {"header_name": "bad header"}}),
            "config.header_name",
        ),
        (
            json!({"name": "key-auth", "config": {"anonymous": "nobody"}}),
            "config",
        ),
    ];
    for (body, field) in cases {
        let r = gw.admin("POST", "/plugins", &body.to_string()).await;
        // Plugin settings are judged by the plugin: a rule the document cannot state.
        assert_eq!(r.status, 422, "{body}: {}", r.text());
        let details = r.json()["error"]["details"].clone();
        assert!(
            details
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["path"].as_str().unwrap().ends_with(field)),
            "{field} not in {details}"
        );
    }
    let schema: Value = serde_json::from_slice(
        &std::process::Command::new(bin())
            .arg("schema")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    for p in [
        "key-auth",
        "ip-restriction",
        "request-termination",
        "request-size-limiting",
        "correlation-id",
    ] {
        assert!(
            schema["$defs"][format!("plugin-config:{p}")].is_object(),
            "{p} schema missing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limiting_is_exact_under_concurrency_and_keeps_counters_across_reloads() {
    let up = Upstream::start("a");
    let dir = tempfile::tempdir().unwrap();
    let doc = |limit: u32, tag: &str| {
        format!(
            "_format_version: \"1\"\nservices:\n  - url: {}\n    tags: [\"{tag}\"]\n    routes:\n      - paths: [\"/\"]\n        plugins:\n          - name: rate-limiting\n            config: {{ day: {limit}, limit_by: ip }}\n",
            up.url()
        )
    };
    let gw = start_with_config(dir.path(), &doc(20, "a"), &["--workers", "2"]);
    let burst = |n: usize| {
        let proxy = gw.proxy.clone();
        async move {
            let tasks: Vec<_> = (0..n)
                .map(|i| {
                    let proxy = proxy.clone();
                    // Forged X-Forwarded-For from an untrusted peer must not split the counter.
                    tokio::spawn(async move {
                        request(
                            &proxy,
                            "GET",
                            "/",
                            &[("x-forwarded-for", &format!("10.0.0.{i}"))],
                            "",
                        )
                        .await
                        .unwrap()
                    })
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        }
    };
    let replies = burst(50).await;
    let ok: Vec<_> = replies.iter().filter(|r| r.status == 200).collect();
    let limited: Vec<_> = replies.iter().filter(|r| r.status == 429).collect();
    assert_eq!(
        (ok.len(), limited.len()),
        (20, 30),
        "exactly the limit passes"
    );
    let r = limited[0];
    assert_eq!(err_code(r), "rate_limited");
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(r.header("ratelimit-limit").as_deref(), Some("20"));
    assert_eq!(r.header("ratelimit-remaining").as_deref(), Some("0"));
    assert_eq!(r.header("x-ratelimit-limit-day").as_deref(), Some("20"));
    let mut remaining: Vec<u64> = ok
        .iter()
        .map(|r| r.header("ratelimit-remaining").unwrap().parse().unwrap())
        .collect();
    remaining.sort();
    assert_eq!(remaining, (0..20).collect::<Vec<u64>>());

    // A reload that leaves the plugin alone keeps the counters…
    let wait_version = |v: u64| {
        let gw = &gw;
        async move {
            for _ in 0..500 {
                if gw.admin_ok("GET", "/status", Value::Null).await["config_version"]
                    .as_u64()
                    .unwrap()
                    >= v
                {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            panic!("reload to version {v} not seen");
        }
    };
    std::fs::write(dir.path().join("gatehouse.yaml"), doc(20, "b")).unwrap();
    gw.signal("HUP");
    wait_version(2).await;
    assert_eq!(
        get(&gw.proxy, "/").await.status,
        429,
        "counters survived the reload"
    );
    // …a changed limit starts fresh counters.
    std::fs::write(dir.path().join("gatehouse.yaml"), doc(5, "b")).unwrap();
    gw.signal("HUP");
    wait_version(3).await;
    let statuses: Vec<u16> = burst(8).await.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn acl_and_per_consumer_limits() {
    let up = Upstream::start("a");
    let (_d, gw) = setup(
        &format!(
            r#"services:
  - url: {}
    routes:
      - name: gold
        paths: ["/gold"]
        plugins:
          - name: key-auth
          - name: acl
            config: {{ allow: [gold] }}
      - name: limited
        paths: ["/limited"]
        plugins:
          - name: key-auth
          - name: rate-limiting
            config: {{ hour: 2 }}
      - name: no-auth
        paths: ["/no-auth"]
        plugins:
          - name: acl
            config: {{ deny: [banned] }}
consumers:
  - username: alice
    keyauth_credentials: [{{ key: alice-key-0001 }}]
    acls: [{{ group: gold }}, {{ group: staff }}]
  - username: bob
    keyauth_credentials: [{{ key: bob-key-00001 }}]
"#,
            up.url()
        ),
        &[],
    );
    let r = request(
        &gw.proxy,
        "GET",
        "/gold",
        &[("apikey", "alice-key-0001"), ("x-consumer-groups", "admin")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["headers"]["x-consumer-groups"],
        json!(["gold, staff"])
    );
    let r = request(
        &gw.proxy,
        "GET",
        "/gold",
        &[("apikey", "bob-key-00001")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(err_code(&r), "forbidden");
    let r = get(&gw.proxy, "/no-auth").await;
    assert_eq!(r.status, 401, "acl without an authenticated consumer");

    // limit_by consumer: each consumer has its own counter.
    for key in ["alice-key-0001", "bob-key-00001"] {
        for i in 0..3 {
            let r = request(&gw.proxy, "GET", "/limited", &[("apikey", key)], "")
                .await
                .unwrap();
            assert_eq!(r.status, if i < 2 { 200 } else { 429 }, "{key} request {i}");
        }
    }
}

#[tokio::test]
async fn cors_preflight_at_the_gateway_and_headers_on_answers() {
    let up = Upstream::start("a");
    let (_d, gw) = setup(
        &format!(
            r#"services:
  - url: {}
    routes:
      - paths: ["/api"]
        plugins:
          - name: cors
            config: {{ origins: ["https://app.example.com", "~https://.*\\.example\\.org"], credentials: true, max_age: 600, exposed_headers: [X-Total] }}
          - name: key-auth
consumers:
  - username: alice
    keyauth_credentials: [{{ key: alice-key-0001 }}]
"#,
            up.url()
        ),
        &[],
    );
    let url = format!("http://{}/api/items", gw.proxy);
    let (ok, out, _) = curl(&[
        "-si",
        "-X",
        "OPTIONS",
        "-H",
        "Origin: https://app.example.com",
        "-H",
        "Access-Control-Request-Method: POST",
        "-H",
        "Access-Control-Request-Headers: apikey, content-type",
        &url,
    ]);
    assert!(ok);
    let lower = out.to_lowercase();
    assert!(
        lower.starts_with("http/1.1 204"),
        "preflight answered at the gateway without a key: {out}"
    );
    assert!(
        lower.contains("access-control-allow-origin: https://app.example.com"),
        "{out}"
    );
    assert!(
        lower.contains("access-control-allow-credentials: true"),
        "{out}"
    );
    assert!(
        lower.contains("access-control-allow-headers: apikey, content-type"),
        "{out}"
    );
    assert!(lower.contains("access-control-max-age: 600"), "{out}");
    assert_eq!(up.hits(), 0, "preflight never reaches the upstream");

    let (_, out, _) = curl(&[
        "-si",
        "-X",
        "OPTIONS",
        "-H",
        "Origin: https://evil.example.net",
        "-H",
        "Access-Control-Request-Method: POST",
        &url,
    ]);
    assert!(
        !out.to_lowercase().contains("access-control-allow-origin"),
        "unknown origin gets no grant: {out}"
    );
    // Issue 10, bug 8: the refusal depends on Origin too, so caches must key on it.
    assert!(out.to_lowercase().contains("vary: origin"), "{out}");
    let (_, out, _) = curl(&[
        "-si",
        "-H",
        "Origin: https://evil.example.net",
        "-H",
        "apikey: alice-key-0001",
        &url,
    ]);
    let lower = out.to_lowercase();
    assert!(
        lower.starts_with("http/1.1 200")
            && !lower.contains("access-control-allow-origin")
            && lower.contains("vary: origin"),
        "{out}"
    );

    // Actual requests: regex origin, exposed headers; early answers (401) carry CORS too.
    let (_, out, _) = curl(&[
        "-si",
        "-H",
        "Origin: https://shop.example.org",
        "-H",
        "apikey: alice-key-0001",
        &url,
    ]);
    let lower = out.to_lowercase();
    assert!(lower.starts_with("http/1.1 200"), "{out}");
    assert!(
        lower.contains("access-control-allow-origin: https://shop.example.org"),
        "{out}"
    );
    assert!(
        lower.contains("access-control-expose-headers: x-total"),
        "{out}"
    );
    assert!(lower.contains("vary: origin"), "{out}");
    let (_, out, _) = curl(&["-si", "-H", "Origin: https://app.example.com", &url]);
    let lower = out.to_lowercase();
    assert!(
        lower.starts_with("http/1.1 401")
            && lower.contains("access-control-allow-origin: https://app.example.com"),
        "{out}"
    );

    // Credentials with `*` is refused (browsers would refuse it anyway).
    let bad = _d.path().join("bad.yaml");
    std::fs::write(&bad, "_format_version: \"1\"\nplugins:\n  - name: cors\n    config: { origins: [\"*\"], credentials: true }\n").unwrap();
    let out = std::process::Command::new(bin())
        .arg("validate")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("plugins[0].config.credentials"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn file_log_writes_one_record_per_request_without_credentials() {
    let up = Upstream::start("a");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let yaml = format!(
        r#"_format_version: "1"
services:
  - name: svc
    url: {}
    routes:
      - name: private
        paths: ["/private"]
        plugins: [{{ name: key-auth }}]
      - name: stream
        paths: ["/stream"]
        strip_path: false
plugins:
  - name: file-log
    config: {{ path: "{}" }}
consumers:
  - username: alice
    keyauth_credentials: [{{ key: alice-super-secret }}]
"#,
        up.url(),
        log.display()
    );
    let gw = start_with_config(dir.path(), &yaml, &[]);
    let ok = request(
        &gw.proxy,
        "GET",
        "/private/x?apikey=alice-super-secret",
        &[],
        "",
    )
    .await
    .unwrap();
    assert_eq!(ok.status, 200);
    let denied = request(
        &gw.proxy,
        "GET",
        "/private/y",
        &[("apikey", "wrong-secret-value")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(denied.status, 401);
    let streamed = get(&gw.proxy, "/stream/3/50").await;
    assert_eq!(streamed.status, 200);
    let mut lines = Vec::new();
    for _ in 0..200 {
        lines = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        if lines.len() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(lines.len(), 3, "{lines:?}");
    let text = lines.join("\n");
    assert!(
        !text.contains("alice-super-secret") && !text.contains("wrong-secret-value"),
        "credentials in the log: {text}"
    );
    let recs: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by_id = |r: &gatehouse_testkit::Reply| {
        recs.iter()
            .find(|x| x["request_id"] == r.header("x-request-id").unwrap())
            .cloned()
            .unwrap()
    };
    let a = by_id(&ok);
    assert_eq!(a["response"]["status"], 200);
    assert_eq!(a["route"]["name"], "private");
    assert_eq!(a["service"]["name"], "svc");
    assert_eq!(a["consumer"]["username"], "alice");
    assert_eq!(a["request"]["path"], "/private/x");
    assert_eq!(a["client_ip"], "127.0.0.1");
    assert!(a["latencies"]["upstream_ms"].as_f64().is_some());
    // The start time is derived from the worker's clock anchor: it must be the wall clock.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let started = a["started_at"].as_i64().unwrap();
    assert!(
        (now_ms - 60_000..=now_ms).contains(&started),
        "started_at {started} vs now {now_ms}"
    );
    // Ids come from a per-thread cache of their text: each record has its own, exact.
    for r in [&a, &recs[0], &recs[1], &recs[2]] {
        for k in ["route", "service"] {
            let id = r[k]["id"].as_str().unwrap();
            assert!(uuid::Uuid::parse_str(id).is_ok(), "{k} id {id}");
        }
    }
    // Records of different routes follow each other: the cached text must not leak over.
    assert_ne!(a["route"]["id"], by_id(&streamed)["route"]["id"]);
    assert_eq!(a["route"]["id"], by_id(&denied)["route"]["id"]);
    assert!(uuid::Uuid::parse_str(a["consumer"]["id"].as_str().unwrap()).is_ok());
    let b = by_id(&denied);
    assert_eq!(b["response"]["status"], 401, "early answers are logged too");
    assert!(b["consumer"].is_null());
    assert!(b["latencies"]["upstream_ms"].is_null());
    let c = by_id(&streamed);
    assert_eq!(
        c["response"]["size"],
        streamed.body.len(),
        "logged after the whole streamed body"
    );
    assert_eq!(c["response"]["complete"], true);
    assert!(
        c["latencies"]["total_ms"].as_f64().unwrap() >= 100.0,
        "total covers the streamed body: {c}"
    );
}

/// The sample line of a metric series in Prometheus text (panics with the text if absent).
fn metric_line<'t>(text: &'t str, series: &str) -> &'t str {
    text.lines()
        .find(|l| l.contains(series) && !l.starts_with('#'))
        .unwrap_or_else(|| panic!("{series} not in:\n{text}"))
}

#[tokio::test]
async fn prometheus_per_consumer_labels() {
    let up = Upstream::start("a");
    let (_d, gw) = setup(
        &format!(
            r#"services:
  - name: shop
    url: {}
    routes:
      - name: items
        paths: ["/items"]
        plugins: [{{ name: key-auth }}]
plugins:
  - name: prometheus
    config: {{ per_consumer: true }}
consumers:
  - username: alice
    keyauth_credentials: [{{ key: alice-key }}]
  - username: bob
    keyauth_credentials: [{{ key: bob-key }}]
"#,
            up.url()
        ),
        &[],
    );
    for (key, n) in [
        ("alice-key", 2),
        ("bob-key", 1),
        ("alice-key", 1),
        ("nope", 2),
    ] {
        for _ in 0..n {
            request(&gw.proxy, "GET", "/items", &[("apikey", key)], "")
                .await
                .unwrap();
        }
    }
    let text = get(&gw.status, "/metrics").await.text();
    let count = |code: u16, consumer: &str| {
        let series = format!(
            r#"gatehouse_http_requests_total{{service="shop",route="items",code="{code}",consumer="{consumer}"}}"#
        );
        metric_line(&text, &series)
            .rsplit(' ')
            .next()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(count(200, "alice"), "3");
    assert_eq!(count(200, "bob"), "1");
    assert_eq!(count(401, ""), "2");
}

#[tokio::test]
async fn prometheus_metrics_on_the_status_listener() {
    let up = Upstream::start("a");
    let (_d, gw) = setup(
        &format!(
            r#"services:
  - name: shop
    url: {}
    routes:
      - name: items
        paths: ["/items"]
        plugins:
          - name: rate-limiting
            config: {{ day: 3, limit_by: route }}
plugins:
  - name: prometheus
"#,
            up.url()
        ),
        &[],
    );
    for _ in 0..5 {
        get(&gw.proxy, "/items").await;
    }
    let m = get(&gw.status, "/metrics").await;
    assert_eq!(m.status, 200);
    let text = m.text();
    let line = |needle: &str| metric_line(&text, needle).to_string();
    assert!(
        line(
            r#"gatehouse_http_requests_total{service="shop",route="items",code="200",consumer=""}"#
        )
        .ends_with(" 3"),
        "{text}"
    );
    assert!(line(
        r#"gatehouse_http_requests_total{service="shop",route="items",code="429",consumer=""}"#
    )
    .ends_with(" 2"));
    assert!(
        line(r#"gatehouse_rate_limit_decisions_total{route="items",decision="limited"}"#)
            .ends_with(" 2")
    );
    assert!(
        line(r#"gatehouse_rate_limit_decisions_total{route="items",decision="allowed"}"#)
            .ends_with(" 3")
    );
    assert!(
        line(r#"gatehouse_latency_ms_count{service="shop",route="items",kind="upstream"}"#)
            .ends_with(" 3")
    );
    assert!(
        line(r#"gatehouse_latency_ms_count{service="shop",route="items",kind="total"}"#)
            .ends_with(" 5")
    );
    assert!(text.contains(
        r#"gatehouse_bandwidth_bytes_total{service="shop",route="items",direction="egress"}"#
    ));
    assert!(text.trim_end().ends_with("# EOF"));
}

#[tokio::test]
async fn auth_cannot_be_bypassed_with_path_or_framing_tricks() {
    let public = Upstream::start("public");
    let admin = Upstream::start("admin");
    let (_d, gw) = setup(
        &format!(
            r#"services:
  - name: public
    url: {}
    routes: [{{ paths: ["/"] }}]
  - name: admin
    url: {}
    routes:
      - paths: ["/admin"]
        strip_path: false
        plugins: [{{ name: key-auth }}]
consumers:
  - username: ops
    keyauth_credentials: [{{ key: ops-key-123456 }}]
"#,
            public.url(),
            admin.url()
        ),
        &[],
    );
    for p in [
        "/admin/x",
        "/public/../admin/x",
        "/%61dmin/x",
        "/%2e%2e/admin/x",
        "//admin//x",
        "/./admin/x",
        "/admin/./x",
        "/x/%2E%2E/admin/x",
    ] {
        let r = get(&gw.proxy, p).await;
        assert_eq!(r.status, 401, "{p} must need the key: {}", r.text());
    }
    // Not the protected route: these reach the public service, never the admin one.
    for p in ["/ADMIN/x", "/admin%2Fx", "/adminx"] {
        let r = get(&gw.proxy, p).await;
        assert_eq!(r.header("x-upstream").as_deref(), Some("public"), "{p}");
    }
    assert_eq!(
        admin.hits(),
        0,
        "the protected upstream was never reached without a key"
    );
    // Framing tricks: a second request smuggled in a body never reaches the admin upstream.
    let mut s = tokio::net::TcpStream::connect(&gw.proxy).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin/x HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 65536];
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), s.read(&mut buf)).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        admin.hits(),
        0,
        "no smuggled request reached the protected upstream"
    );
    let ok = request(
        &gw.proxy,
        "GET",
        "/admin/x",
        &[("apikey", "ops-key-123456")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(ok.status, 200);
    assert_eq!(admin.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limit_conn_counts_requests_until_their_body_ends() {
    let up = Upstream::start("slow");
    let (_d, gw) = setup(
        &format!(
            r#"services:
  - url: {}
    routes:
      - paths: ["/"]
        strip_path: false
        plugins:
          - name: limit-conn
            config: {{ conn: 2, limit_by: route }}
"#,
            up.url()
        ),
        &[],
    );
    // Two slow requests hold both slots; a third is refused while they run.
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let p = gw.proxy.clone();
            tokio::spawn(async move { request(&p, "GET", "/stream/3/300", &[], "").await.unwrap() })
        })
        .collect();
    for _ in 0..500 {
        if up.hits() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(up.hits(), 2, "both slow requests reached the upstream");
    let r = get(&gw.proxy, "/x").await;
    assert_eq!(r.status, 429, "third request while two are in flight");
    assert_eq!(err_code(&r), "too_many_in_flight");
    for t in slow {
        assert_eq!(t.await.unwrap().status, 200);
    }
    // Slots are released when the streamed bodies end (and refused requests hold none).
    for _ in 0..5 {
        assert_eq!(get(&gw.proxy, "/x").await.status, 200);
    }
}

#[tokio::test]
async fn request_transformer_rewrites_headers_query_body_method_and_path() {
    let up = Upstream::start("a");
    let (_d, gw) = setup(
        &format!(
            r#"services:
  - url: {}/base
    routes:
      - name: t
        paths: ["/users/{{id}}"]
        plugins:
          - name: request-transformer
            config:
              http_method: PUT
              remove: {{ headers: [x-drop], querystring: [secret], body: [password] }}
              rename: {{ headers: ["x-old:x-new"], querystring: ["q:query"], body: ["name:full_name"] }}
              replace: {{ headers: ["x-replace:replaced"], body: ["role:user"], uri: "/v2/accounts/$(uri_captures.id)" }}
              add: {{ headers: ["x-user:$(uri_captures.id)", "x-keep:added"], querystring: ["source:gw"], body: ["via:gatehouse"] }}
              append: {{ headers: ["x-multi:two"], body: ["tags:new"] }}
"#,
            up.url()
        ),
        &[],
    );
    let r = request(
        &gw.proxy,
        "POST",
        "/users/42/ignored?q=find&secret=s3&keep=1",
        &[
            ("content-type", "application/json"),
            ("x-drop", "1"),
            ("x-old", "o"),
            ("x-replace", "r"),
            ("x-keep", "client"),
            ("x-multi", "one"),
        ],
        r#"{"name":"Ann","password":"pw","role":"admin","tags":["a"]}"#,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["method"], "PUT");
    assert_eq!(
        j["path"], "/v2/accounts/42",
        "uri replaced from the route param"
    );
    let q = j["query"].as_str().unwrap();
    assert!(
        q.contains("query=find")
            && q.contains("keep=1")
            && q.contains("source=gw")
            && !q.contains("secret"),
        "{q}"
    );
    let h = &j["headers"];
    assert!(h.get("x-drop").is_none() && h.get("x-old").is_none());
    assert_eq!(h["x-new"], json!(["o"]));
    assert_eq!(h["x-replace"], json!(["replaced"]));
    assert_eq!(h["x-user"], json!(["42"]));
    assert_eq!(h["x-keep"], json!(["client"]), "add does not override");
    assert_eq!(h["x-multi"], json!(["one", "two"]));
    let body: Value = serde_json::from_str(j["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"full_name": "Ann", "role": "user", "tags": ["a", "new"], "via": "gatehouse"})
    );
    assert_eq!(
        h["content-length"][0]
            .as_str()
            .unwrap()
            .parse::<usize>()
            .unwrap(),
        j["body"].as_str().unwrap().len()
    );

    // Form bodies too.
    let r = request(
        &gw.proxy,
        "POST",
        "/users/7",
        &[("content-type", "application/x-www-form-urlencoded")],
        "name=Bo&password=x&role=r",
    )
    .await
    .unwrap();
    let b = r.json()["body"].as_str().unwrap().to_string();
    assert!(
        b.contains("full_name=Bo")
            && b.contains("role=user")
            && b.contains("via=gatehouse")
            && !b.contains("password"),
        "{b}"
    );

    // Header values that would inject CR/LF are refused at validation.
    let bad = _d.path().join("bad.yaml");
    std::fs::write(&bad, "_format_version: \"1\"\nplugins:\n  - name: request-transformer\n    config: { add: { headers: [\"no-colon\"] } }\n").unwrap();
    let out = std::process::Command::new(bin())
        .arg("validate")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("plugins[0].config.add.headers"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A log sink that answers 500 to its first `fail_first` requests and keeps the bodies of the
/// others.
fn log_sink(
    fail_first: usize,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let addr = l.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(AtomicUsize::new(0));
    let (g, c) = (got.clone(), calls.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(l).unwrap();
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let (g, c) = (g.clone(), c.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let (g, c) = (g.clone(), c.clone());
                            async move {
                                use http_body_util::BodyExt;
                                let body = req
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let n = c.fetch_add(1, Ordering::SeqCst);
                                let status = if n < fail_first { 500 } else { 200 };
                                if status == 200 {
                                    g.lock()
                                        .unwrap()
                                        .push(String::from_utf8_lossy(&body).into_owned());
                                }
                                Ok::<_, std::convert::Infallible>(
                                    http::Response::builder()
                                        .status(status)
                                        .body(http_body_util::Full::new(bytes::Bytes::new()))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                });
            }
        });
    });
    (addr, got, calls)
}

#[tokio::test]
async fn http_log_batches_and_retries() {
    let up = Upstream::start("a");
    let (sink, got, calls) = log_sink(1);
    let (_d, gw) = setup(
        &format!(
            r#"services:
  - name: s
    url: {}
    routes: [{{ name: r, paths: ["/"] }}]
plugins:
  - name: http-log
    config:
      http_endpoint: http://{sink}/logs
      headers: {{ authorization: "Bearer sink-token" }}
      queue: {{ max_batch_size: 5, max_coalescing_delay: 0.2, initial_retry_delay: 0.05 }}
"#,
            up.url()
        ),
        &[],
    );
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            get(&gw.proxy, &format!("/item/{i}?apikey=secret-in-query"))
                .await
                .header("x-request-id")
                .unwrap(),
        );
    }
    let mut records: Vec<Value> = Vec::new();
    for _ in 0..300 {
        records = got
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| serde_json::from_str::<Vec<Value>>(b).unwrap())
            .collect();
        if records.len() >= 7 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        records.len(),
        7,
        "every record arrives once, the failed batch after a retry"
    );
    assert!(
        calls.load(std::sync::atomic::Ordering::SeqCst) >= 3,
        "one failure, then batches of 5 and 2"
    );
    let mut seen: Vec<String> = records
        .iter()
        .map(|r| r["request_id"].as_str().unwrap().to_string())
        .collect();
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids);
    assert!(records
        .iter()
        .all(|r| r["route"]["name"] == "r" && r["response"]["status"] == 200));
    assert!(
        !got.lock().unwrap().concat().contains("secret-in-query"),
        "no credentials in records"
    );
}

#[tokio::test]
async fn response_transformer_rewrites_headers_and_json_bodies() {
    let up = Upstream::start("a");
    let (_d, gw) = setup(
        &format!(
            r#"services:
  - url: {}
    routes:
      - paths: ["/"]
        plugins:
          - name: response-transformer
            config:
              remove: {{ headers: [x-upstream], json: [headers] }}
              rename: {{ headers: ["content-type:content-type"], json: ["path:requested_path"] }}
              replace: {{ json: ["method:REDACTED"] }}
              add: {{ headers: ["x-powered-by:gatehouse"], json: ["api_version:2"] }}
              append: {{ headers: ["cache-control:no-store"], json: ["upstream:extra"] }}
"#,
            up.url()
        ),
        &[],
    );
    let r = get(&gw.proxy, "/hello").await;
    assert_eq!(r.status, 200);
    assert!(r.header("x-upstream").is_none());
    assert_eq!(r.header("x-powered-by").as_deref(), Some("gatehouse"));
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let j = r.json();
    assert!(j.get("headers").is_none() && j.get("path").is_none(), "{j}");
    assert_eq!(j["requested_path"], "/hello");
    assert_eq!(j["method"], "REDACTED");
    assert_eq!(j["api_version"], "2");
    assert_eq!(j["upstream"], json!(["a", "extra"]));
    // Non-JSON bodies pass untouched (headers still change), and streamed bodies still stream.
    let r = get(&gw.proxy, "/bytes/70000").await;
    assert_eq!(r.body.len(), 70000);
    assert_eq!(r.header("x-powered-by").as_deref(), Some("gatehouse"));
    let r = get(&gw.proxy, "/stream/2/10").await;
    assert_eq!(r.text(), "data: event 0\n\ndata: event 1\n\n");
}

#[tokio::test]
async fn basic_auth_with_argon2_hashes() {
    let up = Upstream::start("a");
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in(&bin(), dir.path(), &[]);
    gw.admin_ok("POST", "/services", json!({"name": "s", "url": up.url(), "routes": [{"paths": ["/"], "plugins": [{"name": "basic-auth", "config": {"hide_credentials": true}}]}]})).await;
    let c = gw.admin_ok("POST", "/consumers", json!({"username": "erin", "basicauth_credentials": [{"username": "erin", "password": "correct horse battery"}]})).await;
    let stored = &c["basicauth_credentials"][0];
    assert!(stored.get("password").is_none());
    assert!(
        stored["password_hash"]
            .as_str()
            .unwrap()
            .starts_with("$argon2id$"),
        "{stored}"
    );
    let (ok, out, _) = curl(&[
        "-si",
        "-u",
        "erin:correct horse battery",
        &format!("http://{}/x", gw.proxy),
    ]);
    assert!(ok && out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("\"x-consumer-username\":[\"erin\"]"), "{out}");
    assert!(
        !out.to_lowercase().contains("\"authorization\""),
        "hide_credentials removes the header: {out}"
    );
    // Cached verification gives the same answer.
    let (_, out, _) = curl(&[
        "-si",
        "-u",
        "erin:correct horse battery",
        &format!("http://{}/x", gw.proxy),
    ]);
    assert!(out.starts_with("HTTP/1.1 200"));
    for creds in ["erin:wrong", "nobody:correct horse battery"] {
        let (_, out, _) = curl(&["-si", "-u", creds, &format!("http://{}/x", gw.proxy)]);
        assert!(out.starts_with("HTTP/1.1 401"), "{out}");
        assert!(
            out.to_lowercase()
                .contains("www-authenticate: basic realm=\"gatehouse\""),
            "{out}"
        );
        assert!(
            out.contains("invalid authentication credentials"),
            "same answer for unknown users: {out}"
        );
    }
    assert!(!gw
        .admin("GET", "/config", "")
        .await
        .text()
        .contains("correct horse"));
}

fn hmac_headers(
    user: &str,
    secret: &str,
    method: &str,
    path: &str,
    date: std::time::SystemTime,
    body: Option<&str>,
) -> Vec<(String, String)> {
    use base64::Engine;
    use hmac::Mac;
    use sha2::Digest;
    let date = httpdate::fmt_http_date(date);
    let mut signed = vec![("date".to_string(), date.clone())];
    let mut names = "date request-line".to_string();
    if let Some(b) = body {
        signed.push((
            "digest".into(),
            format!(
                "SHA-256={}",
                base64::engine::general_purpose::STANDARD
                    .encode(sha2::Sha256::digest(b.as_bytes()))
            ),
        ));
        names.push_str(" digest");
    }
    let mut lines = vec![format!("date: {date}"), format!("{method} {path} HTTP/1.1")];
    if let Some((_, d)) = signed.iter().find(|(n, _)| n == "digest") {
        lines.push(format!("digest: {d}"));
    }
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(lines.join("\n").as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    signed.push(("authorization".into(), format!("hmac username=\"{user}\", algorithm=\"hmac-sha256\", headers=\"{names}\", signature=\"{sig}\"")));
    signed
}

#[tokio::test]
async fn hmac_auth_signatures_skew_replay_and_digest() {
    let up = Upstream::start("a");
    let (_d, gw) = setup(
        &format!(
            r#"services:
  - url: {}
    routes:
      - paths: ["/signed"]
        strip_path: false
        plugins: [{{ name: hmac-auth, config: {{ clock_skew: 60 }} }}]
      - paths: ["/body"]
        strip_path: false
        plugins: [{{ name: hmac-auth, config: {{ validate_request_body: true }} }}]
consumers:
  - username: svc
    hmacauth_credentials: [{{ username: svc-client, secret: "0123456789abcdef-secret" }}]
"#,
            up.url()
        ),
        &[],
    );
    let now = std::time::SystemTime::now();
    let call = |method: &'static str,
                path: &'static str,
                hs: Vec<(String, String)>,
                body: &'static str| {
        let proxy = gw.proxy.clone();
        async move {
            let refs: Vec<(&str, &str)> =
                hs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            request(&proxy, method, path, &refs, body).await.unwrap()
        }
    };
    let good = hmac_headers(
        "svc-client",
        "0123456789abcdef-secret",
        "GET",
        "/signed/a?x=1",
        now,
        None,
    );
    let r = call("GET", "/signed/a?x=1", good.clone(), "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["headers"]["x-consumer-username"], json!(["svc"]));
    let r = call("GET", "/signed/a?x=1", good, "").await;
    assert_eq!(r.status, 401);
    assert!(r.text().contains("replayed request"), "{}", r.text());

    let wrong_secret = hmac_headers(
        "svc-client",
        "not-the-right-secret!",
        "GET",
        "/signed/b",
        now,
        None,
    );
    let unknown_user = hmac_headers(
        "nobody",
        "0123456789abcdef-secret",
        "GET",
        "/signed/b",
        now,
        None,
    );
    for hs in [wrong_secret, unknown_user] {
        let r = call("GET", "/signed/b", hs, "").await;
        assert_eq!(r.status, 401);
        assert!(r.text().contains("invalid signature"), "{}", r.text());
    }
    let old = hmac_headers(
        "svc-client",
        "0123456789abcdef-secret",
        "GET",
        "/signed/c",
        now - std::time::Duration::from_secs(600),
        None,
    );
    assert!(call("GET", "/signed/c", old, "")
        .await
        .text()
        .contains("clock skew"));
    let other_path = hmac_headers(
        "svc-client",
        "0123456789abcdef-secret",
        "GET",
        "/signed/d",
        now,
        None,
    );
    assert_eq!(
        call("GET", "/signed/e", other_path, "").await.status,
        401,
        "the request line is signed"
    );

    let body = r#"{"amount": 10}"#;
    let hs = hmac_headers(
        "svc-client",
        "0123456789abcdef-secret",
        "POST",
        "/body",
        now,
        Some(body),
    );
    let r = call("POST", "/body", hs.clone(), body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["body"], body);
    let hs = hmac_headers(
        "svc-client",
        "0123456789abcdef-secret",
        "POST",
        "/body",
        now + std::time::Duration::from_secs(1),
        Some(body),
    );
    let r = call("POST", "/body", hs, r#"{"amount": 99}"#).await;
    assert_eq!(r.status, 401);
    assert!(r.text().contains("digest"), "{}", r.text());
}

fn jwt_token(
    claims: Value,
    alg: jsonwebtoken::Algorithm,
    kid: Option<&str>,
    key: &jsonwebtoken::EncodingKey,
) -> String {
    let mut h = jsonwebtoken::Header::new(alg);
    h.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&h, &claims, key).unwrap()
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn jwt_with_secrets_claims_and_expiry() {
    let up = Upstream::start("a");
    let (_d, gw) = setup(
        &format!(
            r#"services:
  - url: {}
    routes:
      - paths: ["/"]
        plugins:
          - name: jwt
            config: {{ claims_to_verify: [exp, nbf], maximum_expiration: 3600, audience: [orders], claims_to_headers: {{ sub: x-user-sub }} }}
consumers:
  - username: app
    jwt_secrets: [{{ key: issuer-a, secret: "a-shared-secret-of-32-chars!!!!!" }}]
"#,
            up.url()
        ),
        &[],
    );
    let key = jsonwebtoken::EncodingKey::from_secret(b"a-shared-secret-of-32-chars!!!!!");
    let hs = jsonwebtoken::Algorithm::HS256;
    let good = jwt_token(
        json!({"iss": "issuer-a", "sub": "user-7", "aud": "orders", "exp": now_s() + 600}),
        hs,
        None,
        &key,
    );
    let r = request(
        &gw.proxy,
        "GET",
        "/x",
        &[
            ("authorization", &format!("Bearer {good}")),
            ("x-user-sub", "forged"),
        ],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let h = &r.json()["headers"];
    assert_eq!(h["x-consumer-username"], json!(["app"]));
    assert_eq!(h["x-user-sub"], json!(["user-7"]));
    assert_eq!(
        get(&gw.proxy, &format!("/x?jwt={good}")).await.status,
        200,
        "token from the query"
    );
    let cases = [
        (
            jwt_token(
                json!({"iss": "issuer-a", "aud": "orders", "exp": now_s() - 60}),
                hs,
                None,
                &key,
            ),
            "token expired",
        ),
        (
            jwt_token(
                json!({"iss": "issuer-a", "aud": "orders", "exp": now_s() + 60, "nbf": now_s() + 300}),
                hs,
                None,
                &key,
            ),
            "not valid yet",
        ),
        (
            jwt_token(
                json!({"iss": "issuer-a", "aud": "orders", "exp": now_s() + 90_000}),
                hs,
                None,
                &key,
            ),
            "lifetime",
        ),
        (
            jwt_token(
                json!({"iss": "issuer-a", "aud": "billing", "exp": now_s() + 60}),
                hs,
                None,
                &key,
            ),
            "invalid audience",
        ),
        (
            jwt_token(
                json!({"iss": "issuer-a", "aud": "orders", "exp": now_s() + 60}),
                hs,
                None,
                &jsonwebtoken::EncodingKey::from_secret(b"another-secret-of-32-characters!"),
            ),
            "invalid signature",
        ),
        // Issue 10, bug 3: a token without `exp` is not a forged token.
        (
            jwt_token(json!({"iss": "issuer-a", "aud": "orders"}), hs, None, &key),
            "missing claim `exp`",
        ),
        (
            jwt_token(
                json!({"iss": "issuer-a", "aud": "orders", "exp": "tomorrow"}),
                hs,
                None,
                &key,
            ),
            "claim `exp` must be a number",
        ),
        (
            jwt_token(
                json!({"iss": "issuer-a", "aud": "orders", "exp": now_s() + 60}),
                jsonwebtoken::Algorithm::HS512,
                None,
                &key,
            ),
            "algorithm not allowed",
        ),
        (
            jwt_token(
                json!({"iss": "nobody", "aud": "orders", "exp": now_s() + 60}),
                hs,
                None,
                &key,
            ),
            "no credential",
        ),
        ("not.a.token".to_string(), "malformed"),
    ];
    for (t, why) in cases {
        let r = request(
            &gw.proxy,
            "GET",
            "/x",
            &[("authorization", &format!("Bearer {t}"))],
            "",
        )
        .await
        .unwrap();
        assert_eq!(r.status, 401, "{why}");
        assert!(r.text().contains(why), "{why}: {}", r.text());
    }
    assert!(get(&gw.proxy, "/x").await.text().contains("no token"));
    assert_eq!(up.hits(), 2);
}

#[tokio::test]
async fn jwt_with_jwks_follows_key_rotation() {
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let gen = |name: &str| {
        let p = dir.path().join(name);
        let ok = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
            ])
            .arg(&p)
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl genpkey");
        jsonwebtoken::EncodingKey::from_ec_pem(&std::fs::read(&p).unwrap()).unwrap()
    };
    let (k1, k2) = (gen("k1.pem"), gen("k2.pem"));
    let jwk = |k: &jsonwebtoken::EncodingKey, kid: &str| {
        let mut j =
            jsonwebtoken::jwk::Jwk::from_encoding_key(k, jsonwebtoken::Algorithm::ES256).unwrap();
        j.common.key_id = Some(kid.into());
        j
    };
    let set = Arc::new(Mutex::new(json!({"keys": [jwk(&k1, "k1")]}).to_string()));
    // A JWKS endpoint serving whatever `set` holds.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let jwks_addr = l.local_addr().unwrap();
    let s2 = set.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(l).unwrap();
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let body = s2.lock().unwrap().clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |_req: http::Request<hyper::body::Incoming>| {
                            let body = body.clone();
                            async move {
                                Ok::<_, std::convert::Infallible>(http::Response::new(
                                    http_body_util::Full::new(bytes::Bytes::from(body)),
                                ))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                });
            }
        });
    });
    let up = Upstream::start("a");
    let gw = start_with_config(
        dir.path(),
        &format!(
            r#"_format_version: "1"
services:
  - url: {}
    routes:
      - paths: ["/"]
        plugins:
          - name: jwt
            config: {{ jwks_uri: "http://{jwks_addr}/jwks", jwks_min_refresh_interval: 0 }}
consumers:
  - username: idp-user
    jwt_secrets: [{{ key: https-idp, algorithm: ES256 }}]
"#,
            up.url()
        ),
        &[],
    );
    let es = jsonwebtoken::Algorithm::ES256;
    let call = |t: String| {
        let p = gw.proxy.clone();
        async move {
            request(
                &p,
                "GET",
                "/",
                &[("authorization", &format!("Bearer {t}"))],
                "",
            )
            .await
            .unwrap()
        }
    };
    let claims = json!({"iss": "https-idp", "exp": now_s() + 600});
    let mut status = 0;
    for _ in 0..100 {
        status = call(jwt_token(claims.clone(), es, Some("k1"), &k1))
            .await
            .status
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200, "token signed with the JWKS key");
    // A token signed by k1 but claiming an HS key cannot pass (no algorithm confusion).
    let hs = jwt_token(
        claims.clone(),
        jsonwebtoken::Algorithm::HS256,
        Some("k1"),
        &jsonwebtoken::EncodingKey::from_secret(b"guess"),
    );
    assert_eq!(call(hs).await.status, 401);
    // Rotation: the IdP publishes k2; a k2 token is refused until the JWKS is refetched.
    *set.lock().unwrap() = json!({"keys": [jwk(&k2, "k2")]}).to_string();
    let mut ok = false;
    for _ in 0..100 {
        let r = call(jwt_token(claims.clone(), es, Some("k2"), &k2)).await;
        if r.status == 200 {
            ok = true;
            break;
        }
        assert!(r.text().contains("unknown signing key"), "{}", r.text());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ok, "the rotated key is picked up without a reload");
}

#[tokio::test]
async fn request_validator_names_the_failing_path() {
    let up = Upstream::start("a");
    let (_d, gw) = setup(
        &format!(
            r#"services:
  - url: {}
    routes:
      - paths: ["/orders/{{id}}"]
        plugins:
          - name: request-validator
            config:
              body_schema:
                type: object
                required: [items]
                properties:
                  items:
                    type: array
                    items: {{ type: object, required: [qty], properties: {{ qty: {{ type: integer, minimum: 1 }} }} }}
              parameter_schema:
                - {{ name: id, in: path, required: true, schema: {{ type: string, pattern: "^[0-9]+$" }} }}
                - {{ name: limit, in: query, schema: {{ type: integer, maximum: 100 }} }}
                - {{ name: x-version, in: header, required: true, schema: {{ enum: ["1", "2"] }} }}
"#,
            up.url()
        ),
        &[],
    );
    let send = |path: &'static str, version: &'static str, ct: &'static str, body: &'static str| {
        let p = gw.proxy.clone();
        async move {
            request(
                &p,
                "POST",
                path,
                &[("x-version", version), ("content-type", ct)],
                body,
            )
            .await
            .unwrap()
        }
    };
    let ok = send(
        "/orders/12?limit=5",
        "2",
        "application/json",
        r#"{"items": [{"qty": 2}]}"#,
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["body"], r#"{"items": [{"qty": 2}]}"#);
    let cases = [
        (
            send(
                "/orders/12",
                "2",
                "application/json",
                r#"{"items": [{"qty": 2}, {"qty": 0}]}"#,
            )
            .await,
            "body/items/1/qty",
        ),
        (
            send("/orders/12", "2", "application/json", r#"{"things": []}"#).await,
            "is a required property",
        ),
        (
            send("/orders/12", "2", "application/json", "{not json").await,
            "not valid JSON",
        ),
        (
            send("/orders/12", "2", "text/plain", "x").await,
            "content type",
        ),
        (
            send("/orders/abc", "2", "application/json", r#"{"items": []}"#).await,
            "path.id",
        ),
        (
            send(
                "/orders/12?limit=500",
                "2",
                "application/json",
                r#"{"items": []}"#,
            )
            .await,
            "query.limit",
        ),
        (
            send("/orders/12", "3", "application/json", r#"{"items": []}"#).await,
            "header.x-version",
        ),
    ];
    for (r, want) in cases {
        assert_eq!(r.status, 400, "{want}: {}", r.text());
        assert_eq!(err_code(&r), "invalid_request");
        assert!(r.text().contains(want), "{want}: {}", r.text());
    }
    assert_eq!(up.hits(), 1, "invalid requests never reach the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proxy_cache_hits_varies_honours_cache_control_single_flight_and_purges() {
    let up = Upstream::start("a");
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in(&bin(), dir.path(), &[]);
    gw.admin_ok(
        "POST",
        "/services",
        json!({"name": "s", "url": up.url(), "routes": [{"paths": ["/"], "strip_path": false, "plugins": [
            {"name": "proxy-cache", "config": {"cache_ttl": 60, "cache_control": true, "vary_headers": ["x-lang"], "vary_query_params": ["page"]}}
        ]}]}),
    )
    .await;
    let status = |r: &gatehouse_testkit::Reply| r.header("x-cache-status").unwrap_or_default();
    let r1 = get(&gw.proxy, "/items?page=1&noise=a").await;
    assert_eq!(status(&r1), "Miss");
    let r2 = get(&gw.proxy, "/items?noise=b&page=1").await;
    assert_eq!(status(&r2), "Hit", "only vary_query_params are in the key");
    assert_eq!(r2.body, r1.body, "the cached body");
    assert!(r2.header("age").is_some());
    assert_eq!(up.hits(), 1);
    assert_eq!(status(&get(&gw.proxy, "/items?page=2").await), "Miss");
    let fr = request(&gw.proxy, "GET", "/items?page=1", &[("x-lang", "fr")], "")
        .await
        .unwrap();
    assert_eq!(status(&fr), "Miss", "vary_headers are in the key");
    let r = request(
        &gw.proxy,
        "GET",
        "/items?page=1",
        &[("cache-control", "no-cache")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(status(&r), "Refresh");
    let r = request(
        &gw.proxy,
        "GET",
        "/items?page=1",
        &[("cache-control", "no-store")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(status(&r), "Bypass");
    assert_eq!(
        status(
            &request(&gw.proxy, "POST", "/items", &[], "x")
                .await
                .unwrap()
        ),
        "Bypass"
    );
    let before = up.hits();
    assert_eq!(status(&get(&gw.proxy, "/status/500").await), "Miss");
    assert_eq!(
        status(&get(&gw.proxy, "/status/500").await),
        "Miss",
        "500 is not stored"
    );
    assert_eq!(up.hits(), before + 2);

    // Single-flight: many clients miss a slow key at once; the upstream sees one request.
    let before = up.hits();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let p = gw.proxy.clone();
            tokio::spawn(async move { request(&p, "GET", "/sleep/400", &[], "").await.unwrap() })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        statuses.push(status(&r));
    }
    assert_eq!(
        up.hits(),
        before + 1,
        "one upstream request for ten concurrent misses: {statuses:?}"
    );

    // Purge through the admin API.
    let key = get(&gw.proxy, "/items?page=1")
        .await
        .header("x-cache-key")
        .unwrap();
    assert_eq!(
        gw.admin("DELETE", &format!("/proxy-cache/{key}"), "")
            .await
            .status,
        204
    );
    assert_eq!(status(&get(&gw.proxy, "/items?page=1").await), "Miss");
    let purged = gw.admin_ok("DELETE", "/proxy-cache", Value::Null).await;
    assert!(purged["purged"].as_u64().unwrap() >= 1);
    assert_eq!(status(&get(&gw.proxy, "/items?page=1").await), "Miss");
    // The count is exact (issue 10, bug 4: it said 0 right after filling): empty, fill three
    // keys, purge.
    gw.admin_ok("DELETE", "/proxy-cache", Value::Null).await;
    for page in ["1", "2", "3"] {
        let path = format!("/items?page={page}");
        assert_eq!(status(&get(&gw.proxy, &path).await), "Miss");
        assert_eq!(status(&get(&gw.proxy, &path).await), "Hit");
    }
    let purged = gw.admin_ok("DELETE", "/proxy-cache", Value::Null).await;
    assert_eq!(purged["purged"], 3, "{purged}");
    assert_eq!(
        gw.admin("DELETE", "/proxy-cache/unknown-key", "")
            .await
            .status,
        404
    );
}
