//! The differential framing harness: hostile requests through raw sockets into the real
//! binary, in front of an upstream that records the exact bytes it receives and reads them
//! strictly. For each vector the table says what the upstream may receive: nothing (the
//! gateway refuses with a status), or exactly these requests. In every case the upstream must
//! never see a message another server could read differently, and never a request for the
//! key-protected route that the gateway did not authenticate.
//!
//! Vectors come from PortSwigger's request-smuggling papers (CL.TE, TE.CL, TE.TE
//! obfuscations, h2c smuggling, WebSocket smuggling), the HTTP Garden corpus (bare LF,
//! chunk-size and extension leniency, trailers, obs-fold, absolute-form vs Host) and
//! RFC 9112 §6 and §11.

mod common;

use std::time::Duration;

use common::*;
use gatehouse_testkit::recorder::{Answer, Recorder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: &str = "alice-key-0123456789";

fn config(public: &str, private: &str, ws: &str) -> String {
    format!(
        r#"_format_version: "1"
services:
  - name: public
    url: {public}
    routes:
      - name: public
        paths: ["/public"]
        strip_path: false
        preserve_host: true
      - name: public-host
        hosts: ["public.example"]
        strip_path: false
        preserve_host: true
  - name: private
    url: {private}
    routes:
      - name: private
        paths: ["/private"]
        strip_path: false
        plugins: [{{ name: key-auth, config: {{ hide_credentials: true }} }}]
      - name: private-host
        hosts: ["admin.example"]
        strip_path: false
        plugins: [{{ name: key-auth }}]
  - name: ws
    url: {ws}
    routes:
      - name: ws
        paths: ["/ws"]
        strip_path: false
        websocket: true
consumers:
  - username: alice
    keyauth_credentials: [{{ key: {KEY} }}]
"#
    )
}

/// What the gateway answered first on a connection: status, head, body.
struct Answered {
    status: u16,
    head: String,
    body: String,
}

/// Sends `bytes` on a fresh connection and reads the first answer (or nothing, if the
/// connection closes first).
async fn send(addr: &str, bytes: &[u8]) -> Answered {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    read_one(&mut s).await
}

async fn read_one(s: &mut tokio::net::TcpStream) -> Answered {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let lower = head.to_ascii_lowercase();
            let len = lower
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let status = head
                    .split(' ')
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                return Answered {
                    status,
                    body: String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned(),
                    head,
                };
            }
        }
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => {
                return Answered {
                    status: 0,
                    head: String::from_utf8_lossy(&buf).into_owned(),
                    body: String::new(),
                }
            }
        }
    }
}

