//! Gatehouse's own HTTP/1.1 client side for upstream connections.
//!
//! The proxy writes the request and reads the response on the upstream socket directly from
//! the client connection's task: no connection task, no channels, no cross-task wake-ups per
//! request (which is where a hyper client connection spends its time). Only the head is
//! parsed (httparse); bodies are framed (Content-Length, chunked, or until close) and
//! streamed in the chunks the socket delivers.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame};
use tokio::io::AsyncWriteExt;

use crate::body::{BodyError, BoxError, IdleTimer};
use crate::pool::Release;
use crate::stream::UpstreamStream;
use crate::wire::{
    self, contains_token, decode_chunk, is_hop_by_hop_name, parse_content_length, Chunk,
    ChunkState, TransferCodings,
};

/// Largest upstream response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Most upstream response headers accepted.
const MAX_HEADERS: usize = 128;
const READ_CHUNK: usize = 16 * 1024;

/// What went wrong talking to an upstream.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    /// Socket error.
    #[error("upstream i/o: {0}")]
    Io(#[from] io::Error),
    /// The upstream closed before sending a response byte.
    #[error("upstream closed the connection before answering")]
    ClosedEarly,
    /// The response is not valid HTTP/1.
    #[error("invalid upstream response: {0}")]
    Invalid(String),
    /// The upstream did not take a body write within the write timeout.
    #[error("upstream did not accept the request body within {0:?}")]
    WriteTimeout(std::time::Duration),
    /// The request body failed (client went away, limit, timeout).
    #[error("request body: {0}")]
    Body(BoxError),
}

/// An idle or busy HTTP/1.1 connection to an upstream.
pub struct Conn {
    io: UpstreamStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Header offsets of the response head being parsed (reused, never zeroed).
    spans: Vec<Span>,
    /// Requests completed on this connection.
    pub uses: u32,
}

/// How the request body is sent: decided by the gateway from the body itself, never copied
/// from the client's Content-Length or Transfer-Encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReqFraming {
    /// No body and no Content-Length.
    None,
    /// Exactly this many bytes, announced with Content-Length.
    Length(u64),
    /// Chunked (the size is not known in advance).
    Chunked,
}

impl ReqFraming {
    fn of<B: Body>(req: &Request<B>) -> ReqFraming {
        let body = req.body();
        match body.size_hint().exact() {
            Some(0) | None if body.is_end_stream() => {
                // A bodyless POST/PUT/PATCH (or one that said Content-Length: 0) still
                // tells the upstream its body is empty.
                let says_body = matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH)
                    || req.headers().contains_key(header::CONTENT_LENGTH);
                if says_body {
                    ReqFraming::Length(0)
                } else {
                    ReqFraming::None
                }
            }
            Some(n) => ReqFraming::Length(n),
            None => ReqFraming::Chunked,
        }
    }
}

impl Conn {
    /// Wraps a connected socket.
    pub fn new(io: UpstreamStream) -> Conn {
        Conn {
            io,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: BytesMut::with_capacity(1024),
            spans: Vec::new(),
            uses: 0,
        }
    }

    /// True when an idle connection looks usable (see [`UpstreamStream::is_idle_clean`]).
    pub fn is_reusable(&mut self) -> bool {
        self.rbuf.is_empty() && self.io.is_idle_clean()
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        poll_fill(&mut self.io, &mut self.rbuf, READ_CHUNK, cx)
    }

