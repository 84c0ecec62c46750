//! TLS toward clients and upstreams through the real binary, with real clients (curl,
//! `openssl s_client`, a rustls client for keep-alive and WebSockets) and certificates made
//! at test time by `openssl`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use gatehouse_testkit::pki::{yaml_block, KeyKind, Pki};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `openssl s_client` with `args`, stdin closed; returns stdout + stderr.
fn s_client(args: &[&str]) -> String {
    s_client_sending(args, "")
}

/// `openssl s_client` writing `input` once connected (then waiting for the answer).
fn s_client_sending(args: &[&str], input: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("openssl")
        .arg("s_client")
        .args(args)
        .args(if input.is_empty() {
            &[][..]
        } else {
            &["-ign_eof"][..]
        })
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl");
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(input.as_bytes());
    drop(stdin);
    let out = child.wait_with_output().expect("openssl");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// curl over TLS to `name` (resolved to the gateway's TLS port), trusting `ca`.
fn curl_tls(
    gw: &Gateway,
    ca: &std::path::Path,
    name: &str,
    path: &str,
    extra: &[&str],
) -> (bool, String, String) {
    let port = gw.tls.rsplit(':').next().unwrap();
    let resolve = format!("{name}:{port}:127.0.0.1");
    let url = format!("https://{name}:{port}{path}");
    let ca = ca.display().to_string();
    let mut args = vec!["--cacert", &ca, "--resolve", &resolve];
    args.extend_from_slice(extra);
    args.push(&url);
    curl(&args)
}

fn cert_json(c: &gatehouse_testkit::pki::Issued, snis: &[&str]) -> Value {
    json!({"cert": c.chain, "key": c.key, "snis": snis})
}

/// A rustls client config trusting `ca` (PEM).
fn client_config(
    ca: &str,
    client: Option<&gatehouse_testkit::pki::Issued>,
) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut cfg = match client {
        None => b.with_no_client_auth(),
        Some(c) => b
            .with_client_auth_cert(
                rustls::pki_types::CertificateDer::pem_slice_iter(c.chain.as_bytes())
                    .collect::<Result<_, _>>()
                    .unwrap(),
                rustls::pki_types::PrivateKeyDer::from_pem_slice(c.key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

async fn tls_connect(
    gw: &Gateway,
    cfg: Arc<rustls::ClientConfig>,
    name: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(&gw.tls).await?;
    tokio_rustls::TlsConnector::from(cfg)
        .connect(
            rustls::pki_types::ServerName::try_from(name.to_string()).unwrap(),
            tcp,
        )
        .await
}

async fn http1_over<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static>(
    io: S,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>> {
    let (tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    tx
}

async fn get_status(
    tx: &mut hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    host: &str,
    path: &str,
) -> Result<u16, hyper::Error> {
    let req = http::Request::get(path)
        .header("host", host)
        .body(http_body_util::Empty::new())
        .unwrap();
    let r = tx.send_request(req).await?;
    let status = r.status().as_u16();
    use http_body_util::BodyExt;
    let _ = r.into_body().collect().await;
    Ok(status)
}

#[tokio::test]
async fn tls_listener_sni_versions_alpn_resumption_and_hot_reload() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path(), "edge");
    let api = pki.server(&["api.example.com"], KeyKind::P256);
    let wild = pki.server(&["*.wild.test"], KeyKind::Rsa);
    let ed = pki.server(&["ed.test"], KeyKind::Ed25519);
    let p384 = pki.server(&["p384.test"], KeyKind::P384);
    let up = Upstream::start("a");
    let gw = Gateway::start(&bin(), &["--header-read-timeout", "2"]);
    gw.admin_ok(
        "POST",
        "/services",
        json!({"name": "s", "url": up.url(), "routes": [{"paths": ["/"]}]}),
    )
    .await;
    let api_id = gw
        .admin_ok(
            "POST",
            "/certificates",
            cert_json(&api, &["api.example.com"]),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    gw.admin_ok("POST", "/certificates", cert_json(&wild, &["*.wild.test"]))
        .await;
    gw.admin_ok("POST", "/certificates", cert_json(&p384, &["p384.test"]))
        .await;

    // SNI picks the certificate; the request is proxied with X-Forwarded-Proto: https; ALPN
    // gives HTTP/2 to curl --http2 and HTTP/1.1 otherwise.
    let (ok, out, err) = curl_tls(
        &gw,
        &pki.ca_file,
        "api.example.com",
        "/x",
        &["-w", "\n%{http_version}"],
    );
    assert!(ok, "{err}");
    assert!(out.ends_with("\n2"), "{out}");
    let body: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(body["headers"]["x-forwarded-proto"][0], "https");
    let (ok, out, _) = curl_tls(
        &gw,
        &pki.ca_file,
        "a.wild.test",
        "/x",
        &["--http1.1", "-o", "/dev/null", "-w", "%{http_version}"],
    );
    assert!(ok && out == "1.1", "{out}");
    let (ok, _, err) = curl_tls(&gw, &pki.ca_file, "p384.test", "/x", &[]);
    assert!(ok, "P-384: {err}");
    let port = gw.tls.rsplit(':').next().unwrap().to_string();
    let connect = format!("127.0.0.1:{port}");
    let out = s_client(&["-connect", &connect, "-servername", "x.wild.test"]);
    assert!(
        out.contains("CN = *.wild.test") || out.contains("CN=*.wild.test"),
        "{out}"
    );
    // No certificate for this name and no default: a handshake alert.
    let (ok, _, err) = curl_tls(&gw, &pki.ca_file, "unknown.test", "/x", &[]);
    assert!(!ok && err.to_lowercase().contains("alert"), "{err}");
    // TLS 1.2 and 1.3 only.
    assert!(s_client(&[
        "-connect",
        &connect,
        "-servername",
        "api.example.com",
        "-tls1_2"
    ])
    .contains("TLSv1.2"));
    assert!(s_client(&[
        "-connect",
        &connect,
        "-servername",
        "api.example.com",
        "-tls1_3"
    ])
    .contains("TLSv1.3"));
    let old = s_client(&[
        "-connect",
        &connect,
        "-servername",
        "api.example.com",
        "-tls1_1",
    ]);
    assert!(!old.contains("Cipher is ECDHE"), "{old}");
    // Session resumption, TLS 1.2 and 1.3 (the 1.3 ticket comes after the handshake: the
    // client sends a request and reads the answer, which brings it).
    let req = "GET /x HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n";
    for version in ["-tls1_2", "-tls1_3"] {
        let sess = tmp
            .path()
            .join(format!("sess{version}.pem"))
            .display()
            .to_string();
        let first = s_client_sending(
            &[
                "-connect",
                &connect,
                "-servername",
                "api.example.com",
                version,
                "-sess_out",
                &sess,
            ],
            req,
        );
        assert!(first.contains("New,"), "{first}");
        let again = s_client_sending(
            &[
                "-connect",
                &connect,
                "-servername",
                "api.example.com",
                version,
                "-sess_in",
                &sess,
            ],
            req,
        );
        assert!(again.contains("Reused,"), "{version}: {again}");
    }

    // Hot reload: a certificate added applies to the next handshake…
    let (ok, _, _) = curl_tls(&gw, &pki.ca_file, "ed.test", "/x", &[]);
    assert!(!ok, "no certificate for ed.test yet");
    gw.admin_ok("POST", "/certificates", cert_json(&ed, &["ed.test"]))
        .await;
    let (ok, _, err) = curl_tls(&gw, &pki.ca_file, "ed.test", "/x", &[]);
    assert!(ok, "Ed25519 after reload: {err}");
    // …and one deleted stops serving new handshakes while open connections keep going.
    let open = tls_connect(&gw, client_config(&pki.ca, None), "api.example.com")
        .await
        .unwrap();
    let mut tx = http1_over(open).await;
    assert_eq!(
        get_status(&mut tx, "api.example.com", "/a").await.unwrap(),
        200
    );
    let r = gw
        .admin("DELETE", &format!("/certificates/{api_id}"), "")
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(
        tls_connect(&gw, client_config(&pki.ca, None), "api.example.com")
            .await
            .is_err()
    );
    assert_eq!(
        get_status(&mut tx, "api.example.com", "/b").await.unwrap(),
        200
    );

    // Garbage instead of a ClientHello, and a client that never finishes the handshake: the
    // connection is dropped, everything else keeps working.
    let mut s = tokio::net::TcpStream::connect(&gw.tls).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(!String::from_utf8_lossy(&buf).contains("HTTP/1.1 200"));
    let mut idle = tokio::net::TcpStream::connect(&gw.tls).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(8), idle.read(&mut [0u8; 16])).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "handshake timeout: {closed:?}"
    );
    let (ok, _, err) = curl_tls(&gw, &pki.ca_file, "x.wild.test", "/x", &[]);
    assert!(ok, "{err}");
}

#[tokio::test]
async fn certificate_validation_default_certificate_and_private_key_never_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path(), "val");
    let good = pki.server(&["good.test"], KeyKind::P256);
    let other = pki.server(&["other.test"], KeyKind::P256);
    let expired = pki.expired("old.test");
    let default = pki.server(&["default.test"], KeyKind::P256);
    let up = Upstream::start("a");
    let cert = default.chain.clone();
    let cf = tmp.path().join("default-chain.pem");
    std::fs::write(&cf, cert).unwrap();
    let cf = cf.display().to_string();
    let kf = default.key_file.display().to_string();
    let gw = Gateway::start(&bin(), &["--tls-cert", &cf, "--tls-key", &kf]);
    gw.admin_ok(
        "POST",
        "/services",
        json!({"name": "s", "url": up.url(), "routes": [{"paths": ["/"]}]}),
    )
    .await;

    for (name, body, field, needle) in [
        (
            "key of another certificate",
            json!({"cert": good.chain, "key": other.key, "snis": ["good.test"]}),
            "key",
            "does not belong",
        ),
        (
            "expired",
            json!({"cert": expired.chain, "key": expired.key, "snis": ["old.test"]}),
            "cert",
            "expired",
        ),
        (
            "chain out of order",
            json!({"cert": format!("{}{}", pki.ca, good.cert), "key": good.key, "snis": ["good.test"]}),
            "cert",
            "out of order",
        ),
        (
            "not PEM",
            json!({"cert": "hello", "key": good.key, "snis": ["good.test"]}),
            "cert",
            "PEM",
        ),
        (
            "client_auth without client_ca",
            json!({"cert": good.chain, "key": good.key, "snis": ["good.test"], "client_auth": "optional"}),
            "client_auth",
            "client_ca",
        ),
    ] {
        let r = gw.admin("POST", "/certificates", &body.to_string()).await;
        assert_eq!(r.status, 422, "{name}: {}", r.text());
        let d = &r.json()["error"]["details"][0];
        assert_eq!(d["path"], field, "{name}: {d}");
        assert!(
            d["message"].as_str().unwrap().contains(needle),
            "{name}: {d}"
        );
        assert!(
            d["entity"].as_str().unwrap().contains("certificate"),
            "{name}: {d}"
        );
    }
    let r = gw
        .admin(
            "POST",
            "/certificates",
            &json!({"cert": good.chain, "snis": ["good.test"]}).to_string(),
        )
        .await;
    assert_eq!(r.status, 400, "a certificate without a key: {}", r.text());

    let c = gw
        .admin_ok("POST", "/certificates", cert_json(&good, &["good.test"]))
        .await;
    assert_eq!(c["key"], "REDACTED", "{c}");
    let id = c["id"].as_str().unwrap().to_string();
    let read = gw
        .admin_ok("GET", &format!("/certificates/{id}"), Value::Null)
        .await;
    assert_eq!(read["key"], "REDACTED");
    let list = gw.admin("GET", "/certificates", "").await.text();
    assert!(!list.contains("PRIVATE KEY"), "{list}");
    let dump = gw.admin("GET", "/config", "").await.text();
    assert!(
        !dump.contains("PRIVATE KEY") && dump.contains("REDACTED"),
        "{dump}"
    );
    // The dump posted back keeps the stored key (same id); the certificate still serves.
    let auth = format!("Bearer {}", gw.token);
    let r = request(
        &gw.admin,
        "POST",
        "/config",
        &[("authorization", &auth)],
        &dump,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let (ok, _, err) = curl_tls(&gw, &pki.ca_file, "good.test", "/x", &[]);
    assert!(ok, "{err}");
    // A PATCH that does not touch the key keeps it.
    gw.admin_ok(
        "PATCH",
        &format!("/certificates/{id}"),
        json!({"tags": ["t"]}),
    )
    .await;
    let (ok, _, err) = curl_tls(&gw, &pki.ca_file, "good.test", "/x", &[]);
    assert!(ok, "{err}");

    // Unknown SNI and no SNI get the default certificate from the command line.
    let port = gw.tls.rsplit(':').next().unwrap().to_string();
    let connect = format!("127.0.0.1:{port}");
    for args in [vec!["-servername", "nobody.test"], vec!["-noservername"]] {
        let mut a = vec!["-connect", connect.as_str()];
        a.extend(args);
        let out = s_client(&a);
        assert!(
            out.contains("CN = default.test") || out.contains("CN=default.test"),
            "{out}"
        );
    }
    // A bad default certificate stops the node from starting, naming the flag.
    let mut bad = std::process::Command::new(bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--status-listen",
            "127.0.0.1:0",
        ])
        .args([
            "--data-dir",
            &tmp.path().join("bad").display().to_string(),
            "--admin-token",
            gatehouse_testkit::gateway::TEST_TOKEN,
        ])
        .args([
            "--tls-cert",
            &expired.cert_file.display().to_string(),
            "--tls-key",
            &expired.key_file.display().to_string(),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = bad.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(bad.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(
        err.contains("--tls-cert") && err.contains("expired"),
        "{err}"
    );
}

#[tokio::test]
async fn https_only_routes_answer_426_or_redirect() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path(), "proto");
    let c = pki.server(&["shop.test"], KeyKind::P256);
    let up = Upstream::start("a");
    let yaml = format!(
        r#"_format_version: "1"
services:
  - url: {}
    routes:
      - {{ name: secure, paths: ["/secure"], protocols: [https] }}
      - {{ name: moved, paths: ["/moved"], protocols: [https], https_redirect_status_code: 308 }}
      - {{ name: plain, paths: ["/plain"], protocols: [http] }}
      - {{ name: both, paths: ["/both"] }}
certificates:
  - snis: [shop.test]
    cert: |
{}
    key: |
{}
"#,
        up.url(),
        yaml_block(&c.chain, 6),
        yaml_block(&c.key, 6)
    );
    let gw = start_with_config(tmp.path(), &yaml, &[]);
    let r = request(&gw.proxy, "GET", "/secure/x", &[("host", "shop.test")], "")
        .await
        .unwrap();
    assert_eq!(r.status, 426, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "https_required");
    let r = request(
        &gw.proxy,
        "GET",
        "/moved/x?q=1",
        &[("host", "shop.test:8080")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location").as_deref(),
        Some("https://shop.test/moved/x?q=1")
    );
    assert_eq!(get(&gw.proxy, "/plain/x").await.status, 200);
    assert_eq!(get(&gw.proxy, "/both/x").await.status, 200);
    let (ok, out, _) = curl_tls(
        &gw,
        &pki.ca_file,
        "shop.test",
        "/secure/x",
        &["-o", "/dev/null", "-w", "%{http_code}"],
    );
    assert!(ok && out == "200", "{out}");
    let (_, out, _) = curl_tls(
        &gw,
        &pki.ca_file,
        "shop.test",
        "/plain/x",
        &["-o", "/dev/null", "-w", "%{http_code}"],
    );
    assert_eq!(out, "404", "an http-only route does not match TLS requests");
    // Only 426 and the redirect statuses are accepted.
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(&bad, "_format_version: \"1\"\nservices:\n  - url: http://127.0.0.1:1\n    routes: [{ paths: [\"/z\"], protocols: [https], https_redirect_status_code: 303 }]\n").unwrap();
    let out = std::process::Command::new(bin())
        .arg("validate")
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("https_redirect_status_code"),
        "{err}"
    );
}

#[tokio::test]
async fn client_certificates_required_optional_and_mtls_auth() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path(), "mtls");
    let strangers = Pki::new(&tmp.path().join("other"), "stranger");
    let server = pki.server(&["req.test", "opt.test"], KeyKind::P256);
    let alice = pki.client("alice", &["alice@example.com"]);
    let robot = pki.client("robot-7", &["spiffe://corp/robot"]);
    let mallory = strangers.client("alice", &[]);
    let up = Upstream::start("a");
    let gw = Gateway::start(&bin(), &[]);
    gw.admin_ok("POST", "/services", json!({"name": "s", "url": up.url(), "routes": [
        {"name": "api", "paths": ["/"], "plugins": [{"name": "mtls-auth"}, {"name": "acl", "config": {"allow": ["robots"]}}]},
    ]})).await;
    gw.admin_ok("POST", "/consumers", json!({"username": "alice"}))
        .await;
    gw.admin_ok("POST", "/consumers", json!({"username": "r7", "mtls_credentials": [{"subject_name": "spiffe://corp/robot"}], "acls": [{"group": "robots"}]})).await;
    let mut req_cert = cert_json(&server, &["req.test"]);
    req_cert["client_ca"] = json!(pki.ca);
    gw.admin_ok("POST", "/certificates", req_cert).await;
    let mut opt_cert = cert_json(&server, &["opt.test"]);
    opt_cert["client_ca"] = json!(pki.ca);
    opt_cert["client_auth"] = json!("optional");
    gw.admin_ok("POST", "/certificates", opt_cert).await;

    // Required: no certificate, or one from another CA, fails the handshake.
    let mut no_cert = http1_over(
        tls_connect(&gw, client_config(&pki.ca, None), "req.test")
            .await
            .unwrap(),
    )
    .await;
    assert!(
        get_status(&mut no_cert, "req.test", "/").await.is_err(),
        "no client certificate"
    );
    let mut wrong_ca = http1_over(
        tls_connect(&gw, client_config(&pki.ca, Some(&mallory)), "req.test")
            .await
            .unwrap(),
    )
    .await;
    assert!(
        get_status(&mut wrong_ca, "req.test", "/").await.is_err(),
        "certificate from another CA"
    );
    // A certificate mapped to a consumer by mtls_credentials (SAN), in the allowed group.
    let io = tls_connect(&gw, client_config(&pki.ca, Some(&robot)), "req.test")
        .await
        .unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    let r = tx
        .send_request(
            http::Request::get("/x")
                .header("host", "req.test")
                .header("x-client-cert-subject", "CN=forged")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    use http_body_util::BodyExt;
    let body: Value =
        serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["headers"]["x-consumer-username"][0], "r7", "{body}");
    assert_eq!(
        body["headers"]["x-client-cert-subject"],
        json!(["CN=robot-7"]),
        "{body}"
    );
    assert_eq!(
        body["headers"]["x-client-cert-fingerprint"][0]
            .as_str()
            .unwrap()
            .len(),
        64
    );
    // Alice maps by CN = username, but is not in the group: 403 from acl.
    let mut a = http1_over(
        tls_connect(&gw, client_config(&pki.ca, Some(&alice)), "req.test")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(get_status(&mut a, "req.test", "/").await.unwrap(), 403);
    // Optional: without a certificate the handshake passes and mtls-auth answers 401.
    let mut anon = http1_over(
        tls_connect(&gw, client_config(&pki.ca, None), "opt.test")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(get_status(&mut anon, "opt.test", "/").await.unwrap(), 401);
    // And over cleartext there is no certificate at all.
    assert_eq!(get(&gw.proxy, "/x").await.status, 401);
}

#[tokio::test]
async fn https_upstreams_verify_send_sni_use_client_certificates_and_split_form() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path(), "up");
    let server = pki.server(&["localhost", "127.0.0.1"], KeyKind::P256);
    let gwclient = pki.client("gatehouse", &[]);
    let plain_tls = Upstream::start_tls("tls", &server.chain, &server.key, None);
    let mtls = Upstream::start_tls("mtls", &server.chain, &server.key, Some(&pki.ca));
    let gw = Gateway::start(&bin(), &[]);
    let client_cert_id = gw
        .admin_ok(
            "POST",
            "/certificates",
            json!({"cert": gwclient.chain, "key": gwclient.key}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let port = plain_tls.addr.port();
    gw.admin_ok("POST", "/services", json!({"name": "trusted", "url": format!("https://localhost:{port}"), "ca_certificates": [pki.ca], "routes": [{"paths": ["/trusted"]}]})).await;
    gw.admin_ok("POST", "/services", json!({"name": "system-roots", "url": format!("https://localhost:{port}"), "routes": [{"paths": ["/system"]}]})).await;
    gw.admin_ok("POST", "/services", json!({"name": "unverified", "url": format!("https://127.0.0.1:{port}"), "tls_verify": false, "routes": [{"paths": ["/unverified"]}]})).await;
    gw.admin_ok("POST", "/services", json!({"name": "split", "protocol": "https", "host": "localhost", "port": port, "path": "/base", "ca_certificates": [pki.ca], "routes": [{"paths": ["/split"]}]})).await;
    let mport = mtls.addr.port();
    gw.admin_ok("POST", "/services", json!({"name": "mtls", "url": format!("https://localhost:{mport}"), "ca_certificates": [pki.ca], "client_certificate": client_cert_id, "routes": [{"paths": ["/mtls"]}]})).await;
    gw.admin_ok("POST", "/services", json!({"name": "mtls-no-cert", "url": format!("https://localhost:{mport}"), "ca_certificates": [pki.ca], "routes": [{"paths": ["/nocert"]}]})).await;

    let r = get(&gw.proxy, "/trusted/x").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["upstream"], "tls");
    assert_eq!(r.json()["version"], "HTTP/1.1");
    // HTTP/2 to upstreams: over TLS by ALPN (h2), and without TLS by prior knowledge (h2c).
    let plain = Upstream::start("h2c");
    gw.admin_ok("POST", "/services", json!({"name": "h2", "url": format!("h2://localhost:{port}"), "ca_certificates": [pki.ca], "routes": [{"paths": ["/h2"]}]})).await;
    gw.admin_ok("POST", "/services", json!({"name": "h2c", "url": format!("h2c://{}", plain.addr), "routes": [{"paths": ["/h2c"]}]})).await;
    for (path, name) in [("/h2/x", "tls"), ("/h2c/x", "h2c")] {
        let r = request(
            &gw.proxy,
            "POST",
            path,
            &[("content-type", "text/plain")],
            "payload",
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.json()["upstream"], name);
        assert_eq!(r.json()["version"], "HTTP/2.0", "{path}");
        assert_eq!(r.json()["body"], "payload");
    }
    assert_eq!(r.json()["headers"]["host"][0], format!("localhost:{port}"));
    let r = get(&gw.proxy, "/system/x").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "upstream_tls_error");
    let start = std::time::Instant::now();
    while !gw.log_text().contains("upstream TLS handshake failed")
        && start.elapsed() < Duration::from_secs(3)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = gw.log_text();
    assert!(
        log.contains("upstream TLS handshake failed") && log.contains("UnknownIssuer"),
        "{log}"
    );
    assert_eq!(get(&gw.proxy, "/unverified/x").await.status, 200);
    let r = get(&gw.proxy, "/split/x").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "/base/x");
    let r = get(&gw.proxy, "/mtls/x").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["upstream"], "mtls");
    let r = get(&gw.proxy, "/nocert/x").await;
    assert_eq!(r.status, 502, "{}", r.text());

    // Kept alive and pooled per TLS settings: more requests reuse connections; services with
    // other TLS settings to the same address never share one.
    let before = plain_tls.connections();
    for _ in 0..5 {
        assert_eq!(get(&gw.proxy, "/trusted/x").await.status, 200);
    }
    assert!(
        plain_tls.connections() - before <= 2,
        "pooled: {}",
        plain_tls.connections() - before
    );
    // The same address under other TLS settings (one more trusted CA) gets connections of
    // its own, though warm ones to that address are pooled.
    gw.admin_ok("POST", "/services", json!({"name": "other-settings", "url": format!("https://localhost:{port}"), "ca_certificates": [pki.ca, pki.ca], "routes": [{"paths": ["/other"]}]})).await;
    let before = plain_tls.connections();
    assert_eq!(get(&gw.proxy, "/other/x").await.status, 200);
    assert!(
        plain_tls.connections() > before,
        "different TLS settings use their own connections"
    );
}

