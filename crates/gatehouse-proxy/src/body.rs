//! Body types of the proxy: the client's request body on its way upstream (with a size limit
//! and an idle timeout) and what the proxy answers with (its own bytes, or the upstream's
//! body streamed by `h1::ResponseBody`).

use std::error::Error as StdError;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

/// Boxed error for bodies.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Raised inside a body stream; the handler turns it into the right status.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The request body grew past the route's limit.
    #[error("request body exceeds the limit of {0} bytes")]
    TooLarge(u64),
    /// No progress within the timeout.
    #[error("no data for {0:?}")]
    Idle(Duration),
}

/// Re-armable idle timer that allocates only when a stream actually waits.
#[derive(Default)]
pub(crate) struct IdleTimer {
    sleep: Option<Pin<Box<Sleep>>>,
    progressed: bool,
}

impl IdleTimer {
    pub(crate) fn progress(&mut self) {
        self.progressed = true;
    }
    /// Called when the inner stream is pending; true when the timeout expired.
    pub(crate) fn expired(&mut self, cx: &mut Context<'_>, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        match &mut self.sleep {
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            Some(s) if self.progressed => s.as_mut().reset(deadline),
            Some(_) => {}
        }
        self.progressed = false;
        self.sleep
            .as_mut()
            .is_some_and(|s| s.as_mut().poll(cx).is_ready())
    }
}

use std::future::Future;

/// The client's request body forwarded upstream.
pub struct RequestBody {
    inner: ReqInner,
    limit: u64,
    seen: u64,
    idle: Duration,
    timer: IdleTimer,
}

impl RequestBody {
    /// Wraps a body that may carry at most `limit` bytes with at most `idle` between chunks.
    pub fn new(inner: ClientBody, limit: u64, idle: Duration) -> Self {
        RequestBody {
            inner: ReqInner::Stream(inner),
            limit,
            seen: 0,
            idle,
            timer: IdleTimer::default(),
        }
    }

    /// A body already read whole (and possibly rewritten by a plugin).
    pub fn buffered(bytes: Bytes) -> Self {
        RequestBody {
            inner: ReqInner::Full(Some(bytes)),
            limit: u64::MAX,
            seen: 0,
            idle: Duration::MAX,
            timer: IdleTimer::default(),
        }
    }
}

/// The client's request body as a server side hands it over.
pub enum ClientBody {
    /// From hyper (HTTP/2).
    Hyper(Incoming),
    /// From Gatehouse's own HTTP/1 server side.
    H1(crate::h1server::ServerBody),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ClientBody::Hyper(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(Into::into))),
            ClientBody::H1(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Hyper(b) => b.is_end_stream(),
            ClientBody::H1(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Hyper(b) => b.size_hint(),
            ClientBody::H1(b) => b.size_hint(),
        }
    }
}