    /// Serializes the request head into the write buffer: the request's own end-to-end
    /// headers, minus those `extra` replaces, then `extra`, then the framing the gateway
    /// chose. The client's Content-Length, Transfer-Encoding and every hop-by-hop header are
    /// never copied (the server side already dropped what the client's `Connection` named).
    fn encode_head<B: Body>(&mut self, req: &Request<B>, extra: &Extra) -> ReqFraming {
        let framing = ReqFraming::of(req);
        let w = &mut self.wbuf;
        w.clear();
        w.put_slice(req.method().as_str().as_bytes());
        w.put_u8(b' ');
        let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
        w.put_slice(pq.as_bytes());
        w.put_slice(b" HTTP/1.1\r\n");
        for (name, value) in req.headers() {
            if is_hop_by_hop(name) || name == header::CONTENT_LENGTH || extra.replaces(name) {
                continue;
            }
            w.put_slice(name.as_str().as_bytes());
            w.put_slice(b": ");
            w.put_slice(value.as_bytes());
            w.put_slice(b"\r\n");
        }
        for (name, value) in extra.iter() {
            w.put_slice(name.as_str().as_bytes());
            w.put_slice(b": ");
            w.put_slice(value.as_bytes());
            w.put_slice(b"\r\n");
        }
        match framing {
            ReqFraming::None => {}
            ReqFraming::Length(n) => {
                w.put_slice(b"content-length: ");
                w.put_slice(itoa::Buffer::new().format(n).as_bytes());
                w.put_slice(b"\r\n");
            }
            ReqFraming::Chunked => w.put_slice(b"transfer-encoding: chunked\r\n"),
        }
        w.put_slice(b"\r\n");
        framing
    }

    /// Writes the request (head and whole body). `Ok(true)` when a body was sent. Each body
    /// write must complete within `write_timeout` (an upstream that stops reading); a client
    /// that stops sending is the body's own idle timeout, so a long upload that keeps moving
    /// is never cut. A body that turns out longer or shorter than the Content-Length sent is
    /// an error (the connection is then never reused).
    pub async fn send<B>(
        &mut self,
        req: &mut Request<B>,
        extra: &Extra,
        write_timeout: std::time::Duration,
    ) -> Result<bool, H1Error>
    where
        B: Body<Data = Bytes, Error = BoxError> + Unpin,
    {
        let framing = self.encode_head(req, extra);
        if matches!(framing, ReqFraming::None | ReqFraming::Length(0)) {
            self.io.write_all(&self.wbuf).await?;
            return Ok(false);
        }
        let body = req.body_mut();
        let mut sent: u64 = 0;
        loop {
            let frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await;
            match frame {
                None => break,
                Some(Err(e)) => return Err(H1Error::Body(e)),
                Some(Ok(f)) => {
                    let Ok(data) = f.into_data() else { continue };
                    if data.is_empty() {
                        continue;
                    }
                    sent += data.len() as u64;
                    match framing {
                        ReqFraming::Chunked => {
                            self.wbuf
                                .put_slice(format!("{:x}\r\n", data.len()).as_bytes());
                            self.wbuf.put_slice(&data);
                            self.wbuf.put_slice(b"\r\n");
                        }
                        ReqFraming::Length(n) if sent > n => {
                            return Err(H1Error::Body(
                                "request body longer than its Content-Length".into(),
                            ))
                        }
                        _ => self.wbuf.put_slice(&data),
                    }
                    self.write_buffered(write_timeout).await?;
                }
            }
        }
        match framing {
            ReqFraming::Chunked => self.wbuf.put_slice(b"0\r\n\r\n"),
            ReqFraming::Length(n) if sent != n => {
                return Err(H1Error::Body(
                    "request body shorter than its Content-Length".into(),
                ))
            }
            _ => {}
        }
        if !self.wbuf.is_empty() {
            self.write_buffered(write_timeout).await?;
        }
        Ok(sent > 0)
    }

    async fn write_buffered(&mut self, limit: std::time::Duration) -> Result<(), H1Error> {
        match tokio::time::timeout(limit, self.io.write_all(&self.wbuf)).await {
            Ok(r) => r?,
            Err(_) => return Err(H1Error::WriteTimeout(limit)),
        }
        self.wbuf.clear();
        Ok(())
    }

    /// Reads a response head (skipping 1xx interim answers other than 101).
    pub async fn read_head(
        &mut self,
        method: &Method,
    ) -> Result<(Response<()>, BodyFraming), H1Error> {
        let mut got_any = false;
        loop {
            if let Some(done) = self.parse_head(method)? {
                return Ok(done);
            }
            if self.rbuf.len() > MAX_HEAD {
                return Err(H1Error::Invalid("response head too large".into()));
            }
            let n = std::future::poll_fn(|cx| self.poll_fill(cx)).await?;
            if n == 0 {
                return Err(if got_any {
                    H1Error::Invalid("connection closed inside the response head".into())
                } else {
                    H1Error::ClosedEarly
                });
            }
            got_any = true;
        }
    }

