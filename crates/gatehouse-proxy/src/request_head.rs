//! Reading an HTTP/1.1 request head on the server side: httparse for the syntax, then
//! Gatehouse's own rules for everything RFC 9112 leaves to the recipient (§6, §11). What a
//! lenient server would guess about is refused; what the client may not decide for the
//! upstream (headers its `Connection` names, `_` names, gateway-owned headers) is dropped
//! before any plugin sees the request.

use bytes::BytesMut;
use http::header;
use http::{Method, Request, StatusCode, Uri, Version};

use crate::h1::{header_map, Span};
use crate::wire::{self, ChunkState};

/// Header slots on the stack; `--max-headers` above this is capped here.
pub(crate) const MAX_HEADER_SLOTS: usize = 256;

/// What is left of the current request's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyState {
    Done,
    Length(u64),
    Chunked(ChunkState),
    /// The body broke (bad framing, client gone): the connection cannot be reused.
    Broken,
}

/// Why a head could not be read.
pub(crate) enum HeadError {
    /// Idle connection closed by the client, or draining.
    Closed,
    /// Answer with this status and close.
    Refuse(StatusCode, &'static str, &'static str),
    /// Give up silently (socket error).
    Io,
}

/// A parsed request head.
pub(crate) struct Head {
    pub(crate) req: Request<()>,
    pub(crate) keep_alive: bool,
    pub(crate) body: BodyState,
    pub(crate) expect_continue: bool,
    /// A WebSocket upgrade request (the only kind ever tunnelled).
    pub(crate) upgrade: bool,
}

pub(crate) fn too_large() -> HeadError {
    HeadError::Refuse(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "request_header_too_large",
        "the request head is larger than the gateway accepts",
    )
}

fn bad(msg: &'static str) -> HeadError {
    HeadError::Refuse(StatusCode::BAD_REQUEST, "bad_request", msg)
}

fn bare_lf() -> HeadError {
    bad("bare LF in the request head (lines must end with CRLF)")
}

/// What the server side needs from the settings to read a head.
#[derive(Clone, Copy)]
pub(crate) struct HeadLimits {
    /// Largest head in bytes.
    pub max_head: usize,
    /// Most header lines.
    pub max_headers: usize,
    /// Keep headers whose names contain `_` (dropped by default, as nginx does: CGI-style
    /// backends read `X_Consumer_Id` and `X-Consumer-Id` as the same variable).
    pub allow_underscores: bool,
    /// The peer is a trusted proxy: its forwarding and identity headers are kept (see
    /// [`wire::is_gateway_owned`]).
    pub trusted: bool,
}

fn not_implemented(msg: &'static str) -> HeadError {
    HeadError::Refuse(StatusCode::NOT_IMPLEMENTED, "not_implemented", msg)
}

/// What the header lines of a request say, gathered in one pass.
struct HeaderFacts {
    keep_alive: bool,
    codings: wire::TransferCodings,
    length: Option<u64>,
    expect_continue: bool,
    upgrade_websocket: bool,
    upgrade_other: bool,
    connection_upgrade: bool,
    hosts: usize,
    /// Offsets (in the head buffer) of the header names the `Connection` header lists.
    named: Vec<(usize, usize)>,
}

