//! Every HTTP request the routes take, counted from its start to its answer. A request is
//! *started* when the framework hands it to [`crate::http::handlers::handle`] (headers read), and
//! then ends exactly once: *answered* (the route produced a reply, any status) or
//! *cancelled* (the framework dropped it first: the client disconnected, or a shutdown gave
//! up on it). So `started = answered + cancelled + in flight` at every moment, and after a
//! graceful shutdown `in flight` is 0: nothing accepted was lost. The totals are logged at
//! shutdown and counted in `corestream_http_requests_cancelled_total{route}`.

use std::sync::atomic::{AtomicU64, Ordering};

/// The service's request counters.
#[derive(Debug, Default)]
pub struct Requests {
    started: AtomicU64,
    answered: AtomicU64,
    cancelled: AtomicU64,
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
            tracing::info!(
                route = self.route,
                "request cancelled before its answer (client disconnected or shutdown)"
            );
        }
    }
}
