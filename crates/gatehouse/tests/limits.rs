//! Every listener and protocol has a header-read timeout, an idle timeout and a connection
//! cap (issue 8, finding 3): clients that open connections and send nothing, half a head,
//! only the HTTP/2 preface or half a HEADERS block, or stop reading an answer, do not keep
//! them.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn setup(up: &Upstream, extra: &[&str]) -> (tempfile::TempDir, Gateway) {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "_format_version: \"1\"\nservices:\n  - url: {}\n    routes: [{{ paths: [\"/\"] }}]\n",
        up.url()
    );
    let gw = start_with_config(dir.path(), &yaml, extra);
    (dir, gw)
}

/// Reads until the peer closes (or `within` passes); returns the bytes and whether it closed.
async fn until_closed(s: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    let end = Instant::now() + within;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (out, false),
        }
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame.
const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

#[tokio::test]
async fn http2_connections_that_never_open_a_stream_are_closed() {
    let up = Upstream::start("a");
    let (_d, gw) = setup(&up, &["--header-read-timeout", "1", "--idle-timeout", "1"]);
    let mut conns = Vec::new();
    for i in 0..40 {
        let mut s = TcpStream::connect(&gw.proxy).await.unwrap();
        if i % 2 == 0 {
            // Only the preface.
            s.write_all(H2_PREFACE).await.unwrap();
        } else {
            // Preface, SETTINGS, then a HEADERS frame that announces 100 bytes and sends 10.
            s.write_all(H2_PREFACE).await.unwrap();
            s.write_all(SETTINGS).await.unwrap();
            s.write_all(&[0, 0, 100, 1, 0x4, 0, 0, 0, 1]).await.unwrap();
            s.write_all(&[0x82; 10]).await.unwrap();
        }
        conns.push(s);
    }
    for (i, s) in conns.iter_mut().enumerate() {
        let (_, closed) = until_closed(s, Duration::from_secs(8)).await;
        assert!(closed, "HTTP/2 connection {i} still open");
    }
}

#[tokio::test]
async fn http2_connection_is_closed_after_its_last_stream_idles() {
    let up = Upstream::start("a");
    let (_d, gw) = setup(&up, &["--header-read-timeout", "5", "--idle-timeout", "1"]);
    let stream = TcpStream::connect(&gw.proxy).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get(format!("http://{}/x", gw.proxy))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    drop(resp);
    let ended = tokio::time::timeout(Duration::from_secs(8), conn).await;
    assert!(
        ended.is_ok(),
        "the idle HTTP/2 connection was closed by the gateway"
    );
}

#[tokio::test]
async fn http1_head_and_keep_alive_timeouts() {
    let up = Upstream::start("a");
    let (_d, gw) = setup(&up, &["--header-read-timeout", "1", "--idle-timeout", "2"]);
    // Nothing sent: closed after the header-read timeout, without an answer.
    let mut s = TcpStream::connect(&gw.proxy).await.unwrap();
    let (out, closed) = until_closed(&mut s, Duration::from_secs(6)).await;
    assert!(
        closed && out.is_empty(),
        "{}",
        String::from_utf8_lossy(&out)
    );
    // Half a head: 408 in the common shape, then closed.
    let mut s = TcpStream::connect(&gw.proxy).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let (out, closed) = until_closed(&mut s, Duration::from_secs(6)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(closed && text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_header_timeout"), "{text}");
    // A keep-alive connection after an answer: open for the idle timeout (longer than the
    // header-read timeout), then closed.
    let mut s = TcpStream::connect(&gw.proxy).await.unwrap();
    s.write_all(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    // Still usable after more than the header-read timeout of idleness.
    s.write_all(b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let (_, closed) = until_closed(&mut s, Duration::from_secs(8)).await;
    assert!(closed, "idle keep-alive connection closed");
}

#[tokio::test]
async fn admin_and_status_listeners_time_out_and_cap_connections() {
    let up = Upstream::start("a");
    let (_d, gw) = setup(
        &up,
        &[
            "--header-read-timeout",
            "1",
            "--idle-timeout",
            "2",
            "--admin-max-connections",
            "3",
        ],
    );
    for addr in [&gw.admin, &gw.status] {
        // Half a head, and nothing at all: both closed.
        let mut a = TcpStream::connect(addr).await.unwrap();
        a.write_all(b"GET /health HTTP/1.1\r\nHo").await.unwrap();
        let mut b = TcpStream::connect(addr).await.unwrap();
        let (_, closed) = until_closed(&mut a, Duration::from_secs(6)).await;
        assert!(closed, "{addr}: partial head kept open");
        let (_, closed) = until_closed(&mut b, Duration::from_secs(6)).await;
        assert!(closed, "{addr}: silent connection kept open");
        // Keep-alive after an answer: closed after the idle timeout.
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 8192];
        let n = c.read(&mut buf).await.unwrap();
        assert!(n > 0);
        let (_, closed) = until_closed(&mut c, Duration::from_secs(8)).await;
        assert!(closed, "{addr}: idle keep-alive kept open");
    }
    // The cap: three open connections, the fourth is closed at once; freeing one makes room.
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(&gw.status).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 8192];
        assert!(s.read(&mut buf).await.unwrap() > 0);
        open.push(s);
    }
    let mut extra = TcpStream::connect(&gw.status).await.unwrap();
    let _ = extra
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let (out, closed) = until_closed(&mut extra, Duration::from_millis(900)).await;
    assert!(
        closed && out.is_empty(),
        "over the cap: closed without an answer"
    );
    drop(open.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = get(&gw.status, "/health").await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn proxy_connection_cap_and_slow_readers() {
    let up = Upstream::start("a");
    let (_d, gw) = setup(
        &up,
        &[
            "--max-connections",
            "3",
            "--workers",
            "1",
            "--send-timeout",
            "1",
        ],
    );
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(&gw.proxy).await.unwrap();
        s.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 65536];
        assert!(s.read(&mut buf).await.unwrap() > 0);
        open.push(s);
    }
    let mut extra = TcpStream::connect(&gw.proxy).await.unwrap();
    let _ = extra.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (out, closed) = until_closed(&mut extra, Duration::from_millis(900)).await;
    assert!(
        closed && out.is_empty(),
        "over the cap: closed without an answer"
    );
    let start = Instant::now();
    while !gw.log_text().contains("connection cap reached")
        && start.elapsed() < Duration::from_secs(3)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        gw.log_text().contains("connection cap reached"),
        "{}",
        gw.log_text()
    );
    open.clear();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A client that asks for 64 MiB and does not read is cut off after the send timeout
    // instead of holding the connection (and the upstream's) open.
    let mut s = TcpStream::connect(&gw.proxy).await.unwrap();
    s.write_all(b"GET /bytes/67108864 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (out, closed) = until_closed(&mut s, Duration::from_secs(10)).await;
    assert!(closed, "the stalled reader's connection was closed");
    assert!(
        out.len() < 64 * 1024 * 1024,
        "cut before the whole body: {}",
        out.len()
    );
    // And the slot it held is free again.
    let r = get(&gw.proxy, "/x").await;
    assert_eq!(r.status, 200);
}

/// One HTTP/2 frame.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Reads frames until the connection closes (or `within`); returns (type, flags, payload).
async fn h2_read_all(s: &mut TcpStream, within: Duration) -> Vec<(u8, u8, Vec<u8>)> {
    let (bytes, _) = until_closed(s, within).await;
    let mut out = Vec::new();
    let mut b = &bytes[..];
    while b.len() >= 9 {
        let len = (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]);
        if b.len() < 9 + len {
            break;
        }
        out.push((b[3], b[4], b[9..9 + len].to_vec()));
        b = &b[9 + len..];
    }
    out
}

