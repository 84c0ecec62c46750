//! A real HTTP/1.1 upstream server. One server answers by path:
//! - `/status/{code}`: that status, JSON echo body
//! - `/sleep/{ms}`: waits before the response head
//! - `/stream/{n}/{ms}`: `n` SSE events, `ms` apart (`text/event-stream`, chunked)
//! - `/bytes/{n}`: `n` bytes of `x`
//! - `/close`: drops the connection without answering
//! - `/ws`: WebSocket echo
//! - anything else: JSON echo of method, path, query, headers and body

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// A running upstream; stops when dropped.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests answered so far.
    pub hits: Arc<AtomicUsize>,
    /// TCP connections accepted so far.
    pub conns: Arc<AtomicUsize>,
    _server: crate::server_thread::ServerThread,
}

/// An address whose connections never complete: a listener with a full accept queue that
/// never accepts (SYNs are dropped), for connect-timeout tests. Keep the guard alive.
pub fn blackhole() -> (SocketAddr, Vec<std::net::TcpStream>, socket2::Socket) {
    let s =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    s.bind(&"127.0.0.1:0".parse::<SocketAddr>().expect("addr").into())
        .expect("bind");
    s.listen(0).expect("listen");
    let addr = s.local_addr().expect("addr").as_socket().expect("inet");
    let mut fill = Vec::new();
    for _ in 0..4 {
        if let Ok(c) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            fill.push(c);
        }
    }
    (addr, fill, s)
}

/// An address where nothing listens (connections are refused).
pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(
            Full::new(body.into())
                .map_err(|never| match never {})
                .boxed(),
        )
        .expect("response")
}

async fn handle(
    name: Arc<str>,
    hits: Arc<AtomicUsize>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, std::io::Error> {
    hits.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["close"] => Err(std::io::Error::other("closing as asked")),
        ["sleep", ms, ..] => {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
            echo(&name, StatusCode::OK, req).await
        }
        ["status", code, ..] => {
            echo(
                &name,
                StatusCode::from_u16(code.parse().unwrap_or(500)).unwrap_or(StatusCode::OK),
                req,
            )
            .await
        }
        ["bytes", n] => Ok(full(
            StatusCode::OK,
            "application/octet-stream",
            vec![b'x'; n.parse().unwrap_or(0)],
        )),
        ["stream", n, ms] => {
            let n: usize = n.parse().unwrap_or(1);
            let gap = Duration::from_millis(ms.parse().unwrap_or(0));
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
            tokio::spawn(async move {
                for i in 0..n {
                    if i > 0 {
                        tokio::time::sleep(gap).await;
                    }
                    if tx
                        .send(Ok(Frame::data(Bytes::from(format!("data: event {i}\n\n")))))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|x| (x, rx))
            });
            Ok(Response::builder()
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-cache")
                .body(BodyExt::boxed(StreamBody::new(stream)))
                .expect("response"))
        }
        ["ws"] => {
            let key = req.headers().get("sec-websocket-key").cloned();
            let Some(key) = key else {
                return Ok(full(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    "not a websocket request",
                ));
            };
            let accept =
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = upgrade.await {
                    let mut ws =
                        WebSocketStream::from_raw_socket(TokioIo::new(up), Role::Server, None)
                            .await;
                    while let Some(Ok(msg)) = ws.next().await {
                        if msg.is_close() {
                            break;
                        }
                        if msg.is_text() || msg.is_binary() {
                            let _ = ws.send(msg).await;
                        }
                    }
                }
            });
            Ok(Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-accept", accept)
                .body(
                    Full::new(Bytes::new())
                        .map_err(|never| match never {})
                        .boxed(),
                )
                .expect("response"))
        }
        _ => echo(&name, StatusCode::OK, req).await,
    }
}

async fn echo(
    name: &str,
    status: StatusCode,
    req: Request<Incoming>,
) -> Result<Response<Body>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let mut headers = Map::new();
    for (k, v) in &parts.headers {
        let v = Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned());
        match headers.get_mut(k.as_str()) {
            Some(Value::Array(list)) => list.push(v),
            _ => {
                headers.insert(k.as_str().to_string(), Value::Array(vec![v]));
            }
        }
    }
    let j = json!({
        "upstream": name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    let mut r = full(status, "application/json", j.to_string());
    r.headers_mut().insert(
        "x-upstream",
        http::HeaderValue::from_str(name).unwrap_or(http::HeaderValue::from_static("?")),
    );
    Ok(r)
}

impl Upstream {
    /// Starts an upstream named `name` on 127.0.0.1 (random port), on its own thread.
    pub fn start(name: &str) -> Upstream {
        Upstream::serve(name, None)
    }

    /// Starts an HTTPS upstream (HTTP/1.1 and, by ALPN, HTTP/2) with `cert`/`key` (PEM);
    /// with `client_ca` it requires a client certificate issued by that CA.
    pub fn start_tls(name: &str, cert: &str, key: &str, client_ca: Option<&str>) -> Upstream {
        let mut cfg = crate::server_thread::tls_config(cert, key, client_ca);
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Upstream::serve(name, Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg))))
    }

    fn serve(name: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> Upstream {
        let hits = Arc::new(AtomicUsize::new(0));
        let conns = Arc::new(AtomicUsize::new(0));
        let (c2, h) = (conns.clone(), hits.clone());
        let name: Arc<str> = name.into();
        let (addr, server) = crate::server_thread::accept_loop("upstream", move |stream| {
            c2.fetch_add(1, Ordering::SeqCst);
            let (name, hits, tls) = (name.clone(), h.clone(), tls.clone());
            async move {
                let svc = service_fn(move |req| handle(name.clone(), hits.clone(), req));
                // HTTP/1.1, and HTTP/2 by prior knowledge (h2c) or ALPN.
                let builder = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                match tls {
                    None => {
                        let _ = builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                            .await;
                    }
                    Some(acceptor) => {
                        let Ok(tls) = acceptor.accept(stream).await else {
                            return;
                        };
                        let _ = builder
                            .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                            .await;
                    }
                }
            }
        });
        Upstream {
            addr,
            hits,
            conns,
            _server: server,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }

    /// Requests answered so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Keeps `Infallible` in scope for service signatures in tests.
pub type Never = Infallible;
