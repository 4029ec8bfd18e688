//! [`Task`]: one model on one stream (IPEX's `ipex.cpu.runtime.Task`).

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::future::TaskFuture;
use crate::idle::DEFAULT_SPIN;
use crate::module::{Infer, Module};
use crate::pool::CpuPool;
use crate::stream::{RunFn, Stream, StreamConfig, StreamStats, WakeHook};

/// One model served by one stream: a dedicated OS thread pinned to a [`CpuPool`], fed by a
/// queue. [`submit`](Task::submit) returns at once with a [`TaskFuture`].
///
/// Cloning a `Task` clones the handle: clones feed the same stream. When the last handle is
/// dropped the stream finishes every queued job, then its thread is joined (this blocks the
/// dropping thread while the queue drains).
///
/// A stream with k > 1 CPUs runs each job inside its own rayon pool of k threads, the stream
/// thread being worker 0 and worker t pinned to the pool's CPU t: rayon code inside
/// [`Module::forward`] sees `rayon::current_num_threads() == k` and runs on exactly those CPUs.
///
/// ```
/// use corestream::{module_fn, CpuPool, Task};
///
/// # futures::executor::block_on(async {
/// let task = Task::new(module_fn(|x: u64| Ok(x * x)), CpuPool::all()?)?;
/// let fut = task.submit(12);       // queued now, runs in the background
/// assert_eq!(fut.await?, 144);
/// assert_eq!(task.run_sync(3)?, 9);
/// # Ok::<(), corestream::Error>(())
/// # })?;
/// # Ok::<(), corestream::Error>(())
/// ```
pub struct Task<M: Module> {
    stream: Arc<Stream<M>>,
}

impl<M: Module> Clone for Task<M> {
    fn clone(&self) -> Self {
        Task {
            stream: Arc::clone(&self.stream),
        }
    }
}

impl<M: Module> fmt::Debug for Task<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("name", &self.stream.name())
            .field("pool", self.stream.pool())
            .finish()
    }
}

/// Next default stream index, for thread names `corestream-s{i}`.
static NEXT_STREAM: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn next_stream_name() -> String {
    format!(
        "corestream-s{}",
        NEXT_STREAM.fetch_add(1, Ordering::Relaxed)
    )
}

impl<M: Module> Task<M> {
    /// Starts a stream for `module` on `pool` with default settings.
    ///
    /// # Errors
    ///
    /// [`Error::Affinity`](crate::Error::Affinity) when the thread cannot be pinned,
    /// [`Error::Spawn`](crate::Error::Spawn) when it cannot be started.
    pub fn new(module: M, pool: CpuPool) -> Result<Task<M>> {
        Task::builder(module).pool(pool).build()
    }

    /// A builder for a task with a chosen pool, thread name, idle spin, or intra-op setting.
    ///
    /// ```
    /// use std::time::Duration;
    /// use corestream::{module_fn, CpuPool, Task};
    ///
    /// let task = Task::builder(module_fn(|x: i32| Ok(-x)))
    ///     .pool(CpuPool::all()?)
    ///     .name("negate")
    ///     .spin(Duration::ZERO) // park at once when idle
    ///     .build()?;
    /// assert_eq!(task.run_sync(5)?, -5);
    /// # Ok::<(), corestream::Error>(())
    /// ```
    pub fn builder(module: M) -> TaskBuilder<M> {
        TaskBuilder {
            model: Arc::new(module),
            pool: None,
            name: None,
            spin: DEFAULT_SPIN,
            intra_op: true,
        }
    }

    pub(crate) fn from_config(model: Arc<M>, config: StreamConfig) -> Result<Task<M>> {
        Ok(Task {
            stream: Arc::new(Stream::spawn(model, config)?),
        })
    }

    /// Queues `input` now and returns the future of its result; never blocks.
    ///
    /// Jobs of one task run one at a time in submission order.
    pub fn submit(&self, input: M::Input) -> TaskFuture<M::Output> {
        self.stream.submit(input)
    }

