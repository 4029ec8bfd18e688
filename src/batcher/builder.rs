//! [`BatcherBuilder`]: the batcher's limits and name, checked, and `build`, which starts one
//! serve loop on each stream of the module.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_utils::CachePadded;

use super::health::Activity;
use super::serve_loop::{max_polling, LoopEnded};
use super::stats::Counters;
use super::telemetry::Telemetry;
use super::width::WideGate;
use super::{Batcher, Queue, Shared, TokenFn};
use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::module::Module;
use crate::multi_stream::MultiStreamModule;
use crate::stream::WakeHook;
use crate::sync::atomic::{AtomicBool, AtomicUsize};
use crate::sync::{mpsc, Condvar, Mutex};

/// Configures a [`Batcher`]; see [`Batcher::builder`].
#[must_use = "a builder does nothing until .build() is called"]
pub struct BatcherBuilder<M: Module> {
    pub(super) module: MultiStreamModule<M>,
    pub(super) max_batch: usize,
    pub(super) max_batch_tokens: Option<usize>,
    pub(super) tokens: Option<TokenFn<M::Input>>,
    pub(super) max_wait: Duration,
    pub(super) capacity: usize,
    pub(super) name: String,
    pub(super) width: super::Width,
}

impl<M: Module> fmt::Debug for BatcherBuilder<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatcherBuilder")
            .field("name", &self.name)
            .field("max_batch", &self.max_batch)
            .field("max_batch_tokens", &self.max_batch_tokens)
            .field("tokens", &self.tokens.is_some())
            .field("max_wait", &self.max_wait)
            .field("queue_capacity", &self.capacity)
            .field("width", &self.width)
            .finish_non_exhaustive()
    }
}

