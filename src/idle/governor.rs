//! [`Governor`]: one thread's decision whether to poll at all, from what its polling saw.
//!
//! Polling pays only while the thread has its CPU to itself. Beside another runnable thread,
//! a poller either gets preempted (and the work that arrives meanwhile waits for the rest of a
//! scheduler slice, milliseconds) or holds the CPU that the other thread needs (a caller on
//! the same CPU waits for the whole window). Both leave a trace the thread can see for itself:
//!
//! - **preempted**: the clock jumped between two consecutive checks of the spin loop
//!   ([`spin`](super::spin::spin) reports it): the thread was descheduled, so the CPU has
//!   another taker;
//! - **prompt arrival**: work arrived less than [`PROMPT`] after the thread parked at the end
//!   of a window: someone was waiting for the CPU the poller held, most likely a thread on the
//!   same CPU that could only run once the poller stopped.
//!
//! Either one sends the thread into a *quiet period* during which it parks at once, as
//! `spin(Duration::ZERO)` does (a sleeping thread keeps its claim to the CPU, so the kernel
//! lets it preempt a busy neighbour when it is woken). The quiet period starts at
//! [`MIN_QUIET`] and doubles with each contention seen, up to [`MAX_QUIET`]; it halves again
//! for every stretch of at least its own length in which polling ran without contention. So a
//! co-tenant turns polling off within one slice and keeps it off at a cost of one lost slice
//! per [`MAX_QUIET`] at most, while a quiet machine keeps polling (and its round trips).
//!
//! The governor only keeps state: it reads no clock and makes no system call, so its policy is
//! tested with made-up instants.

use std::time::{Duration, Instant};

/// The first quiet period after contention.
pub(crate) const MIN_QUIET: Duration = Duration::from_millis(2);

/// The longest quiet period: at most one scheduler slice lost per this long beside a busy
/// neighbour (a slice is 0.75-4 ms), i.e. well under 1%.
pub(crate) const MAX_QUIET: Duration = Duration::from_millis(500);

/// Work that arrives within this long after the thread parked at the end of a full window was
/// most likely waiting for the poller's CPU (a cross-CPU wake alone takes longer on most
/// machines; a same-CPU hand-off takes a few microseconds).
pub(crate) const PROMPT: Duration = Duration::from_micros(15);

/// Prompt arrivals in a row that count as contention: one can be chance (work that happened
/// to come just after the window), a caller waiting for the CPU makes every arrival prompt.
pub(crate) const PROMPT_STREAK: u32 = 2;

/// What one polling round saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spun {
    /// The work arrived within the window.
    pub(crate) found: bool,
    /// The clock jumped: the thread was descheduled while it polled.
    pub(crate) preempted: bool,
}

/// One thread's polling policy (see the module docs). Not shared: each polling thread owns
/// one (a stream thread in its worker, a waiting caller in a thread-local).
#[derive(Debug)]
pub(crate) struct Governor {
    /// Poll again from this instant on (`None`: not quiet).
    quiet_until: Option<Instant>,
    /// The length of the next quiet period.
    quiet: Duration,
    /// When polling (re)started without contention: for the halving of `quiet`.
    clean_since: Option<Instant>,
    /// When the thread parked after a full window, until the next work arrives.
    parked_at: Option<Instant>,
    /// Prompt arrivals in a row.
    prompt: u32,
    /// Contentions seen (preemptions and prompt arrivals), for tests.
    contentions: u64,
}

impl Governor {
    pub(crate) const fn new() -> Governor {
        Governor {
            quiet_until: None,
            quiet: MIN_QUIET,
            clean_since: None,
            parked_at: None,
            prompt: 0,
            contentions: 0,
        }
    }

    /// How long to poll now, given the configured `max` window: `max`, or zero during a quiet
    /// period.
    pub(crate) fn window(&mut self, max: Duration, now: Instant) -> Duration {
        if max.is_zero() {
            return Duration::ZERO;
        }
        match self.quiet_until {
            Some(until) if now < until => Duration::ZERO,
            Some(_) => {
                self.quiet_until = None;
                self.clean_since = Some(now);
                max
            }
            None => {
                self.clean_since.get_or_insert(now);
                max
            }
        }
    }

    /// Records one polling round that ended at `now`. A round that found nothing ends in a
    /// park, which [`woke`](Self::woke) then judges.
    pub(crate) fn spun(&mut self, spun: Spun, now: Instant) {
        if spun.preempted {
            self.contended(now);
            return;
        }
        if spun.found {
            self.prompt = 0;
        } else {
            self.parked_at = Some(now);
        }
        // A stretch without contention at least as long as the quiet period halves it.
        if let Some(since) = self.clean_since {
            if self.quiet > MIN_QUIET && now.saturating_duration_since(since) >= self.quiet {
                self.quiet = (self.quiet / 2).max(MIN_QUIET);
                self.clean_since = Some(now);
            }
        }
    }

    /// The thread woke at `now` from the park that followed a round (or did not poll at all).
    /// Work within [`PROMPT`] of the end of a full window, [`PROMPT_STREAK`] times in a row,
    /// counts as contention.
    pub(crate) fn woke(&mut self, now: Instant) {
        if let Some(parked) = self.parked_at.take() {
            if now.saturating_duration_since(parked) < PROMPT {
                self.prompt += 1;
                if self.prompt >= PROMPT_STREAK {
                    self.contended(now);
                }
            } else {
                self.prompt = 0;
            }
        }
    }

