//! A coarse per-worker timeout for the hot path. `tokio::time::timeout` registers a timer
//! and reads the clock for every request, which measured at several percent of a proxied
//! request's CPU on this machine. Timeouts of seconds do not need that precision: a worker
//! ticks every 50 ms, and a waiting exchange only records its deadline in ticks.
//! The HTTP/1 server side (`h1server`) runs its header-read timeout on the same clock.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Tick length.
pub const TICK: Duration = Duration::from_millis(50);

/// One deadline being waited for.
pub struct Waiter {
    deadline: Cell<u64>,
    expired: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

/// The coarse clock and the deadlines of one worker.
pub struct Coarse {
    draining: Cell<bool>,
    ticks: Cell<u64>,
    waiting: RefCell<Vec<Weak<Waiter>>>,
    /// A monotonic instant and the Unix time (ms) read together, renewed every tick: a
    /// request's Unix time is derived from its start instant without another clock read.
    anchor: Cell<(Instant, u64)>,
}

impl Default for Coarse {
    fn default() -> Self {
        Coarse {
            draining: Cell::new(false),
            ticks: Cell::new(0),
            waiting: RefCell::default(),
            anchor: Cell::new(read_anchor()),
        }
    }
}

fn read_anchor() -> (Instant, u64) {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    (Instant::now(), unix)
}

/// The timeout elapsed.
#[derive(Debug, Clone, Copy)]
pub struct Elapsed;

impl Coarse {
    /// Advances the clock by one tick and wakes what expired.
    pub fn tick(&self) {
        self.anchor.set(read_anchor());
        let now = self.ticks.get() + 1;
        self.ticks.set(now);
        if now.is_multiple_of(1000 / TICK.as_millis() as u64) {
            HTTP_DATE.with(|d| d.borrow_mut().clear());
        }
        self.waiting.borrow_mut().retain(|w| match w.upgrade() {
            None => false,
            Some(w) if w.deadline.get() <= now => {
                w.expired.set(true);
                if let Some(k) = w.waker.borrow_mut().take() {
                    k.wake();
                }
                false
            }
            Some(_) => true,
        });
    }

    /// Shutting down: wakes every waiting task so idle connections can see it and close.
    pub fn drain(&self) {
        self.draining.set(true);
        for w in self.waiting.borrow().iter().filter_map(Weak::upgrade) {
            if let Some(k) = w.waker.borrow_mut().take() {
                k.wake();
            }
        }
    }

    /// The Unix time in ms at `at` (an instant read by this worker since the last tick or so).
    pub fn unix_ms(&self, at: Instant) -> u64 {
        let (base, unix) = self.anchor.get();
        match at.checked_duration_since(base) {
            Some(d) => unix + d.as_millis() as u64,
            None => unix.saturating_sub(base.duration_since(at).as_millis() as u64),
        }
    }

    /// Ticks since the worker started.
    pub fn ticks(&self) -> u64 {
        self.ticks.get()
    }

    /// True once [`Coarse::drain`] was called.
    pub fn draining(&self) -> bool {
        self.draining.get()
    }

    fn ticks_for(limit: Duration) -> u64 {
        limit.as_millis().div_ceil(TICK.as_millis()) as u64 + 1
    }

    /// A registered deadline `limit` from now (rounded up to the next tick or two), for
    /// [`Coarse::with_deadline`] when the deadline must move while it is awaited.
    #[inline]
    pub fn deadline(&self, limit: Duration) -> Rc<Waiter> {
        let w = Rc::new(Waiter {
            deadline: Cell::new(self.ticks.get() + Self::ticks_for(limit)),
            expired: Cell::new(false),
            waker: RefCell::new(None),
        });
        self.waiting.borrow_mut().push(Rc::downgrade(&w));
        w
    }

    /// Moves a deadline that has not expired yet to `limit` from now.
    pub fn reset(&self, w: &Waiter, limit: Duration) {
        w.deadline.set(self.ticks.get() + Self::ticks_for(limit));
    }

    /// Runs `fut` until `waiter`'s deadline.
    pub fn with_deadline<F: Future>(&self, waiter: Rc<Waiter>, fut: F) -> Timed<F> {
        Timed { inner: fut, waiter }
    }

    /// Runs `fut` with a timeout of `limit` (rounded up to the next tick or two).
    pub fn timeout<F: Future>(&self, limit: Duration, fut: F) -> Timed<F> {
        self.with_deadline(self.deadline(limit), fut)
    }
}

/// A future with a coarse deadline.
pub struct Timed<F> {
    inner: F,
    waiter: Rc<Waiter>,
}

impl<F: Future> Future for Timed<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `inner` is structurally pinned: it is never moved out of `Timed` and `Timed`
        // has no Drop impl; `waiter` is not pinned (an Rc, only read).
        let this = unsafe { self.get_unchecked_mut() };
        let inner = unsafe { Pin::new_unchecked(&mut this.inner) };
        if let Poll::Ready(v) = inner.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        if this.waiter.expired.get() {
            return Poll::Ready(Err(Elapsed));
        }
        let mut slot = this.waiter.waker.borrow_mut();
        if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *slot = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

thread_local! {
    /// The `Date` header value, formatted at most about once a second per worker.
    static HTTP_DATE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Calls `f` with the current time as an HTTP date (RFC 9110 §5.6.7).
pub fn with_http_date(f: impl FnOnce(&[u8])) {
    HTTP_DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_empty() {
            d.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
        }
        f(&d);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_time_from_the_anchor_matches_the_wall_clock() {
        let wall = || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64
        };
        let before = Instant::now();
        std::thread::sleep(Duration::from_millis(20));
        let c = Coarse::default();
        let (w0, at, w1) = (wall(), Instant::now(), wall());
        let t = c.unix_ms(at);
        // Both parts are truncated to whole ms: allow 2 ms either way.
        assert!((w0 - 2..=w1 + 2).contains(&t), "{w0} <= {t} <= {w1}");
        // An instant read before the anchor maps to an earlier time.
        let earlier = c.unix_ms(before);
        assert!(t - earlier >= 19 && t - earlier < 1_000, "{earlier} vs {t}");
        c.tick();
        assert!(c.unix_ms(Instant::now()) >= t);
    }

    #[tokio::test]
    async fn expires_after_enough_ticks_and_not_before() {
        let c = Rc::new(Coarse::default());
        let fut = c.timeout(Duration::from_millis(120), std::future::pending::<()>());
        let mut fut = Box::pin(fut);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        for _ in 0..3 {
            c.tick();
            assert!(fut.as_mut().poll(&mut cx).is_pending());
        }
        c.tick();
        assert!(matches!(
            fut.as_mut().poll(&mut cx),
            Poll::Ready(Err(Elapsed))
        ));
        let done = c.timeout(Duration::from_secs(1), async { 7 }).await;
        assert!(matches!(done, Ok(7)));
    }
}
