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

/// Spin-wait hints between two polls: a `pause` is 10-140 cycles depending on the core, so a
/// few of them keep the poll's cache traffic low and notice work within ~0.2 us.
const RELAX: u32 = 4;

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
        if let Some(value) = poll() {
            spun.found = true;
            return (Some(value), spun);
        }
        for _ in 0..RELAX {
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
        // A poll that sleeps stands for a thread that lost its CPU between two checks.
        let mut calls = 0;
        let (got, spun) = spin(Duration::from_secs(10), || {
            calls += 1;
            match calls {
                1 => {
                    std::thread::sleep(GAP * 4);
                    None
                }
                _ => Some(calls),
            }
        });
        // It polled once more after noticing (the second call), found it, and said so.
        assert_eq!(got, Some(2));
        assert!(spun.preempted && spun.found);
    }
}