    fn parse_head(
        &mut self,
        method: &Method,
    ) -> Result<Option<(Response<()>, BodyFraming)>, H1Error> {
        parse_response_head(&mut self.rbuf, &mut self.spans, method)
    }

    /// Gives up the socket and any bytes read past the head (for upgrades).
    pub fn into_parts(self) -> (UpstreamStream, BytesMut) {
        (self.io, self.rbuf)
    }
}

/// Parses a complete response head off the front of `rbuf` (consuming it; 1xx interim
/// answers other than 101 are skipped), `None` when more bytes are needed. Hop-by-hop
/// headers never enter the map; the body's framing follows RFC 9112 §6.3.
pub fn parse_response_head(
    rbuf: &mut BytesMut,
    spans: &mut Vec<Span>,
    method: &Method,
) -> Result<Option<(Response<()>, BodyFraming)>, H1Error> {
    loop {
        if rbuf.is_empty() {
            return Ok(None);
        }
        // Uninitialized header slots: zeroing 128 of them per response measured as a
        // visible share of a proxied request.
        let mut slots =
            [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut parsed,
            rbuf,
            &mut slots,
        ) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(H1Error::Invalid(e.to_string())),
        };
        let code = parsed.code.unwrap_or(0);
        let status =
            StatusCode::from_u16(code).map_err(|_| H1Error::Invalid(format!("status {code}")))?;
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            rbuf.advance(len);
            continue;
        }
        let upgrade = status == StatusCode::SWITCHING_PROTOCOLS;
        let http10 = parsed.version == Some(0);
        let mut close = http10;
        let mut keep_alive_10 = false;
        let mut codings = TransferCodings::default();
        let mut length: Option<u64> = None;
        let base = rbuf.as_ptr() as usize;
        spans.clear();
        // Framing and connection headers are read here; hop-by-hop headers never enter
        // the map (except on a 101, whose Upgrade/Connection the client needs).
        let mut named_in_connection: Option<Vec<u8>> = None;
        for h in parsed.headers.iter() {
            let v = h.value;
            if h.name.eq_ignore_ascii_case("connection") {
                if contains_token(v, b"close") {
                    close = true;
                }
                if contains_token(v, b"keep-alive") {
                    keep_alive_10 = true;
                }
                let names_others = v.split(|b| *b == b',').map(<[u8]>::trim_ascii).any(|t| {
                    !t.is_empty()
                        && !t.eq_ignore_ascii_case(b"close")
                        && !t.eq_ignore_ascii_case(b"keep-alive")
                        && !t.eq_ignore_ascii_case(b"upgrade")
                });
                if names_others {
                    let list = named_in_connection.get_or_insert_with(Vec::new);
                    list.extend_from_slice(v);
                    list.push(b',');
                }
                if !upgrade {
                    continue;
                }
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                codings.add(v);
                continue;
            } else if h.name.eq_ignore_ascii_case("content-length") {
                match (parse_content_length(v), length) {
                    (Some(n), None) => length = Some(n),
                    (Some(n), Some(m)) if n == m => {}
                    _ => return Err(H1Error::Invalid("bad or conflicting Content-Length".into())),
                }
            } else if is_hop_by_hop_name(h.name.as_bytes())
                && !(upgrade && h.name.eq_ignore_ascii_case("upgrade"))
            {
                continue;
            }
            // httparse hands out slices of `rbuf`; keep their offsets to slice the frozen head.
            let n0 = h.name.as_ptr() as usize - base;
            let v0 = v.as_ptr() as usize - base;
            spans.push((n0, h.name.len(), v0, v.len()));
        }
        let head = rbuf.split_to(len).freeze();
        let mut map = header_map(&head, spans, 0).map_err(|e| H1Error::Invalid(e.into()))?;
        if let (Some(list), false) = (named_in_connection, upgrade) {
            // Headers the upstream named in `Connection` are hop-by-hop too (rare); the
            // framing headers stay the gateway's to judge.
            for t in list.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                if wire::is_protected_from_connection(t) {
                    continue;
                }
                if let Ok(n) = HeaderName::from_bytes(t) {
                    map.remove(n);
                }
            }
        }
        if http10 && keep_alive_10 {
            close = false;
        }
        let no_body = method == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
            || upgrade;
        let framing = if no_body {
            BodyFraming::Length(0)
        } else if codings.present {
            // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length (and a message
            // with both is not reused); chunked must be the one and final coding we
            // can decode, else the body runs until the connection closes.
            map.remove(header::CONTENT_LENGTH);
            if length.is_some() {
                close = true;
            }
            if codings.chunked_final && !codings.chunked_early {
                if codings.other {
                    return Err(H1Error::Invalid(
                        "unsupported transfer coding in the response".into(),
                    ));
                }
                BodyFraming::Chunked(ChunkState::Size)
            } else {
                close = true;
                BodyFraming::UntilClose
            }
        } else if let Some(n) = length {
            BodyFraming::Length(n)
        } else {
            close = true;
            BodyFraming::UntilClose
        };
        let mut resp = Response::new(());
        *resp.status_mut() = status;
        *resp.version_mut() = Version::HTTP_11;
        *resp.headers_mut() = map;
        return Ok(Some((resp, framing.with_close(close))));
    }
}

