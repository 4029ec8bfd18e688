//! The idle strategy of stream threads and of blocking waits: poll with backoff for a bounded
//! window, then park.
//!
//! A thread that parks pays a wake-up when work arrives: on a VM about 30 us when the wake
//! crosses CPUs, more than the job itself for small models. A thread that polls pays a busy
//! CPU. The runtimes users compare corestream with poll before sleeping (crossbeam's
//! `Backoff`, rayon's sleep rounds, OpenMP's `KMP_BLOCKTIME`); corestream does too, for a
//! bounded window after each job.
//!
//! Invariants:
//! - a poller gives up at most `window` after it started polling, so a thread idle for longer
//!   than its window costs no CPU at all (it is parked);
//! - between tries it spins only a few times and then yields the CPU
//!   ([`crossbeam_utils::Backoff::snooze`]), so a thread that shares its CPU, such as a caller
//!   pinned to a stream's CPU, gets to run instead of waiting for the window to end;
//! - a zero window never polls.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crossbeam_utils::Backoff;

/// The default polling window of streams and of [`TaskFuture::wait`](crate::TaskFuture::wait):
/// long enough to cover a caller's round trip between two jobs (a cross-CPU wake of an async
/// caller is 30-70 us on the 2-vCPU development VM), short enough that an idle stream costs
/// nothing (README, performance: "idle strategy"). Set another window with
/// [`TaskBuilder::spin`](crate::TaskBuilder::spin) or
/// [`MultiStreamModuleBuilder::spin`](crate::MultiStreamModuleBuilder::spin); `Duration::ZERO`
/// parks at once.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(100);

/// Calls `poll` until it returns `Some` or `window` has passed since the first call, backing
/// off between calls (spin, then yield). `None` when the window passed, or at once for a zero
/// window.
pub(crate) fn poll_for<T>(window: Duration, mut poll: impl FnMut() -> Option<T>) -> Option<T> {
    if window.is_zero() {
        return None;
    }
    let start = Instant::now();
    let backoff = Backoff::new();
    loop {
        if let Some(value) = poll() {
            return Some(value);
        }
        if start.elapsed() >= window {
            return None;
        }
        backoff.snooze();
    }
}

/// Blocks on `future`: polls it for up to `window` (with a no-op waker, backing off as
/// [`poll_for`] does), then parks the thread until it is woken.
pub(crate) fn block_on<F: Future + Unpin>(mut future: F, window: Duration) -> F::Output {
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    let polled = poll_for(window, || match Pin::new(&mut future).poll(&mut cx) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    });
    match polled {
        Some(out) => out,
        None => crate::sync::block_on(future),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_window_never_polls() {
        let mut calls = 0;
        assert_eq!(
            poll_for(Duration::ZERO, || {
                calls += 1;
                Some(())
            }),
            None
        );
        assert_eq!(calls, 0);
    }

    #[test]
    fn gives_up_after_the_window_and_returns_what_arrives_within_it() {
        let start = Instant::now();
        assert_eq!(poll_for(Duration::from_millis(5), || None::<()>), None);
        assert!(start.elapsed() >= Duration::from_millis(5));
        let mut calls = 0;
        let got = poll_for(Duration::from_secs(10), || {
            calls += 1;
            (calls == 3).then_some(calls)
        });
        assert_eq!(got, Some(3));
    }
}
