//! Every HTTP request the routes take, counted from its start to its answer. A request is
//! *started* when the framework hands it to [`crate::http::handlers::handle`] (headers read), and
//! then ends exactly once: *answered* (the route produced a reply, any status) or
//! *cancelled* (the framework dropped it first: the client disconnected, or a shutdown gave
//! up on it). So `started = answered + cancelled + in flight` at every moment, and after a
//! graceful shutdown `in flight` is 0: nothing accepted was lost. The totals are logged at
//! shutdown and counted in `corestream_http_requests_cancelled_total{route}`.
//!
//! Clients decide how many requests are cancelled, so cancellations are logged as a count at
//! most once per [`CANCEL_REPORT_EVERY`] ([`Reports`]), never a line each.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The shortest time between two log lines about cancelled requests.
pub const CANCEL_REPORT_EVERY: Duration = Duration::from_secs(10);

/// The service's request counters.
#[derive(Debug)]
pub struct Requests {
    started: AtomicU64,
    answered: AtomicU64,
    cancelled: AtomicU64,
    cancel_reports: Reports,
}

impl Default for Requests {
    fn default() -> Requests {
        Requests {
            started: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            cancel_reports: Reports::new(CANCEL_REPORT_EVERY),
        }
    }
}

/// Events counted and reported at most once per period, whatever their rate: the first event
/// is reported at once, later ones as one count when a period has passed since the last report.
///
/// ```
/// use std::time::{Duration, Instant};
/// use corestream_serve::service::requests::Reports;
///
/// let reports = Reports::new(Duration::from_secs(10));
/// let t0 = Instant::now();
/// assert_eq!(reports.note(t0), Some(1)); // the first is reported at once
/// assert_eq!(reports.note(t0 + Duration::from_secs(1)), None);
/// assert_eq!(reports.note(t0 + Duration::from_secs(2)), None);
/// assert_eq!(reports.note(t0 + Duration::from_secs(11)), Some(3)); // 3 since the last report
/// ```
#[derive(Debug)]
pub struct Reports {
    every: Duration,
    start: Instant,
    /// Nanoseconds after `start` of the last report, plus one (0: none yet).
    last: AtomicU64,
    /// Events not yet reported.
    pending: AtomicU64,
}

impl Reports {
    /// At most one report per `every`.
    pub fn new(every: Duration) -> Reports {
        Reports {
            every,
            start: Instant::now(),
            last: AtomicU64::new(0),
            pending: AtomicU64::new(0),
        }
    }

    /// Counts one event at `now`; returns the count to report when a report is due (one
    /// caller gets it, however many note at once), else `None`.
    pub fn note(&self, now: Instant) -> Option<u64> {
        self.pending.fetch_add(1, Ordering::AcqRel);
        let at = u64::try_from(now.saturating_duration_since(self.start).as_nanos())
            .unwrap_or(u64::MAX - 1)
            + 1;
        let last = self.last.load(Ordering::Acquire);
        let every = u64::try_from(self.every.as_nanos()).unwrap_or(u64::MAX);
        let due = last == 0 || at.saturating_sub(last) >= every;
        if due
            && self
                .last
                .compare_exchange(last, at, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            Some(self.pending.swap(0, Ordering::AcqRel))
        } else {
            None
        }
    }
}

/// A snapshot of [`Requests`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Requests handed to the routes.
    pub started: u64,
    /// Requests the routes answered (any status).
    pub answered: u64,
    /// Requests dropped before an answer (client gone, or shutdown).
    pub cancelled: u64,
}

impl Counts {
    /// Requests started and not yet answered or cancelled.
    pub fn in_flight(&self) -> u64 {
        self.started - self.answered - self.cancelled
    }
}

impl Requests {
    /// Counts a request as started; the returned ticket ends it: [`Ticket::answered`], or
    /// cancelled when dropped without.
    pub fn start(&self, route: &'static str) -> Ticket<'_> {
        self.started.fetch_add(1, Ordering::Relaxed);
        Ticket {
            requests: self,
            route,
            answered: false,
        }
    }

    /// The counters now. `answered` and `cancelled` are read before `started`, so a snapshot
    /// taken while requests run never shows more ended than started.
    pub fn counts(&self) -> Counts {
        let answered = self.answered.load(Ordering::Acquire);
        let cancelled = self.cancelled.load(Ordering::Acquire);
        let started = self.started.load(Ordering::Acquire);
        Counts {
            started,
            answered,
            cancelled,
        }
    }
}

/// One started request; counts it as cancelled if dropped before [`Ticket::answered`].
#[derive(Debug)]
pub struct Ticket<'a> {
    requests: &'a Requests,
    route: &'static str,
    answered: bool,
}

impl Ticket<'_> {
    /// The route answered.
    pub fn answered(mut self) {
        self.answered = true;
        self.requests.answered.fetch_add(1, Ordering::Release);
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.requests.cancelled.fetch_add(1, Ordering::Release);
            metrics::counter!("corestream_http_requests_cancelled_total", "route" => self.route)
                .increment(1);
            if let Some(count) = self.requests.cancel_reports.note(Instant::now()) {
                tracing::info!(
                    count,
                    route = self.route,
                    "requests cancelled before their answer since the last report (client \
                     disconnected or shutdown; counted in corestream_http_requests_cancelled_total)"
                );
            }
        }
    }
}
