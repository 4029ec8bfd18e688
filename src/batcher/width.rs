//! How wide a batch runs: on the one stream that took it (narrow), or across every CPU of the
//! module while the other streams wait (wide). [`Width`] is the builder's choice;
//! [`WideGate`] decides each batch's lane and keeps wide and narrow batches off each other's
//! CPUs; [`OnWide`] is the stream thread's state while it runs a wide batch.
//!
//! Throughput mode makes a lone request wait on one narrow stream: on a quiet pool its batch
//! would finish sooner on all the CPUs at once (a 2-CPU session computes one MiniLM sentence
//! in about half the time of a 1-CPU one). Under load the narrow streams win: each runs its
//! own batch with no synchronisation between CPUs. An adaptive batcher therefore runs a batch
//! wide only when nothing else wants the CPUs: no narrow batch is running, nothing is left in
//! the queue once the batch is taken, and the batch is small (at most `rows` rows and
//! `tokens` tokens). While a wide batch runs, the other serve loops neither take batches nor
//! poll: they sleep until it ends, so its intra-op threads have their CPUs. The first batch
//! that finds work left in the queue, or a narrow batch running, goes narrow; so does every
//! batch while a stream's idle governor sees a busy neighbour on its CPU (see
//! [`idle`](crate::idle)), and while wide batches are measured no faster than narrow ones
//! ([`Payoff`]): a wide batch is as slow as its slowest CPU.

use std::time::Instant;

use super::payoff::Payoff;
use crate::affinity;
use crate::context::{replace_current_stream, StreamInfo};
use crate::error::{Error, Result};
use crate::pool::CpuPool;
use crate::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// How wide a [`Batcher`](crate::Batcher)'s batches run (see
/// [`BatcherBuilder::width`](crate::BatcherBuilder::width)).
///
/// A wide batch runs on one of the module's stream threads, with
/// [`current_stream`](crate::current_stream) saying a stream of every CPU of the module
/// ([`StreamInfo::is_wide`]): a model that sets up per-stream threads from it (ONNX Runtime's
/// [`OrtModel`](crate::backend::ort::OrtModel)) then computes the batch on all the CPUs. A model
/// that computes on its calling thread only gains nothing from it.
///
/// ```
/// use corestream::ndarray::{array, Array2};
/// use corestream::{current_stream, module_fn, Batcher, CpuPool, MultiStreamModule, Width};
///
/// // Answers how many CPUs the batch saw.
/// let model = module_fn(|x: Array2<f32>| {
///     let cpus = current_stream().map_or(0, |s| s.pool().len());
///     Ok(x.mapv(|_| cpus as f32))
/// });
/// let pool = CpuPool::all()?;
/// let msm = MultiStreamModule::builder(model).pool(pool.clone()).build()?;
/// let batcher = Batcher::builder(msm).width(Width::Wide).build()?;
/// let y = batcher.infer(array![[0.0f32]]).wait()?;
/// assert_eq!(y, array![[pool.len() as f32]]);
/// // On one CPU wide and narrow are the same: the batch ran narrow.
/// assert_eq!(batcher.stats().wide_batches, u64::from(pool.len() > 1));
/// # Ok::<(), corestream::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Width {
    /// Every batch on the stream that took it: throughput mode (the default).
    #[default]
    Narrow,
    /// A batch runs wide when the pool is otherwise idle: no narrow batch running, nothing
    /// left queued once it is taken, at most `rows` rows and (with a token function) at most
    /// `tokens` padded tokens, no stream has lately seen a busy neighbour on its CPU (its
    /// idle strategy is in a quiet period, see [`Cotenant`](crate::Cotenant)), and the recent
    /// wide batches took at most 0.8x the time per token of the recent narrow batches of
    /// that size (once wide stops paying, one batch per 250 ms still runs wide to measure
    /// again); otherwise narrow. See [`Width::adaptive`].
    Adaptive {
        /// Most rows of a wide batch.
        rows: usize,
        /// Most padded tokens of a wide batch (`None`: no limit but `rows`).
        tokens: Option<usize>,
    },
    /// Every batch across all the module's CPUs, one at a time: latency mode.
    Wide,
}

impl Width {
    /// [`Width::Adaptive`] with wide batches of at most `rows` rows and no token limit.
    pub fn adaptive(rows: usize) -> Width {
        Width::Adaptive { rows, tokens: None }
    }

    /// Checks the limits of an adaptive width.
    pub(super) fn check(self) -> Result<Width> {
        match self {
            Width::Adaptive { rows: 0, .. }
            | Width::Adaptive {
                tokens: Some(0), ..
            } => Err(Error::InvalidConfig(format!(
                "an adaptive width needs limits of at least 1: {self:?}"
            ))),
            other => Ok(other),
        }
    }
}

/// Where a batch runs (see [`WideGate::choose`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lane {
    Narrow,
    Wide,
}

// === impl WideGate ===

/// The batcher's wide stream and who holds the CPUs.
pub(super) struct WideGate {
    width: Width,
    /// The module's CPUs as one stream; `None` when batches always run narrow (a narrow width,
    /// or a module of one CPU, where wide and narrow are the same).
    stream: Option<StreamInfo>,
    /// A wide batch runs now: the serve loops take no batch and do not poll.
    running: AtomicBool,
    /// Narrow batches taken and not finished.
    narrow: AtomicUsize,
    /// Serve loops whose stream has seen another taker of its CPU lately (see
    /// [`contended`](Self::contended)).
    contended: AtomicUsize,
    /// Whether wide batches are measured faster than narrow ones (adaptive only).
    payoff: Payoff,
}

