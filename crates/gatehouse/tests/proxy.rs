//! Proxying through the real binary: routing, header rewriting, errors, limits, streaming,
//! WebSocket, HTTP/2, balancing.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn setup(yaml_body: &str, extra: &[&str]) -> (tempfile::TempDir, Gateway) {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!("_format_version: \"1\"\n{yaml_body}");
    let gw = start_with_config(dir.path(), &yaml, extra);
    (dir, gw)
}

fn assert_error_shape(r: &gatehouse_testkit::Reply, status: u16, code: &str) {
    assert_eq!(r.status.as_u16(), status, "{}", r.text());
    let j = r.json();
    assert_eq!(j["error"]["status"], status);
    assert_eq!(j["error"]["code"], code, "{j}");
    let rid = j["error"]["request_id"].as_str().unwrap();
    assert!(!rid.is_empty());
    assert_eq!(r.header("x-request-id").as_deref(), Some(rid));
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
}

#[tokio::test]
async fn routes_strip_path_and_forwarding_headers() {
    let up = Upstream::start("a");
    let (_d, gw) = setup(
        &format!(
            r#"services:
  - name: a
    url: {}/base
    routes:
      - name: strip
        paths: ["/api"]
      - name: keep
        paths: ["/keep"]
        strip_path: false
        preserve_host: true
"#,
            up.url()
        ),
        &[],
    );
    let r = request(
        &gw.proxy,
        "GET",
        "/api/users?x=1&y=%20z",
        &[
            ("host", "shop.example.com"),
            ("x-forwarded-for", "6.6.6.6"),
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "s"),
        ],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["path"], "/base/users");
    assert_eq!(j["query"], "x=1&y=%20z");
    assert_eq!(j["version"], "HTTP/1.1");
    let h = &j["headers"];
    assert_eq!(
        h["host"][0],
        up.addr.to_string(),
        "Host is the target's unless preserve_host"
    );
    assert_eq!(
        h["x-forwarded-for"][0], "127.0.0.1",
        "untrusted peer: XFF replaced, not appended"
    );
    assert_eq!(h["x-forwarded-host"][0], "shop.example.com");
    assert_eq!(h["x-forwarded-proto"][0], "http");
    assert_eq!(h["x-real-ip"][0], "127.0.0.1");
    assert!(h["x-forwarded-port"][0]
        .as_str()
        .unwrap()
        .parse::<u16>()
        .is_ok());
    assert!(
        h.get("x-secret").is_none(),
        "headers named in Connection are hop-by-hop"
    );
    assert!(h.get("connection").is_none() || h["connection"][0] != "keep-alive, x-secret");
    let rid = r.header("x-request-id").unwrap();
    assert_eq!(
        h["x-request-id"][0],
        rid.as_str(),
        "request id flows upstream and back"
    );
    assert_eq!(r.header("x-upstream").as_deref(), Some("a"));

    let r = request(&gw.proxy, "GET", "/api", &[], "").await.unwrap();
    assert_eq!(r.json()["path"], "/base");
    let r = request(
        &gw.proxy,
        "GET",
        "/keep/x",
        &[("host", "shop.example.com:8080")],
        "",
    )
    .await
    .unwrap();
    let j = r.json();
    assert_eq!(j["path"], "/base/keep/x");
    assert_eq!(j["headers"]["host"][0], "shop.example.com:8080");
}

#[tokio::test]
async fn trusted_proxies_keep_forwarded_headers() {
    let up = Upstream::start("a");
    let (_d, gw) = setup(
        &format!(
            "services:\n  - url: {}\n    routes: [{{ paths: [\"/\"] }}]\n",
            up.url()
        ),
        &["--trusted-proxies", "127.0.0.0/8"],
    );
    let r = request(
        &gw.proxy,
        "GET",
        "/",
        &[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-request-id", "abc-123"),
        ],
        "",
    )
    .await
    .unwrap();
    let h = &r.json()["headers"];
    assert_eq!(h["x-forwarded-for"][0], "1.2.3.4, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"][0], "https");
    assert_eq!(h["x-request-id"][0], "abc-123");
    assert_eq!(r.header("x-request-id").as_deref(), Some("abc-123"));
}

