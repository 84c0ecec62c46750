//! gRPC through the real binary with a real gRPC client and server (python `grpcio`,
//! installed by scripts/test.sh): unary and all three streaming kinds with trailers, over
//! cleartext HTTP/2 and TLS on both sides; plugins on gRPC routes; the gateway's own errors
//! as gRPC statuses; `grpc-timeout`.

mod common;

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use common::*;
use gatehouse_testkit::pki::{yaml_block, KeyKind, Pki};
use serde_json::Value;

fn python() -> PathBuf {
    test_python()
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/grpc")
        .join(name)
}

/// A running `server.py`; killed when dropped.
struct GrpcServer {
    child: Child,
    port: u16,
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn grpc_server(tls: Option<&gatehouse_testkit::pki::Issued>) -> GrpcServer {
    let mut cmd = Command::new(python());
    cmd.arg(script("server.py"));
    if let Some(c) = tls {
        cmd.arg(&c.cert_file).arg(&c.key_file);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start server.py");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().parse().expect("server.py prints its port");
    GrpcServer { child, port }
}

/// Runs `client.py` against `target` with `args` then `calls`; one JSON result per call.
fn grpc_client(target: &str, args: &[&str], calls: &[&str]) -> Vec<Value> {
    let out = Command::new(python())
        .arg(script("client.py"))
        .arg(target)
        .args(args)
        .args(calls)
        .output()
        .expect("run client.py");
    assert!(
        out.status.success(),
        "client.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn codes(results: &[Value]) -> Vec<&str> {
    results
        .iter()
        .map(|r| r["code"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn grpc_calls_streams_plugins_errors_and_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path(), "grpc");
    let edge = pki.server(&["grpc.test"], KeyKind::P256);
    let backend_cert = pki.server(&["localhost"], KeyKind::P256);
    let plain = grpc_server(None);
    let secure = grpc_server(Some(&backend_cert));
    let log = tmp.path().join("calls.log");
    let closed = closed_port();
    let yaml = format!(
        r#"_format_version: "1"
services:
  - name: echo
    url: grpc://127.0.0.1:{plain}
    routes:
      - name: open
        paths: ["/test.Echo/"]
        headers: {{ x-scenario: [open] }}
        protocols: [grpc, grpcs]
        plugins: [{{ name: file-log, config: {{ path: "{log}" }} }}]
      - name: auth
        paths: ["/test.Echo/"]
        strip_path: false
        headers: {{ x-scenario: [auth] }}
        plugins: [{{ name: key-auth }}]
      - name: acl
        paths: ["/test.Echo/"]
        strip_path: false
        headers: {{ x-scenario: [acl] }}
        plugins: [{{ name: key-auth }}, {{ name: acl, config: {{ allow: [admins] }} }}]
      - name: limited
        paths: ["/test.Echo/"]
        protocols: [grpc]
        headers: {{ x-scenario: [limited] }}
        plugins: [{{ name: rate-limiting, config: {{ minute: 2 }} }}]
  - name: down
    url: grpc://127.0.0.1:{closed}
    retries: 0
    routes: [{{ name: down, paths: ["/test.Echo/"], strip_path: false, headers: {{ x-scenario: [down] }} }}]
  - name: secure-backend
    url: grpcs://localhost:{secure}
    ca_certificates:
      - |
{ca}
    routes: [{{ name: grpcs-up, paths: ["/test.Echo/"], protocols: [grpcs], headers: {{ x-scenario: [grpcs] }} }}]
consumers:
  - username: alice
    keyauth_credentials: [{{ key: alice-key-0123456789 }}]
certificates:
  - snis: [grpc.test]
    cert: |
{cert}
    key: |
{key}
"#,
        plain = plain.port,
        secure = secure.port,
        closed = closed.port(),
        log = log.display(),
        ca = yaml_block(&pki.ca, 8),
        cert = yaml_block(&edge.chain, 6),
        key = yaml_block(&edge.key, 6),
    );
    let gw = start_with_config(tmp.path(), &yaml, &[]);

    // Every kind of call, with trailers, over cleartext HTTP/2 (prior knowledge).
    let r = grpc_client(
        &gw.proxy,
        &["--md", "x-scenario=open"],
        &[
            "unary:hello",
            "server:4",
            "client:a,b,c",
            "bidi:x,y,z",
            "unary:fail",
        ],
    );
    assert_eq!(codes(&r), ["OK", "OK", "OK", "OK", "NOT_FOUND"], "{r:?}");
    assert_eq!(r[0]["messages"][0], "echo:hello|consumer=");
    assert_eq!(r[0]["trailers"]["x-trailer"], "t1");
    assert_eq!(
        r[1]["messages"],
        serde_json::json!(["item 0", "item 1", "item 2", "item 3"])
    );
    assert_eq!(r[2]["messages"][0], "a,b,c");
    assert_eq!(
        r[3]["messages"],
        serde_json::json!(["re:x", "re:y", "re:z"])
    );
    assert_eq!(r[4]["details"], "no such thing");

    // Plugins on gRPC routes, and the gateway's own answers as gRPC statuses.
    let r = grpc_client(&gw.proxy, &["--md", "x-scenario=auth"], &["unary:x"]);
    assert_eq!(codes(&r), ["UNAUTHENTICATED"], "{r:?}");
    let r = grpc_client(
        &gw.proxy,
        &[
            "--md",
            "x-scenario=auth",
            "--md",
            "apikey=alice-key-0123456789",
        ],
        &["unary:x"],
    );
    assert_eq!(codes(&r), ["OK"], "{r:?}");
    assert_eq!(r[0]["messages"][0], "echo:x|consumer=alice");
    let r = grpc_client(
        &gw.proxy,
        &[
            "--md",
            "x-scenario=acl",
            "--md",
            "apikey=alice-key-0123456789",
        ],
        &["unary:x"],
    );
    assert_eq!(codes(&r), ["PERMISSION_DENIED"], "{r:?}");
    let r = grpc_client(
        &gw.proxy,
        &["--md", "x-scenario=limited"],
        &["unary:1", "unary:2", "unary:3"],
    );
    assert_eq!(codes(&r), ["OK", "OK", "RESOURCE_EXHAUSTED"], "{r:?}");
    let r = grpc_client(&gw.proxy, &["--md", "x-scenario=down"], &["unary:x"]);
    assert_eq!(codes(&r), ["UNAVAILABLE"], "{r:?}");
    let r = grpc_client(
        &gw.proxy,
        &["--md", "x-scenario=open"],
        &["path:/nothing.Here/Method"],
    );
    assert_eq!(codes(&r), ["UNIMPLEMENTED"], "{r:?}");
    assert!(
        r[0]["details"].as_str().unwrap().contains("no route"),
        "{r:?}"
    );

    // grpc-timeout is honoured by the gateway itself: DEADLINE_EXCEEDED in a trailers-only
    // answer (curl has no deadline of its own here).
    let frame = {
        let msg = b"sleep:3";
        let mut f = vec![0u8, 0, 0, 0, msg.len() as u8];
        f.extend_from_slice(msg);
        let p = tmp.path().join("frame.bin");
        std::fs::write(&p, f).unwrap();
        p
    };
    let started = std::time::Instant::now();
    let (ok, out, err) = curl(&[
        "--http2-prior-knowledge",
        "-s",
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        "-H",
        "grpc-timeout: 300m",
        "-H",
        "x-scenario: open",
        "--data-binary",
        &format!("@{}", frame.display()),
        &format!("http://{}/test.Echo/Unary", gw.proxy),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("grpc-status: 4"), "{out}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "the gateway did not wait for the slow upstream"
    );

    // TLS on both sides: a grpcs client to the gateway, a grpcs upstream behind it.
    let r = grpc_client(
        &gw.tls,
        &[
            "--tls",
            &pki.ca_file.display().to_string(),
            "grpc.test",
            "--md",
            "x-scenario=grpcs",
        ],
        &["unary:secure", "bidi:p,q"],
    );
    assert_eq!(codes(&r), ["OK", "OK"], "{r:?}");
    assert_eq!(r[0]["messages"][0], "echo:secure|consumer=");
    assert_eq!(r[0]["trailers"]["x-trailer"], "t1");

    // The log plugin saw the gRPC calls.
    let start = std::time::Instant::now();
    let mut text = String::new();
    while start.elapsed() < std::time::Duration::from_secs(3) {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().count() >= 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        text.contains("\"route\":{\"id\"") || text.contains("open"),
        "{text}"
    );
    assert!(text.lines().count() >= 5, "{text}");
}

/// Splits a gRPC-Web body into (flag, payload) frames.
fn web_frames(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while b.len() >= 5 {
        let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        out.push((b[0], b[5..5 + len].to_vec()));
        b = &b[5 + len..];
    }
    assert!(b.is_empty(), "trailing bytes in a gRPC-Web body");
    out
}

fn web_message(msg: &[u8]) -> String {
    let mut f = vec![0u8, 0, 0, 0, msg.len() as u8];
    f.extend_from_slice(msg);
    String::from_utf8(f).unwrap()
}

#[tokio::test]
async fn grpc_web_clients_reach_grpc_upstreams() {
    use base64::Engine;
    let tmp = tempfile::tempdir().unwrap();
    let backend = grpc_server(None);
    let yaml = format!(
        r#"_format_version: "1"
services:
  - url: grpc://127.0.0.1:{}
    routes:
      - name: web
        paths: ["/test.Echo/"]
        strip_path: false
        plugins: [{{ name: grpc-web }}]
      - name: web-auth
        paths: ["/test.Echo/"]
        strip_path: false
        headers: {{ x-scenario: [auth] }}
        plugins: [{{ name: grpc-web }}, {{ name: key-auth }}]
"#,
        backend.port
    );
    let gw = start_with_config(tmp.path(), &yaml, &[]);
    // A browser's unary call over HTTP/1.1: messages, then the trailers as the last frame.
    let r = request(
        &gw.proxy,
        "POST",
        "/test.Echo/Unary",
        &[
            ("content-type", "application/grpc-web+proto"),
            ("x-grpc-web", "1"),
        ],
        &web_message(b"from-browser"),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/grpc-web+proto")
    );
    let frames = web_frames(&r.body);
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[0], (0, b"echo:from-browser|consumer=".to_vec()));
    assert_eq!(frames[1].0, 0x80);
    let trailers = String::from_utf8_lossy(&frames[1].1).to_string();
    assert!(
        trailers.contains("grpc-status: 0\r\n") && trailers.contains("x-trailer: t1\r\n"),
        "{trailers}"
    );
    // Server streaming, base64 both ways (grpc-web-text).
    let b64 = base64::engine::general_purpose::STANDARD;
    let r = request(
        &gw.proxy,
        "POST",
        "/test.Echo/ServerStream",
        &[("content-type", "application/grpc-web-text")],
        &b64.encode(web_message(b"3")),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/grpc-web-text")
    );
    // Each chunk is base64 on its own (padded); decode them one by one.
    let text = r.text();
    let mut decoded = Vec::new();
    let mut rest = text.as_str();
    while !rest.is_empty() {
        let end = rest.find('=').map(|i| {
            let mut e = i + 1;
            while rest[e..].starts_with('=') {
                e += 1;
            }
            e
        });
        let (chunk, tail) = rest.split_at(end.unwrap_or(rest.len()));
        decoded.extend(b64.decode(chunk).unwrap());
        rest = tail;
    }
    let frames = web_frames(&decoded);
    let data: Vec<String> = frames
        .iter()
        .filter(|(f, _)| *f == 0)
        .map(|(_, d)| String::from_utf8_lossy(d).to_string())
        .collect();
    assert_eq!(data, ["item 0", "item 1", "item 2"]);
    assert!(String::from_utf8_lossy(&frames.last().unwrap().1).contains("grpc-status: 0"));
    // The gateway's own refusal reaches a gRPC-Web client as a gRPC status in the headers.
    let r = request(
        &gw.proxy,
        "POST",
        "/test.Echo/Unary",
        &[
            ("content-type", "application/grpc-web+proto"),
            ("x-scenario", "auth"),
        ],
        &web_message(b"x"),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("grpc-status").as_deref(), Some("16"));
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/grpc-web+proto")
    );
}
