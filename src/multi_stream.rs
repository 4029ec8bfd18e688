//! [`MultiStreamModule`]: one shared model on N pinned streams; inputs are split by a [`Hint`],
//! run concurrently, and the outputs concatenated (IPEX's `MultiStreamModule`).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::TryJoinAll;

use crate::batch::{split_sizes, Batch, Hint};
use crate::error::{Error, Result};
use crate::future::TaskFuture;
use crate::idle;
use crate::module::{Infer, Module};
use crate::pool::CpuPool;
use crate::stream::StreamConfig;
use crate::stream::StreamStats;
use crate::task::{next_stream_name, Task};

/// How many streams a [`MultiStreamModule`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Streams {
    /// One stream per CPU of the pool (IPEX's `"AUTO"`), but no more than the process's CPU
    /// quota pays for (a cgroup `cpu.max`, Kubernetes' CPU limit; see [`crate::quota`]): under
    /// a quota of `q` CPUs, `ceil(q)` one-CPU streams on the pool's first CPUs, so that no
    /// more threads are busy than the quota pays for (see [`Streams::auto_count`]).
    #[default]
    Auto,
    /// Exactly this many streams; the pool's CPUs are shared out with [`CpuPool::split`].
    Count(usize),
}

impl Streams {
    /// How many streams [`Streams::Auto`] runs on a pool of `cpus` CPUs under `quota`: `cpus`,
    /// or fewer, `quota.whole_cpus()`, when the quota pays for fewer.
    ///
    /// ```
    /// use corestream::quota::CpuQuota;
    /// use corestream::Streams;
    ///
    /// let limit = |cpus: f64| CpuQuota {
    ///     quota_us: (cpus * 100_000.0) as u64,
    ///     period_us: 100_000,
    ///     source: "cpu.max".into(),
    /// };
    /// assert_eq!(Streams::auto_count(16, None), 16);
    /// assert_eq!(Streams::auto_count(16, Some(&limit(2.5))), 3); // 2.5 CPUs: 3 streams
    /// assert_eq!(Streams::auto_count(2, Some(&limit(8.0))), 2); // the pool bounds it too
    /// assert_eq!(Streams::auto_count(4, Some(&limit(0.2))), 1);
    /// ```
    pub fn auto_count(cpus: usize, quota: Option<&crate::quota::CpuQuota>) -> usize {
        quota.map_or(cpus, |q| cpus.min(q.whole_cpus())).max(1)
    }
}

/// Parses `auto` (any case) or a positive count; the one parser of a stream count, used by the
/// `corestream` command and the embedding service alike.
///
/// ```
/// use corestream::Streams;
///
/// assert_eq!("auto".parse::<Streams>()?, Streams::Auto);
/// assert_eq!(" 4 ".parse::<Streams>()?, Streams::Count(4));
/// assert!("0".parse::<Streams>().is_err());
/// assert!("two".parse::<Streams>().is_err());
/// assert_eq!(Streams::Count(3).to_string(), "3");
/// # Ok::<(), corestream::Error>(())
/// ```
impl std::str::FromStr for Streams {
    type Err = crate::Error;

    fn from_str(text: &str) -> crate::Result<Streams> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("auto") {
            return Ok(Streams::Auto);
        }
        match text.parse::<usize>() {
            Ok(n) if n > 0 => Ok(Streams::Count(n)),
            _ => Err(crate::Error::InvalidConfig(format!(
                "streams {text:?}: expected `auto` or a positive number"
            ))),
        }
    }
}

/// `auto` or the count, as [`FromStr`](std::str::FromStr) reads it.
impl std::fmt::Display for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Streams::Auto => f.write_str("auto"),
            Streams::Count(n) => write!(f, "{n}"),
        }
    }
}