#[tokio::test]
async fn precedence_hosts_methods_headers_params_regex() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let (_d, gw) = setup(
        &format!(
            r#"services:
  - name: a
    url: {a}
  - name: b
    url: {b}
routes:
  - {{ name: catchall, service: a, paths: ["/"] }}
  - {{ name: host, service: b, hosts: ["*.example.com"], paths: ["/"] }}
  - {{ name: exact, service: b, paths: ["=/exact"] }}
  - {{ name: post-only, service: b, paths: ["/m"], methods: [POST] }}
  - {{ name: v2, service: b, paths: ["/h"], headers: {{ x-version: ["2"] }} }}
  - {{ name: params, service: b, paths: ["/users/{{id}}/orders"] }}
  - {{ name: regex, service: b, paths: ["~/items/\\d+$"], priority: 1 }}
"#,
            a = a.url(),
            b = b.url()
        ),
        &[],
    );
    let who = |r: gatehouse_testkit::Reply| r.header("x-upstream").unwrap_or_default();
    assert_eq!(who(get(&gw.proxy, "/exact").await), "b");
    assert_eq!(who(get(&gw.proxy, "/exact/more").await), "a");
    assert_eq!(
        who(
            request(&gw.proxy, "GET", "/x", &[("host", "api.example.com")], "")
                .await
                .unwrap()
        ),
        "b"
    );
    assert_eq!(
        who(request(&gw.proxy, "POST", "/m", &[], "").await.unwrap()),
        "b"
    );
    assert_eq!(
        who(request(&gw.proxy, "GET", "/m", &[], "").await.unwrap()),
        "a"
    );
    assert_eq!(
        who(request(&gw.proxy, "GET", "/h", &[("x-version", "2")], "")
            .await
            .unwrap()),
        "b"
    );
    assert_eq!(
        who(request(&gw.proxy, "GET", "/h", &[("x-version", "3")], "")
            .await
            .unwrap()),
        "a"
    );
    let r = get(&gw.proxy, "/users/42/orders/9").await;
    assert_eq!(r.header("x-upstream").as_deref(), Some("b"));
    assert_eq!(
        r.json()["path"],
        "/9",
        "strip_path removes the matched prefix including params"
    );
    assert_eq!(who(get(&gw.proxy, "/items/12").await), "b");
    assert_eq!(who(get(&gw.proxy, "/items/12x").await), "a");
}

#[tokio::test]
async fn path_tricks_are_normalized_before_routing() {
    let a = Upstream::start("public");
    let b = Upstream::start("admin");
    let (_d, gw) = setup(
        &format!(
            "services:\n  - {{ name: pub, url: {}, routes: [{{ paths: [\"/\"] }}] }}\n  - {{ name: adm, url: {}, routes: [{{ paths: [\"/admin\"], strip_path: false }}] }}\n",
            a.url(),
            b.url()
        ),
        &[],
    );
    for p in [
        "/public/../admin/x",
        "/%61dmin/x",
        "//admin//x",
        "/./admin/x",
        "/public/%2e%2e/admin/x",
    ] {
        let r = get(&gw.proxy, p).await;
        assert_eq!(r.header("x-upstream").as_deref(), Some("admin"), "{p}");
        assert_eq!(r.json()["path"], "/admin/x", "{p} is forwarded normalized");
    }
    let r = get(&gw.proxy, "/admin%2Fx").await;
    assert_eq!(
        r.header("x-upstream").as_deref(),
        Some("public"),
        "an encoded slash is not a separator"
    );
    let r = get(&gw.proxy, "/a%zz").await;
    assert_error_shape(&r, 400, "bad_request");
}

