//! HTTP/1.1 calls a plugin makes itself (the AI gateway's calls to LLM providers), on the
//! worker's own client and connection pool — the proxy path: the request is written and the
//! answer read by the calling task, with no connection task and channel hop per request
//! (which is what hyper's client costs).

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Uri};

use crate::body::RequestBody;
use crate::h1::{Extra, H1Error, ResponseBody};
use crate::pool::{ConnectError, Pool};
use crate::snapshot::TargetRt;
use crate::upstream::Transport;

/// Where calls go: an origin (`http(s)://host:port`), how to connect, and the limits.
pub struct Destination {
    target: Arc<TargetRt>,
    transport: Transport,
    connect_timeout: Duration,
    /// Longest wait between two reads of an answer's body.
    idle: Duration,
    origin: String,
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Destination")
            .field("origin", &self.origin)
            .finish()
    }
}

impl Destination {
    /// The origin of `url` (`http://` or `https://`; HTTPS verified against
    /// `ca_certificates`, or the system roots when there are none). `idle` bounds the wait
    /// for each read of a streamed answer.
    pub fn of_url(
        url: &str,
        ca_certificates: &[String],
        connect_timeout: Duration,
        idle: Duration,
    ) -> Result<Destination, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("`{url}` is not an http(s) URL"));
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let (host, port) =
            gatehouse_model::validate::parse_host_port(authority, if tls { 443 } else { 80 })?;
        let transport = if tls {
            let cfg = crate::tls::client::client_config(&crate::tls::client::UpstreamTlsSpec {
                verify: true,
                ca_certificates,
                client_certificate: None,
                h2: false,
            })?;
            Transport {
                protocol: gatehouse_model::ServiceProtocol::Https,
                tls: Some(cfg),
            }
        } else {
            Transport::plain()
        };
        let bracketed = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        let default_port = if tls { 443 } else { 80 };
        let host_header = if port == default_port {
            bracketed.clone()
        } else {
            format!("{bracketed}:{port}")
        };
        let scheme = if tls { "https" } else { "http" };
        // Pool key apart from the proxy's own (`host:port` / `tls-…://`): these connections
        // carry another kind of traffic and TLS settings of their own.
        // Providers with their own CAs never share connections with others.
        let trust = if ca_certificates.is_empty() {
            String::new()
        } else {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            ca_certificates.hash(&mut h);
            format!("{:x}@", h.finish())
        };
        let key = format!("outcall+{scheme}://{trust}{bracketed}:{port}");
        let target = TargetRt {
            key: key.into(),
            tls_name: if tls {
                Some(crate::tls::client::server_name(&host)?)
            } else {
                None
            },
            host: host.as_str().into(),
            port,
            host_header: http::HeaderValue::from_str(&host_header)
                .map_err(|e| format!("host `{host_header}`: {e}"))?,
            weight: 1,
        };
        Ok(Destination {
            target: Arc::new(target),
            transport,
            connect_timeout,
            idle,
            origin: format!("{scheme}://{authority}"),
        })
    }

    /// `scheme://authority` as given.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The `Host` header calls carry (what a request signature must cover).
    pub fn host_header(&self) -> &http::HeaderValue {
        &self.target.host_header
    }
}

/// Why a call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum OutcallError {
    /// No connection.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// No answer head within the time given.
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The exchange failed.
    #[error(transparent)]
    Exchange(#[from] H1Error),
    /// The request could not be built.
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// The worker's client, handed to plugins in `RequestCtx::outcall`.
#[derive(Clone)]
pub struct Outcall {
    pool: Rc<Pool>,
}

impl Outcall {
    /// Calls on the connections of `pool`.
    pub fn new(pool: Rc<Pool>) -> Outcall {
        Outcall { pool }
    }

    /// POSTs `body` to `path` (path and query) at `dest`; the answer's head must come within
    /// `head_timeout`. A reused connection the server had closed meanwhile (closed before
    /// any answer byte, or refusing the write) is replaced once by a fresh one.
    pub async fn post(
        &self,
        dest: &Destination,
        path: &str,
        headers: &HeaderMap,
        body: Bytes,
        head_timeout: Duration,
    ) -> Result<Response<ResponseBody>, OutcallError> {
        let uri = Uri::try_from(path).map_err(|e| OutcallError::Invalid(e.to_string()))?;
        let deadline = tokio::time::Instant::now() + head_timeout;
        let mut fresh = false;
        loop {
            let lease = tokio::time::timeout_at(
                deadline,
                self.pool
                    .get(&dest.target, &dest.transport, dest.connect_timeout, fresh),
            )
            .await
            .map_err(|_| OutcallError::Timeout(head_timeout))??;
            let mut conn = lease.conn;
            let mut req = Request::new(RequestBody::buffered(body.clone()));
            *req.method_mut() = Method::POST;
            *req.uri_mut() = uri.clone();
            *req.headers_mut() = headers.clone();
            req.headers_mut()
                .insert(http::header::HOST, dest.target.host_header.clone());
            let exchange = async {
                conn.send(&mut req, &Extra::default(), dest.idle).await?;
                conn.read_head(&Method::POST).await
            };
            match tokio::time::timeout_at(deadline, exchange).await {
                Err(_) => return Err(OutcallError::Timeout(head_timeout)),
                Ok(Ok((head, framing))) => {
                    let release = self.pool.release_to(dest.target.key.clone());
                    let body = ResponseBody::new(conn, framing, release, dest.idle);
                    let (parts, ()) = head.into_parts();
                    return Ok(Response::from_parts(parts, body));
                }
                Ok(Err(H1Error::ClosedEarly | H1Error::Io(_))) if lease.reused && !fresh => {
                    fresh = true;
                }
                Ok(Err(e)) => return Err(e.into()),
            }
        }
    }
}
