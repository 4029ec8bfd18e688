//! The spin loop: poll, relax the CPU, read the clock; never yield.
//!
//! A `sched_yield` beside a runnable thread of another process hands that thread the CPU for
//! the rest of its scheduler slice (milliseconds), which is what made every call beside a busy
//! neighbour cost one slice. Between polls this loop only issues the CPU's spin-wait hint
//! ([`std::hint::spin_loop`]: `pause` on x86, `isb`/`yield` on Arm, which keep the core's
//! sibling hyperthread and the memory bus free) and reads the monotonic clock (the vDSO: no
//! system call). The clock read also tells whether the thread was descheduled: a jump of more
//! than [`GAP`] between two reads means someone else ran on the CPU meanwhile, which the
//! [`Governor`](super::governor::Governor) takes as the sign to stop polling.

use std::hint;
use std::time::{Duration, Instant};

use super::governor::Spun;

/// A clock jump between two checks longer than this means the thread was descheduled for
/// another taker of its CPU. Two checks are normally well under a microsecond apart; an
/// interrupt or a VM exit takes microseconds to tens of them, and is not a reason to stop
/// polling; a busy neighbour takes the CPU for a scheduler slice (0.75 ms and up).
pub(crate) const GAP: Duration = Duration::from_micros(200);

/// Polls between two clock reads; each poll is followed by one spin-wait hint (a `pause` is
/// 10-140 cycles depending on the core), so work is noticed within a fraction of a
/// microsecond and the clock is read every few hundred nanoseconds.
const POLLS_PER_CHECK: u32 = 4;

/// Calls `poll` until it returns `Some`, `window` has passed, or the thread was descheduled;
/// after a descheduling it polls once more. Returns what was found and what was seen. A zero
/// window polls nothing.
pub(crate) fn spin<T>(window: Duration, mut poll: impl FnMut() -> Option<T>) -> (Option<T>, Spun) {
    let mut spun = Spun {
        found: false,
        preempted: false,
    };
    if window.is_zero() {
        return (None, spun);
    }
    let start = Instant::now();
    let mut last = start;
    loop {
        for _ in 0..POLLS_PER_CHECK {
            if let Some(value) = poll() {
                spun.found = true;
                return (Some(value), spun);
            }
            hint::spin_loop();
        }
        let now = Instant::now();
        if now.duration_since(last) > GAP {
            spun.preempted = true;
            let value = poll();
            spun.found = value.is_some();
            return (value, spun);
        }
        if now.duration_since(start) >= window {
            return (None, spun);
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_window_never_polls() {
        let mut calls = 0;
        let (got, spun) = spin(Duration::ZERO, || {
            calls += 1;
            Some(())
        });
        assert_eq!((got, calls, spun.found), (None, 0, false));
    }

    #[test]
    fn returns_what_arrives_within_the_window_and_gives_up_after_it() {
        let mut calls = 0;
        let (got, spun) = spin(Duration::from_secs(10), || {
            calls += 1;
            (calls == 3).then_some(calls)
        });
        assert_eq!(got, Some(3));
        assert!(spun.found);
        // A round lasts the whole window unless it was descheduled (tests run in parallel),
        // which it then reports.
        let start = Instant::now();
        let (none, spun) = spin(Duration::from_millis(5), || None::<()>);
        assert!(none.is_none() && !spun.found);
        assert!(spun.preempted || start.elapsed() >= Duration::from_millis(5));
    }

    #[test]
    fn a_descheduling_ends_the_round_and_is_reported() {
        // A poll that sleeps stands for a thread that lost its CPU between two checks; the
        // polls before the next clock check find nothing, the one after it does.
        let mut calls = 0;
        let (got, spun) = spin(Duration::from_secs(10), || {
            calls += 1;
            if calls == 1 {
                std::thread::sleep(GAP * 4);
            }
            (calls > POLLS_PER_CHECK).then_some(calls)
        });
        // It noticed at the first check, polled once more, found it, and said so.
        assert_eq!(got, Some(POLLS_PER_CHECK + 1));
        assert!(spun.preempted && spun.found);
    }
}