/// True for the hop-by-hop headers of [`wire::HOP_BY_HOP`]: never forwarded as they came.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    is_hop_by_hop_name(name.as_str().as_bytes())
}

/// Headers the gateway sets on the way upstream, written after the request's own headers
/// (replacing any of the same name) without touching the request's `HeaderMap`. Names are
/// `'static` (the proxy's fixed set): no clone per request.
#[derive(Default)]
pub struct Extra {
    items: [Option<(&'static HeaderName, HeaderValue)>; 10],
    len: usize,
}

impl Extra {
    /// Sets `name` to `value` (at most ten entries; the proxy uses eight).
    pub fn set(&mut self, name: &'static HeaderName, value: HeaderValue) {
        if self.len < self.items.len() {
            self.items[self.len] = Some((name, value));
            self.len += 1;
        }
    }

    /// How many entries are set.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is set.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drops the entries after the first `len`.
    pub fn truncate(&mut self, len: usize) {
        while self.len > len {
            self.len -= 1;
            self.items[self.len] = None;
        }
    }

    fn replaces(&self, name: &HeaderName) -> bool {
        self.items[..self.len]
            .iter()
            .flatten()
            .any(|(n, _)| *n == name)
    }

    /// The headers set, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.items[..self.len]
            .iter()
            .flatten()
            .map(|(n, v)| (*n, v))
    }
}

/// Reads more from `io` into `buf`, growing it by `chunk` when nearly full.
pub(crate) fn poll_fill<S: tokio::io::AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    chunk: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(chunk);
    }
    // AsyncRead (unlike try_read) drops the socket's readiness after a short read, which
    // saves the EAGAIN read that would otherwise follow every message.
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

/// Offsets of one header in a head buffer: name start, name length, value start, value
/// length (httparse hands out slices; offsets survive freezing the buffer).
pub(crate) type Span = (usize, usize, usize, usize);

/// Builds a `HeaderMap` whose values share `head`'s bytes, with room for `spare` more.
pub(crate) fn header_map(
    head: &Bytes,
    spans: &[Span],
    spare: usize,
) -> Result<HeaderMap, &'static str> {
    let mut map = HeaderMap::with_capacity(spans.len() + spare);
    for &(n0, nl, v0, vl) in spans {
        let name = HeaderName::from_bytes(&head[n0..n0 + nl]).map_err(|_| "invalid header name")?;
        let value = HeaderValue::from_maybe_shared(head.slice(v0..v0 + vl))
            .map_err(|_| "invalid header value")?;
        map.append(name, value);
    }
    Ok(map)
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// Exactly this many bytes left.
    Length(u64),
    /// Chunked transfer coding.
    Chunked(ChunkState),
    /// Until the upstream closes the connection.
    UntilClose,
    /// Like the inner framing, but the connection cannot be reused afterwards.
    Closing(u64, Option<ChunkState>),
}