impl<M> BatcherBuilder<M>
where
    M: Module,
    M::Input: Batch + Clone,
    M::Output: Batch,
{
    /// Most rows in one batch (default 32). A single request larger than this runs alone.
    pub fn max_batch(mut self, rows: usize) -> Self {
        self.max_batch = rows;
        self
    }

    /// Most tokens in one batch (default: no budget): a batch costs its rows x the longest
    /// padded length among its requests, as the [`tokens`](Self::tokens) function measures
    /// them, and no batch formed costs more than this, nor has more than
    /// [`max_batch`](Self::max_batch) rows. A single request whose own cost exceeds the budget
    /// runs alone (it is never starved). Needs a [`tokens`](Self::tokens) function.
    ///
    /// ```
    /// use corestream::ndarray::Array2;
    /// use corestream::{module_fn, Batcher, CpuPool, MultiStreamModule};
    ///
    /// // Each row: token ids padded with 0; its length is the count of non-zero ids.
    /// let model = module_fn(|ids: Array2<i64>| Ok(ids.mapv(|t| t as f32)));
    /// let msm = MultiStreamModule::builder(model).pool(CpuPool::all()?).build()?;
    /// let batcher = Batcher::builder(msm)
    ///     .name("encoder")
    ///     .max_batch(32)
    ///     .max_batch_tokens(2048)
    ///     .tokens(|ids: &Array2<i64>| ids.ncols())
    ///     .build()?;
    /// let y = batcher.infer(Array2::from_elem((2, 5), 7)).wait()?;
    /// assert_eq!(y.dim(), (2, 5));
    /// # Ok::<(), corestream::Error>(())
    /// ```
    pub fn max_batch_tokens(mut self, tokens: usize) -> Self {
        self.max_batch_tokens = Some(tokens);
        self
    }

    /// The padded length of one row of a request (e.g. its longest text's token count), for
    /// the token budget ([`max_batch_tokens`](Self::max_batch_tokens)) and for grouping.
    ///
    /// With this function set, a stream forming a batch always takes the oldest waiting
    /// request first (no request starves), then fills the batch from the next 256 queued
    /// requests, those whose length is closest to the oldest's first, so that requests of
    /// similar length batch together and padding stays low. Without it, batches take the
    /// queue's requests in order. It runs on the caller's thread in
    /// [`Batcher::infer`]; a panic in it fails that request with [`Error::Panicked`].
    ///
    /// ```
    /// use corestream::batch::Rows;
    /// use corestream::{module_fn, Batcher, CpuPool, MultiStreamModule};
    ///
    /// // Texts in, their lengths out; a request's padded length is its longest text's.
    /// let model = module_fn(|texts: Rows<String>| {
    ///     Ok(Rows(texts.0.iter().map(|t| t.split(' ').count()).collect::<Vec<usize>>()))
    /// });
    /// let msm = MultiStreamModule::builder(model).pool(CpuPool::all()?).build()?;
    /// let batcher = Batcher::builder(msm)
    ///     .tokens(|texts: &Rows<String>| {
    ///         texts.0.iter().map(|t| t.split(' ').count()).max().unwrap_or(0)
    ///     })
    ///     .max_batch_tokens(512)
    ///     .build()?;
    /// let lens = batcher.infer(Rows(vec!["a b c".to_owned(), "d".to_owned()])).wait()?;
    /// assert_eq!(lens.0, [3, 1]);
    /// assert_eq!(batcher.stats().batch_tokens, 2 * 3);
    /// # Ok::<(), corestream::Error>(())
    /// ```
    pub fn tokens(mut self, f: impl Fn(&M::Input) -> usize + Send + Sync + 'static) -> Self {
        self.tokens = Some(Arc::new(f));
        self
    }

    /// The batcher's name: the `model` label of its metrics (feature `metrics`), the `batcher`
    /// field of its spans (feature `tracing`) and [`BatcherStats::name`](super::BatcherStats::name) (default
    /// `"batcher"`).
    ///
    /// ```
    /// use corestream::{module_fn, Batcher, CpuPool, MultiStreamModule};
    ///
    /// let model = module_fn(|x: corestream::ndarray::Array2<f32>| Ok(x));
    /// let msm = MultiStreamModule::builder(model).pool(CpuPool::all()?).build()?;
    /// let batcher = Batcher::builder(msm).name("minilm").build()?;
    /// assert_eq!((batcher.name(), batcher.stats().name.as_str()), ("minilm", "minilm"));
    /// # Ok::<(), corestream::Error>(())
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// How long an idle stream may wait, counted from the oldest request's arrival, for a
    /// fuller batch (default zero: take what is queued at once).
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }

    /// Most requests waiting at once (default 1024); more are refused with
    /// [`Error::Overloaded`].
    pub fn queue_capacity(mut self, requests: usize) -> Self {
        self.capacity = requests;
        self
    }

    /// How wide batches run (default [`Width::Narrow`](super::Width::Narrow): each on the
    /// stream that took it). [`Width::Adaptive`](super::Width::Adaptive) runs a small batch
    /// across every CPU of the module when nothing else wants them, which answers a lone
    /// request sooner on a model that computes on its stream's threads (ONNX Runtime);
    /// [`Width::Wide`](super::Width::Wide) runs every batch so. See [`Width`](super::Width).
    pub fn width(mut self, width: super::Width) -> Self {
        self.width = width;
        self
    }

    /// Starts the batcher's serve loop on every stream of the module (no thread of its own).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a zero `max_batch`, `queue_capacity` or
    /// `max_batch_tokens`, a `max_batch_tokens` without a `tokens` function, or an adaptive
    /// width with a zero limit;
    /// [`Error::Shutdown`] when a stream has stopped.
    pub fn build(self) -> Result<Batcher<M>> {
        if self.max_batch == 0 || self.capacity == 0 {
            return Err(Error::InvalidConfig(format!(
                "max_batch ({}) and queue_capacity ({}) must be at least 1",
                self.max_batch, self.capacity
            )));
        }
        match (self.max_batch_tokens, self.tokens.is_some()) {
            (Some(0), _) => {
                return Err(Error::InvalidConfig(
                    "max_batch_tokens must be at least 1".to_owned(),
                ))
            }
            (Some(budget), false) => {
                return Err(Error::InvalidConfig(format!(
                    "max_batch_tokens ({budget}) needs a tokens function \
                     (BatcherBuilder::tokens) to measure requests by"
                )))
            }
            _ => {}
        }
        let wide = WideGate::new(self.width, &self.module.pools())?;
        let (intake, received) = mpsc::channel();
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                intake: received,
                requests: VecDeque::with_capacity(self.capacity.min(4096)),
                rows: 0,
                tokens: 0,
            }),
            arrived: Condvar::new(),
            places: CachePadded::default(),
            pending: CachePadded::new(AtomicBool::new(false)),
            sleepers: AtomicUsize::new(0),
            polling: CachePadded::new(AtomicUsize::new(0)),
            max_polling: max_polling(self.module.num_streams()),
            closed: AtomicBool::new(false),
            taking: CachePadded::new(AtomicBool::new(false)),
            loops: Mutex::new(0),
            activity: Activity::new(self.module.num_streams()),
            loop_ended: Condvar::new(),
            max_batch: self.max_batch,
            max_batch_tokens: self.max_batch_tokens,
            tokens: self.tokens,
            max_wait: self.max_wait,
            capacity: self.capacity,
            wide,
            counters: Counters::new(self.max_batch),
            telemetry: Telemetry::new(&self.name, self.module.num_streams()),
            name: self.name,
            #[cfg(feature = "tower")]
            ready: super::service::ReadyWaiters::default(),
        });
        let module = Arc::new(self.module);
        // Jobs submitted to the streams directly wake the loops that sleep (the module is still
        // private here, so no submission can miss its hook).
        let weak = Arc::downgrade(&shared);
        let hook: WakeHook = Arc::new(move || {
            if let Some(shared) = weak.upgrade() {
                shared.wake(true);
            }
        });
        let tasks = module.tasks();
        *shared.loops.lock().unwrap_or_else(|e| e.into_inner()) = tasks.len();
        shared.activity.started(tasks.len());
        let mut started = Ok(());
        for task in tasks {
            task.set_wake_hook(Some(Arc::clone(&hook)));
            // Counts the loop as ended when it returns, unwinds, or is dropped unrun.
            let ended = LoopEnded(Arc::clone(&shared));
            let result = task.run_on_stream(Box::new(move |exec| {
                let ended = ended;
                ended.0.serve(exec);
            }));
            if started.is_ok() {
                started = result;
            }
        }
        let batcher = Batcher {
            shared,
            intake,
            module,
        };
        // On failure the batcher is dropped here: it closes and waits for the loops it started.
        started.map(|()| batcher)
    }
}
