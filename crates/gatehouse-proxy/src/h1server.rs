//! Gatehouse's own HTTP/1.1 server side for client connections.
//!
//! One task per connection reads a head (httparse), hands the request to the proxy handler,
//! writes the answer straight from the handler's body and loops for the next request. No
//! dispatcher, no per-request timer registration (the header-read timeout runs on the
//! worker's coarse clock) and head and a ready body leave in one write. A connection that
//! opens with the HTTP/2 preface is handed back to the caller for hyper's HTTP/2 server.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{self, HeaderName};
use http::{Method, Request, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::body::{BoxError, ProxyBody};
use crate::error::error_response;
use crate::h1::{poll_fill, Span};
use crate::handler::{AfterHeaders, ConnInfo, Worker, X_REQUEST_ID};
use crate::plugin::AddedValue;
use crate::request_head::{
    parse_head, too_large, BodyState, Head, HeadError, HeadLimits, MAX_HEADER_SLOTS,
};
use crate::stream::ClientStream;
use crate::wire::{decode_chunk, Chunk};

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Header slots on the stack; `--max-headers` above this is capped here.
const READ_CHUNK: usize = 8 * 1024;

/// The client socket and what has been read from it, shared by the connection loop and the
/// request body (never borrowed across an await).
struct Io {
    stream: ClientStream,
    rbuf: BytesMut,
    /// What is left of the current request's body.
    body: BodyState,
    /// Bytes of an owed `100 Continue` already written (`None`: none owed).
    continue_sent: Option<usize>,
}

impl Io {
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        poll_fill(&mut self.stream, &mut self.rbuf, READ_CHUNK, cx)
    }
}

/// The request body, read from the client connection as the handler asks for it.
pub struct ServerBody {
    io: Rc<RefCell<Io>>,
    end: bool,
}

/// What went wrong reading a request body from the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    /// The client closed the connection before the body ended.
    #[error("client closed the connection inside the request body")]
    Closed,
    /// The chunked framing is invalid.
    #[error("invalid chunked request body: {0}")]
    Framing(&'static str),
}

impl ServerBody {
    fn fail(
        &mut self,
        io: &mut Io,
        e: impl Into<BoxError>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        io.body = BodyState::Broken;
        self.end = true;
        Poll::Ready(Some(Err(e.into())))
    }
}