/// One model, shared (never copied) by N streams pinned to disjoint slices of a pool.
///
/// [`forward`](Self::forward) splits the input's batch by the input [`Hint`] (`b / n` rows per
/// stream, the first `b % n` streams one more, only the first `b` streams when `b < n`), runs the
/// parts concurrently and concatenates the outputs by the output hint. With every stream count,
/// including 1, `forward` (async) runs the parts on stream threads, never on the caller, so the
/// caller may be an async reactor; the blocking [`forward_sync`](Self::forward_sync) runs the
/// part of the one-CPU stream whose CPU the caller is on itself (see
/// [`caller_runs`](MultiStreamModuleBuilder::caller_runs)). The module is `Send + Sync`: concurrent calls interleave on the streams and each
/// caller gets its own rows back.
///
/// ```
/// use corestream::ndarray::{Array, Array2};
/// use corestream::{module_fn, CpuPool, MultiStreamModule, Streams};
///
/// let model = module_fn(|x: Array2<f32>| Ok(x.mapv(|v| v + 1.0)));
/// let msm = MultiStreamModule::builder(model)
///     .pool(CpuPool::all()?)
///     .num_streams(Streams::Auto)
///     .build()?;
/// let x = Array::from_shape_fn((8, 4), |(i, j)| (i * 4 + j) as f32);
/// let y = msm.forward_sync(x.clone())?;
/// assert_eq!(y, x + 1.0);
/// # Ok::<(), corestream::Error>(())
/// ```
pub struct MultiStreamModule<M: Module> {
    tasks: Vec<Task<M>>,
    /// Each stream's CPUs, shared with the futures (a waiting caller does not poll on them).
    stream_pools: Arc<[CpuPool]>,
    model: Arc<M>,
    input_hint: Hint,
    output_hint: Hint,
    caller_runs: bool,
}

impl<M: Module> fmt::Debug for MultiStreamModule<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MultiStreamModule")
            .field("pools", &self.pools())
            .field("input_hint", &self.input_hint)
            .field("output_hint", &self.output_hint)
            .finish_non_exhaustive()
    }
}

impl<M: Module> MultiStreamModule<M> {
    /// A builder; see [`MultiStreamModuleBuilder`].
    pub fn builder(model: M) -> MultiStreamModuleBuilder<M> {
        MultiStreamModuleBuilder {
            model: Arc::new(model),
            streams: Streams::Auto,
            pool: None,
            input_hint: Hint::default(),
            output_hint: Hint::default(),
            intra_op: true,
            spin: crate::idle::DEFAULT_SPIN,
            caller_runs: true,
        }
    }

    /// The number of streams (after resolving [`Streams::Auto`]).
    pub fn num_streams(&self) -> usize {
        self.tasks.len()
    }

    /// Each stream's CPUs, in stream order.
    pub fn pools(&self) -> Vec<CpuPool> {
        self.stream_pools.to_vec()
    }

    /// The shared model.
    pub fn model(&self) -> &Arc<M> {
        &self.model
    }

    /// The streams, in order (for schedulers such as the batcher that feed streams directly).
    pub(crate) fn tasks(&self) -> &[Task<M>] {
        &self.tasks
    }

    /// Each stream's counters, in stream order.
    pub fn stats(&self) -> Vec<StreamStats> {
        self.tasks.iter().map(Task::stats).collect()
    }

    /// The input hint.
    pub fn input_hint(&self) -> &Hint {
        &self.input_hint
    }

    /// The output hint.
    pub fn output_hint(&self) -> &Hint {
        &self.output_hint
    }
}