    /// Whether the thread is in a quiet period at `now`.
    pub(crate) fn is_quiet(&self, now: Instant) -> bool {
        self.quiet_until.is_some_and(|until| now < until)
    }

    /// Contentions seen so far.
    #[cfg(test)]
    pub(crate) fn contentions(&self) -> u64 {
        self.contentions
    }

    fn contended(&mut self, now: Instant) {
        self.contentions += 1;
        self.quiet_until = Some(now + self.quiet);
        self.quiet = (self.quiet * 2).min(MAX_QUIET);
        self.clean_since = None;
        self.parked_at = None;
        self.prompt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_micros(100);
    const CLEAN: Spun = Spun {
        found: true,
        preempted: false,
    };
    const PREEMPTED: Spun = Spun {
        found: false,
        preempted: true,
    };

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn polls_the_full_window_until_it_sees_contention() {
        let t0 = Instant::now();
        let mut g = Governor::new();
        for i in 0..1000 {
            let now = t0 + us(i * 10);
            assert_eq!(g.window(MAX, now), MAX);
            g.spun(CLEAN, now);
        }
        assert_eq!(g.contentions(), 0);
        // A zero window stays zero.
        assert_eq!(g.window(Duration::ZERO, t0), Duration::ZERO);
    }

    #[test]
    fn a_preemption_makes_it_park_at_once_for_a_quiet_period() {
        let t0 = Instant::now();
        let mut g = Governor::new();
        assert_eq!(g.window(MAX, t0), MAX);
        g.spun(PREEMPTED, t0);
        assert!(g.is_quiet(t0));
        assert_eq!(g.window(MAX, t0 + MIN_QUIET - us(1)), Duration::ZERO);
        assert_eq!(g.window(MAX, t0 + MIN_QUIET), MAX);
        assert_eq!(g.contentions(), 1);
    }

    #[test]
    fn repeated_contention_doubles_the_quiet_period_up_to_the_cap() {
        let t0 = Instant::now();
        let mut g = Governor::new();
        let mut now = t0;
        let mut expected = MIN_QUIET;
        for _ in 0..20 {
            assert_eq!(g.window(MAX, now), MAX);
            g.spun(PREEMPTED, now);
            // Quiet for exactly `expected`.
            assert_eq!(g.window(MAX, now + expected - us(1)), Duration::ZERO);
            now += expected;
            expected = (expected * 2).min(MAX_QUIET);
        }
        assert_eq!(expected, MAX_QUIET);
    }

    #[test]
    fn a_clean_stretch_halves_the_quiet_period_again() {
        let t0 = Instant::now();
        let mut g = Governor::new();
        let mut now = t0;
        // Three contentions: the next quiet period would be 8 x MIN_QUIET.
        for _ in 0..3 {
            g.window(MAX, now);
            g.spun(PREEMPTED, now);
            now += MAX_QUIET;
        }
        // Clean polling for 8 x MIN_QUIET halves it to 4 x MIN_QUIET.
        assert_eq!(g.window(MAX, now), MAX);
        let step = us(50);
        let end = now + MIN_QUIET * 8;
        while now <= end {
            g.window(MAX, now);
            g.spun(CLEAN, now);
            now += step;
        }
        g.window(MAX, now);
        g.spun(PREEMPTED, now);
        assert_eq!(g.window(MAX, now + MIN_QUIET * 4 - us(1)), Duration::ZERO);
        assert_eq!(g.window(MAX, now + MIN_QUIET * 4), MAX);
    }

    #[test]
    fn work_right_after_a_park_counts_as_contention_and_later_work_does_not() {
        let t0 = Instant::now();
        let mut g = Governor::new();
        let expired = Spun {
            found: false,
            preempted: false,
        };
        g.window(MAX, t0);
        g.spun(expired, t0 + MAX);
        g.woke(t0 + MAX + PROMPT * 10);
        assert_eq!(g.contentions(), 0);
        assert!(!g.is_quiet(t0 + MAX + PROMPT * 10));

        // One prompt arrival can be chance; two in a row are a thread waiting for the CPU.
        g.window(MAX, t0 + us(900));
        g.spun(expired, t0 + us(1000));
        g.woke(t0 + us(1000) + PROMPT / 2);
        assert_eq!(g.contentions(), 0);
        g.window(MAX, t0 + us(1900));
        g.spun(expired, t0 + us(2000));
        g.woke(t0 + us(2000) + PROMPT / 2);
        assert_eq!(g.contentions(), 1);
        assert!(g.is_quiet(t0 + us(2001)));
        // A streak is broken by work found while polling.
        let mut h = Governor::new();
        for i in 0..10u64 {
            let at = t0 + us(1000 * i);
            h.window(MAX, at);
            h.spun(expired, at + MAX);
            h.woke(at + MAX + PROMPT / 2);
            h.window(MAX, at + us(500));
            h.spun(CLEAN, at + us(501));
        }
        assert_eq!(h.contentions(), 0);
        // A wake without a park before it (the thread parked at once) says nothing.
        let mut h = Governor::new();
        h.woke(t0);
        h.woke(t0);
        assert_eq!(h.contentions(), 0);
    }
}