impl Body for ServerBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.end {
            return Poll::Ready(None);
        }
        let shared = this.io.clone();
        let mut io = shared.borrow_mut();
        // The client waits for `100 Continue` before sending the body: owe it until now.
        while let Some(sent) = io.continue_sent {
            const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
            let n = match ready!(Pin::new(&mut io.stream).poll_write(cx, &CONTINUE[sent..])) {
                Ok(n) if n > 0 => n,
                Ok(_) => return this.fail(&mut io, ClientBodyError::Closed),
                Err(e) => return this.fail(&mut io, e),
            };
            io.continue_sent = (sent + n < CONTINUE.len()).then_some(sent + n);
        }
        loop {
            match io.body {
                BodyState::Done | BodyState::Broken | BodyState::Length(0) => {
                    if io.body == BodyState::Length(0) {
                        io.body = BodyState::Done;
                    }
                    this.end = true;
                    return Poll::Ready(None);
                }
                BodyState::Length(n) => {
                    if !io.rbuf.is_empty() {
                        let take = n.min(io.rbuf.len() as u64) as usize;
                        let data = io.rbuf.split_to(take).freeze();
                        io.body = BodyState::Length(n - take as u64);
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                BodyState::Chunked(mut state) => {
                    let step = decode_chunk(&mut io.rbuf, &mut state);
                    io.body = BodyState::Chunked(state);
                    match step {
                        Ok(Chunk::Data(d)) => return Poll::Ready(Some(Ok(Frame::data(d)))),
                        Ok(Chunk::End) => io.body = BodyState::Done,
                        Ok(Chunk::More) => {}
                        Err(e) => return this.fail(&mut io, ClientBodyError::Framing(e)),
                    }
                    if io.body == BodyState::Done {
                        continue;
                    }
                }
            }
            match ready!(io.poll_fill(cx)) {
                Ok(0) => return this.fail(&mut io, ClientBodyError::Closed),
                Ok(_) => {}
                Err(e) => return this.fail(&mut io, e),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.end
            || matches!(
                self.io.borrow().body,
                BodyState::Done | BodyState::Broken | BodyState::Length(0)
            )
    }

    fn size_hint(&self) -> SizeHint {
        match self.io.borrow().body {
            BodyState::Length(n) => SizeHint::with_exact(n),
            BodyState::Done | BodyState::Broken => SizeHint::with_exact(0),
            BodyState::Chunked(_) => SizeHint::default(),
        }
    }
}

/// The client connection after a `101 Switching Protocols`: the socket and any bytes the
/// client sent past the upgrade request.
pub struct Upgraded {
    /// The client connection.
    pub io: ClientStream,
    /// Bytes already read from it.
    pub leftover: Bytes,
}

/// Request extension: resolves to the client connection once the 101 answer is written
/// (shared and taken once: request extensions must be `Clone`).
#[derive(Clone)]
pub struct UpgradeRx(Arc<Mutex<Option<tokio::sync::oneshot::Receiver<Upgraded>>>>);

impl UpgradeRx {
    /// The client connection, once the 101 is written (`None` if it never will be).
    pub async fn upgraded(self) -> Option<Upgraded> {
        let rx = self.0.lock().ok()?.take()?;
        rx.await.ok()
    }
}

/// A socket with bytes already read from it put back in front (for the HTTP/2 hand-over).
pub struct Replay {
    pre: Bytes,
    io: ClientStream,
}

impl Replay {
    /// A connection with nothing read from it yet (HTTP/2 chosen by ALPN).
    pub fn new(io: ClientStream) -> Replay {
        Replay {
            pre: Bytes::new(),
            io,
        }
    }
}

impl AsyncRead for Replay {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
}

/// How a connection ended.
pub enum Ended {
    /// Closed (or handed to an upgrade).
    Done,
    /// The client speaks HTTP/2 with prior knowledge: serve it with hyper.
    Http2(Replay),
}

/// Serves one client connection until it closes.
pub async fn serve(worker: Rc<Worker>, conn: Rc<ConnInfo>, stream: ClientStream) -> Ended {
    let io = Rc::new(RefCell::new(Io {
        stream,
        rbuf: BytesMut::with_capacity(READ_CHUNK),
        body: BodyState::Done,
        continue_sent: None,
    }));
    let settings = worker.settings();
    let limits = HeadLimits {
        max_head: settings.max_header_bytes.max(1024),
        max_headers: settings.max_headers.clamp(1, MAX_HEADER_SLOTS),
        allow_underscores: settings.allow_underscores_in_headers,
        trusted: conn.trusted,
    };
    let (read_timeout, idle_timeout) = (settings.header_read_timeout, settings.idle_timeout);
    let mut wbuf = BytesMut::with_capacity(4096);
    let mut spans: Vec<Span> = Vec::new();
    let mut first = true;
    loop {
        // The first request's head must arrive within the header-read timeout of the
        // connection's start; later ones may wait the idle timeout for their first byte,
        // then get the header-read timeout for the rest (one coarse deadline, moved once).
        let waiting = !first && io.borrow().rbuf.is_empty();
        let deadline = worker
            .coarse
            .deadline(if waiting { idle_timeout } else { read_timeout });
        let mut started = !waiting;
        let head = worker
            .coarse
            .with_deadline(
                deadline.clone(),
                std::future::poll_fn(|cx| {
                    let r = poll_head(&io, &worker, cx, limits, &mut spans, first);
                    if !started && !io.borrow().rbuf.is_empty() {
                        started = true;
                        worker.coarse.reset(&deadline, read_timeout);
                    }
                    r
                }),
            )
            .await;
        let head = match head {
            Ok(Ok(h)) => h,
            Ok(Err(HeadError::Closed)) | Ok(Err(HeadError::Io)) => return Ended::Done,
            Ok(Err(HeadError::Refuse(status, code, msg))) => {
                refuse(&io, &worker, &mut wbuf, status, code, msg).await;
                return Ended::Done;
            }
            Err(_) => {
                let partial = !io.borrow().rbuf.is_empty();
                if partial {
                    refuse(
                        &io,
                        &worker,
                        &mut wbuf,
                        StatusCode::REQUEST_TIMEOUT,
                        "request_header_timeout",
                        "the request head did not arrive in time",
                    )
                    .await;
                }
                return Ended::Done;
            }
        };
        let head = match head {
            Parsed::H2 => {
                let Ok(io) = Rc::try_unwrap(io) else {
                    return Ended::Done;
                };
                let io = io.into_inner();
                return Ended::Http2(Replay {
                    pre: io.rbuf.freeze(),
                    io: io.stream,
                });
            }
            Parsed::Head(h) => h,
        };
        first = false;
        let Head {
            req,
            mut keep_alive,
            body,
            expect_continue,
            upgrade,
        } = head;
        let is_head = req.method() == Method::HEAD;
        let version = req.version();
        {
            let mut b = io.borrow_mut();
            b.body = body;
            b.continue_sent = (expect_continue && body != BodyState::Done).then_some(0);
        }
        let (mut parts, ()) = req.into_parts();
        let upgrade_tx = if upgrade {
            let (tx, rx) = tokio::sync::oneshot::channel();
            parts
                .extensions
                .insert(UpgradeRx(Arc::new(Mutex::new(Some(rx)))));
            Some(tx)
        } else {
            None
        };
        let req = Request::from_parts(
            parts,
            crate::body::ClientBody::H1(ServerBody {
                io: io.clone(),
                end: false,
            }),
        );
        let (resp, after) = worker.clone().serve(conn.clone(), req).await;
        let (parts, body) = resp.into_parts();
        {
            let mut b = io.borrow_mut();
            // A body the handler did not read to its end leaves the connection unusable.
            if b.body != BodyState::Done && b.body != BodyState::Length(0) {
                keep_alive = false;
            }
            b.continue_sent = None;
        }
        if worker.coarse.draining() {
            keep_alive = false;
        }
        let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
        if switching && upgrade_tx.is_none() {
            // Only an upgrade this server agreed to may switch the connection.
            return Ended::Done;
        }
        let ok = write_response(
            &Client::new(&io, &worker),
            &mut wbuf,
            parts,
            Some(&after),
            body,
            version,
            is_head,
            &mut keep_alive,
            switching,
        )
        .await;
        if !ok {
            return Ended::Done;
        }
        if switching {
            if let (Some(tx), Ok(io)) = (upgrade_tx, Rc::try_unwrap(io)) {
                let io = io.into_inner();
                let _ = tx.send(Upgraded {
                    io: io.stream,
                    leftover: io.rbuf.freeze(),
                });
            }
            return Ended::Done;
        }
        if !keep_alive {
            let _ = std::future::poll_fn(|cx| {
                let mut b = io.borrow_mut();
                Pin::new(&mut b.stream).poll_shutdown(cx)
            })
            .await;
            return Ended::Done;
        }
    }
}

// Boxing the head would cost an allocation per request; the enum lives on the stack briefly.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    Head(Head),
    H2,
}

/// Reads and parses the next request head (called again on every wake-up).
fn poll_head(
    io: &Rc<RefCell<Io>>,
    worker: &Worker,
    cx: &mut Context<'_>,
    limits: HeadLimits,
    spans: &mut Vec<Span>,
    first: bool,
) -> Poll<Result<Parsed, HeadError>> {
    let mut io = io.borrow_mut();
    loop {
        if !io.rbuf.is_empty() {
            if first && io.rbuf[0] == b'P' {
                let n = io.rbuf.len().min(H2_PREFACE.len());
                if io.rbuf[..n] == H2_PREFACE[..n] {
                    if n == H2_PREFACE.len() {
                        return Poll::Ready(Ok(Parsed::H2));
                    }
                    // A prefix of the preface so far: read on.
                    match ready!(io.poll_fill(cx)) {
                        Ok(0) | Err(_) => return Poll::Ready(Err(HeadError::Io)),
                        Ok(_) => continue,
                    }
                }
            }
            match parse_head(&mut io.rbuf, limits, spans) {
                Ok(Some(h)) => return Poll::Ready(Ok(Parsed::Head(h))),
                Ok(None) if io.rbuf.len() > limits.max_head => {
                    return Poll::Ready(Err(too_large()))
                }
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        match io.poll_fill(cx) {
            Poll::Ready(Ok(0)) => {
                return Poll::Ready(Err(if io.rbuf.is_empty() {
                    HeadError::Closed
                } else {
                    HeadError::Io
                }))
            }
            Poll::Ready(Ok(_)) => {}
            Poll::Ready(Err(_)) => return Poll::Ready(Err(HeadError::Io)),
            Poll::Pending => {
                // Shutting down: an idle connection (no partial request) ends here.
                if io.rbuf.is_empty() && worker.coarse.draining() {
                    return Poll::Ready(Err(HeadError::Closed));
                }
                return Poll::Pending;
            }
        }
    }
}

/// Answers a request that could not be read with the common error shape, then the caller closes.
async fn refuse(
    io: &Rc<RefCell<Io>>,
    worker: &Worker,
    wbuf: &mut BytesMut,
    status: StatusCode,
    code: &str,
    msg: &str,
) {
    let rid = worker.new_request_id();
    let mut resp = error_response(status, code, msg, &rid);
    resp.headers_mut().insert(X_REQUEST_ID.clone(), rid);
    let (parts, body) = resp.into_parts();
    let mut keep_alive = false;
    let _ = write_response(
        &Client::new(io, worker),
        wbuf,
        parts,
        None,
        body,
        Version::HTTP_11,
        false,
        &mut keep_alive,
        false,
    )
    .await;
}

/// How the answer's body is framed on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Out {
    None,
    Length,
    Chunked,
    Close,
}

/// Writes the whole answer; false when the connection must be dropped.
#[allow(clippy::too_many_arguments)]
async fn write_response(
    client: &Client<'_>,
    wbuf: &mut BytesMut,
    parts: http::response::Parts,
    after: Option<&AfterHeaders>,
    mut body: ProxyBody,
    version: Version,
    is_head: bool,
    keep_alive: &mut bool,
    switching: bool,
) -> bool {
    let status = parts.status;
    let h = &parts.headers;
    let bodiless_status = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let has_length = h.contains_key(header::CONTENT_LENGTH);
    // A body the handler did not size but whose size is known (its own answers).
    let mut add_length = None;
    let out = if bodiless_status || is_head {
        Out::None
    } else if has_length {
        Out::Length
    } else if let Some(n) = body.size_hint().exact() {
        add_length = Some(n);
        Out::Length
    } else if version == Version::HTTP_11 {
        Out::Chunked
    } else {
        *keep_alive = false;
        Out::Close
    };
    wbuf.clear();
    wbuf.put_slice(b"HTTP/1.1 ");
    wbuf.put_slice(status.as_str().as_bytes());
    wbuf.put_u8(b' ');
    wbuf.put_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    wbuf.put_slice(b"\r\n");
    for (name, value) in h {
        // Framing and connection headers are the server's to write.
        if name == header::TRANSFER_ENCODING
            || (name == header::CONNECTION && !switching)
            || (name == header::CONTENT_LENGTH && bodiless_status)
            || (after.is_some() && *name == X_REQUEST_ID)
        {
            continue;
        }
        put_header(wbuf, name, value.as_bytes());
    }
    if let Some(after) = after {
        let mut number = itoa::Buffer::new();
        for (name, value) in &after.headers {
            let bytes = match value {
                AddedValue::Value(v) => v.as_bytes(),
                AddedValue::Number(n) => number.format(*n).as_bytes(),
            };
            put_header(wbuf, name, bytes);
        }
        put_header(wbuf, &X_REQUEST_ID, after.request_id.as_bytes());
    }
    if !h.contains_key(header::DATE) {
        wbuf.put_slice(b"date: ");
        crate::coarse::with_http_date(|d| wbuf.put_slice(d));
        wbuf.put_slice(b"\r\n");
    }
    if let Some(n) = add_length {
        wbuf.put_slice(b"content-length: ");
        wbuf.put_slice(itoa::Buffer::new().format(n).as_bytes());
        wbuf.put_slice(b"\r\n");
    }
    if out == Out::Chunked {
        wbuf.put_slice(b"transfer-encoding: chunked\r\n");
    }
    if !switching {
        if !*keep_alive {
            wbuf.put_slice(b"connection: close\r\n");
        } else if version == Version::HTTP_10 {
            wbuf.put_slice(b"connection: keep-alive\r\n");
        }
    }
    wbuf.put_slice(b"\r\n");
    if out == Out::None {
        drop(body);
        return write_all(client, wbuf).await;
    }
    // What the body already holds leaves in one write with what is before it — the head
    // with the first chunk, the rest of an answer that arrived whole, its end — but nothing
    // waits for frames that are not there yet.
    loop {
        while wbuf.len() < COALESCE_MAX {
            match ready_frame(&mut body).await {
                None => break,
                Some(None) => {
                    if out == Out::Chunked {
                        wbuf.put_slice(b"0\r\n\r\n");
                    }
                    let done = wbuf.is_empty() || write_all(client, wbuf).await;
                    wbuf.clear();
                    return done;
                }
                Some(Some(Ok(f))) => {
                    if let Ok(d) = f.into_data() {
                        if !d.is_empty() {
                            put_data(wbuf, out, &d);
                        }
                    }
                }
                Some(Some(Err(e))) => {
                    tracing::debug!(error = %e, "response body failed; closing the client connection");
                    let _ = write_all(client, wbuf).await;
                    return false;
                }
            }
        }
        if !wbuf.is_empty() {
            if !write_all(client, wbuf).await {
                return false;
            }
            wbuf.clear();
        }
        // Nothing more is there: wait for the next frame.
        match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            None => break,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "response body failed; closing the client connection");
                return false;
            }
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    if !d.is_empty() {
                        put_data(wbuf, out, &d);
                    }
                }
            }
        }
    }
    if out == Out::Chunked {
        wbuf.put_slice(b"0\r\n\r\n");
    }
    if !wbuf.is_empty() && !write_all(client, wbuf).await {
        return false;
    }
    wbuf.clear();
    true
}