/// A request header block from HPACK's static table: GET http / (no authority needed).
const GET_SLASH: &[u8] = &[0x82, 0x86, 0x84];

#[tokio::test]
async fn http2_abuse_is_cut_off_and_others_keep_being_served() {
    let up = Upstream::start("a");
    let (_d, gw) = setup(&up, &["--workers", "1"]);

    // The server's SETTINGS announce the stream limit.
    let mut s = TcpStream::connect(&gw.proxy).await.unwrap();
    s.write_all(H2_PREFACE).await.unwrap();
    s.write_all(SETTINGS).await.unwrap();
    s.write_all(&h2_frame(7, 0, 0, &[0, 0, 0, 0, 0, 0, 0, 0]))
        .await
        .unwrap(); // GOAWAY
    let frames = h2_read_all(&mut s, Duration::from_secs(5)).await;
    let settings = frames
        .iter()
        .find(|f| f.0 == 4 && f.1 == 0)
        .expect("server SETTINGS");
    let params: Vec<(u16, u32)> = settings
        .2
        .chunks(6)
        .map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
        .collect();
    assert!(
        params.contains(&(3, 128)),
        "MAX_CONCURRENT_STREAMS 128: {params:?}"
    );

    // Rapid reset (CVE-2023-44487): streams opened and cancelled at once, thousands of times.
    let mut s = TcpStream::connect(&gw.proxy).await.unwrap();
    let mut burst = H2_PREFACE.to_vec();
    burst.extend_from_slice(SETTINGS);
    for i in 0..2000u32 {
        let id = 1 + 2 * i;
        burst.extend(h2_frame(1, 0x4 | 0x1, id, GET_SLASH));
        burst.extend(h2_frame(3, 0, id, &8u32.to_be_bytes()));
    }
    let _ = s.write_all(&burst).await;
    let frames = h2_read_all(&mut s, Duration::from_secs(10)).await;
    let goaway = frames
        .iter()
        .find(|f| f.0 == 7)
        .expect("GOAWAY for rapid reset");
    let code = u32::from_be_bytes([goaway.2[4], goaway.2[5], goaway.2[6], goaway.2[7]]);
    assert_eq!(code, 0xb, "ENHANCE_YOUR_CALM");
    // Meanwhile and afterwards everyone else is served.
    assert_eq!(get(&gw.proxy, "/x").await.status, 200);

    // CONTINUATION flood (CVE-2024-27316): a header block that never ends.
    let mut s = TcpStream::connect(&gw.proxy).await.unwrap();
    let mut flood = H2_PREFACE.to_vec();
    flood.extend_from_slice(SETTINGS);
    flood.extend(h2_frame(1, 0, 1, GET_SLASH));
    // Literal header fields without indexing (0x00), new name: x-a: 16 KB of junk each.
    let mut junk = vec![0x00, 0x03, b'x', b'-', b'a', 0x7f];
    let value_len = 16_000u32 - 127;
    let mut n = value_len;
    while n >= 128 {
        junk.push((n % 128) as u8 | 0x80);
        n /= 128;
    }
    junk.push(n as u8);
    junk.extend(std::iter::repeat_n(b'j', 16_000));
    let mut sent = 0usize;
    let mut closed_early = false;
    for _ in 0..200 {
        if s.write_all(&h2_frame(9, 0, 1, &junk)).await.is_err() {
            closed_early = true;
            break;
        }
        sent += junk.len();
    }
    if !closed_early {
        let (_, closed) = until_closed(&mut s, Duration::from_secs(10)).await;
        assert!(
            closed,
            "a header block of {sent} bytes must not be accepted"
        );
    }
    assert_eq!(get(&gw.proxy, "/x").await.status, 200);
}
