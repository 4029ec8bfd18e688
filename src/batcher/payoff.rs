//! [`Payoff`]: whether wide batches pay on this machine, now, measured from the batches
//! themselves.
//!
//! A wide batch is worth its CPUs when it computes a small batch clearly faster than one
//! narrow stream does. On a quiet machine it does (2 CPUs: about half the time per token). Beside
//! a busy neighbour it may not: every CPU's share of the batch waits for the slowest one, and a
//! CPU shared with a busy thread is slow by a scheduler slice. The stream's idle governor sees
//! such a neighbour only while the stream polls; this record sees it in the wide batches' own
//! time. It keeps a moving average of the time per token of wide batches and of narrow batches
//! of the same size class (at most the adaptive width's rows), and lets batches run wide while
//! the wide time is at most [`PAYS`] x the narrow time. Once wide stops paying, one batch in
//! [`PROBE`] still runs wide, so that the record sees the neighbour leave (an average not fed
//! for a probe interval is replaced by the next batch's time, not moved); and while wide
//! pays, one batch in [`REFRESH`] runs narrow when no narrow batch ran meanwhile (a lone
//! caller's batches would otherwise all run wide, and the narrow time would never be known).

use std::time::{Duration, Instant};

use crate::sync::Mutex;

/// Wide pays while its time per token is at most this share of narrow's: it must save a fifth
/// of the time to be worth every CPU (the ideal on `n` CPUs is `1 / n`).
pub(super) const PAYS: f64 = 0.8;

/// While wide does not pay, one batch per this interval runs wide to measure again.
pub(super) const PROBE: Duration = Duration::from_millis(250);

/// While wide pays, a batch runs narrow when no narrow batch was measured for this long.
pub(super) const REFRESH: Duration = Duration::from_secs(1);

/// How much a new batch moves an average (exponential moving average weight).
const WEIGHT: f64 = 0.25;

/// The moving averages of wide and narrow time per token.
#[derive(Debug, Default)]
pub(super) struct Payoff {
    record: Mutex<Record>,
}

#[derive(Debug, Default)]
struct Record {
    /// Seconds per token, wide and narrow; `None` before the first batch of each.
    wide: Option<f64>,
    narrow: Option<f64>,
    /// When the last wide and narrow batches started.
    last_wide: Option<Instant>,
    last_narrow: Option<Instant>,
}

impl Payoff {
    /// Whether a batch starting `now` may run wide: not when narrow's time is unknown or
    /// older than [`REFRESH`] (this batch measures it), yes before wide's is known and while
    /// wide pays, and once per [`PROBE`] when it does not.
    pub(super) fn allows(&self, now: Instant) -> bool {
        let record = self.record.lock().unwrap_or_else(|e| e.into_inner());
        let since = |at: Option<Instant>| at.map(|at| now.saturating_duration_since(at));
        let Some(narrow) = record.narrow else {
            return false;
        };
        if since(record.last_narrow).is_none_or(|d| d >= REFRESH) {
            return false;
        }
        match record.wide {
            Some(wide) if wide > PAYS * narrow => {
                since(record.last_wide).is_none_or(|d| d >= PROBE)
            }
            _ => true,
        }
    }

    /// A batch of `tokens` tokens ran `took`, wide or not, having started at `started`.
    pub(super) fn record(&self, wide: bool, tokens: usize, started: Instant, took: Duration) {
        if tokens == 0 {
            return;
        }
        let per_token = took.as_secs_f64() / tokens as f64;
        let mut guard = self.record.lock().unwrap_or_else(|e| e.into_inner());
        let record = &mut *guard;
        let (average, last) = if wide {
            (&mut record.wide, &mut record.last_wide)
        } else {
            (&mut record.narrow, &mut record.last_narrow)
        };
        // An average last fed more than a probe interval ago is stale: a probe replaces it.
        let fresh = last.is_some_and(|l| started.saturating_duration_since(l) < PROBE);
        *average = Some(match *average {
            Some(a) if fresh => a + WEIGHT * (per_token - a),
            _ => per_token,
        });
        *last = Some(started);
    }

    /// The averages, seconds per token: `(wide, narrow)`.
    #[cfg(test)]
    fn averages(&self) -> (Option<f64>, Option<f64>) {
        let record = self.record.lock().unwrap_or_else(|e| e.into_inner());
        (record.wide, record.narrow)
    }
}

#[cfg(all(test, not(corestream_loom)))]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn wide_runs_until_it_is_measured_slower_then_probes() {
        let payoff = Payoff::default();
        let t0 = Instant::now();
        assert!(!payoff.allows(t0), "narrow is measured first");
        payoff.record(false, 10, t0, 10 * MS); // narrow: 1 ms per token
        assert!(payoff.allows(t0), "wide not measured yet");
        payoff.record(true, 10, t0, 5 * MS); // wide: 0.5 ms per token: pays
        assert!(payoff.allows(t0 + MS));
        // A neighbour arrives: wide batches get slow; the average follows within a few.
        for i in 0..8 {
            payoff.record(true, 10, t0 + i * MS, 40 * MS);
        }
        let (wide, narrow) = payoff.averages();
        assert!(wide.unwrap() > PAYS * narrow.unwrap());
        assert!(!payoff.allows(t0 + 10 * MS), "wide does not pay");
        // One probe per PROBE interval after the last wide batch.
        assert!(payoff.allows(t0 + 7 * MS + PROBE));
        payoff.record(true, 10, t0 + 7 * MS + PROBE, 40 * MS);
        assert!(!payoff.allows(t0 + 8 * MS + PROBE));
        // The neighbour leaves: the next probe finds wide fast again, and replaces the stale
        // average, so wide pays at once.
        let probe = t0 + 7 * MS + 2 * PROBE;
        assert!(payoff.allows(probe));
        payoff.record(true, 10, probe, 5 * MS);
        assert!(payoff.allows(probe + MS));
    }

    #[test]
    fn a_lone_caller_still_measures_narrow_once_per_refresh() {
        let payoff = Payoff::default();
        let t0 = Instant::now();
        payoff.record(false, 1, t0, 4 * MS);
        payoff.record(true, 1, t0, MS);
        assert!(payoff.allows(t0 + REFRESH / 2));
        assert!(!payoff.allows(t0 + REFRESH), "narrow's time is stale");
        payoff.record(false, 1, t0 + REFRESH, 4 * MS);
        assert!(payoff.allows(t0 + REFRESH + MS));
    }

    #[test]
    fn empty_batches_are_not_recorded() {
        let payoff = Payoff::default();
        payoff.record(true, 0, Instant::now(), MS);
        assert_eq!(payoff.averages(), (None, None));
    }
}