#[tokio::test]
async fn no_route_and_upstream_failures_use_the_error_shape() {
    let slow = Upstream::start("slow");
    let dead = closed_port();
    let (_d, gw) = setup(
        &format!(
            r#"services:
  - name: dead
    url: http://{dead}
    retries: 1
    routes: [{{ paths: ["/dead"] }}]
  - name: slow
    url: {slow}
    read_timeout: 300
    routes: [{{ paths: ["/sleep"], strip_path: false }}]
  - name: broken
    url: {slow}
    routes: [{{ paths: ["/close"], strip_path: false }}]
  - name: empty
    upstream: nobody
    routes: [{{ paths: ["/empty"] }}]
upstreams:
  - name: nobody
    targets: []
"#,
            slow = slow.url()
        ),
        &[],
    );
    assert_error_shape(&get(&gw.proxy, "/nowhere").await, 404, "no_route");
    assert_error_shape(&get(&gw.proxy, "/dead").await, 502, "upstream_unreachable");
    assert_error_shape(
        &get(&gw.proxy, "/sleep/3000").await,
        504,
        "upstream_timeout",
    );
    assert_error_shape(&get(&gw.proxy, "/close").await, 502, "upstream_error");
    assert_error_shape(&get(&gw.proxy, "/empty").await, 503, "no_upstream_targets");
    // Upstream errors are passed through untouched.
    let r = get(&gw.proxy, "/sleep/0/../../sleep/1").await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn balancing_weights_and_retry_on_refused_target() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let dead = closed_port();
    let (_d, gw) = setup(
        &format!(
            r#"services:
  - name: pool
    upstream: pool
    routes: [{{ paths: ["/"] }}]
upstreams:
  - name: pool
    targets:
      - {{ target: "{a}", weight: 3 }}
      - {{ target: "{b}", weight: 1 }}
      - {{ target: "{dead}", weight: 1 }}
"#,
            a = a.addr,
            b = b.addr
        ),
        &["--workers", "1"],
    );
    for _ in 0..50 {
        let r = get(&gw.proxy, "/").await;
        assert_eq!(
            r.status,
            200,
            "a refused target is retried on another: {}",
            r.text()
        );
    }
    let (ha, hb) = (a.hits(), b.hits());
    assert_eq!(ha + hb, 50);
    // The dead target's share goes to the next pick; a gets 3 of every 5 picks plus retries.
    assert!(ha > hb * 2, "weights respected: a={ha} b={hb}");
}

#[tokio::test]
async fn body_limits_and_header_limits() {
    let up = Upstream::start("a");
    let (_d, gw) = setup(
        &format!(
            "services:\n  - url: {}\n    routes:\n      - {{ paths: [\"/small\"], request_body_limit: 10 }}\n      - {{ paths: [\"/\"] }}\n",
            up.url()
        ),
        &["--max-headers", "20", "--max-body-bytes", "1000"],
    );
    let r = request(&gw.proxy, "POST", "/small", &[], "0123456789")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body"], "0123456789");
    let r = request(&gw.proxy, "POST", "/small", &[], "0123456789A")
        .await
        .unwrap();
    assert_error_shape(&r, 413, "request_too_large");
    let big = "x".repeat(1001);
    assert_error_shape(
        &request(&gw.proxy, "POST", "/any", &[], &big).await.unwrap(),
        413,
        "request_too_large",
    );
    // Chunked bodies (no Content-Length) are counted as they stream.
    let (ok, out, _) = curl(&[
        "-i",
        "-X",
        "POST",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        "@-",
        &format!("http://{}/small", gw.proxy),
    ]);
    assert!(ok);
    assert!(
        out.starts_with("HTTP/1.1 200"),
        "empty chunked body passes: {out}"
    );
    let headers: Vec<(String, String)> = (0..30)
        .map(|i| (format!("x-h{i}"), "v".to_string()))
        .collect();
    let hs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let r = request(&gw.proxy, "GET", "/", &hs, "").await;
    assert!(
        r.map(|r| r.status == 431).unwrap_or(true),
        "too many headers are refused"
    );
    let long = "y".repeat(40_000);
    let r = request(&gw.proxy, "GET", "/", &[("x-long", &long)], "").await;
    assert!(
        r.map(|r| r.status == 431).unwrap_or(true),
        "an oversized head is refused"
    );
}

#[tokio::test]
async fn chunked_body_over_limit_is_refused() {
    let up = Upstream::start("a");
    let (_d, gw) = setup(
        &format!(
            "services:\n  - url: {}\n    routes: [{{ paths: [\"/\"], request_body_limit: 100 }}]\n",
            up.url()
        ),
        &[],
    );
    let body = "z".repeat(5000);
    let path = std::env::temp_dir().join(format!("gh-body-{}", std::process::id()));
    std::fs::write(&path, &body).unwrap();
    let (_, out, _) = curl(&[
        "-i",
        "-X",
        "POST",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &format!("@{}", path.display()),
        &format!("http://{}/", gw.proxy),
    ]);
    let _ = std::fs::remove_file(&path);
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains("\"request_too_large\""), "{out}");
}

#[tokio::test]
async fn slow_client_head_is_cut_off() {
    let up = Upstream::start("a");
    let (_d, gw) = setup(
        &format!(
            "services:\n  - url: {}\n    routes: [{{ paths: [\"/\"] }}]\n",
            up.url()
        ),
        &["--header-read-timeout", "1"],
    );
    let mut s = tokio::net::TcpStream::connect(&gw.proxy).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "connection must be closed after the header timeout"
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}