impl BodyFraming {
    fn with_close(self, close: bool) -> BodyFraming {
        match (self, close) {
            (BodyFraming::Length(n), true) => BodyFraming::Closing(n, None),
            (BodyFraming::Chunked(s), true) => BodyFraming::Closing(0, Some(s)),
            (f, _) => f,
        }
    }
}

/// A response body read straight from the upstream socket.
pub struct ResponseBody {
    conn: Option<Conn>,
    framing: BodyFraming,
    reusable: bool,
    release: Option<Release>,
    idle: std::time::Duration,
    timer: IdleTimer,
}

impl ResponseBody {
    /// Streams the body described by `framing` from `conn`; `release` gets the connection
    /// back when the body ended cleanly and the connection can carry another request.
    pub fn new(
        conn: Conn,
        framing: BodyFraming,
        release: Release,
        idle: std::time::Duration,
    ) -> ResponseBody {
        ResponseBody::build(conn, framing, Some(release), idle)
    }

    /// Like [`ResponseBody::new`] for a connection that must not carry another request
    /// (one whose request was cut short): it closes when the body ends.
    pub fn closing(conn: Conn, framing: BodyFraming, idle: std::time::Duration) -> ResponseBody {
        ResponseBody::build(conn, framing, None, idle)
    }

    fn build(
        conn: Conn,
        framing: BodyFraming,
        release: Option<Release>,
        idle: std::time::Duration,
    ) -> ResponseBody {
        let (framing, reusable) = match framing {
            BodyFraming::Closing(n, None) => (BodyFraming::Length(n), false),
            BodyFraming::Closing(_, Some(s)) => (BodyFraming::Chunked(s), false),
            BodyFraming::UntilClose => (BodyFraming::UntilClose, false),
            f => (f, true),
        };
        let mut b = ResponseBody {
            conn: Some(conn),
            framing,
            reusable,
            release,
            idle,
            timer: IdleTimer::default(),
        };
        if b.framing == BodyFraming::Length(0) {
            b.finish();
        }
        b
    }

    fn finish(&mut self) {
        self.framing = BodyFraming::Length(0);
        if let (Some(mut conn), Some(release)) = (self.conn.take(), self.release.take()) {
            if self.reusable && conn.rbuf.is_empty() {
                conn.uses += 1;
                release.release(conn);
            }
        }
    }

    fn fail(&mut self, e: impl Into<BoxError>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.conn = None;
        self.framing = BodyFraming::Length(0);
        Poll::Ready(Some(Err(e.into())))
    }
}

