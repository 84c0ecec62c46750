//! Issue 8's findings beyond HTTP framing, through the real binary: admin input that used
//! to take the process down (findings 4), basic-auth on the workers and by timing (5),
//! `hide_credentials` missing a copy (7), and secrets on disk and in `ps` (9).

mod common;

use std::time::{Duration, Instant};

use common::*;
use gatehouse_testkit::recorder::{Answer, Recorder};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// An argon2id hash with parameters heavy enough that checking it takes far longer than a
/// proxied request (about a second), so that ordering shows where it ran.
fn slow_hash(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(64 * 1024, 16, 1, None).unwrap();
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    a.hash_password(
        password.as_bytes(),
        &SaltString::from_b64("c29tZXNhbHRzb21lc2FsdA").unwrap(),
    )
    .unwrap()
    .to_string()
}

async fn send_raw(addr: &str, req: String) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    s
}

/// Finding 5: the argon2 check runs off the proxy worker, takes the same time for unknown
/// users as for wrong passwords, and failures are limited per username.
#[tokio::test]
async fn basic_auth_checks_passwords_off_the_worker_in_equal_time() {
    let up = Upstream::start("a");
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"_format_version: "1"
services:
  - url: {u}
    routes:
      - paths: ["/open"]
      - paths: ["/slow"]
        plugins: [{{ name: basic-auth, config: {{ max_failures: 0 }} }}]
      - paths: ["/timed"]
        plugins: [{{ name: basic-auth, config: {{ max_failures: 0 }} }}]
      - paths: ["/limited"]
        plugins: [{{ name: basic-auth, config: {{ max_failures: 3, failure_window: 60 }} }}]
consumers:
  - username: slow
    basicauth_credentials: [{{ username: slow, password_hash: "{h}" }}]
  - username: fast
    basicauth_credentials: [{{ username: fast, password: "right-password" }}]
"#,
        u = up.url(),
        h = slow_hash("slow-password")
    );
    let gw = start_with_config(dir.path(), &yaml, &["--workers", "1"]);

    // One worker. A wrong password against the slow hash is being checked when an
    // unrelated request arrives: that one is answered first (on the old code the worker was
    // busy hashing, so it waited behind the check).
    let mut slow = send_raw(
        &gw.proxy,
        format!(
            "GET /slow HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\r\n",
            basic("slow", "wrong")
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let open = get(&gw.proxy, "/open").await;
    assert_eq!(open.status, 200);
    let mut probe = [0u8; 1];
    let answered_first = tokio::time::timeout(Duration::from_millis(1), slow.peek(&mut probe))
        .await
        .is_err();
    assert!(
        answered_first,
        "the unrelated request waited for the password check"
    );
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = [0u8; 4096];
        while !out.windows(4).any(|w| w == b"\r\n\r\n") {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 401"));

    // Unknown users and known users with a wrong password take the same time (both are
    // checked against an argon2 hash). Interleaved samples, medians compared.
    let mut unknown = Vec::new();
    let mut known = Vec::new();
    for i in 0..12 {
        for (user, times) in [("nobody", &mut unknown), ("fast", &mut known)] {
            let t = Instant::now();
            let r = request(
                &gw.proxy,
                "GET",
                "/timed",
                &[("authorization", &basic(user, &format!("wrong-{i}")))],
                "",
            )
            .await
            .unwrap();
            times.push(t.elapsed());
            assert_eq!(r.status, 401);
        }
    }
    unknown.sort();
    known.sort();
    let (u, k) = (unknown[6].as_secs_f64(), known[6].as_secs_f64());
    assert!(
        u / k > 0.5 && u / k < 2.0,
        "unknown user {:?} vs wrong password {:?}: usernames can be told apart by time",
        unknown[6],
        known[6]
    );

    // Failures are limited per username: a correct pair verified before keeps working
    // (cached), everyone else with that name gets 429 without a hash being checked.
    let limited = |user: &'static str, password: String| {
        let proxy = gw.proxy.clone();
        async move {
            request(
                &proxy,
                "GET",
                "/limited",
                &[("authorization", &basic(user, &password))],
                "",
            )
            .await
            .unwrap()
        }
    };
    assert_eq!(limited("fast", "right-password".into()).await.status, 200);
    for i in 0..3 {
        assert_eq!(limited("fast", format!("bad{i}")).await.status, 401);
    }
    let r = limited("fast", "bad4".into()).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "too_many_failures");
    assert_eq!(r.header("retry-after").as_deref(), Some("60"));
    assert_eq!(
        limited("fast", "right-password".into()).await.status,
        200,
        "a cached correct pair is not locked out"
    );
    // The same limit applies to names that do not exist (no oracle).
    for i in 0..3 {
        assert_eq!(limited("ghost", format!("x{i}")).await.status, 401);
    }
    assert_eq!(limited("ghost", "x".into()).await.status, 429);
}