#[tokio::test]
async fn sse_streams_event_by_event() {
    let up = Upstream::start("sse");
    let (_d, gw) = setup(
        &format!(
            "services:\n  - url: {}\n    routes: [{{ paths: [\"/\"] }}]\n",
            up.url()
        ),
        &[],
    );
    let stream = tokio::net::TcpStream::connect(&gw.proxy).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/stream/3/700")
        .header("host", "x")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut arrivals = Vec::new();
    use http_body_util::BodyExt;
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame.unwrap().into_data() {
            arrivals.push((Instant::now(), String::from_utf8_lossy(&d).into_owned()));
        }
    }
    let all: String = arrivals.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(all, "data: event 0\n\ndata: event 1\n\ndata: event 2\n\n");
    assert!(arrivals.len() >= 3, "events arrive as separate chunks");
    let gap = arrivals[1].0 - arrivals[0].0;
    assert!(
        gap >= Duration::from_millis(350),
        "event 1 was not held back with event 0 (gap {gap:?})"
    );
}

#[tokio::test]
async fn websocket_upgrade_passes_through() {
    let up = Upstream::start("ws");
    let (_d, gw) = setup(
        &format!(
            "services:\n  - url: {u}\n    routes: [{{ paths: [\"/\"], websocket: true }}, {{ paths: [\"/plain\"] }}]\n  - url: {u}\n    read_timeout: 400\n    routes: [{{ paths: [\"/idle\"], strip_path: true, websocket: true }}]\n",
            u = up.url()
        ),
        &[],
    );
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.proxy))
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..3 {
        let msg = format!("hello {i}");
        ws.send(tokio_tungstenite::tungstenite::Message::text(msg.clone()))
            .await
            .unwrap();
        let back = ws.next().await.unwrap().unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), msg);
    }
    ws.close(None).await.unwrap();

    // A route without `websocket: true` refuses the upgrade with the common error shape.
    let err = tokio_tungstenite::connect_async(format!("ws://{}/plain/ws", gw.proxy))
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(r) => {
            assert_eq!(r.status(), 400);
            let body = String::from_utf8_lossy(r.body().as_deref().unwrap_or_default()).to_string();
            assert!(body.contains("websocket_not_enabled"), "{body}");
        }
        e => panic!("expected a 400 answer, got {e}"),
    }

    // A tunnel is closed once nothing moved either way for the service's read_timeout.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/idle/ws", gw.proxy))
        .await
        .unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text("one"))
        .await
        .unwrap();
    assert!(ws.next().await.unwrap().is_ok());
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(m)) if m.is_close() => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "an idle tunnel is closed");
}

#[tokio::test]
async fn http2_prior_knowledge_with_curl() {
    let up = Upstream::start("a");
    let (_d, gw) = setup(
        &format!(
            "services:\n  - url: {}\n    routes: [{{ paths: [\"/\"] }}]\n",
            up.url()
        ),
        &[],
    );
    let (ok, out, err) = curl(&[
        "--http2-prior-knowledge",
        "-i",
        &format!("http://{}/h2?q=1", gw.proxy),
    ]);
    assert!(ok, "{err}");
    assert!(out.starts_with("HTTP/2 200"), "{out}");
    let body = out.split("\r\n\r\n").nth(1).unwrap();
    let j: Value = serde_json::from_str(body).unwrap();
    assert_eq!(j["path"], "/h2");
    assert_eq!(j["version"], "HTTP/1.1", "upstream side is HTTP/1.1");
    assert_eq!(j["headers"]["x-forwarded-host"][0], gw.proxy);
    let (ok, out, _) = curl(&[
        "--http2-prior-knowledge",
        "-i",
        &format!("http://{}/../nothing-here-either", gw.proxy),
    ]);
    assert!(ok && out.starts_with("HTTP/2 200"));
}

#[tokio::test]
async fn keep_alive_connections_are_reused() {
    let up = Upstream::start("a");
    let (_d, gw) = setup(
        &format!(
            "services:\n  - url: {}\n    routes: [{{ paths: [\"/\"] }}]\n",
            up.url()
        ),
        &["--workers", "1"],
    );
    let url = format!("http://{}/", gw.proxy);
    let (ok, out, err) = curl(&["-v", &url, &url, &url]);
    assert!(ok, "{err}");
    assert_eq!(out.matches("\"upstream\":\"a\"").count(), 3);
    assert!(
        err.contains("Re-using existing connection"),
        "client keep-alive works: {err}"
    );
}