impl<M> MultiStreamModule<M>
where
    M: Module,
    M::Input: Batch,
{
    /// Splits `input`, queues the parts on the streams now, and returns the future of the
    /// per-stream outputs in stream order, one per stream actually used (IPEX's
    /// `concat_output=False`).
    pub fn forward_parts(&self, input: M::Input) -> PartsFuture<M::Output> {
        match self.dispatch(input) {
            Ok(futures) => PartsFuture {
                spin: futures.first().map_or(Duration::ZERO, TaskFuture::spin),
                used: futures.len(),
                pools: Arc::clone(&self.stream_pools),
                state: PartsState::Running(futures::future::try_join_all(futures)),
            },
            Err(e) => PartsFuture {
                spin: Duration::ZERO,
                used: 0,
                pools: Arc::clone(&self.stream_pools),
                state: PartsState::Failed(Some(e)),
            },
        }
    }

    fn dispatch(&self, input: M::Input) -> Result<Vec<TaskFuture<M::Output>>> {
        let parts = self.split(input)?;
        Ok(self
            .tasks
            .iter()
            .zip(parts)
            .map(|(task, part)| task.submit(part))
            .collect())
    }

    /// The input's parts, one per stream used, by the input hint.
    fn split(&self, input: M::Input) -> Result<Vec<M::Input>> {
        let rows = match input.batch_size(&self.input_hint)? {
            Some(rows) => rows,
            None => {
                return Err(Error::NoSplitDim {
                    hint: self.input_hint.clone(),
                })
            }
        };
        if rows == 0 {
            return Err(Error::EmptyBatch);
        }
        let sizes = split_sizes(rows, self.tasks.len());
        input.split(&self.input_hint, &sizes)
    }

    /// The per-stream outputs of one blocking call. When the calling thread runs on the one
    /// CPU of a stream that gets a part (and [`caller_runs`](MultiStreamModuleBuilder::caller_runs)
    /// is on), it runs that part itself instead of handing it over and waiting for that CPU;
    /// the other parts go to their streams as usual.
    fn parts_sync(&self, input: M::Input) -> Result<Vec<M::Output>> {
        let parts = self.split(input)?;
        let used = parts.len();
        // The caller's stream, if it gets a part (fewer rows than streams leave some out).
        let here = match self.caller_runs {
            true => crate::affinity::current_cpu()
                .and_then(|cpu| self.stream_pools.iter().position(|p| p.cpus() == [cpu]))
                .filter(|&k| k < used),
            false => None,
        };
        let mut mine = None;
        let mut futures = Vec::with_capacity(used);
        for (i, (task, part)) in self.tasks.iter().zip(parts).enumerate() {
            if Some(i) == here {
                mine = Some(part);
            } else {
                futures.push(task.submit(part));
            }
        }
        let own = match here.zip(mine) {
            // On error the other parts' futures drop here: those not started are skipped.
            Some((k, part)) => Some((k, self.tasks[k].run_here(&self.model, part)?)),
            None => None,
        };
        let others = self.stream_pools[..used]
            .iter()
            .enumerate()
            .filter(|&(i, _)| Some(i) != here)
            .map(|(_, pool)| pool.cpus());
        let mut outputs = self.wait_all(futures, others)?;
        if let Some((k, output)) = own {
            outputs.insert(k, output);
        }
        Ok(outputs)
    }

    /// Waits for `futures` in order, the parts of the streams on `cpus`: polls them (reading
    /// only) unless the caller runs on one of those CPUs, then parks.
    fn wait_all<'a>(
        &self,
        mut futures: Vec<TaskFuture<M::Output>>,
        cpus: impl Iterator<Item = &'a [usize]>,
    ) -> Result<Vec<M::Output>> {
        let Some(first) = futures.first() else {
            return Ok(Vec::new());
        };
        let window = idle::caller_window(first.spin(), cpus);
        let mut outputs: Vec<Option<M::Output>> = futures.iter().map(|_| None).collect();
        let mut left = futures.len();
        let polled = idle::poll_as_caller(window, || {
            for (slot, future) in outputs.iter_mut().zip(futures.iter_mut()) {
                if slot.is_none() {
                    match future.try_take() {
                        Some(Ok(output)) => {
                            *slot = Some(output);
                            left -= 1;
                        }
                        Some(Err(e)) => return Some(Err(e)),
                        None => {}
                    }
                }
            }
            (left == 0).then_some(Ok(()))
        });
        match polled {
            Some(Err(e)) => return Err(e),
            Some(Ok(())) => {}
            None => {
                // Park on the parts still out; their outputs fill the empty slots in order.
                let rest = futures
                    .into_iter()
                    .zip(&outputs)
                    .filter(|(_, slot)| slot.is_none())
                    .map(|(future, _)| future);
                let mut late = idle::block_on(futures::future::try_join_all(rest), Duration::ZERO)?
                    .into_iter();
                for slot in outputs.iter_mut().filter(|slot| slot.is_none()) {
                    *slot = late.next();
                }
            }
        }
        outputs
            .into_iter()
            .map(|output| output.ok_or(Error::Shutdown))
            .collect()
    }
}

impl<M> MultiStreamModule<M>
where
    M: Module,
    M::Input: Batch,
    M::Output: Batch,
{
    /// Splits `input` by the input hint, queues the parts on the streams now, and returns the
    /// future of the concatenated output.
    ///
    /// The future resolves to the first error of any part ([`Error::Module`],
    /// [`Error::Panicked`]), or to a split or concat error; when one part fails the others'
    /// results are dropped. Bad input errors ([`Error::NoSplitDim`], [`Error::EmptyBatch`],
    /// [`Error::BatchMismatch`], [`Error::DimOutOfRange`], [`Error::HintMismatch`]) resolve at
    /// once without running anything.
    pub fn forward(&self, input: M::Input) -> ForwardFuture<M::Output> {
        ForwardFuture {
            parts: self.forward_parts(input),
            hint: self.output_hint.clone(),
        }
    }

    /// [`forward`](Self::forward), blocking the calling thread until the output is there.
    ///
    /// When the calling thread runs on the CPU of a one-CPU stream that gets a part, it runs
    /// that part itself, as that stream (see
    /// [`caller_runs`](MultiStreamModuleBuilder::caller_runs)): the thread blocks anyway, and
    /// the stream would need the very CPU the caller holds.
    ///
    /// # Errors
    ///
    /// As [`forward`](Self::forward).
    pub fn forward_sync(&self, input: M::Input) -> Result<M::Output> {
        let parts = self.parts_sync(input)?;
        M::Output::concat(parts, &self.output_hint)
    }
}