#[tokio::test]
async fn websockets_and_sse_over_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path(), "ws");
    let c = pki.server(&["ws.test"], KeyKind::P256);
    let up = Upstream::start("ws");
    let gw = Gateway::start(&bin(), &[]);
    gw.admin_ok(
        "POST",
        "/services",
        json!({"name": "s", "url": up.url(), "routes": [{"paths": ["/"], "websocket": true}]}),
    )
    .await;
    gw.admin_ok("POST", "/certificates", cert_json(&c, &["ws.test"]))
        .await;
    let io = tls_connect(&gw, client_config(&pki.ca, None), "ws.test")
        .await
        .unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async("wss://ws.test/ws", io)
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    use futures_util::{SinkExt, StreamExt};
    ws.send(tokio_tungstenite::tungstenite::Message::text("over tls"))
        .await
        .unwrap();
    let back = ws.next().await.unwrap().unwrap();
    assert_eq!(back.into_text().unwrap().as_str(), "over tls");
    // SSE: events arrive one by one over TLS too.
    let (ok, out, err) = curl_tls(&gw, &pki.ca_file, "ws.test", "/stream/3/100", &["-N"]);
    assert!(ok, "{err}");
    assert_eq!(out, "data: event 0\n\ndata: event 1\n\ndata: event 2\n\n");
}
