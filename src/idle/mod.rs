//! The idle strategy of stream threads and of blocking waits: poll for a bounded window while
//! the thread has its CPU to itself, then park; never yield the CPU away.
//!
//! A thread that parks pays a wake-up when work arrives: on a VM 15-45 us, more than the job
//! itself for small models. A thread that polls pays a busy CPU, and beside another runnable
//! thread it pays far more: it gets preempted, and work that arrives meanwhile waits for a
//! scheduler slice. So corestream polls only where polling pays, and each thread decides that
//! for itself from what it sees (see `README.md` in this folder):
//!
//! - [`spin`]: the loop. CPU spin-wait hints between polls, no `sched_yield`; a clock jump
//!   between two checks reports that the thread was descheduled.
//! - [`governor`]: the per-thread policy. Contention (a descheduling, or work arriving right
//!   after the thread gave up its CPU) starts a quiet period during which the thread parks at
//!   once; quiet periods double while contention lasts and halve once it is gone.
//!
//! Invariants:
//! - a poller gives up at most `window` after it started polling, so a thread idle for longer
//!   than its window costs no CPU at all (it is parked);
//! - a thread never yields its CPU to anyone: it polls or it sleeps, so a busy neighbour never
//!   gets a slice that corestream gave away;
//! - a caller never polls on a CPU that a stream it waits for runs on (that stream needs the
//!   CPU to answer): it parks;
//! - a zero window never polls.

mod governor;
mod spin;

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

pub(crate) use governor::Governor;

/// The default polling window of streams and of [`TaskFuture::wait`](crate::TaskFuture::wait):
/// long enough to cover a caller's round trip between two jobs (a cross-CPU wake of an async
/// caller is 30-70 us on the 2-vCPU development VM), short enough that an idle stream costs
/// nothing (README, performance: "idle strategy"). Set another window with
/// [`TaskBuilder::spin`](crate::TaskBuilder::spin) or
/// [`MultiStreamModuleBuilder::spin`](crate::MultiStreamModuleBuilder::spin); `Duration::ZERO`
/// parks at once. The window is an upper bound: a thread that sees another taker of its CPU
/// polls less, or not at all, for a while.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(100);

/// Calls `poll` until it returns `Some`, or up to the window `governor` allows under `max`
/// (zero during a quiet period); records what the round saw. `None` when nothing came.
///
/// A thread that parks after `None` reports its wake-up ([`Governor::woke`]), so that work
/// arriving right after the park counts as contention.
pub(crate) fn poll_for<T>(
    governor: &mut Governor,
    max: Duration,
    poll: impl FnMut() -> Option<T>,
) -> Option<T> {
    let window = governor.window(max, Instant::now());
    if window.is_zero() {
        return None;
    }
    let (found, spun) = spin::spin(window, poll);
    governor.spun(spun, Instant::now());
    found
}

thread_local! {
    /// The polling policy of a thread that waits for answers (`wait`, `forward_sync`).
    static CALLER: RefCell<Governor> = const { RefCell::new(Governor::new()) };
}

/// Calls `poll` for up to `window`, as this thread's caller [`Governor`] allows: what a thread
/// that waits for answers (`wait`, `forward_sync`) does before it parks. Take `window` from
/// [`caller_window`].
pub(crate) fn poll_as_caller<T>(
    window: Duration,
    mut poll: impl FnMut() -> Option<T>,
) -> Option<T> {
    if window.is_zero() {
        return None;
    }
    CALLER.with(|governor| match governor.try_borrow_mut() {
        Ok(mut governor) => poll_for(&mut governor, window, &mut poll),
        // A wait inside a wait (a model that blocks on another task from `poll`): poll
        // without a policy of its own rather than not at all.
        Err(_) => poll_for(&mut Governor::new(), window, &mut poll),
    })
}

/// Blocks on `future`: polls it (with a no-op waker) as [`poll_as_caller`] does, then parks
/// the thread until it is woken.
pub(crate) fn block_on<F: Future + Unpin>(mut future: F, window: Duration) -> F::Output {
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    let polled = poll_as_caller(window, || match Pin::new(&mut future).poll(&mut cx) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    });
    match polled {
        Some(out) => out,
        None => crate::sync::block_on(future),
    }
}

/// How long a caller waiting for answers computed on `cpus` (the CPU sets of the streams it
/// waits for) may poll: `spin`, or zero when it runs on one of those CPUs now (or cannot
/// tell), where polling would hold the CPU its answer needs.
pub(crate) fn caller_window<'a>(
    spin: Duration,
    mut cpus: impl Iterator<Item = &'a [usize]>,
) -> Duration {
    if spin.is_zero() {
        return spin;
    }
    let shares_cpu = match crate::affinity::current_cpu() {
        Some(cpu) => cpus.any(|set| set.contains(&cpu)),
        None => true,
    };
    if shares_cpu {
        Duration::ZERO
    } else {
        spin
    }
}