#[async_trait::async_trait]
impl<M> Infer<M::Input, M::Output> for MultiStreamModule<M>
where
    M: Module,
    M::Input: Batch,
    M::Output: Batch,
{
    async fn infer(&self, input: M::Input) -> Result<M::Output> {
        self.forward(input).await
    }
}

/// The per-stream outputs of [`MultiStreamModule::forward_parts`].
#[must_use = "dropping the future cancels the parts that have not started"]
pub struct PartsFuture<T> {
    state: PartsState<T>,
    /// How long [`wait`](Self::wait) polls before parking: the streams' idle window.
    spin: Duration,
    /// The streams that got a part are `pools[..used]`: `wait` does not poll on their CPUs.
    pools: Arc<[CpuPool]>,
    used: usize,
}

enum PartsState<T> {
    Running(TryJoinAll<TaskFuture<T>>),
    Failed(Option<Error>),
}

impl<T> fmt::Debug for PartsFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartsFuture").finish_non_exhaustive()
    }
}

impl<T> PartsFuture<T> {
    /// Blocks the calling thread until every part is there, polling for the streams'
    /// [`spin`](MultiStreamModuleBuilder::spin) window before parking; it parks at once when it
    /// runs on a CPU of a stream that got a part (that stream needs the CPU), or while it sees
    /// another taker of its CPU (see [`TaskFuture::wait`]).
    ///
    /// # Errors
    ///
    /// As [`MultiStreamModule::forward`].
    pub fn wait(self) -> Result<Vec<T>> {
        let window = self.window();
        idle::block_on(self, window)
    }

    fn window(&self) -> Duration {
        idle::caller_window(
            self.spin,
            self.pools.iter().take(self.used).map(CpuPool::cpus),
        )
    }
}

impl<T> Future for PartsFuture<T> {
    type Output = Result<Vec<T>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every field is Unpin (TaskFuture holds an Unpin receiver), so no projection is needed.
        match &mut self.get_mut().state {
            PartsState::Running(join) => Pin::new(join).poll(cx),
            PartsState::Failed(err) => Poll::Ready(Err(err.take().unwrap_or(Error::Shutdown))),
        }
    }
}

/// The concatenated output of [`MultiStreamModule::forward`].
#[must_use = "dropping the future cancels the parts that have not started"]
pub struct ForwardFuture<T> {
    parts: PartsFuture<T>,
    hint: Hint,
}

impl<T> fmt::Debug for ForwardFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForwardFuture")
            .field("output_hint", &self.hint)
            .finish_non_exhaustive()
    }
}

impl<T: Batch> ForwardFuture<T> {
    /// Blocks the calling thread until the output is there, polling as
    /// [`PartsFuture::wait`] does.
    ///
    /// # Errors
    ///
    /// As [`MultiStreamModule::forward`].
    pub fn wait(self) -> Result<T> {
        let window = self.parts.window();
        idle::block_on(self, window)
    }
}

impl<T: Batch> Future for ForwardFuture<T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match Pin::new(&mut this.parts).poll(cx) {
            Poll::Ready(Ok(parts)) => Poll::Ready(T::concat(parts, &this.hint)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

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
    /// [`Error::NoSplitDim`] for an input hint without a `Dim` leaf, and the errors of
    /// [`Task::new`] and [`CpuPool::from_node`].
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
                let quota = crate::topology::system().ok().and_then(|t| t.cpu_quota());
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
        let tasks = pool
            .split(n)?
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
                Task::from_config(Arc::clone(&self.model), config)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(MultiStreamModule {
            stream_pools: tasks.iter().map(|t| t.pool().clone()).collect(),
            tasks,
            model: self.model,
            input_hint: self.input_hint,
            output_hint: self.output_hint,
            caller_runs: self.caller_runs,
        })
    }
}
