//! Coming from Kong: decK files (`_format_version: "3.0"`), Kong's admin API habits and
//! decK's everyday commands, through the real binary.

mod common;

use std::process::Command;

use common::*;
use serde_json::{json, Value};

const DECK: &str = include_str!("kong/deck.yaml");
const UNSUPPORTED: &str = include_str!("kong/deck-unsupported.yaml");

fn deck_for(up: &Upstream) -> String {
    let url = up.url();
    let hostport = url.trim_start_matches("http://");
    let (host, port) = hostport.rsplit_once(':').unwrap();
    DECK.replace("UPSTREAM_HOST", host)
        .replace("UPSTREAM_PORT", port)
}

fn validate(dir: &std::path::Path, name: &str, text: &str) -> (bool, String) {
    let f = dir.join(name);
    std::fs::write(&f, text).unwrap();
    let out = Command::new(bin())
        .arg("validate")
        .arg(&f)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_deck_file_loads_and_serves() {
    let up = Upstream::start("orders");
    let dir = tempfile::tempdir().unwrap();
    let text = deck_for(&up);
    let (ok, err) = validate(dir.path(), "kong.yaml", &text);
    assert!(ok, "{err}");
    // What differs is said, per field, with its line.
    for (path, what) in [
        (
            "services[0].routes[0].request_buffering",
            "streams request bodies",
        ),
        (
            "services[0].routes[0].response_buffering",
            "streams responses",
        ),
        ("services[0].routes[1].paths[0]", "priority"),
    ] {
        assert!(
            err.lines()
                .any(|l| l.contains(": note: ") && l.contains(path) && l.contains(what)),
            "note for {path}:\n{err}"
        );
    }

    let gw = start_with_config(dir.path(), &text, &[]);
    let call = |path: &'static str, key: &'static str| {
        let proxy = gw.proxy.clone();
        async move {
            request(&proxy, "GET", path, &[("apikey", key)], "")
                .await
                .unwrap()
        }
    };
    // Service-scoped key-auth, consumer-scoped rate limit, route-scoped ACL.
    let r = call("/orders/1", "alice-secret-key-0001").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "/1");
    assert!(
        r.json()["headers"].get("apikey").is_none(),
        "hide_credentials"
    );
    assert!(r.header("x-ratelimit-limit-minute").is_some());
    assert!(
        r.header("kong-request-id").is_some(),
        "global correlation-id"
    );
    assert_eq!(
        call("/orders/1", "bob-secret-key-0002").await.status,
        403,
        "acl"
    );
    assert_eq!(call("/orders/1", "wrong").await.status, 401);
    // regex_priority orders regex routes.
    let r = call("/items/42", "alice-secret-key-0001").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/items/42");
    // A disabled service's routes take no traffic.
    assert_eq!(get(&gw.proxy, "/billing").await.status, 404);
}

#[test]
fn what_gatehouse_cannot_honour_is_refused_field_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, err) = validate(dir.path(), "bad.yaml", UNSUPPORTED);
    assert!(!ok);
    for (line, path, what) in [
        (8, "services[0].routes[0].snis", "hosts"),
        (10, "services[0].routes[1].protocols[0]", "`tcp`"),
        (11, "services[0].routes[1].sources", "ip-restriction"),
        (
            13,
            "services[0].plugins[0].name",
            "unknown plugin `oauth2` (available: ",
        ),
        (16, "services[0].plugins[1].protocols", "split the route"),
        (18, "vaults", "vaults"),
    ] {
        assert!(
            err.lines().any(|l| l.contains(&format!("bad.yaml:{line}:"))
                && l.contains(path)
                && l.contains(what)),
            "{line} {path} {what}:\n{err}"
        );
    }
    assert!(
        err.contains("key-auth") && err.contains("rate-limiting"),
        "{err}"
    );
    assert!(err.contains("config.policy"), "policy redis refused: {err}");
    assert!(
        !err.contains("unknown variant `tcp`"),
        "one error per field: {err}"
    );
}