/// The body's next frame if it already has it (`None`: not yet).
async fn ready_frame<B: Body + Unpin>(
    body: &mut B,
) -> Option<Option<Result<Frame<B::Data>, B::Error>>> {
    std::future::poll_fn(|cx| match Pin::new(&mut *body).poll_frame(cx) {
        Poll::Ready(f) => Poll::Ready(Some(f)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

/// Most bytes of ready body frames gathered into one write.
const COALESCE_MAX: usize = 64 * 1024;

/// Appends a data frame, chunk-framed when the answer is chunked.
fn put_data(wbuf: &mut BytesMut, out: Out, data: &[u8]) {
    if out == Out::Chunked {
        wbuf.put_slice(format!("{:x}\r\n", data.len()).as_bytes());
        wbuf.put_slice(data);
        wbuf.put_slice(b"\r\n");
    } else {
        wbuf.put_slice(data);
    }
}

fn put_header(wbuf: &mut BytesMut, name: &HeaderName, value: &[u8]) {
    wbuf.put_slice(name.as_str().as_bytes());
    wbuf.put_slice(b": ");
    wbuf.put_slice(value);
    wbuf.put_slice(b"\r\n");
}

/// The client connection as the answer writer sees it: the socket and how long a write
/// may wait for the client to take bytes.
struct Client<'a> {
    io: &'a Rc<RefCell<Io>>,
    coarse: &'a crate::coarse::Coarse,
    send_timeout: std::time::Duration,
}

impl<'a> Client<'a> {
    fn new(io: &'a Rc<RefCell<Io>>, worker: &'a Worker) -> Client<'a> {
        Client {
            io,
            coarse: &worker.coarse,
            send_timeout: worker.settings().send_timeout,
        }
    }
}

/// Writes `buf` whole; false when the client is gone or took no bytes for the send timeout.
/// The deadline is only registered when the socket does not take everything at once.
async fn write_all(client: &Client<'_>, buf: &[u8]) -> bool {
    let mut off = 0;
    let mut poll_write = |cx: &mut Context<'_>, wait: bool| -> Poll<Option<bool>> {
        let mut io = client.io.borrow_mut();
        while off < buf.len() {
            match Pin::new(&mut io.stream).poll_write(cx, &buf[off..]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Some(false)),
                Poll::Ready(Ok(n)) => off += n,
                Poll::Pending if wait => return Poll::Pending,
                Poll::Pending => return Poll::Ready(None),
            }
        }
        Poll::Ready(Some(true))
    };
    if let Some(done) = std::future::poll_fn(|cx| poll_write(cx, false)).await {
        return done;
    }
    let rest = std::future::poll_fn(|cx| poll_write(cx, true).map(|r| r.unwrap_or(false)));
    matches!(
        client.coarse.timeout(client.send_timeout, rest).await,
        Ok(true)
    )
}