/// Parses a complete head out of `rbuf` (consuming it), `None` when more bytes are needed.
/// Everything RFC 9112 calls ambiguous is refused here, before any routing: bare LF line
/// ends, several or no Host (HTTP/1.1), Transfer-Encoding other than a single final chunked
/// (400, or 501 for codings Gatehouse does not decode), Transfer-Encoding with
/// Content-Length, conflicting Content-Lengths. Headers the client's `Connection` names are
/// dropped here, before plugins add theirs, and never framing headers or Host.
pub(crate) fn parse_head(
    rbuf: &mut BytesMut,
    limits: HeadLimits,
    spans: &mut Vec<Span>,
) -> Result<Option<Head>, HeadError> {
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADER_SLOTS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        rbuf,
        &mut slots[..limits.max_headers.clamp(1, MAX_HEADER_SLOTS)],
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError::Refuse(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too_many_headers",
                "the request has more headers than the gateway accepts",
            ))
        }
        Err(_) => return Err(bad("malformed request head")),
    };
    if len > limits.max_head {
        return Err(too_large());
    }
    let (method, version) = request_line(&parsed)?;
    let base = rbuf.as_ptr() as usize;
    // httparse takes a bare LF as a line end; a proxy in front may not (RFC 9112 §2.2). The
    // header lines are checked one by one in `scan_headers`; here what comes before the
    // request line (empty lines) and the head's final empty line.
    let method_at = parsed.method.map_or(0, |m| m.as_ptr() as usize - base);
    if wire::bare_lf(&rbuf[..method_at]).is_some() || !rbuf[..len].ends_with(b"\r\n\r\n") {
        return Err(bare_lf());
    }
    let target = parsed.path.unwrap_or("");
    if target.contains('#') {
        // RFC 9112 §3.2: a request target has no fragment; servers differ on where it ends.
        return Err(bad("a request target must not contain a fragment (#)"));
    }
    let target_span = (target.as_ptr() as usize - base, target.len());
    let facts = scan_headers(&rbuf[..len], parsed.headers, version, limits, spans)?;
    facts.check(version)?;
    drop_named(rbuf, spans, &facts.named);
    let head = rbuf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target_span.0..target_span.0 + target_span.1))
        .map_err(|_| bad("invalid request target"))?;
    // Room for what auth and transform plugins add, so their inserts do not regrow the map.
    let mut headers = header_map(&head, spans, 6).map_err(bad)?;
    target_host(&uri, &mut headers)?;
    let body = facts.body();
    let websocket = facts.upgrade_websocket
        && !facts.upgrade_other
        && facts.connection_upgrade
        && version == Version::HTTP_11
        && method == Method::GET
        && body == BodyState::Done;
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    *req.headers_mut() = headers;
    Ok(Some(Head {
        req,
        keep_alive: facts.keep_alive,
        body,
        expect_continue: facts.expect_continue,
        upgrade: websocket,
    }))
}

/// Method and version; CONNECT is refused (a gateway is not a forward proxy).
fn request_line(parsed: &httparse::Request<'_, '_>) -> Result<(Method, Version), HeadError> {
    let method = Method::from_bytes(parsed.method.unwrap_or("").as_bytes())
        .map_err(|_| bad("invalid method"))?;
    if method == Method::CONNECT {
        return Err(HeadError::Refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "CONNECT is not supported",
        ));
    }
    let version = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    Ok((method, version))
}