/// Reads more of the body, failing with [`BodyError::Idle`] when nothing comes within `idle`.
fn poll_fill_timed(
    conn: &mut Conn,
    timer: &mut IdleTimer,
    idle: std::time::Duration,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    match conn.poll_fill(cx) {
        Poll::Ready(r) => {
            timer.progress();
            Poll::Ready(r)
        }
        Poll::Pending if timer.expired(cx, idle) => Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            BodyError::Idle(idle),
        ))),
        Poll::Pending => Poll::Pending,
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.framing {
                BodyFraming::Length(0) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                BodyFraming::Length(n) => {
                    if !conn.rbuf.is_empty() {
                        let take = (n.min(conn.rbuf.len() as u64)) as usize;
                        let data = conn.rbuf.split_to(take).freeze();
                        let left = n - take as u64;
                        this.framing = BodyFraming::Length(left);
                        if left == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    match ready!(poll_fill_timed(conn, &mut this.timer, this.idle, cx)) {
                        Ok(0) => {
                            return this.fail(H1Error::Invalid(
                                "upstream closed the connection inside the body".into(),
                            ))
                        }
                        Ok(_) => continue,
                        Err(e) => return this.fail(e),
                    }
                }
                BodyFraming::UntilClose => {
                    if !conn.rbuf.is_empty() {
                        let data = conn.rbuf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    match ready!(poll_fill_timed(conn, &mut this.timer, this.idle, cx)) {
                        Ok(0) => {
                            this.conn = None;
                            this.framing = BodyFraming::Length(0);
                            return Poll::Ready(None);
                        }
                        Ok(_) => continue,
                        Err(e) => return this.fail(e),
                    }
                }
                BodyFraming::Chunked(mut state) => {
                    let step = decode_chunk(&mut conn.rbuf, &mut state);
                    this.framing = BodyFraming::Chunked(state);
                    match step {
                        Ok(Chunk::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                        Ok(Chunk::End) => {
                            this.finish();
                            return Poll::Ready(None);
                        }
                        Ok(Chunk::More) => {}
                        Err(e) => return this.fail(H1Error::Invalid(e.into())),
                    }
                    match ready!(poll_fill_timed(conn, &mut this.timer, this.idle, cx)) {
                        Ok(0) => {
                            return this.fail(H1Error::Invalid(
                                "upstream closed the connection inside a chunked body".into(),
                            ))
                        }
                        Ok(_) => continue,
                        Err(e) => return this.fail(e),
                    }
                }
                // Normalized away in `ResponseBody::new`; kept total rather than panicking.
                BodyFraming::Closing(..) => {
                    return this.fail(H1Error::Invalid("internal framing state".into()))
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || self.framing == BodyFraming::Length(0)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self.framing {
            BodyFraming::Length(n) => http_body::SizeHint::with_exact(n),
            _ => http_body::SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Extra;
    use super::*;
    use crate::pool::Pool;
    use http_body_util::BodyExt;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;
    use tokio::net::TcpStream;

    /// Runs one exchange against a raw server that answers with `chunks` (written with pauses,
    /// so the parser sees split reads) and then, if `close`, closes.
    async fn exchange(
        method: Method,
        chunks: Vec<&'static [u8]>,
        close: bool,
    ) -> (Response<()>, Result<Bytes, String>, usize) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await.unwrap();
            for c in chunks {
                s.write_all(c).await.unwrap();
                s.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if !close {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        let mut conn = Conn::new(UpstreamStream::Plain(
            TcpStream::connect(addr).await.unwrap(),
        ));
        let mut req = Request::builder()
            .method(method.clone())
            .uri("/x")
            .body(
                http_body_util::Empty::<Bytes>::new()
                    .map_err(|e| match e {})
                    .boxed_unsync(),
            )
            .unwrap();
        conn.send(&mut req, &Extra::default(), Duration::from_secs(5))
            .await
            .unwrap();
        let (resp, framing) = conn.read_head(&method).await.unwrap();
        let pool = Pool::new(4, Duration::from_secs(10), Default::default());
        let body = ResponseBody::new(
            conn,
            framing,
            pool.release_to("k".into()),
            Duration::from_secs(5),
        );
        let collected = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| e.to_string());
        let idle = pool.idle_count("k");
        (resp, collected, idle)
    }

    #[tokio::test]
    async fn content_length_split_across_reads_is_reused() {
        let (r, b, idle) = exchange(
            Method::GET,
            vec![
                b"HTTP/1.1 200 OK\r\nContent-Le",
                b"ngth: 10\r\nX-A: 1\r\n\r\nhello",
                b" worl",
                b"d",
            ],
            false,
        )
        .await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-a"], "1");
        assert_eq!(b.unwrap(), "hello worl");
        assert_eq!(
            idle, 1,
            "a cleanly finished exchange returns the connection"
        );
    }

    #[tokio::test]
    async fn chunked_with_extensions_and_trailers() {
        let (r, b, idle) = exchange(
            Method::GET,
            vec![
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhel",
                b"lo\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n",
                b"\r\n",
            ],
            false,
        )
        .await;
        assert!(
            r.headers().get("transfer-encoding").is_none(),
            "hop-by-hop headers are dropped when the head is parsed"
        );
        assert_eq!(b.unwrap(), "hello world");
        assert_eq!(idle, 1);
    }

    #[tokio::test]
    async fn interim_responses_are_skipped_and_head_has_no_body() {
        let (r, b, idle) = exchange(
            Method::HEAD,
            vec![b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n"],
            false,
        )
        .await;
        assert_eq!(r.status(), 200);
        assert_eq!(b.unwrap(), "");
        assert_eq!(idle, 1);
    }

    #[tokio::test]
    async fn http10_until_close_is_not_reused() {
        let (r, b, idle) = exchange(
            Method::GET,
            vec![b"HTTP/1.0 200 OK\r\n\r\npart1 ", b"part2"],
            true,
        )
        .await;
        assert_eq!(r.status(), 200);
        assert_eq!(b.unwrap(), "part1 part2");
        assert_eq!(idle, 0);
    }

    #[tokio::test]
    async fn connection_close_is_honoured() {
        let (_, b, idle) = exchange(
            Method::GET,
            vec![b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"],
            true,
        )
        .await;
        assert_eq!(b.unwrap(), "ok");
        assert_eq!(idle, 0);
    }

    #[tokio::test]
    async fn truncated_bodies_and_bad_framing_are_errors() {
        let (_, b, idle) = exchange(
            Method::GET,
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"],
            true,
        )
        .await;
        assert!(b.is_err());
        assert_eq!(idle, 0);
        let (_, b, _) = exchange(
            Method::GET,
            vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
            true,
        )
        .await;
        assert!(b.unwrap_err().contains("chunk size"));
    }

    #[tokio::test]
    async fn conflicting_content_length_is_refused() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc")
                .await
                .unwrap();
        });
        let mut conn = Conn::new(UpstreamStream::Plain(
            TcpStream::connect(addr).await.unwrap(),
        ));
        let mut req = Request::get("/")
            .body(
                http_body_util::Empty::<Bytes>::new()
                    .map_err(|e| match e {})
                    .boxed_unsync(),
            )
            .unwrap();
        conn.send(&mut req, &Extra::default(), Duration::from_secs(5))
            .await
            .unwrap();
        assert!(matches!(
            conn.read_head(&Method::GET).await,
            Err(H1Error::Invalid(_))
        ));
    }

    fn head(raw: &[u8], method: Method) -> Result<Option<(Response<()>, BodyFraming)>, H1Error> {
        let mut buf = BytesMut::from(raw);
        parse_response_head(&mut buf, &mut Vec::new(), &method)
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        // Transfer-Encoding beats Content-Length, and such a response is never reused.
        let (r, f) = head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert!(r.headers().get("content-length").is_none());
        assert_eq!(f, BodyFraming::Closing(0, Some(ChunkState::Size)));
        // A final coding other than chunked: the body runs until the connection closes.
        let (_, f) = head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(f, BodyFraming::UntilClose);
        // Codings the gateway cannot pass on, and lenient lengths, are errors (502).
        for bad in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        ] {
            assert!(
                head(bad, Method::GET).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // The upstream's Connection cannot remove framing headers from the answer.
        let (r, f) = head(
            b"HTTP/1.1 200 OK\r\nConnection: Content-Length, X-Private\r\nX-Private: 1\r\nContent-Length: 2\r\n\r\nok",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(f, BodyFraming::Length(2));
        assert_eq!(r.headers()["content-length"], "2");
        assert!(r.headers().get("x-private").is_none());
        // HEAD: no body whatever the length says.
        let (_, f) = head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
            Method::HEAD,
        )
        .unwrap()
        .unwrap();
        assert_eq!(f, BodyFraming::Length(0));
    }

    #[tokio::test]
    async fn idle_connection_closed_by_peer_is_not_reusable() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let mut conn = Conn::new(UpstreamStream::Plain(
            TcpStream::connect(addr).await.unwrap(),
        ));
        let (s, _) = l.accept().await.unwrap();
        assert!(conn.is_reusable());
        drop(s);
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Readiness is only learned when the reactor runs; give it a turn.
        tokio::task::yield_now().await;
        assert!(!conn.is_reusable());
    }
}