/// Finding 7: every copy of the key goes, wherever key-auth may read it from.
#[tokio::test]
async fn hide_credentials_removes_every_copy_of_the_key() {
    let rec = Recorder::start(Answer::Echo);
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"_format_version: "1"
services:
  - url: {}
    routes:
      - paths: ["/k"]
        plugins: [{{ name: key-auth, config: {{ key_names: [apikey, x-api-key], hide_credentials: true }} }}]
consumers:
  - username: alice
    keyauth_credentials: [{{ key: alice-key-0123456789 }}]
"#,
        rec.url()
    );
    let gw = start_with_config(dir.path(), &yaml, &[]);
    let r = request(
        &gw.proxy,
        "GET",
        "/k/x?apikey=other-key&keep=1&api%6Bey=third&x-api-key=fourth",
        &[("apikey", "alice-key-0123456789"), ("x-api-key", "fifth")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = rec.settle(1, Duration::from_secs(3));
    let got = &seen[0];
    assert_eq!(got.target, "/x?keep=1", "{got:?}");
    assert!(got.header("apikey").is_none(), "{got:?}");
    assert!(got.header("x-api-key").is_none(), "{got:?}");
    assert_eq!(got.header("x-consumer-username"), Some("alice"));
}

const DEEP_ERR: &str = "nesting deeper than";

/// Finding 4: hostile documents get an error; the node keeps serving.
#[tokio::test]
async fn hostile_config_documents_are_rejected_and_the_node_keeps_serving() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&bin(), &[]);
    gw.admin_ok(
        "POST",
        "/services",
        json!({"name": "s", "url": up.url(), "routes": [{"paths": ["/"]}]}),
    )
    .await;
    let auth = format!("Bearer {}", gw.token);
    let post = |doc: String| {
        let (admin, auth) = (gw.admin.clone(), auth.clone());
        async move {
            request(&admin, "POST", "/config", &[("authorization", &auth)], &doc)
                .await
                .unwrap()
        }
    };
    // 10 KB of nested block sequences: used to overflow the control thread's stack and abort
    // the whole process.
    let r = post(gatehouse_testkit::hostile::nested_sequences(5000)).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains(DEEP_ERR), "{}", r.text());
    // Nested flow sequences and JSON arrays too.
    let r = post("[".repeat(20_000) + &"]".repeat(20_000)).await;
    assert_eq!(r.status, 400, "{}", r.text());
    // A 400-byte alias bomb: used to cost ~356 MB that was never returned.
    let bomb = gatehouse_testkit::hostile::alias_bomb();
    assert!(bomb.len() < 500);
    let r = post(bomb).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("alias bomb"), "{}", r.text());
    let status = std::fs::read_to_string(format!("/proc/{}/status", gw.pid())).unwrap();
    let peak_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(peak_kb < 200 * 1024, "peak memory {peak_kb} kB");
    // Still serving, with the old config.
    assert_eq!(get(&gw.proxy, "/x").await.status, 200);
    assert_eq!(gw.admin("GET", "/status", "").await.status, 200);
}

