//! A coarse per-worker timeout for the hot path. `tokio::time::timeout` registers a timer
//! and reads the clock for every request, which measured at several percent of a proxied
//! request's CPU on this machine. Timeouts of seconds do not need that precision: a worker
//! ticks every 50 ms, and a waiting exchange only records its deadline in ticks.
//!
//! [`HyperTimer`] gives hyper's HTTP/1 header-read timeout the same clock: hyper arms it
//! for every request a keep-alive connection waits for, and with tokio's timer that was a
//! clock read, a timer-wheel registration and its removal per request.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Tick length.
pub const TICK: Duration = Duration::from_millis(50);

/// One deadline being waited for.
pub struct Waiter {
    deadline: u64,
    expired: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

/// The coarse clock and the deadlines of one worker.
pub struct Coarse {
    started: Instant,
    draining: Cell<bool>,
    ticks: Cell<u64>,
    waiting: RefCell<Vec<Weak<Waiter>>>,
    sleeps: RefCell<Sleeps>,
}

impl Default for Coarse {
    fn default() -> Coarse {
        Coarse {
            started: Instant::now(),
            draining: Cell::new(false),
            ticks: Cell::new(0),
            waiting: RefCell::default(),
            sleeps: RefCell::default(),
        }
    }
}

/// Deadlines of hyper's sleeps (a slab: a sleep keeps its key until it is dropped).
#[derive(Default)]
struct Sleeps {
    slots: Vec<Option<(u64, Option<Waker>)>>,
    free: Vec<usize>,
}

/// The timeout elapsed.
#[derive(Debug, Clone, Copy)]
pub struct Elapsed;

impl Coarse {
    /// Advances the clock by one tick and wakes what expired.
    pub fn tick(&self) {
        let now = self.ticks.get() + 1;
        self.ticks.set(now);
        if now.is_multiple_of(1000 / TICK.as_millis() as u64) {
            HTTP_DATE.with(|d| d.borrow_mut().clear());
        }
        self.waiting.borrow_mut().retain(|w| match w.upgrade() {
            None => false,
            Some(w) if w.deadline <= now => {
                w.expired.set(true);
                if let Some(k) = w.waker.borrow_mut().take() {
                    k.wake();
                }
                false
            }
            Some(_) => true,
        });
        for (deadline, waker) in self.sleeps.borrow_mut().slots.iter_mut().flatten() {
            if *deadline <= now {
                if let Some(k) = waker.take() {
                    k.wake();
                }
            }
        }
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

    /// True once [`Coarse::drain`] was called.
    pub fn draining(&self) -> bool {
        self.draining.get()
    }

    fn ticks_for(limit: Duration) -> u64 {
        limit.as_millis().div_ceil(TICK.as_millis()) as u64 + 1
    }

    /// Makes this the clock of [`HyperTimer`] on the calling thread (the worker's).
    pub fn install(self: &Rc<Self>) {
        CURRENT.with(|c| *c.borrow_mut() = Some(self.clone()));
    }

    /// Runs `fut` with a timeout of `limit` (rounded up to the next tick or two).
    pub fn timeout<F: Future>(&self, limit: Duration, fut: F) -> Timed<F> {
        let ticks = Coarse::ticks_for(limit);
        let w = Rc::new(Waiter {
            deadline: self.ticks.get() + ticks,
            expired: Cell::new(false),
            waker: RefCell::new(None),
        });
        self.waiting.borrow_mut().push(Rc::downgrade(&w));
        Timed {
            inner: fut,
            waiter: w,
        }
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
    static CURRENT: RefCell<Option<Rc<Coarse>>> = const { RefCell::new(None) };
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

/// A `hyper::rt::Timer` on the worker's coarse clock (falls back to tokio's timer on a
/// thread without one).
#[derive(Clone, Copy, Debug, Default)]
pub struct HyperTimer;

/// A sleep of [`HyperTimer`].
pub enum CoarseSleep {
    /// On the worker's coarse clock: deadline in ticks, slab key once polled.
    Coarse {
        /// Deadline in ticks.
        deadline: u64,
        /// Slab key while registered.
        key: Option<usize>,
        /// Which worker's clock (its address) the key belongs to.
        owner: usize,
    },
    /// No coarse clock on this thread.
    Tokio(Pin<Box<tokio::time::Sleep>>),
}

impl hyper::rt::Timer for HyperTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let deadline = CURRENT.with(|c| {
            c.borrow().as_ref().map(|c| {
                (
                    c.ticks.get() + Coarse::ticks_for(duration),
                    Rc::as_ptr(c) as usize,
                )
            })
        });
        Box::pin(match deadline {
            Some((deadline, owner)) => CoarseSleep::Coarse {
                deadline,
                key: None,
                owner,
            },
            None => CoarseSleep::Tokio(Box::pin(tokio::time::sleep(duration))),
        })
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep(deadline.saturating_duration_since(self.now()))
    }

    fn now(&self) -> Instant {
        CURRENT.with(|c| match c.borrow().as_ref() {
            Some(c) => c.started + TICK * u32::try_from(c.ticks.get()).unwrap_or(u32::MAX),
            None => Instant::now(),
        })
    }
}

impl hyper::rt::Sleep for CoarseSleep {}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.get_mut() {
            CoarseSleep::Tokio(s) => s.as_mut().poll(cx),
            CoarseSleep::Coarse {
                deadline,
                key,
                owner,
            } => CURRENT.with(|c| {
                let c = c.borrow();
                let Some(c) = c.as_ref().filter(|c| Rc::as_ptr(c) as usize == *owner) else {
                    // Polled away from its worker: no clock to wait on, so it ends now.
                    return Poll::Ready(());
                };
                if c.ticks.get() >= *deadline {
                    return Poll::Ready(());
                }
                let mut sleeps = c.sleeps.borrow_mut();
                let entry = (*deadline, Some(cx.waker().clone()));
                match *key {
                    Some(k) => {
                        if let Some(slot) = sleeps.slots.get_mut(k) {
                            *slot = Some(entry);
                        }
                    }
                    None => {
                        let k = match sleeps.free.pop() {
                            Some(k) => {
                                sleeps.slots[k] = Some(entry);
                                k
                            }
                            None => {
                                sleeps.slots.push(Some(entry));
                                sleeps.slots.len() - 1
                            }
                        };
                        *key = Some(k);
                    }
                }
                Poll::Pending
            }),
        }
    }
}