/// Where a request body comes from.
enum ReqInner {
    /// Streamed from the client.
    Stream(ClientBody),
    /// Read whole already.
    Full(Option<Bytes>),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let inner = match &mut this.inner {
            ReqInner::Stream(i) => i,
            ReqInner::Full(b) => {
                return Poll::Ready(
                    b.take()
                        .filter(|b| !b.is_empty())
                        .map(|b| Ok(Frame::data(b))),
                )
            }
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.timer.progress();
                if let Some(d) = frame.data_ref() {
                    this.seen += d.len() as u64;
                    if this.seen > this.limit {
                        return Poll::Ready(Some(Err(Box::new(BodyError::TooLarge(this.limit)))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if this.timer.expired(cx, this.idle) {
                    return Poll::Ready(Some(Err(Box::new(BodyError::Idle(this.idle)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            ReqInner::Stream(i) => i.is_end_stream(),
            ReqInner::Full(b) => b.as_ref().is_none_or(Bytes::is_empty),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            ReqInner::Stream(i) => i.size_hint(),
            ReqInner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

/// The request context a log phase reads: owned when only the log phase needs it, shared
/// when a body filter holds it too.
pub enum LogCtx {
    /// Only the log phase uses it.
    Owned(Box<crate::plugin::RequestCtx>),
    /// Shared with a [`TransformBody`].
    Shared(std::rc::Rc<crate::plugin::RequestCtx>),
}

/// What the log phase needs once the response body is done.
pub struct LogState {
    /// The plugins in effect for the request.
    pub chain: std::sync::Arc<[crate::plugin::Instance]>,
    /// The request's context.
    pub ctx: LogCtx,
    /// The status sent.
    pub status: http::StatusCode,
    /// The call log, when on.
    pub sink: Option<crate::settings::CallSinkRef>,
}

impl LogState {
    /// Runs every plugin's log phase for a body of `bytes` that ended (`complete`) or not.
    fn run(self, bytes: u64, complete: bool) {
        let ctx = match &self.ctx {
            LogCtx::Owned(c) => c,
            LogCtx::Shared(c) => &**c,
        };
        let rec = crate::plugin::CallRecord {
            ctx,
            status: self.status,
            response_bytes: bytes,
            total: ctx.request.started.elapsed(),
            complete,
        };
        for inst in self.chain.iter() {
            inst.plugin.log(&rec);
        }
        if let Some(sink) = &self.sink {
            sink.0.record(&rec);
        }
    }
}

/// A response body whose end (or abandonment) runs the plugins' log phase.
pub struct LoggedBody {
    inner: ProxyBody,
    bytes: u64,
    log: Option<LogState>,
}

impl LoggedBody {
    /// Wraps `inner`; the log phase runs exactly once, when it ends or is dropped.
    pub fn new(inner: ProxyBody, log: LogState) -> Self {
        LoggedBody {
            inner,
            bytes: 0,
            log: Some(log),
        }
    }

    fn end(&mut self, complete: bool) {
        if let Some(log) = self.log.take() {
            log.run(self.bytes, complete);
        }
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        let complete = self.inner.is_end_stream();
        self.end(complete);
    }
}

/// Largest response body a plugin may rewrite; bigger ones pass unchanged.
pub const MAX_TRANSFORM_BODY: usize = 16 * 1024 * 1024;

/// A response body read whole, rewritten by plugins, then sent.
pub struct TransformBody {
    inner: ProxyBody,
    buf: BytesMut,
    filters: Vec<std::sync::Arc<dyn crate::plugin::Plugin>>,
    ctx: std::rc::Rc<crate::plugin::RequestCtx>,
    head: crate::plugin::ResponseHead,
    done: bool,
    passthrough: bool,
}

impl TransformBody {
    /// Buffers `inner` and runs it through `filters` in order.
    pub fn new(
        inner: ProxyBody,
        filters: Vec<std::sync::Arc<dyn crate::plugin::Plugin>>,
        ctx: std::rc::Rc<crate::plugin::RequestCtx>,
        head: crate::plugin::ResponseHead,
    ) -> Self {
        TransformBody {
            inner,
            buf: BytesMut::new(),
            filters,
            ctx,
            head,
            done: false,
            passthrough: false,
        }
    }
}

/// Every body the proxy answers with.
pub enum ProxyBody {
    /// A complete body made by the gateway (errors, small answers).
    Full(Option<Bytes>),
    /// Streamed from an HTTP/1 upstream.
    Upstream(crate::h1::ResponseBody),
    /// Streamed from an HTTP/2 upstream (trailers included).
    H2(Box<crate::upstream::http2::H2Body>),
    /// Followed to its end for the log phase.
    Logged(Box<LoggedBody>),
    /// Rewritten whole by plugins.
    Transformed(Box<TransformBody>),
    /// Streamed through plugins' frame filters.
    Filtered(Box<FilteredBody>),
    /// Made by a plugin that answers requests itself (the AI gateway's translated streams).
    Dyn(Pin<Box<dyn Body<Data = Bytes, Error = BoxError>>>),
}

/// A response body passed through [`StreamFilter`](crate::plugin::StreamFilter)s frame by
/// frame.
pub struct FilteredBody {
    inner: ProxyBody,
    filters: Vec<Box<dyn crate::plugin::StreamFilter>>,
}

impl FilteredBody {
    /// Streams `inner` through `filters` (in order).
    pub fn new(inner: ProxyBody, filters: Vec<Box<dyn crate::plugin::StreamFilter>>) -> Self {
        FilteredBody { inner, filters }
    }
}

impl ProxyBody {
    /// A body with these bytes.
    pub fn full(b: impl Into<Bytes>) -> Self {
        ProxyBody::Full(Some(b.into()))
    }
    /// No body.
    pub fn empty() -> Self {
        ProxyBody::Full(None)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Upstream(u) => {
                let r = ready!(Pin::new(u).poll_frame(cx));
                Poll::Ready(r)
            }
            ProxyBody::H2(u) => Pin::new(u.as_mut()).poll_frame(cx),
            ProxyBody::Dyn(b) => b.as_mut().poll_frame(cx),
            ProxyBody::Transformed(t) => loop {
                if t.done {
                    return Poll::Ready(None);
                }
                if t.passthrough {
                    if !t.buf.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(t.buf.split().freeze()))));
                    }
                    let r = ready!(Pin::new(&mut t.inner).poll_frame(cx));
                    if r.is_none() {
                        t.done = true;
                    }
                    return Poll::Ready(r);
                }
                match ready!(Pin::new(&mut t.inner).poll_frame(cx)) {
                    Some(Ok(f)) => {
                        if let Some(d) = f.data_ref() {
                            t.buf.extend_from_slice(d);
                            if t.buf.len() > MAX_TRANSFORM_BODY {
                                // Too big to rewrite: send it as it is.
                                t.passthrough = true;
                            }
                        }
                    }
                    Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                    None => {
                        t.done = true;
                        let mut body = t.buf.split().freeze();
                        for f in &t.filters {
                            body = f.response_body(&t.ctx, &t.head, body);
                        }
                        return Poll::Ready(Some(Ok(Frame::data(body))));
                    }
                }
            },
            ProxyBody::Filtered(f) => loop {
                let r = ready!(Pin::new(&mut f.inner).poll_frame(cx));
                let frame = match r {
                    Some(Ok(frame)) => frame,
                    other => return Poll::Ready(other),
                };
                let frame = match frame.into_data() {
                    Ok(mut d) => {
                        for flt in &mut f.filters {
                            d = flt.data(d);
                        }
                        Frame::data(d)
                    }
                    Err(frame) => match frame.into_trailers() {
                        Ok(t) => {
                            let mut out = None;
                            for flt in &mut f.filters {
                                if let Some(d) = flt.trailers(&t) {
                                    out = Some(d);
                                }
                            }
                            match out {
                                Some(d) => Frame::data(d),
                                None => Frame::trailers(t),
                            }
                        }
                        Err(_) => continue,
                    },
                };
                if frame.data_ref().is_some_and(Bytes::is_empty) {
                    continue;
                }
                return Poll::Ready(Some(Ok(frame)));
            },
            ProxyBody::Logged(l) => {
                let r = ready!(Pin::new(&mut l.inner).poll_frame(cx));
                match &r {
                    Some(Ok(f)) => {
                        if let Some(d) = f.data_ref() {
                            l.bytes += d.len() as u64;
                        }
                        if l.inner.is_end_stream() {
                            l.end(true);
                        }
                    }
                    Some(Err(_)) => l.end(false),
                    None => l.end(true),
                }
                Poll::Ready(r)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Upstream(u) => u.is_end_stream(),
            ProxyBody::H2(u) => u.is_end_stream(),
            ProxyBody::Logged(l) => l.inner.is_end_stream(),
            ProxyBody::Transformed(t) => t.done,
            ProxyBody::Dyn(b) => b.is_end_stream(),
            ProxyBody::Filtered(f) => f.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Upstream(u) => u.size_hint(),
            ProxyBody::H2(u) => u.size_hint(),
            ProxyBody::Logged(l) => l.inner.size_hint(),
            ProxyBody::Dyn(b) => b.size_hint(),
            ProxyBody::Transformed(_) | ProxyBody::Filtered(_) => SizeHint::default(),
        }
    }
}