/// One pass over the header lines: reads what decides framing, connection and upgrade, and
/// keeps in `spans` the lines that go into the request's map (not `_` names unless allowed,
/// not gateway-owned names from an untrusted peer).
#[inline]
fn scan_headers(
    head: &[u8],
    lines: &[httparse::Header<'_>],
    version: Version,
    limits: HeadLimits,
    spans: &mut Vec<Span>,
) -> Result<HeaderFacts, HeadError> {
    let base = head.as_ptr() as usize;
    let mut f = HeaderFacts {
        keep_alive: version == Version::HTTP_11,
        codings: wire::TransferCodings::default(),
        length: None,
        expect_continue: false,
        upgrade_websocket: false,
        upgrade_other: false,
        connection_upgrade: false,
        hosts: 0,
        named: Vec::new(),
    };
    spans.clear();
    for h in lines {
        let v = h.value;
        let name = h.name.as_bytes();
        // The line before this one (the request line, or the previous header) ends in CRLF.
        let n0 = name.as_ptr() as usize - base;
        if n0 < 2 || head[n0 - 1] != b'\n' || head[n0 - 2] != b'\r' {
            return Err(bare_lf());
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = wire::parse_content_length(v).ok_or_else(|| bad("invalid Content-Length"))?;
            match f.length {
                Some(m) if m != n => return Err(bad("conflicting Content-Length headers")),
                _ => f.length = Some(n),
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            f.codings.add(v);
        } else if name.eq_ignore_ascii_case(b"host") {
            f.hosts += 1;
            if !wire::valid_host(v) {
                return Err(bad("invalid Host header"));
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            f.connection(v, v.as_ptr() as usize - base, version);
        } else if name.eq_ignore_ascii_case(b"expect") {
            f.expect_continue = v.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            // Only a WebSocket upgrade is ever tunnelled; anything else (h2c, TLS…) is
            // dropped as the hop-by-hop header it is and the request served as plain HTTP.
            if v.trim_ascii().eq_ignore_ascii_case(b"websocket") {
                f.upgrade_websocket = true;
            } else {
                f.upgrade_other = true;
            }
        }
        if (!limits.allow_underscores && wire::has_underscore(name))
            || (!limits.trusted && wire::is_gateway_owned(name))
        {
            continue;
        }
        spans.push((n0, h.name.len(), v.as_ptr() as usize - base, v.len()));
    }
    Ok(f)
}

impl HeaderFacts {
    /// Reads one `Connection` line at offset `at` of the head buffer.
    fn connection(&mut self, v: &[u8], at: usize, version: Version) {
        let mut off = 0;
        for t in v.split(|b| *b == b',') {
            let start = off + (t.len() - t.trim_ascii_start().len());
            off += t.len() + 1;
            let t = t.trim_ascii();
            if t.eq_ignore_ascii_case(b"close") {
                self.keep_alive = false;
            } else if t.eq_ignore_ascii_case(b"keep-alive") {
                if version == Version::HTTP_10 {
                    self.keep_alive = true;
                }
            } else if t.eq_ignore_ascii_case(b"upgrade") {
                self.connection_upgrade = true;
            } else if !t.is_empty() && !wire::is_protected_from_connection(t) {
                self.named.push((at + start, t.len()));
            }
        }
    }

    /// Request smuggling defences (RFC 9112 §6.1, §6.3): a Transfer-Encoding must be a
    /// single final chunked, never comes with Content-Length, and HTTP/1.0 has none; one
    /// Host, required in HTTP/1.1.
    fn check(&self, version: Version) -> Result<(), HeadError> {
        let c = &self.codings;
        if c.present {
            if self.length.is_some() {
                return Err(bad(
                    "Transfer-Encoding and Content-Length must not be sent together",
                ));
            }
            if version == Version::HTTP_10 {
                return Err(bad("Transfer-Encoding is not allowed in HTTP/1.0"));
            }
            if !c.chunked_final || c.chunked_early {
                return Err(bad("Transfer-Encoding must end with chunked, applied once"));
            }
            if c.other {
                return Err(not_implemented(
                    "transfer codings other than chunked are not supported",
                ));
            }
        }
        if self.hosts > 1 {
            return Err(bad("more than one Host header"));
        }
        if self.hosts == 0 && version == Version::HTTP_11 {
            return Err(bad("HTTP/1.1 requests need a Host header"));
        }
        Ok(())
    }

    fn body(&self) -> BodyState {
        if self.codings.present {
            return BodyState::Chunked(ChunkState::Size);
        }
        match self.length {
            Some(0) | None => BodyState::Done,
            Some(n) => BodyState::Length(n),
        }
    }
}

/// Drops the header lines the client's `Connection` header named (hop-by-hop by its say-so).
fn drop_named(buf: &[u8], spans: &mut Vec<Span>, named: &[(usize, usize)]) {
    if named.is_empty() {
        return;
    }
    spans.retain(|&(n0, nl, _, _)| {
        let name = &buf[n0..n0 + nl];
        !named
            .iter()
            .any(|&(t0, tl)| buf[t0..t0 + tl].eq_ignore_ascii_case(name))
    });
}

/// Checks the request target; an absolute-form target (RFC 9112 §3.2.2) puts its authority
/// into Host, whatever the Host header said: it is what routing, plugins and the upstream
/// all see.
fn target_host(uri: &Uri, headers: &mut http::HeaderMap) -> Result<(), HeadError> {
    let Some(authority) = uri.authority() else {
        if uri.path_and_query().is_none() || !uri.path().starts_with('/') {
            return Err(bad("the request target must be an absolute path"));
        }
        return Ok(());
    };
    if !matches!(uri.scheme_str(), Some("http" | "https"))
        || authority.as_str().contains('@')
        || !wire::valid_host(authority.as_str().as_bytes())
    {
        return Err(bad("invalid absolute-form request target"));
    }
    let host = http::HeaderValue::from_str(authority.as_str())
        .map_err(|_| bad("invalid absolute-form request target"))?;
    headers.insert(header::HOST, host);
    Ok(())
}
