//! Overload answers: a bound on the requests in flight (`--max-concurrent-requests`) and the
//! `Retry-After` a refused client is given, from the rate at which the service has been
//! answering ([`Drain`]).
//!
//! A full queue, a full body budget or too many requests in flight is overload: the client is
//! told 429 with how long the work ahead of it should take to drain, `ceil(backlog / rate)`
//! seconds (at least 1, at most [`MAX_RETRY_AFTER`]); 503 stays for a service that is loading,
//! failed or draining. Health probes and `/metrics` are never refused here.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest `Retry-After` given.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// By default, the most requests in flight at once (text-embeddings-inference's default too).
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 512;

/// How often the answer rate is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// A gap longer than this between samples (an idle service) restarts the measurement, rather
/// than averaging the idle time into the rate.
const STALE_AFTER: Duration = Duration::from_secs(2);

/// The rate at which the service answers work: requests answered per second, sampled every
/// 250 ms while it answers, smoothed (each sample weighs half).
///
/// ```
/// use std::time::{Duration, Instant};
/// use corestream_serve::service::admission::Drain;
///
/// let drain = Drain::new();
/// let t0 = Instant::now();
/// assert_eq!(drain.retry_after(10, t0), Duration::from_secs(1)); // nothing measured yet
/// drain.answered(t0);
/// for i in 1..=100 {
///     drain.answered(t0 + Duration::from_millis(5 * i)); // 200 per second
/// }
/// // 1,000 requests ahead at 200/s: 5 s.
/// assert_eq!(drain.retry_after(1_000, t0 + Duration::from_millis(500)), Duration::from_secs(5));
/// ```
#[derive(Debug)]
pub struct Drain {
    answered: AtomicU64,
    sample: Mutex<Sample>,
}

#[derive(Debug)]
struct Sample {
    /// When the last sample was taken (`None`: not yet).
    at: Option<Instant>,
    /// `answered` then.
    answered: u64,
    /// Requests per second, once measured.
    rate: Option<f64>,
}

impl Default for Drain {
    fn default() -> Drain {
        Drain::new()
    }
}

impl Drain {
    /// Nothing measured yet.
    pub fn new() -> Drain {
        Drain {
            answered: AtomicU64::new(0),
            sample: Mutex::new(Sample {
                at: None,
                answered: 0,
                rate: None,
            }),
        }
    }

    /// One request answered at `now`.
    pub fn answered(&self, now: Instant) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        self.sample(now);
    }

    /// Takes a sample if one is due (by whoever gets the lock first; the others go on).
    fn sample(&self, now: Instant) {
        let Ok(mut s) = self.sample.try_lock() else {
            return;
        };
        let answered = self.answered.load(Ordering::Relaxed);
        let Some(at) = s.at else {
            s.at = Some(now);
            s.answered = answered;
            return;
        };
        let dt = now.saturating_duration_since(at);
        if dt < SAMPLE_EVERY {
            return;
        }
        if dt <= STALE_AFTER {
            let rate = (answered - s.answered) as f64 / dt.as_secs_f64();
            s.rate = Some(s.rate.map_or(rate, |old| (old + rate) / 2.0));
        }
        s.at = Some(now);
        s.answered = answered;
    }

    /// Requests answered per second, once measured.
    pub fn rate(&self) -> Option<f64> {
        self.sample.lock().unwrap_or_else(|e| e.into_inner()).rate
    }

    /// How long `backlog` requests ahead should take to drain at the measured rate, whole
    /// seconds, 1 s to [`MAX_RETRY_AFTER`] (1 s while nothing is measured).
    pub fn retry_after(&self, backlog: u64, now: Instant) -> Duration {
        self.sample(now);
        let seconds = match self.rate() {
            Some(rate) if rate > 0.0 => (backlog as f64 / rate).ceil(),
            Some(_) => MAX_RETRY_AFTER.as_secs_f64(),
            None => 1.0,
        };
        Duration::from_secs(seconds.clamp(1.0, MAX_RETRY_AFTER.as_secs_f64()) as u64)
    }
}

/// The requests in flight, bounded.
#[derive(Debug)]
pub struct Admission {
    limit: usize,
    admitted: AtomicUsize,
    /// The answer rate, for `Retry-After`.
    pub drain: Drain,
}

/// One admitted request; its place is given back when dropped.
#[derive(Debug)]
pub struct Admitted<'a>(&'a AtomicUsize);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

impl Admission {
    /// At most `limit` requests in flight (at least 1).
    pub fn new(limit: usize) -> Admission {
        Admission {
            limit: limit.max(1),
            admitted: AtomicUsize::new(0),
            drain: Drain::new(),
        }
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Requests admitted and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.admitted.load(Ordering::Acquire)
    }

    /// A place for one more request, or, when all are taken, how long the client should
    /// wait before retrying.
    pub fn admit(&self, now: Instant) -> Result<Admitted<'_>, Duration> {
        let taken = self
            .admitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            });
        match taken {
            Ok(_) => Ok(Admitted(&self.admitted)),
            Err(n) => Err(self.drain.retry_after(n as u64, now)),
        }
    }
}
