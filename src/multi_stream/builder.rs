//! [`MultiStreamModuleBuilder`]: the pool, stream count, hints and idle settings of a
//! [`MultiStreamModule`], and `build`, which starts the streams (each node's on its copy of
//! the model: see [`replicas`](super::replicas)).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::{MultiStreamModule, Streams};
use crate::batch::Hint;
use crate::error::{Error, Result};
use crate::module::Module;
use crate::pool::CpuPool;
use crate::stream::StreamConfig;
use crate::task::{next_stream_name, Task};
use crate::topology::{self, Topology};

use super::replicas::Replicas;

/// Configures a [`MultiStreamModule`]; see [`MultiStreamModule::builder`].
#[must_use = "a builder does nothing until .build() is called"]
pub struct MultiStreamModuleBuilder<M: Module> {
    model: Arc<M>,
    streams: Streams,
    pool: Option<CpuPool>,
    input_hint: Hint,
    output_hint: Hint,
    intra_op: bool,
    spin: Duration,
    caller_runs: bool,
    numa_replicas: bool,
    topology: Option<Topology>,
}

impl<M: Module> fmt::Debug for MultiStreamModuleBuilder<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MultiStreamModuleBuilder")
            .field("streams", &self.streams)
            .field("pool", &self.pool)
            .field("input_hint", &self.input_hint)
            .field("output_hint", &self.output_hint)
            .finish_non_exhaustive()
    }
}

impl<M: Module> MultiStreamModuleBuilder<M> {
    pub(super) fn new(model: Arc<M>) -> Self {
        MultiStreamModuleBuilder {
            model,
            streams: Streams::Auto,
            pool: None,
            input_hint: Hint::default(),
            output_hint: Hint::default(),
            intra_op: true,
            spin: crate::idle::DEFAULT_SPIN,
            caller_runs: true,
            numa_replicas: true,
            topology: None,
        }
    }

    /// Whether streams on NUMA nodes after the first run their node's own copy of the model
    /// (default: true, for models that offer one: see [`Module::replicate`] and
    /// [`numa`](crate::numa)). `false` keeps one copy, which the other nodes' streams read
    /// across the interconnect: less memory, slower layers.
    ///
    /// ```
    /// use corestream::{module_fn, CpuPool, MultiStreamModule};
    ///
    /// let msm = MultiStreamModule::builder(module_fn(|x: Vec<f32>| Ok(x)))
    ///     .pool(CpuPool::all()?)
    ///     .numa_replicas(false)
    ///     .build()?;
    /// assert_eq!(msm.replicas().copies(), 1);
    /// # Ok::<(), corestream::Error>(())
    /// ```
    pub fn numa_replicas(mut self, enabled: bool) -> Self {
        self.numa_replicas = enabled;
        self
    }

    /// The machine whose NUMA nodes the streams' CPUs are looked up in (default: the live one,
    /// [`Topology::detect`]): which node each stream is on decides which copy of the model it
    /// runs (see [`numa_replicas`](Self::numa_replicas)). The pool's CPUs must exist on the
    /// live machine all the same, since the streams are pinned to them.
    pub fn topology(mut self, topology: Topology) -> Self {
        self.topology = Some(topology);
        self
    }

    /// The stream count (default [`Streams::Auto`]: one stream per CPU).
    pub fn num_streams(mut self, streams: Streams) -> Self {
        self.streams = streams;
        self
    }

