//! [`BatcherHealth`]: whether a batcher's serve loops are alive and making progress, for
//! liveness probes. A counter snapshot ([`BatcherStats`](super::BatcherStats)) cannot say it:
//! a model call that never returns, or a serve loop that ended on a panic outside any model
//! call, leaves every counter as it was while requests wait.
//!
//! What the serve loops record for it costs two relaxed stores per batch (the time a stream
//! started its batch, then idle) and nothing per request.

use std::fmt;
use std::time::{Duration, Instant};

use crate::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A snapshot of a batcher's liveness (see [`Batcher::health`](super::Batcher::health)).
///
/// ```
/// use std::time::Duration;
/// use corestream::ndarray::Array2;
/// use corestream::{module_fn, Batcher, CpuPool, MultiStreamModule};
///
/// let model = module_fn(|x: Array2<f32>| Ok(x));
/// let msm = MultiStreamModule::builder(model).pool(CpuPool::all()?).build()?;
/// let batcher = Batcher::builder(msm).build()?;
/// let health = batcher.health();
/// assert_eq!(health.serving, health.streams); // every serve loop runs
/// assert_eq!(health.oldest_wait, None); // nothing waits
/// assert_eq!(health.problem(Duration::from_secs(60)), None);
/// # Ok::<(), corestream::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatcherHealth {
    /// Streams of the batcher's module: one serve loop each.
    pub streams: usize,
    /// Serve loops running now.
    pub serving: usize,
    /// Serve loops that ended while the batcher was open: a panic outside any model call (in a
    /// `Clone` or `Batch` impl, a metrics recorder, a tracing subscriber) ended them. Their
    /// streams serve no batch any more; once none is left,
    /// [`Batcher::infer`](super::Batcher::infer) fails with
    /// [`Error::NotServing`](crate::Error::NotServing).
    pub ended: usize,
    /// Requests waiting in the queue (their callers still there).
    pub queued: usize,
    /// How long the oldest of them has waited.
    pub oldest_wait: Option<Duration>,
    /// How long the stream that has been in its current batch longest has been in it (`None`
    /// when every stream is idle): a model call that does not return shows here first.
    pub longest_run: Option<Duration>,
}

impl BatcherHealth {
    /// Why the batcher cannot be trusted to answer, if so: a serve loop has ended, a batch has
    /// run for longer than `stuck_after`, or a request has waited longer than that. What a
    /// liveness probe should fail on (a restart cures all three); `None` when healthy.
    pub fn problem(&self, stuck_after: Duration) -> Option<BatcherProblem> {
        if self.ended > 0 {
            return Some(BatcherProblem::LoopsEnded {
                ended: self.ended,
                streams: self.streams,
            });
        }
        if let Some(ran) = self.longest_run.filter(|&d| d > stuck_after) {
            return Some(BatcherProblem::BatchStuck { ran });
        }
        if let Some(waited) = self.oldest_wait.filter(|&d| d > stuck_after) {
            return Some(BatcherProblem::RequestStuck { waited });
        }
        None
    }
}

/// What [`BatcherHealth::problem`] found; its `Display` is a sentence for logs and probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BatcherProblem {
    /// Serve loops ended while the batcher was open.
    LoopsEnded {
        /// How many.
        ended: usize,
        /// Of how many.
        streams: usize,
    },
    /// A stream has been in one batch for this long.
    BatchStuck {
        /// How long.
        ran: Duration,
    },
    /// The oldest queued request has waited this long.
    RequestStuck {
        /// How long.
        waited: Duration,
    },
}

impl fmt::Display for BatcherProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BatcherProblem::LoopsEnded { ended, streams } => write!(
                f,
                "{ended} of {streams} serve loops ended on a panic outside any model call"
            ),
            BatcherProblem::BatchStuck { ran } => write!(
                f,
                "a model call has run for {:.1} s without returning",
                ran.as_secs_f64()
            ),
            BatcherProblem::RequestStuck { waited } => write!(
                f,
                "the oldest queued request has waited {:.1} s for a stream",
                waited.as_secs_f64()
            ),
        }
    }
}

/// What the serve loops record for [`BatcherHealth`].
pub(super) struct Activity {
    epoch: Instant,
    /// Per stream: when its current batch started, in nanoseconds after `epoch` plus one; zero
    /// while it is not in a batch.
    running_since: Box<[AtomicU64]>,
    serving: AtomicUsize,
    ended: AtomicUsize,
}

impl Activity {
    pub(super) fn new(streams: usize) -> Activity {
        Activity {
            epoch: Instant::now(),
            running_since: (0..streams).map(|_| AtomicU64::new(0)).collect(),
            serving: AtomicUsize::new(0),
            ended: AtomicUsize::new(0),
        }
    }

    /// Counts `n` serve loops started.
    pub(super) fn started(&self, n: usize) {
        self.serving.fetch_add(n, Ordering::Release);
    }

    /// Counts a serve loop gone; `open`: the batcher had not been closed (the loop died).
    /// Returns how many are left.
    pub(super) fn loop_gone(&self, open: bool) -> usize {
        if open {
            self.ended.fetch_add(1, Ordering::Relaxed);
        }
        self.serving.fetch_sub(1, Ordering::AcqRel) - 1
    }

    /// Streams: one serve loop each.
    pub(super) fn streams(&self) -> usize {
        self.running_since.len()
    }

    /// Serve loops running now.
    pub(super) fn serving(&self) -> usize {
        self.serving.load(Ordering::Acquire)
    }

    /// Marks stream `index` as in a batch until the guard drops (unwinding included).
    pub(super) fn running(&self, index: usize) -> Running<'_> {
        let slot = self.running_since.get(index);
        if let Some(slot) = slot {
            let nanos = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
            slot.store(nanos + 1, Ordering::Relaxed);
        }
        Running(slot)
    }

    /// The snapshot, given what the queue holds.
    pub(super) fn snapshot(&self, queued: usize, oldest: Option<Instant>) -> BatcherHealth {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.epoch);
        let longest_run = self
            .running_since
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|&since| since > 0)
            .map(|since| elapsed.saturating_sub(Duration::from_nanos(since - 1)))
            .max();
        BatcherHealth {
            streams: self.streams(),
            serving: self.serving(),
            ended: self.ended.load(Ordering::Relaxed),
            queued,
            oldest_wait: oldest.map(|t| now.saturating_duration_since(t)),
            longest_run,
        }
    }
}

/// A stream in a batch; idle again when dropped.
pub(super) struct Running<'a>(Option<&'a AtomicU64>);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.0 {
            slot.store(0, Ordering::Relaxed);
        }
    }
}