#[tokio::test]
async fn connect_and_body_timeouts() {
    let up = Upstream::start("a");
    let (hole, _fill, _guard) = gatehouse_testkit::blackhole();
    let (_d, gw) = setup(
        &format!(
            r#"services:
  - name: hole
    url: http://{hole}
    connect_timeout: 300
    retries: 0
    routes: [{{ paths: ["/hole"] }}]
  - name: ok
    url: {up}
    write_timeout: 300
    routes: [{{ paths: ["/"] }}]
"#,
            up = up.url()
        ),
        &[],
    );
    assert_error_shape(
        &get(&gw.proxy, "/hole").await,
        504,
        "upstream_connect_timeout",
    );
    // A client that stops sending its announced body gets 408 after write_timeout.
    let mut s = tokio::net::TcpStream::connect(&gw.proxy).await.unwrap();
    s.write_all(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_body_timeout"), "{text}");
    // write_timeout is between two chunks: an upload that keeps moving may take longer.
    let mut s = tokio::net::TcpStream::connect(&gw.proxy).await.unwrap();
    s.write_all(
        b"POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 8\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    for b in b"abcdefgh" {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(&[*b]).await.unwrap();
    }
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"body\":\"abcdefgh\""), "{text}");
}

#[tokio::test]
async fn upstream_connections_survive_reloads() {
    let up = Upstream::start("a");
    let dir = tempfile::tempdir().unwrap();
    let doc = |tag: &str| {
        format!("_format_version: \"1\"\nservices:\n  - url: {}\n    routes: [{{ paths: [\"/\"], tags: [\"{tag}\"] }}]\n", up.url())
    };
    let gw = start_with_config(dir.path(), &doc("one"), &["--workers", "1"]);
    for _ in 0..5 {
        assert_eq!(get(&gw.proxy, "/").await.status, 200);
    }
    assert_eq!(
        up.connections(),
        1,
        "one pooled upstream connection serves sequential requests"
    );
    std::fs::write(dir.path().join("gatehouse.yaml"), doc("two")).unwrap();
    gw.signal("HUP");
    let start = Instant::now();
    loop {
        let st = gw.admin_ok("GET", "/status", Value::Null).await;
        if st["config_version"].as_u64().unwrap() >= 2 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..5 {
        assert_eq!(get(&gw.proxy, "/").await.status, 200);
    }
    assert_eq!(up.connections(), 1, "the pool survived the reload");
}

#[tokio::test]
async fn head_and_no_content_answers_have_no_body() {
    let up = Upstream::start("a");
    let (_d, gw) = setup(
        &format!(
            "services:\n  - url: {}\n    routes: [{{ paths: [\"/\"] }}]\n",
            up.url()
        ),
        &["--workers", "1"],
    );
    let (ok, out, _) = curl(&["-sI", &format!("http://{}/x", gw.proxy)]);
    assert!(ok && out.starts_with("HTTP/1.1 200"), "{out}");
    let r = get(&gw.proxy, "/status/204").await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    // The connection is still usable after both.
    assert_eq!(get(&gw.proxy, "/bytes/70000").await.body.len(), 70000);
    assert_eq!(up.connections(), 1);
}

/// Raw request bytes in, raw answer out (for framing attacks curl would not send).
async fn raw(addr: &str, bytes: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn request_framing_cannot_be_smuggled() {
    let up = Upstream::start("a");
    let (_d, gw) = setup(
        &format!(
            "services:\n  - url: {}\n    routes: [{{ paths: [\"/\"] }}]\n",
            up.url()
        ),
        &[],
    );
    // Content-Length and Transfer-Encoding together: refused, or forwarded chunked only.
    let out = raw(
        &gw.proxy,
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    if out.starts_with("HTTP/1.1 200") {
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("");
        assert!(body.contains("\"body\":\"hello\""), "{out}");
        assert!(
            !body.contains("content-length"),
            "Content-Length forwarded beside chunked: {out}"
        );
    } else {
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    }
    // Two different Content-Lengths: refused.
    let out = raw(&gw.proxy, b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello").await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(
        up.hits() <= 1,
        "the conflicting Content-Length request never reached the upstream"
    );
}

/// Reads one HTTP/1.1 answer (head + Content-Length or chunked body) off `s`; returns the
/// head and the body.
async fn read_answer(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> (String, Vec<u8>) {
    let deadline = Duration::from_secs(5);
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let lower = head.to_ascii_lowercase();
            let len = lower
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse::<usize>().ok());
            let start = end + 4;
            if let Some(len) = len {
                if buf.len() >= start + len {
                    let body = buf[start..start + len].to_vec();
                    buf.drain(..start + len);
                    return (head, body);
                }
            } else if lower.contains("transfer-encoding: chunked") {
                if let Some(fin) = buf[start..].windows(5).position(|w| w == b"0\r\n\r\n") {
                    let body = buf[start..start + fin].to_vec();
                    buf.drain(..start + fin + 5);
                    return (head, body);
                }
            } else {
                let body = buf[start..].to_vec();
                buf.clear();
                return (head, body);
            }
        }
        let mut chunk = [0u8; 65536];
        let n = tokio::time::timeout(deadline, s.read(&mut chunk))
            .await
            .expect("answer in time")
            .unwrap();
        if n == 0 {
            let head = String::from_utf8_lossy(buf).to_string();
            buf.clear();
            return (head, Vec::new());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn http1_server_side_semantics() {
    let up = Upstream::start("a");
    let (_d, gw) = setup(
        &format!(
            "services:\n  - url: {}\n    routes: [{{ paths: [\"/\"] }}]\n",
            up.url()
        ),
        &["--max-headers", "20"],
    );
    // Pipelined requests in one write are answered in order on the same connection.
    let mut s = tokio::net::TcpStream::connect(&gw.proxy).await.unwrap();
    s.write_all(
        b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nPOST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /three HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    for (path, body) in [("/one", ""), ("/two", "abc"), ("/three", "")] {
        let (head, b) = read_answer(&mut s, &mut buf).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.to_ascii_lowercase().contains("\r\ndate: "), "{head}");
        let j: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(j["path"], path);
        assert_eq!(j["body"], body);
    }

    // Expect: 100-continue: the interim answer comes before the client sends the body.
    s.write_all(b"PUT /c HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let mut interim = [0u8; 25];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut interim))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"hello").await.unwrap();
    let (head, b) = read_answer(&mut s, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let j: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(j["body"], "hello");
    assert!(
        j["headers"].get("expect").is_none(),
        "Expect is answered here, not forwarded"
    );

    // A chunked request body is decoded and forwarded whole.
    s.write_all(b"POST /ch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n2\r\nde\r\n0\r\nT: v\r\n\r\n")
        .await
        .unwrap();
    let (head, b) = read_answer(&mut s, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        serde_json::from_slice::<Value>(&b).unwrap()["body"],
        "abcde"
    );
    drop(s);

    // HTTP/1.0: closed after the answer unless keep-alive was asked for.
    let mut s = tokio::net::TcpStream::connect(&gw.proxy).await.unwrap();
    s.write_all(b"GET /k HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_answer(&mut s, &mut buf).await;
    assert!(
        head.to_ascii_lowercase().contains("connection: keep-alive"),
        "{head}"
    );
    s.write_all(b"GET /k2 HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_answer(&mut s, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "closed after an HTTP/1.0 answer without keep-alive");

    // Requests that cannot be read get the common error shape and a closed connection.
    for (req, status, code) in [
        (
            &b"GET / HTTP/1.1\r\nHost x\r\n\r\n"[..],
            "400",
            "bad_request",
        ),
        (
            &b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"[..],
            "400",
            "bad_request",
        ),
        (
            &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n"[..],
            "400",
            "bad_request",
        ),
    ] {
        let out = raw(&gw.proxy, req).await;
        assert!(out.starts_with(&format!("HTTP/1.1 {status}")), "{out}");
        assert!(out.contains(&format!("\"code\":\"{code}\"")), "{out}");
        assert!(
            out.to_ascii_lowercase().contains("connection: close"),
            "{out}"
        );
        assert!(out.contains("\"request_id\""), "{out}");
    }
    let many: String = (0..30).map(|i| format!("x-h{i}: v\r\n")).collect();
    let out = raw(
        &gw.proxy,
        format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    assert!(out.contains("\"code\":\"too_many_headers\""), "{out}");

    // A streamed (chunked) upstream answer reaches an HTTP/1.0 client delimited by close.
    let out = raw(&gw.proxy, b"GET /stream/3/0 HTTP/1.0\r\nHost: x\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        !out.to_ascii_lowercase().contains("transfer-encoding"),
        "{out}"
    );
    assert!(out.ends_with("data: event 2\n\n"), "{out}");
}