impl WideGate {
    /// The gate of a module whose streams have `pools`.
    pub(super) fn new(width: Width, pools: &[CpuPool]) -> Result<WideGate> {
        let width = width.check()?;
        let mut cpus: Vec<usize> = Vec::new();
        for &cpu in pools.iter().flat_map(|p| p.cpus()) {
            if !cpus.contains(&cpu) {
                cpus.push(cpu);
            }
        }
        let stream = match width {
            Width::Narrow => None,
            _ if cpus.len() < 2 => None,
            // The streams' CPUs were checked when the module was built; a CPU no longer
            // allowed since then leaves the batcher narrow, as the streams' own pinning would.
            _ => CpuPool::new(cpus).ok().map(StreamInfo::wide),
        };
        Ok(WideGate {
            width,
            stream,
            running: AtomicBool::new(false),
            narrow: AtomicUsize::new(0),
            contended: AtomicUsize::new(0),
            payoff: Payoff::default(),
        })
    }

    /// The width asked for.
    pub(super) fn width(&self) -> Width {
        self.width
    }

    /// Whether a wide batch runs now.
    pub(super) fn running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    /// Under the queue's lock, with no wide batch running: the lane of a batch of `rows` rows
    /// and `tokens` padded tokens just taken, `queue_empty` when nothing is left queued. A
    /// wide lane is marked running (until [`end_wide`](Self::end_wide)), a narrow one counted
    /// (until [`end_narrow`](Self::end_narrow)) when the batcher may run wide at all.
    pub(super) fn choose(&self, rows: usize, tokens: usize, queue_empty: bool) -> Lane {
        if self.stream.is_none() {
            // Always narrow: nothing to keep apart, so nothing counted.
            return Lane::Narrow;
        }
        let wide = match self.width {
            Width::Narrow => false,
            Width::Wide => true,
            Width::Adaptive {
                rows: max_rows,
                tokens: max_tokens,
            } => {
                queue_empty
                    && self.contended.load(Ordering::Acquire) == 0
                    && rows <= max_rows
                    && max_tokens.is_none_or(|t| tokens <= t)
                    && self.narrow.load(Ordering::Acquire) == 0
                    && self.payoff.allows(Instant::now())
            }
        };
        if wide {
            self.running.store(true, Ordering::Release);
            Lane::Wide
        } else {
            self.narrow.fetch_add(1, Ordering::AcqRel);
            Lane::Narrow
        }
    }

    /// One serve loop's view of its CPU: `now()` whether its stream's idle governor has seen
    /// another taker of the CPU lately (a busy neighbour), `was` what the loop said last. An
    /// adaptive batcher runs no batch wide while any stream sees one: a wide batch waits for
    /// its slowest CPU, and one shared with a neighbour makes every wide batch wait for a
    /// scheduler slice (measured beside a busy loop per CPU, 4 clients: 0.65x-0.81x the
    /// narrow rate).
    pub(super) fn contended(&self, was: &mut bool, now: impl FnOnce() -> bool) {
        if !matches!(
            (self.width, &self.stream),
            (Width::Adaptive { .. }, Some(_))
        ) {
            return; // only an adaptive batcher asks
        }
        let now = now();
        if *was != now {
            *was = now;
            if now {
                self.contended.fetch_add(1, Ordering::AcqRel);
            } else {
                self.contended.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// A batch of `rows` rows and `work` work (padded tokens, or rows without a token
    /// function) ran in `lane` from `started` until now: an adaptive batcher's record of
    /// whether wide batches pay (narrow batches count when they are of a size that could run
    /// wide). Other batchers read no clock here.
    pub(super) fn ran(&self, lane: Lane, rows: usize, work: usize, started: Instant) {
        let Width::Adaptive { rows: max_rows, .. } = self.width else {
            return;
        };
        if self.stream.is_some() && (lane == Lane::Wide || rows <= max_rows) {
            let took = started.elapsed();
            self.payoff.record(lane == Lane::Wide, work, started, took);
        }
    }

    /// A narrow batch has finished.
    pub(super) fn end_narrow(&self) {
        if self.stream.is_some() {
            self.narrow.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Under the queue's lock: the wide batch has finished.
    pub(super) fn end_wide(&self) {
        self.running.store(false, Ordering::Release);
    }

    /// The wide stream, when batches may run wide.
    pub(super) fn stream(&self) -> Option<&StreamInfo> {
        self.stream.as_ref()
    }

    /// The batcher has stopped: per-stream state kept for the wide stream (e.g. its ONNX
    /// Runtime session) is released.
    pub(super) fn end(&self) {
        if let Some(stream) = &self.stream {
            stream.end();
        }
    }
}

// === impl OnWide ===

/// A stream thread running a wide batch: it serves the wide stream, as its thread zero,
/// pinned to the wide stream's first CPU; both are put back on drop.
pub(super) struct OnWide {
    previous: Option<StreamInfo>,
    cpus: Option<Vec<usize>>,
}

impl OnWide {
    pub(super) fn enter(stream: &StreamInfo) -> OnWide {
        let cpus = affinity::current_cpus().ok();
        let first = &stream.pool().cpus()[..1];
        let _ = affinity::set_current_cpus(first);
        OnWide {
            previous: replace_current_stream(Some(stream.clone())),
            cpus,
        }
    }
}

impl Drop for OnWide {
    fn drop(&mut self) {
        replace_current_stream(self.previous.take());
        if let Some(cpus) = &self.cpus {
            let _ = affinity::set_current_cpus(cpus);
        }
    }
}