impl Drop for CoarseSleep {
    fn drop(&mut self) {
        if let CoarseSleep::Coarse {
            key: Some(k),
            owner,
            ..
        } = self
        {
            let (k, owner) = (*k, *owner);
            // A sleep is created, polled and dropped on its worker's thread (hyper's
            // connection tasks are spawned locally); anywhere else there is nothing to free.
            let _ = CURRENT.try_with(|c| {
                if let Some(c) = c
                    .borrow()
                    .as_ref()
                    .filter(|c| Rc::as_ptr(c) as usize == owner)
                {
                    let mut sleeps = c.sleeps.borrow_mut();
                    if let Some(slot) = sleeps.slots.get_mut(k) {
                        if slot.take().is_some() {
                            sleeps.free.push(k);
                        }
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test]
    async fn hyper_timer_sleeps_on_the_coarse_clock_and_frees_its_slot() {
        use hyper::rt::Timer;
        let c = Rc::new(Coarse::default());
        c.install();
        let t = HyperTimer;
        let start = t.now();
        let mut s = t.sleep_until(start + Duration::from_millis(120));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for _ in 0..3 {
            c.tick();
            assert!(s.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(c.sleeps.borrow().slots.iter().flatten().count(), 1);
        c.tick();
        assert!(s.as_mut().poll(&mut cx).is_ready());
        assert!(t.now() > start, "now() follows the ticks");
        drop(s);
        assert_eq!(c.sleeps.borrow().slots.iter().flatten().count(), 0);
        // A freed slot is reused.
        let mut s2 = t.sleep(Duration::from_secs(5));
        assert!(s2.as_mut().poll(&mut cx).is_pending());
        assert_eq!(c.sleeps.borrow().slots.len(), 1);
    }
}