#[tokio::test]
async fn hostile_watched_file_is_rejected_and_the_node_keeps_serving() {
    let up = Upstream::start("a");
    let dir = tempfile::tempdir().unwrap();
    let good = format!(
        "_format_version: \"1\"\nservices:\n  - url: {}\n    routes: [{{ paths: [\"/\"] }}]\n",
        up.url()
    );
    let gw = start_with_config(dir.path(), &good, &[]);
    std::fs::write(
        dir.path().join("gatehouse.yaml"),
        gatehouse_testkit::hostile::nested_sequences(5000),
    )
    .unwrap();
    gw.signal("HUP");
    let start = Instant::now();
    loop {
        let st: Value = gw.admin_ok("GET", "/status", Value::Null).await;
        if let Some(e) = st["last_reload_error"].as_str() {
            assert!(e.contains(DEEP_ERR), "{e}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no reload error reported"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(&gw.proxy, "/x").await.status, 200);
}

/// Finding 9: data files 0600 (data dir 0700 when the gateway creates it), the admin token
/// from a file instead of `ps`, secrets encrypted at rest, rotation with the CLI.
#[tokio::test]
async fn secrets_on_disk_are_private_and_encrypted() {
    use std::os::unix::fs::PermissionsExt;
    let up = Upstream::start("a");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, "file-admin-token-0123456789\n").unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let tf = token_file.display().to_string();
    let start = |data: &std::path::Path| {
        Gateway::start_with_token(&bin(), data, &["--admin-token-file", &tf], None)
    };
    let mut gw = start(&data);
    gw.token = "file-admin-token-0123456789".into();
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", gw.pid())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains("file-admin-token"));
    gw.admin_ok("POST", "/services", json!({"name": "s", "url": up.url(), "routes": [{"paths": ["/"], "plugins": [{"name": "jwt"}]}]})).await;
    let secret = "jwt-shared-secret-0123456789abcdef";
    gw.admin_ok(
        "POST",
        "/consumers",
        json!({"username": "u", "jwt_secrets": [{"key": "iss-u", "secret": secret}]}),
    )
    .await;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"iss": "iss-u", "exp": 4_000_000_000u64}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let call = |proxy: String, token: String| async move {
        request(
            &proxy,
            "GET",
            "/x",
            &[("authorization", &format!("Bearer {token}"))],
            "",
        )
        .await
        .unwrap()
        .status
    };
    assert_eq!(call(gw.proxy.clone(), token.clone()).await, 200);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    for f in [
        "gatehouse.db",
        "gatehouse.db-wal",
        "gatehouse.db-shm",
        "keyring",
    ] {
        let p = data.join(f);
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{f}");
        }
    }
    let on_disk = |data: &std::path::Path| {
        let mut all = Vec::new();
        for f in ["gatehouse.db", "gatehouse.db-wal"] {
            all.extend(std::fs::read(data.join(f)).unwrap_or_default());
        }
        String::from_utf8_lossy(&all).into_owned()
    };
    assert!(
        !on_disk(&data).contains(secret),
        "the JWT secret is stored in the clear"
    );
    drop(gw);

    // Rotation: a new key first, everything sealed with it; the gateway still verifies.
    let out = std::process::Command::new(bin())
        .args([
            "keyring",
            "rotate",
            "--data-dir",
            &data.display().to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(bin())
        .args([
            "keyring",
            "prune",
            "--data-dir",
            &data.display().to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("dropped 1"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let keyring = std::fs::read_to_string(data.join("keyring")).unwrap();
    assert_eq!(keyring.lines().count(), 1, "{keyring}");
    let gw = start(&data);
    assert_eq!(call(gw.proxy.clone(), token).await, 200);
    assert!(!on_disk(&data).contains(secret));
}
