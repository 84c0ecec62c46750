//! Body types of the proxy: the client's request body on its way upstream (with a size limit
//! and an idle timeout) and the upstream's response body on its way back (which returns its
//! connection to the pool when it ends).

use std::cell::Cell;
use std::error::Error as StdError;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::pool::Checkin;

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
struct IdleTimer {
    sleep: Option<Pin<Box<Sleep>>>,
    progressed: bool,
}

impl IdleTimer {
    fn progress(&mut self) {
        self.progressed = true;
    }
    /// Called when the inner stream is pending; true when the timeout expired.
    fn expired(&mut self, cx: &mut Context<'_>, limit: Duration) -> bool {
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
    inner: Incoming,
    limit: u64,
    seen: u64,
    exceeded: Rc<Cell<bool>>,
    idle: Duration,
    timer: IdleTimer,
}

impl RequestBody {
    /// Wraps a body; `exceeded` is set when the limit is hit.
    pub fn new(inner: Incoming, limit: u64, idle: Duration, exceeded: Rc<Cell<bool>>) -> Self {
        RequestBody {
            inner,
            limit,
            seen: 0,
            exceeded,
            idle,
            timer: IdleTimer::default(),
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.timer.progress();
                if let Some(d) = frame.data_ref() {
                    this.seen += d.len() as u64;
                    if this.seen > this.limit {
                        this.exceeded.set(true);
                        return Poll::Ready(Some(Err(Box::new(BodyError::TooLarge(this.limit)))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
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
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The upstream's response body on its way to the client.
pub struct UpstreamBody {
    inner: Incoming,
    checkin: Option<Checkin>,
    idle: Duration,
    timer: IdleTimer,
}

impl UpstreamBody {
    /// Wraps a response body; the connection goes back to the pool when it ends.
    pub fn new(inner: Incoming, checkin: Option<Checkin>, idle: Duration) -> Self {
        let mut b = UpstreamBody {
            inner,
            checkin,
            idle,
            timer: IdleTimer::default(),
        };
        if b.inner.is_end_stream() {
            b.finish();
        }
        b
    }

    fn finish(&mut self) {
        if let Some(c) = self.checkin.take() {
            c.release();
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                this.timer.progress();
                if this.inner.is_end_stream() {
                    this.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.checkin = None;
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.timer.expired(cx, this.idle) {
                    this.checkin = None;
                    return Poll::Ready(Some(Err(Box::new(BodyError::Idle(this.idle)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Every body the proxy answers with.
pub enum ProxyBody {
    /// A complete body made by the gateway (errors, small answers).
    Full(Option<Bytes>),
    /// Streamed from an upstream.
    Upstream(UpstreamBody),
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
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Upstream(u) => u.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Upstream(u) => u.size_hint(),
        }
    }
}