    /// The CPUs to share out (default: [`CpuPool::from_node(0)`](CpuPool::from_node), read when
    /// `build` runs).
    pub fn pool(mut self, pool: CpuPool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// Where the batch is in the input (default `Hint::Dim(0)`).
    pub fn input_hint(mut self, hint: Hint) -> Self {
        self.input_hint = hint;
        self
    }

    /// How to join the outputs (default `Hint::Dim(0)`).
    pub fn output_hint(mut self, hint: Hint) -> Self {
        self.output_hint = hint;
        self
    }

    /// How long an idle stream polls its queue before parking, and how long
    /// [`forward_sync`](MultiStreamModule::forward_sync) polls for the parts before parking
    /// (default [`DEFAULT_SPIN`](crate::DEFAULT_SPIN); `Duration::ZERO` parks at once). See
    /// [`TaskBuilder::spin`](crate::TaskBuilder::spin).
    pub fn spin(mut self, spin: Duration) -> Self {
        self.spin = spin;
        self
    }

    /// Whether [`forward_sync`](MultiStreamModule::forward_sync) may run a part on the calling
    /// thread (default: true): when the caller runs on the CPU of a one-CPU stream that gets a
    /// part, it runs that part itself instead of handing it to the stream and giving up the
    /// CPU the stream needs. The part runs exactly as the stream would run it (counted in its
    /// [`stats`](MultiStreamModule::stats), a panic returned as
    /// [`Error::Panicked`], [`current_stream`](crate::current_stream) naming that stream), except
    /// that rayon code in the model runs on rayon's global pool and that it may run
    /// concurrently with a job on the stream thread. [`forward`](MultiStreamModule::forward)
    /// (async) never does this: its caller may be a reactor. `false` keeps every part on the
    /// stream threads.
    ///
    /// ```
    /// use corestream::ndarray::Array2;
    /// use corestream::{module_fn, CpuPool, MultiStreamModule};
    ///
    /// let msm = MultiStreamModule::builder(module_fn(|x: Array2<f32>| Ok(x * 2.0)))
    ///     .pool(CpuPool::all()?)
    ///     .caller_runs(false) // parts only ever run on stream threads
    ///     .build()?;
    /// assert_eq!(msm.forward_sync(Array2::ones((4, 2)))?, Array2::from_elem((4, 2), 2.0));
    /// # Ok::<(), corestream::Error>(())
    /// ```
    pub fn caller_runs(mut self, enabled: bool) -> Self {
        self.caller_runs = enabled;
        self
    }

    /// Whether streams run a pinned intra-op rayon pool (default: true).
    pub fn intra_op(mut self, enabled: bool) -> Self {
        self.intra_op = enabled;
        self
    }

    /// Starts the streams.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidStreams`] for `Count(0)` or more streams than CPUs,
    /// [`Error::NoSplitDim`] for an input hint without a `Dim` leaf, [`Error::Replicate`]
    /// when the model's copy for a NUMA node fails, and the errors of [`Task::new`] and
    /// [`CpuPool::from_node`].
    pub fn build(self) -> Result<MultiStreamModule<M>> {
        if !self.input_hint.has_dim() {
            return Err(Error::NoSplitDim {
                hint: self.input_hint,
            });
        }
        let mut pool = match self.pool {
            Some(pool) => pool,
            None => CpuPool::from_node(0)?,
        };
        let n = match self.streams {
            Streams::Auto => {
                let quota = topology::system().ok().and_then(|t| t.cpu_quota());
                let n = Streams::auto_count(pool.len(), quota);
                if n < pool.len() {
                    // One CPU per stream on the first `n`: more threads than the quota pays
                    // for would only be throttled in turn.
                    pool = CpuPool::new(pool.cpus()[..n].iter().copied())?;
                }
                n
            }
            Streams::Count(n) if n == 0 || n > pool.len() => {
                return Err(Error::InvalidStreams {
                    streams: n,
                    cpus: pool.len(),
                })
            }
            Streams::Count(n) => n,
        };
        let parts = pool.split(n)?;
        let topology = match &self.topology {
            Some(topology) => topology,
            None => topology::system()?,
        };
        let replicas = Replicas::make(&self.model, topology, &parts, self.numa_replicas)?;
        let tasks = parts
            .into_iter()
            .enumerate()
            .map(|(index, part)| {
                let config = StreamConfig {
                    name: next_stream_name(),
                    index,
                    pool: part,
                    spin: self.spin,
                    intra_op: self.intra_op,
                };
                Task::from_config(Arc::clone(replicas.model_of(index)), config)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(MultiStreamModule {
            stream_pools: tasks.iter().map(|t| t.pool().clone()).collect(),
            tasks,
            replicas,
            input_hint: self.input_hint,
            output_hint: self.output_hint,
            caller_runs: self.caller_runs,
        })
    }
}