/// What the upstream may receive for a vector.
enum Expect {
    /// The gateway answers this status; no request reaches the upstream.
    Refused(u16, &'static str),
    /// The gateway answers 200; the upstream got exactly one request with this target and
    /// body.
    One(&'static str, &'static str),
}

fn vectors() -> Vec<(&'static str, Vec<u8>, Expect)> {
    use Expect::*;
    let k = KEY;
    let v = |s: &str| s.as_bytes().to_vec();
    vec![
        // --- Content-Length / Transfer-Encoding conflicts (CL.TE, TE.CL, TE.TE) ---
        ("CL.TE", v("POST /public/a HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG"), Refused(400, "bad_request")),
        ("TE.CL", v("POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n"), Refused(400, "bad_request")),
        ("TE xchunked", v("POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"), Refused(400, "bad_request")),
        ("TE space before colon", v("POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"), Refused(400, "bad_request")),
        ("TE second line", v("POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-encoding: x\r\n\r\n0\r\n\r\n"), Refused(400, "bad_request")),
        ("TE chunked, identity", v("POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"), Refused(400, "bad_request")),
        ("TE chunked twice", v("POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"), Refused(400, "bad_request")),
        ("TE quoted", v("POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n"), Refused(400, "bad_request")),
        ("TE vertical tab", b"POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n".to_vec(), Refused(400, "bad_request")),
        ("TE obs-fold", v("POST /public/a HTTP/1.1\r\nHost: x\r\nX: y\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), Refused(400, "bad_request")),
        ("TE unknown coding", v("POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"), Refused(501, "not_implemented")),
        ("TE on HTTP/1.0", v("POST /public/a HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), Refused(400, "bad_request")),
        ("TE empty", v("POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \r\n\r\n"), Refused(400, "bad_request")),
        ("TE upper case is chunked", v("POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: CHUNKED\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), One("/public/a", "abc")),
        ("TE tab before value", v("POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\tchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), One("/public/a", "abc")),
        // --- Content-Length forms ---
        ("CL plus sign", v("POST /public/a HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc"), Refused(400, "bad_request")),
        ("CL list", v("POST /public/a HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc"), Refused(400, "bad_request")),
        ("CL conflicting lines", v("POST /public/a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"), Refused(400, "bad_request")),
        ("CL hex", v("POST /public/a HTTP/1.1\r\nHost: x\r\nContent-Length: 0x3\r\n\r\nabc"), Refused(400, "bad_request")),
        ("CL negative", v("POST /public/a HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"), Refused(400, "bad_request")),
        ("CL overflow", v("POST /public/a HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n"), Refused(400, "bad_request")),
        ("CL empty", v("POST /public/a HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n"), Refused(400, "bad_request")),
        ("CL leading zeros", v("POST /public/a HTTP/1.1\r\nHost: x\r\nContent-Length: 003\r\n\r\nabc"), One("/public/a", "abc")),
        ("CL same value twice", v("POST /public/a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"), One("/public/a", "abc")),
        // --- Connection naming framing headers (finding 1) ---
        ("Connection: Content-Length", {
            let body = "GET /private/x HTTP/1.1\r\nHost: x\r\n\r\n";
            format!("POST /public/a HTTP/1.1\r\nHost: x\r\nConnection: Content-Length\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
        }, One("/public/a", "GET /private/x HTTP/1.1\r\nHost: x\r\n\r\n")),
        ("Connection: Transfer-Encoding", v("POST /public/a HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), One("/public/a", "abc")),
        ("Connection: Host", v("GET /public/a HTTP/1.1\r\nHost: x\r\nConnection: Host\r\n\r\n"), One("/public/a", "")),
        // --- Line endings and bytes in heads ---
        ("bare LF head", v("GET /public/a HTTP/1.1\nHost: x\n\n"), Refused(400, "bad_request")),
        ("bare LF hides TE", v("POST /public/a HTTP/1.1\r\nHost: x\r\nX: a\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), Refused(400, "bad_request")),
        ("bare CR in value", b"GET /public/a HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n".to_vec(), Refused(400, "bad_request")),
        ("NUL in value", b"GET /public/a HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n".to_vec(), Refused(400, "bad_request")),
        ("space in header name", v("GET /public/a HTTP/1.1\r\nHost: x\r\nContent Length: 5\r\n\r\n"), Refused(400, "bad_request")),
        ("leading obs-fold", v("GET /public/a HTTP/1.1\r\n Host: x\r\nHost: x\r\n\r\n"), Refused(400, "bad_request")),
        ("double space in request line", v("GET  /public/a HTTP/1.1\r\nHost: x\r\n\r\n"), Refused(400, "bad_request")),
        ("HTTP/1.2", v("GET /public/a HTTP/1.2\r\nHost: x\r\n\r\n"), Refused(400, "bad_request")),
        // --- Chunked body leniency (finding 6) ---
        ("chunk ext bare LF", v("POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;a\nb\r\nabc\r\n0\r\n\r\n"), Refused(400, "bad_request_body")),
        ("chunk size 0x", v("POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n"), Refused(400, "bad_request_body")),
        ("chunk size space", v("POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n"), Refused(400, "bad_request_body")),
        ("chunk size overflow", v("POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff3\r\nabc\r\n0\r\n\r\n"), Refused(400, "bad_request_body")),
        ("chunk data too long", v("POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n"), Refused(400, "bad_request_body")),
        ("trailer without colon", v("POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nGET /private/x HTTP/1.1\r\n\r\n"), Refused(400, "bad_request_body")),
        ("trailer bare LF", v("POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nT: a\nb: c\r\n\r\n"), Refused(400, "bad_request_body")),
        ("chunk ext quoted ok", v("POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;n=\"v;w\"\r\nabc\r\n0\r\nT: v\r\n\r\n"), One("/public/a", "abc")),
        // --- Host (finding 6) ---
        ("two Host", v("GET /public/a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n"), Refused(400, "bad_request")),
        ("two Host any case", v("GET /public/a HTTP/1.1\r\nHost: x\r\nhOST: x\r\n\r\n"), Refused(400, "bad_request")),
        ("no Host on 1.1", v("GET /public/a HTTP/1.1\r\n\r\n"), Refused(400, "bad_request")),
        ("Host with userinfo", v("GET /public/a HTTP/1.1\r\nHost: a@admin.example\r\n\r\n"), Refused(400, "bad_request")),
        ("Host with path", v("GET /public/a HTTP/1.1\r\nHost: admin.example/x\r\n\r\n"), Refused(400, "bad_request")),
        ("absolute form routes by its authority", v("GET http://admin.example/a HTTP/1.1\r\nHost: public.example\r\n\r\n"), Refused(401, "unauthorized")),
        ("absolute form ftp", v("GET ftp://public.example/a HTTP/1.1\r\nHost: public.example\r\n\r\n"), Refused(400, "bad_request")),
        ("absolute form userinfo", v("GET http://u@public.example/a HTTP/1.1\r\nHost: public.example\r\n\r\n"), Refused(400, "bad_request")),
        ("asterisk form", v("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"), Refused(400, "bad_request")),
        ("CONNECT", v("CONNECT admin.example:443 HTTP/1.1\r\nHost: admin.example:443\r\n\r\n"), Refused(405, "method_not_allowed")),
        // --- Upgrades (finding 2) ---
        ("h2c upgrade goes as plain HTTP", v("GET /public/a HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n"), One("/public/a", "")),
        ("WebSocket on a route without it", v("GET /public/a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"), Refused(400, "websocket_not_enabled")),
        // --- Paths ---
        ("dot segments to the private route", v("GET /public/../private/x HTTP/1.1\r\nHost: x\r\n\r\n"), Refused(401, "unauthorized")),
        ("escaped dots to the private route", v("GET /public/%2e%2E/private/x HTTP/1.1\r\nHost: x\r\n\r\n"), Refused(401, "unauthorized")),
        ("fragment", v("GET /private#/public HTTP/1.1\r\nHost: x\r\n\r\n"), Refused(400, "bad_request")),
        // --- Keyed request with a forged identity ---
        ("Connection names identity header", format!("GET /private/x HTTP/1.1\r\nHost: x\r\napikey: {k}\r\nConnection: X-Consumer-Username, X-Forwarded-For\r\n\r\n").into_bytes(), One("/private/x", "")),
    ]
}

#[tokio::test]
async fn hostile_requests_reach_the_upstream_only_as_the_table_says() {
    let rec = Recorder::start(Answer::Echo);
    let ws = Upstream::start("ws");
    let dir = tempfile::tempdir().unwrap();
    let gw = start_with_config(dir.path(), &config(&rec.url(), &rec.url(), &ws.url()), &[]);
    let mut failures = Vec::new();
    for (name, bytes, expect) in vectors() {
        rec.clear();
        let got = send(&gw.proxy, &bytes).await;
        let want_n = usize::from(matches!(expect, Expect::One(..)));
        let seen = rec.settle(want_n, Duration::from_secs(3));
        let violations = rec.violations();
        if !violations.is_empty() {
            failures.push(format!(
                "{name}: upstream saw {violations:?}\n{}",
                rec.raw_text()
            ));
        }
        match expect {
            Expect::Refused(status, code) => {
                if got.status != status || !got.body.contains(&format!("\"code\":\"{code}\"")) {
                    failures.push(format!(
                        "{name}: wanted {status} {code}, got:\n{}\n{}",
                        got.head, got.body
                    ));
                }
                if !seen.is_empty() {
                    failures.push(format!("{name}: upstream got {seen:?}"));
                }
            }
            Expect::One(target, body) => {
                if got.status != 200 {
                    failures.push(format!(
                        "{name}: wanted 200, got:\n{}\n{}",
                        got.head, got.body
                    ));
                }
                if seen.len() != 1 || seen[0].target != target || seen[0].body != body.as_bytes() {
                    failures.push(format!(
                        "{name}: upstream should get exactly {target} with body {body:?}, got {seen:?}\n{}",
                        rec.raw_text()
                    ));
                }
            }
        }
        for r in &seen {
            if r.target.starts_with("/private") && r.header("x-consumer-username") != Some("alice")
            {
                failures.push(format!(
                    "{name}: unauthenticated request reached the private route: {r:?}"
                ));
            }
            if r.header("host").is_none() {
                failures.push(format!("{name}: no Host upstream: {r:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Finding 1 in full: a body that is itself a request, with `Connection: Content-Length`,
/// arrives as one body; the pooled upstream connection stays in step (the next client gets
/// its own answer), and what the gateway set is never removed by the client's Connection.
#[tokio::test]
async fn connection_header_cannot_remove_framing_or_gateway_headers() {
    let rec = Recorder::start(Answer::Echo);
    let ws = Upstream::start("ws");
    let dir = tempfile::tempdir().unwrap();
    let gw = start_with_config(
        dir.path(),
        &config(&rec.url(), &rec.url(), &ws.url()),
        &["--workers", "1"],
    );
    let smuggled = "GET /private/x HTTP/1.1\r\nHost: x\r\n\r\n";
    let first = format!(
        "POST /public/a HTTP/1.1\r\nHost: x\r\nConnection: Content-Length\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let mut s = tokio::net::TcpStream::connect(&gw.proxy).await.unwrap();
    s.write_all(first.as_bytes()).await.unwrap();
    let a = read_one(&mut s).await;
    assert_eq!(a.status, 200, "{}", a.head);
    // Another client, over the same pooled upstream connection, gets its own answer.
    let b = send(&gw.proxy, b"GET /public/b HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(b.status, 200, "{}", b.head);
    assert!(b.body.contains("\"target\":\"/public/b\""), "{}", b.body);
    let seen = rec.settle(2, Duration::from_secs(3));
    assert_eq!(seen.len(), 2, "{seen:?}\n{}", rec.raw_text());
    assert_eq!(seen[0].target, "/public/a");
    assert_eq!(seen[0].body, smuggled.as_bytes());
    assert_eq!(
        seen[0].header("content-length"),
        Some(&*smuggled.len().to_string())
    );
    assert_eq!(seen[1].target, "/public/b");
    assert_eq!(
        rec.connections(),
        1,
        "one pooled upstream connection, in step"
    );
    assert!(rec.violations().is_empty(), "{:?}", rec.violations());

    // Identity and forwarding headers are the gateway's: the client cannot remove them by
    // naming them in Connection, nor forge them (with dashes or underscores).
    rec.clear();
    let req = format!(
        "GET /private/y HTTP/1.1\r\nHost: x\r\napikey: {KEY}\r\nConnection: X-Consumer-Username, X-Consumer-Id, X-Forwarded-For, X-Real-IP, X-Request-Id\r\nX-Consumer-Username: admin\r\nX_Consumer_Username: admin\r\nX_Custom: 1\r\nX-Keep: 1\r\n\r\n"
    );
    let r = send(&gw.proxy, req.as_bytes()).await;
    assert_eq!(r.status, 200, "{}\n{}", r.head, r.body);
    let seen = rec.settle(1, Duration::from_secs(3));
    let got = &seen[0];
    assert_eq!(got.all("x-consumer-username"), vec!["alice"], "{got:?}");
    assert_eq!(got.all("x-consumer-id").len(), 1, "{got:?}");
    assert_eq!(got.all("x-forwarded-for"), vec!["127.0.0.1"], "{got:?}");
    assert_eq!(got.all("x-real-ip"), vec!["127.0.0.1"], "{got:?}");
    assert_eq!(got.all("x-request-id").len(), 1, "{got:?}");
    assert_eq!(got.header("x-keep"), Some("1"));
    assert!(
        got.headers.iter().all(|(n, _)| !n.contains('_')),
        "headers with underscores are dropped by default: {got:?}"
    );
    assert!(got.header("apikey").is_none(), "hide_credentials: {got:?}");
    assert!(got
        .header("connection")
        .is_none_or(|c| !c.to_ascii_lowercase().contains("consumer")));
}

/// Finding 2: only WebSocket upgrades are tunnelled, on routes that allow them, and only
/// when the upstream agreed to exactly that.
#[tokio::test]
async fn only_websocket_upgrades_are_tunnelled() {
    let switcher = Recorder::start(Answer::Switch101);
    let dir = tempfile::tempdir().unwrap();
    let gw = start_with_config(
        dir.path(),
        &config(&switcher.url(), &switcher.url(), &switcher.url()),
        &[],
    );
    // h2c: forwarded without Upgrade/HTTP2-Settings; the upstream's unasked 101 is refused,
    // and nothing the client sends afterwards reaches it.
    let mut s = tokio::net::TcpStream::connect(&gw.proxy).await.unwrap();
    s.write_all(b"GET /public/a HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n")
        .await
        .unwrap();
    let a = read_one(&mut s).await;
    assert_eq!(a.status, 502, "{}\n{}", a.head, a.body);
    assert!(a.body.contains("upstream_error"), "{}", a.body);
    let _ = s
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nGET /private/x HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = switcher.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].header("upgrade").is_none(), "{seen:?}");
    assert!(seen[0].header("http2-settings").is_none(), "{seen:?}");
    assert!(
        switcher.violations().is_empty(),
        "{:?}",
        switcher.violations()
    );

    // A WebSocket request on a WebSocket route, answered with a 101 to h2c: refused.
    switcher.clear();
    let r = send(
        &gw.proxy,
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 502, "{}\n{}", r.head, r.body);
    let seen = switcher.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("upgrade"), Some("websocket"));
    assert!(
        switcher.violations().is_empty(),
        "{:?}",
        switcher.violations()
    );
}

/// Headers only the gateway sets (identity, forwarding, path overrides) are dropped from an
/// untrusted client on every route — also where no authentication plugin runs — and over
/// HTTP/2 too.
#[tokio::test]
async fn gateway_owned_headers_are_dropped_on_every_route() {
    let rec = Recorder::start(Answer::Echo);
    let ws = Upstream::start("ws");
    let dir = tempfile::tempdir().unwrap();
    let gw = start_with_config(dir.path(), &config(&rec.url(), &rec.url(), &ws.url()), &[]);
    let forged = "X-Consumer-Username: admin\r\nX-Consumer-ID: 1\r\nX-Anonymous-Consumer: false\r\nX-Credential-Identifier: x\r\nForwarded: for=10.0.0.1;proto=https\r\nX-Forwarded-Prefix: /evil\r\nX-Forwarded-For: 10.0.0.1\r\nX-Real-IP: 10.0.0.1\r\nX-Original-URL: /private/x\r\nX-Rewrite-URL: /private/x\r\nX-Kept: yes\r\n";
    let r = send(
        &gw.proxy,
        format!("GET /public/a HTTP/1.1\r\nHost: x\r\n{forged}\r\n").as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.head);
    let seen = rec.settle(1, Duration::from_secs(3));
    let got = &seen[0];
    for h in [
        "x-consumer-username",
        "x-consumer-id",
        "x-anonymous-consumer",
        "x-credential-identifier",
        "forwarded",
        "x-forwarded-prefix",
        "x-original-url",
        "x-rewrite-url",
    ] {
        assert!(got.header(h).is_none(), "{h} reached the upstream: {got:?}");
    }
    assert_eq!(got.all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(got.all("x-real-ip"), vec!["127.0.0.1"]);
    assert_eq!(got.header("x-kept"), Some("yes"));

    // The same over HTTP/2 (curl, prior knowledge).
    rec.clear();
    let (ok, out, err) = curl(&[
        "--http2-prior-knowledge",
        "-s",
        "-H",
        "X-Consumer-Username: admin",
        "-H",
        "X-Original-URL: /private/x",
        "-H",
        "Forwarded: for=10.0.0.1",
        "-H",
        "X_Consumer_Username: admin",
        &format!("http://{}/public/h2", gw.proxy),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("/public/h2"), "{out}");
    let seen = rec.settle(1, Duration::from_secs(3));
    let got = &seen[0];
    for h in [
        "x-consumer-username",
        "x-original-url",
        "forwarded",
        "x_consumer_username",
    ] {
        assert!(
            got.header(h).is_none(),
            "{h} reached the upstream over h2: {got:?}"
        );
    }
}

/// WebSocket smuggling: an upgrade the upstream refuses (or ignores) leaves the client
/// connection plain HTTP, so the next request on it goes through routing and
/// authentication again.
#[tokio::test]
async fn a_refused_upgrade_leaves_the_connection_plain_http() {
    let rec = Recorder::start(Answer::Echo);
    let dir = tempfile::tempdir().unwrap();
    let gw = start_with_config(dir.path(), &config(&rec.url(), &rec.url(), &rec.url()), &[]);
    let mut s = tokio::net::TcpStream::connect(&gw.proxy).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 1337\r\n\r\n")
        .await
        .unwrap();
    let a = read_one(&mut s).await;
    assert_eq!(a.status, 200, "{}", a.head);
    s.write_all(b"GET /private/x HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let b = read_one(&mut s).await;
    assert_eq!(b.status, 401, "{}\n{}", b.head, b.body);
    let seen = rec.settle(1, Duration::from_secs(2));
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(rec.violations().is_empty(), "{:?}", rec.violations());
}