#[tokio::test]
async fn admin_api_as_kong_scripts_use_it() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&bin(), &[]);
    let info = gw.admin_ok("GET", "/", Value::Null).await;
    assert!(info["version"].is_string());
    assert!(info["plugins"]["available_on_server"]["key-auth"].is_object());

    let svc = gw
        .admin_ok(
            "POST",
            "/services",
            json!({"name": "s", "url": up.url(), "tags": ["a", "b"]}),
        )
        .await;
    assert!(svc["created_at"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(svc["created_at"], svc["updated_at"]);
    gw.admin_ok(
        "POST",
        "/services/s/routes",
        json!({"name": "r", "paths": ["/"]}),
    )
    .await;
    gw.admin_ok("POST", "/services/s/plugins", json!({"name": "key-auth"}))
        .await;
    // Duplicate names are conflicts.
    let r = gw
        .admin(
            "POST",
            "/services",
            &json!({"name": "s", "url": up.url()}).to_string(),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "conflict");

    // Credentials one at a time: a generated key, shown once, works at once; revoking it
    // stops it.
    gw.admin_ok(
        "POST",
        "/consumers",
        json!({"username": "alice", "tags": ["b"]}),
    )
    .await;
    let cred = gw
        .admin_ok("POST", "/consumers/alice/key-auth", json!({}))
        .await;
    let key = cred["key"].as_str().unwrap().to_string();
    assert!(key.len() >= 32);
    assert!(cred["consumer"]["id"].is_string());
    let id = cred["id"].as_str().unwrap().to_string();
    let r = request(&gw.proxy, "GET", "/x", &[("apikey", &key)], "")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let listed = gw
        .admin_ok("GET", "/consumers/alice/key-auth", Value::Null)
        .await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert!(
        listed["data"][0]["key"].is_null(),
        "the key is shown once only"
    );
    let all = gw.admin_ok("GET", "/key-auths", Value::Null).await;
    assert_eq!(all["data"][0]["id"], id.as_str());
    gw.admin_ok("POST", "/consumers/alice/acls", json!({"group": "gold"}))
        .await;
    gw.admin_ok(
        "POST",
        "/consumers/alice/basic-auth",
        json!({"username": "al", "password": "pw-123456"}),
    )
    .await;
    assert_eq!(
        gw.admin("DELETE", &format!("/key-auths/{id}"), "")
            .await
            .status,
        204
    );
    let r = request(&gw.proxy, "GET", "/x", &[("apikey", &key)], "")
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    let consumer = gw.admin_ok("GET", "/consumers/alice", Value::Null).await;
    assert_eq!(consumer["acls"][0]["group"], "gold");

    // Tags: `a,b` all, `a/b` any; paging has a `next` link.
    for i in 0..3 {
        gw.admin_ok(
            "POST",
            "/services",
            json!({"name": format!("t{i}"), "url": up.url(), "tags": ["b"]}),
        )
        .await;
    }
    let both = gw.admin_ok("GET", "/services?tags=a,b", Value::Null).await;
    assert_eq!(both["data"].as_array().unwrap().len(), 1);
    let any = gw.admin_ok("GET", "/services?tags=a/b", Value::Null).await;
    assert_eq!(any["data"].as_array().unwrap().len(), 4);
    let p1 = gw
        .admin_ok("GET", "/services?tags=b&size=3", Value::Null)
        .await;
    let next = p1["next"].as_str().unwrap().to_string();
    assert!(
        next.starts_with("/services?") && next.contains("tags=b"),
        "{next}"
    );
    let p2 = gw.admin_ok("GET", &next, Value::Null).await;
    assert_eq!(p2["data"].as_array().unwrap().len(), 1);
    assert!(p2["next"].is_null());
    let consumers = gw.admin_ok("GET", "/consumers?tags=b", Value::Null).await;
    assert_eq!(consumers["data"].as_array().unwrap().len(), 1);

    // PATCH keeps created_at and moves updated_at.
    let patched = gw
        .admin_ok("PATCH", "/services/s", json!({"retries": 2}))
        .await;
    assert_eq!(patched["created_at"], svc["created_at"]);
    assert!(patched["updated_at"].as_u64() >= svc["updated_at"].as_u64());
}

#[tokio::test]
async fn config_dump_diff_and_sync_against_a_node() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&bin(), &[]);
    gw.admin_ok("POST", "/services", json!({"name": "old", "url": up.url()}))
        .await;
    gw.admin_ok(
        "POST",
        "/services",
        json!({"name": "kept", "url": up.url(), "retries": 1}),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wanted.yaml");
    std::fs::write(
        &file,
        format!(
            "_format_version: \"3.0\"\nservices:\n- name: kept\n  url: {u}\n  retries: 3\n- name: new\n  url: {u}\n  routes:\n  - name: new-api\n    paths: [\"/new\"]\n",
            u = up.url()
        ),
    )
    .unwrap();
    let admin_url = format!("http://{}", gw.admin);
    let run = |args: &[&str]| {
        let out = Command::new(bin())
            .args(args)
            .args(["--admin-url", &admin_url])
            .env("GATEHOUSE_ADMIN_TOKEN", &gw.token)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let f = file.display().to_string();
    let (code, out, err) = run(&["config", "diff", &f, "--non-zero-exit-code"]);
    assert_eq!(code, Some(2), "{out}{err}");
    for line in [
        "creating service new",
        "creating route new-api",
        "updating service kept",
        "  retries: 1 -> 3",
        "deleting service old",
        "Summary: 2 to create, 1 to update, 1 to delete",
    ] {
        assert!(out.lines().any(|l| l == line), "{line}:\n{out}");
    }
    assert_eq!(
        get(&gw.proxy, "/new").await.status,
        404,
        "diff changes nothing"
    );
    let (code, out, err) = run(&["config", "sync", &f]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("applied: config version"), "{out}");
    assert_eq!(get(&gw.proxy, "/new").await.status, 200);
    let (code, out, _) = run(&["config", "diff", &f, "--non-zero-exit-code"]);
    assert_eq!(code, Some(0), "in sync now: {out}");
    let (code, out, err) = run(&["config", "dump"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("name: new-api"), "{out}");
    // A wrong token is a clear error.
    let out = Command::new(bin())
        .args([
            "config",
            "dump",
            "--admin-url",
            &admin_url,
            "--admin-token",
            "nope-nope-nope-nope",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}

/// curl with the admin token; returns (status, JSON body).
fn admin_curl(gw: &Gateway, method: &str, path: &str, args: &[&str]) -> (u16, Value) {
    let url = format!("http://{}{path}", gw.admin);
    let auth = format!("Authorization: Bearer {}", gw.token);
    let mut all = vec![
        "-X",
        method,
        "-H",
        auth.as_str(),
        "-w",
        "\n%{http_code}",
        url.as_str(),
    ];
    all.extend_from_slice(args);
    let (_, out, err) = curl(&all);
    let (body, code) = out
        .rsplit_once('\n')
        .unwrap_or_else(|| panic!("{out}{err}"));
    let v = if body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"))
    };
    (code.parse().unwrap(), v)
}

/// Kong's admin habits with curl's default form bodies: `-d name=… -d url=…`, `paths[]=`,
/// `config.minute=5`, `service.id=`, a repeated key as a list, numbers and booleans typed
/// by the schema — and the traffic then goes where the forms said.
#[tokio::test]
async fn kong_style_form_bodies() {
    let up = Upstream::start("orders");
    let gw = Gateway::start(&bin(), &[]);
    let (s, svc) = admin_curl(
        &gw,
        "POST",
        "/services",
        &[
            "-d",
            "name=orders",
            "-d",
            &format!("url={}", up.url()),
            "-d",
            "retries=2",
        ],
    );
    assert_eq!(s, 201, "{svc}");
    assert_eq!(svc["retries"], 2);
    let (s, route) = admin_curl(
        &gw,
        "POST",
        "/routes",
        &[
            "-d",
            "name=orders-route",
            "-d",
            "paths[]=/orders",
            "-d",
            "paths[]=/o",
            "-d",
            "methods=GET",
            "-d",
            "methods=POST",
            "-d",
            "strip_path=false",
            "-d",
            &format!("service.id={}", svc["id"].as_str().unwrap()),
        ],
    );
    assert_eq!(s, 201, "{route}");
    assert_eq!(route["paths"], json!(["/orders", "/o"]));
    assert_eq!(route["methods"], json!(["GET", "POST"]));
    assert_eq!(route["strip_path"], false);
    assert_eq!(route["service"], svc["id"]);
    let (s, plugin) = admin_curl(
        &gw,
        "POST",
        "/services/orders/plugins",
        &[
            "-d",
            "name=rate-limiting",
            "-d",
            "config.minute=2",
            "-d",
            "config.policy=local",
        ],
    );
    assert_eq!(s, 201, "{plugin}");
    assert_eq!(plugin["config"]["minute"], 2);
    let (s, _) = admin_curl(&gw, "POST", "/consumers", &["-d", "username=bob"]);
    assert_eq!(s, 201);
    let (s, key) = admin_curl(
        &gw,
        "POST",
        "/consumers/bob/key-auth",
        &["-d", "key=bob-secret-key"],
    );
    assert_eq!(s, 201, "{key}");
    assert_eq!(key["key"], "bob-secret-key");
    // Kong generates a key when the form is empty.
    let (s, generated) = admin_curl(&gw, "POST", "/consumers/bob/key-auth", &[]);
    assert_eq!(s, 201, "{generated}");
    assert!(generated["key"].as_str().is_some_and(|k| k.len() >= 32));

    // The route answers, and the form's limit holds.
    let first = get(&gw.proxy, "/orders/1").await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(
        first.json()["path"],
        "/orders/1",
        "strip_path=false was taken"
    );
    assert_eq!(get(&gw.proxy, "/orders/1").await.status, 200);
    assert_eq!(get(&gw.proxy, "/orders/1").await.status, 429);

    // A form that cannot be read says which key, and changes nothing.
    let (s, e) = admin_curl(
        &gw,
        "POST",
        "/services",
        &["-d", "name=x", "-d", "name.y=1"],
    );
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"]["code"], "bad_form");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("name.y"),
        "{e}"
    );
    let (s, e) = admin_curl(
        &gw,
        "POST",
        "/services",
        &["-d", "name=x", "-d", "retries=many"],
    );
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"]["details"][0]["path"], "retries", "{e}");
    // Neither JSON nor a form: 415 in the error shape.
    let (s, e) = admin_curl(
        &gw,
        "POST",
        "/services",
        &["-H", "Content-Type: text/plain", "-d", "name=x"],
    );
    assert_eq!(s, 415, "{e}");
    assert_eq!(e["error"]["code"], "unsupported_media_type");
    let (_, list) = admin_curl(&gw, "GET", "/services", &[]);
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
}