    /// Runs `input` on the stream and blocks until the result is there.
    ///
    /// # Errors
    ///
    /// As [`TaskFuture::wait`].
    pub fn run_sync(&self, input: M::Input) -> Result<M::Output> {
        self.submit(input).wait()
    }

    /// The stream's CPUs.
    pub fn pool(&self) -> &CpuPool {
        self.stream.pool()
    }

    /// The stream thread's name.
    pub fn name(&self) -> &str {
        self.stream.name()
    }

    /// A snapshot of the stream's counters.
    pub fn stats(&self) -> StreamStats {
        self.stream.stats()
    }

    /// Runs one job of `model` on the calling thread as this stream (see
    /// [`Stream::run_here`](crate::stream::Stream::run_here)).
    pub(crate) fn run_here(&self, model: &M, input: M::Input) -> Result<M::Output> {
        self.stream.run_here(model, input)
    }

    /// Queues crate-internal `work` to run on the stream thread itself (see
    /// [`Stream::run`](crate::stream::Stream::run)).
    pub(crate) fn run_on_stream(&self, work: RunFn<M>) -> Result<()> {
        self.stream.run(work)
    }

    /// See [`Stream::set_wake_hook`](crate::stream::Stream::set_wake_hook).
    pub(crate) fn set_wake_hook(&self, hook: Option<WakeHook>) {
        self.stream.set_wake_hook(hook);
    }
}

#[async_trait::async_trait]
impl<M: Module> Infer<M::Input, M::Output> for Task<M> {
    async fn infer(&self, input: M::Input) -> Result<M::Output> {
        self.submit(input).await
    }
}

/// Configures a [`Task`]; see [`Task::builder`].
#[must_use = "a builder does nothing until .build() is called"]
pub struct TaskBuilder<M: Module> {
    model: Arc<M>,
    pool: Option<CpuPool>,
    name: Option<String>,
    spin: Duration,
    intra_op: bool,
}

impl<M: Module> fmt::Debug for TaskBuilder<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskBuilder")
            .field("pool", &self.pool)
            .field("name", &self.name)
            .field("spin", &self.spin)
            .field("intra_op", &self.intra_op)
            .finish_non_exhaustive()
    }
}

impl<M: Module> TaskBuilder<M> {
    /// The stream's CPUs (default: [`CpuPool::from_node(0)`](CpuPool::from_node)).
    pub fn pool(mut self, pool: CpuPool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// The thread's name (default `corestream-s{i}`; Linux keeps the first 15 bytes).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How long the stream polls its queue after a job before parking, and how long
    /// [`TaskFuture::wait`](crate::TaskFuture::wait) polls for the answer before parking
    /// (default [`DEFAULT_SPIN`](crate::DEFAULT_SPIN)). The window is an upper bound: polling
    /// never yields the CPU, and a thread that sees another taker of its CPU (it was
    /// descheduled while polling, or work arrived right after it parked, as happens with a
    /// caller on the stream's CPU) parks at once for a quiet period instead, so a busy
    /// neighbour or a caller sharing the CPU is not held up. A stream idle for longer than the
    /// window is parked and costs nothing. `Duration::ZERO` parks at once: the lowest CPU use,
    /// one thread wake-up per job.
    pub fn spin(mut self, spin: Duration) -> Self {
        self.spin = spin;
        self
    }

    /// Whether a stream with several CPUs runs jobs inside its own pinned rayon pool
    /// (default: true). Turn it off for models that manage their own threads.
    pub fn intra_op(mut self, enabled: bool) -> Self {
        self.intra_op = enabled;
        self
    }

    /// Starts the stream.
    ///
    /// # Errors
    ///
    /// As [`Task::new`]; also the errors of [`CpuPool::from_node`] when no pool was given.
    pub fn build(self) -> Result<Task<M>> {
        let pool = match self.pool {
            Some(pool) => pool,
            None => CpuPool::from_node(0)?,
        };
        let config = StreamConfig {
            name: self.name.unwrap_or_else(next_stream_name),
            index: 0,
            pool,
            spin: self.spin,
            intra_op: self.intra_op,
        };
        Task::from_config(self.model, config)
    }
}
