//! The stream: one dedicated OS thread pinned to its CPUs, fed by a channel, answering through
//! oneshots, with an intra-op rayon pool when it owns more than one CPU.
//!
//! Invariants:
//! - the thread is pinned once, before it reports ready, and never re-pinned;
//! - every job's reply sender is either used or dropped, so every [`TaskFuture`] resolves;
//! - jobs whose future was dropped before they start are skipped, not run;
//! - dropping the [`Stream`] closes the channel; the thread drains what is queued, then exits,
//!   and the drop joins it (unless the drop happens on the stream thread itself), then runs the
//!   stream's end hooks ([`StreamInfo::on_end`]);
//! - crate-internal work ([`Stream::run`], e.g. a batcher's serve loop) runs on the stream thread
//!   itself, in submission order with the jobs, and calls the model through an [`Executor`]: the
//!   same intra-op pool, panic isolation and counters as a submitted job. While it runs, jobs
//!   submitted directly wait in the channel unless the work takes them
//!   ([`Executor::has_queued`], [`Executor::run_queued`]), woken through the
//!   [wake hook](Stream::set_wake_hook).

use std::cell::RefCell;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use crate::affinity;
use crate::context::{self, StreamInfo};
use crate::error::{Error, Result};
use crate::future::TaskFuture;
use crate::idle;
use crate::module::Module;
use crate::pool::CpuPool;
use crate::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use crate::sync::thread::{self, JoinHandle};
use crate::sync::{mpsc, oneshot, Mutex};

/// How a stream thread is set up.
#[derive(Debug, Clone)]
pub(crate) struct StreamConfig {
    pub(crate) name: String,
    /// The stream's index within its module (0 for a `Task`), see [`StreamInfo::index`].
    pub(crate) index: usize,
    pub(crate) pool: CpuPool,
    /// How long the idle thread polls the queue before it parks (see [`idle`](crate::idle)).
    pub(crate) spin: Duration,
    /// Whether a stream with several CPUs runs jobs inside an intra-op rayon pool.
    pub(crate) intra_op: bool,
}

/// Counters of one stream, as a snapshot (see [`Task::stats`](crate::Task::stats)).
///
/// A job is one model call. On a stream that serves a [`Batcher`](crate::Batcher), each call
/// the batcher makes on the stream thread counts as one job: a batch, or one request of a
/// failed batch rerun alone; its `submitted` grows when the call starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamStats {
    /// Jobs submitted.
    pub submitted: u64,
    /// Jobs whose model call returned `Ok`.
    pub completed: u64,
    /// Jobs whose model call returned an error or panicked.
    pub failed: u64,
    /// Jobs skipped because their future was dropped before they started.
    pub skipped: u64,
}

impl StreamStats {
    /// Jobs submitted but not finished yet (queued or running).
    pub fn in_flight(&self) -> u64 {
        self.submitted
            .saturating_sub(self.completed + self.failed + self.skipped)
    }
}

/// Callers write `submitted`, the stream thread the others: each on its own cache line.
#[derive(Debug, Default)]
struct Counters {
    submitted: CachePadded<AtomicU64>,
    completed: CachePadded<AtomicU64>,
    failed: CachePadded<AtomicU64>,
    skipped: CachePadded<AtomicU64>,
}

impl Counters {
    /// Counts a finished model call as completed or failed.
    fn finished<T>(&self, result: &Result<T>) {
        let counter = if result.is_ok() {
            &self.completed
        } else {
            &self.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Crate-internal work run on the stream thread (see [`Stream::run`]).
pub(crate) type RunFn<M> = Box<dyn for<'a> FnOnce(&Executor<'a, M>) + Send>;

/// Called after each direct submission while set (see [`Stream::set_wake_hook`]).
pub(crate) type WakeHook = Arc<dyn Fn() + Send + Sync>;

enum Job<M: Module> {
    /// One model call, answered through `reply`: what [`Stream::submit`] queues.
    Forward {
        input: M::Input,
        reply: oneshot::Sender<Result<M::Output>>,
    },
    /// Work that runs on the stream thread with the model at hand: what [`Stream::run`] queues.
    Run(RunFn<M>),
}

/// The handle to one stream thread.
pub(crate) struct Stream<M: Module> {
    tx: Option<mpsc::Sender<Job<M>>>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
    config: StreamConfig,
    /// What `current_stream()` says on the stream's threads (and in [`run_here`](Self::run_here)).
    info: StreamInfo,
    /// Whether `wake_hook` is set: the only cost of the hook to `submit` while it is not.
    wake_armed: AtomicBool,
    wake_hook: Mutex<Option<WakeHook>>,
}

impl<M: Module> Stream<M> {
    /// Starts the thread, pins it, builds its intra-op pool, and waits until it is ready.
    pub(crate) fn spawn(model: Arc<M>, config: StreamConfig) -> Result<Stream<M>> {
        let (tx, rx) = mpsc::channel::<Job<M>>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let counters = Arc::new(Counters::default());
        let info = StreamInfo::new(config.index, config.pool.clone());
        let worker = Worker {
            model,
            rx,
            counters: Arc::clone(&counters),
            config: config.clone(),
            info: info.clone(),
            idle: RefCell::new(idle::Governor::new()),
        };
        let thread = thread::Builder::new()
            .name(config.name.clone())
            .spawn(move || worker.run(ready_tx))
            .map_err(|source| Error::Spawn {
                name: config.name.clone(),
                source,
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Stream {
                tx: Some(tx),
                thread: Some(thread),
                counters,
                config,
                info,
                wake_armed: AtomicBool::new(false),
                wake_hook: Mutex::new(None),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(Error::Spawn {
                    name: config.name.clone(),
                    source: io::Error::other("the thread exited during start-up"),
                })
            }
        }
    }

    /// Queues one job now and returns the future of its result.
    pub(crate) fn submit(&self, input: M::Input) -> TaskFuture<M::Output> {
        let (reply, rx) = oneshot::channel();
        let Some(tx) = &self.tx else {
            return TaskFuture::failed(Error::Shutdown);
        };
        self.counters.submitted.fetch_add(1, Ordering::Relaxed);
        match tx.send(Job::Forward { input, reply }) {
            Ok(()) => {
                if self.wake_armed.load(Ordering::Acquire) {
                    let hook = self
                        .wake_hook
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone();
                    if let Some(hook) = hook {
                        hook();
                    }
                }
                TaskFuture::pending(
                    rx,
                    (!self.config.spin.is_zero())
                        .then(|| (self.config.spin, self.config.pool.clone())),
                )
            }
            // The thread is gone; the job (and its reply sender) came back and is dropped.
            Err(_) => TaskFuture::failed(Error::Shutdown),
        }
    }

    /// Runs one job of `model` (the stream's own model) on the calling thread, as the stream
    /// would run it: counted in its [`StreamStats`], a panic caught as [`Error::Panicked`], and
    /// [`current_stream`](crate::current_stream) saying this stream meanwhile. It skips the
    /// queue: see [`MultiStreamModuleBuilder::caller_runs`](crate::MultiStreamModuleBuilder::caller_runs)
    /// for when that is right.
    pub(crate) fn run_here(&self, model: &M, input: M::Input) -> Result<M::Output> {
        self.counters.submitted.fetch_add(1, Ordering::Relaxed);
        let previous = context::replace_current_stream(Some(self.info.clone()));
        let result = call_model(model, input, None);
        context::replace_current_stream(previous);
        self.counters.finished(&result);
        result
    }

    /// Queues `work` to run on the stream thread, in order with the jobs; it is not counted as
    /// a job (its [`Executor::forward`] calls are). `work` is dropped unrun when the stream has
    /// stopped ([`Error::Shutdown`]); a panic in it is caught, and the stream goes on.
    pub(crate) fn run(&self, work: RunFn<M>) -> Result<()> {
        let Some(tx) = &self.tx else {
            return Err(Error::Shutdown);
        };
        tx.send(Job::Run(work)).map_err(|_| Error::Shutdown)
    }

    /// Sets (or clears) a hook that [`submit`](Self::submit) calls after queuing each job: long
    /// running work (see [`run`](Self::run)) that watches the channel with
    /// [`Executor::has_queued`] uses it to be woken. Set it before anyone can submit, e.g.
    /// while the stream is still private to its builder.
    pub(crate) fn set_wake_hook(&self, hook: Option<WakeHook>) {
        let mut slot = self.wake_hook.lock().unwrap_or_else(|e| e.into_inner());
        self.wake_armed.store(hook.is_some(), Ordering::Release);
        *slot = hook;
    }

    pub(crate) fn pool(&self) -> &CpuPool {
        &self.config.pool
    }

    pub(crate) fn name(&self) -> &str {
        &self.config.name
    }

    pub(crate) fn stats(&self) -> StreamStats {
        let c = &self.counters;
        StreamStats {
            submitted: c.submitted.load(Ordering::Relaxed),
            completed: c.completed.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            skipped: c.skipped.load(Ordering::Relaxed),
        }
    }
}

impl<M: Module> Drop for Stream<M> {
    fn drop(&mut self) {
        // Closing the channel lets the thread drain the queue and exit.
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            if thread.thread().id() != thread::current().id() {
                let _ = thread.join();
            }
        }
        // The stream runs nothing more: per-stream state kept for it elsewhere (e.g. an ONNX
        // Runtime session per stream, see `StreamInfo::on_end`) can go.
        self.info.end();
    }
}

/// The state owned by the stream thread.
struct Worker<M: Module> {
    model: Arc<M>,
    rx: mpsc::Receiver<Job<M>>,
    counters: Arc<Counters>,
    config: StreamConfig,
    info: StreamInfo,
    /// Whether to poll at all after a job (see [`idle`](crate::idle)).
    idle: RefCell<idle::Governor>,
}

impl<M: Module> Worker<M> {
    fn run(self, ready: mpsc::Sender<Result<()>>) {
        let cpus = self.config.pool.cpus().to_vec();
        // Pinned, then the stream's OpenMP team (if the process has a runtime) sized and bound.
        if let Err(e) =
            affinity::set_current_cpus(&cpus).and_then(|()| crate::omp::bind_stream(&cpus))
        {
            let _ = ready.send(Err(e));
            return;
        }
        let info = self.info.clone();
        context::set_current_stream(info.clone());
        // Every stream, one CPU included, gets its pool: otherwise rayon code in a one-CPU
        // stream would run on rayon's global pool, off the stream's CPU.
        let intra = if self.config.intra_op {
            match intra_op_pool(&self.config.name, &info) {
                Ok(pool) => Some(pool),
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            }
        } else {
            None
        };
        let _ = ready.send(Ok(()));
        while let Some(job) = self.next_job() {
            self.handle(job, intra.as_ref());
        }
    }

    fn handle(&self, job: Job<M>, intra: Option<&rayon::ThreadPool>) {
        match job {
            Job::Forward { input, reply } => {
                if reply.is_canceled() {
                    self.counters.skipped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                let result = self.execute(input, intra);
                self.counters.finished(&result);
                // The caller may have dropped the future meanwhile: the result is discarded.
                let _ = reply.send(result);
            }
            Job::Run(work) => {
                let executor = Executor {
                    worker: self,
                    intra,
                    queued: RefCell::new(None),
                };
                // The work isolates its own failures; a panic that escapes it must not take
                // the stream down with it.
                let _ = panic::catch_unwind(AssertUnwindSafe(|| work(&executor)));
                // A job it took off the channel but did not run runs now.
                executor.run_queued();
            }
        }
    }

    /// The next job: polls the queue for up to `spin` while the thread's
    /// [`Governor`](crate::idle::Governor) allows it (see [`idle`](crate::idle)), then parks on
    /// the channel. `None` once the channel is closed and empty.
    fn next_job(&self) -> Option<Job<M>> {
        let mut governor = self.idle.borrow_mut();
        let polled = idle::poll_for(&mut governor, self.config.spin, || {
            match self.rx.try_recv() {
                Ok(job) => Some(Some(job)),
                Err(mpsc::TryRecvError::Disconnected) => Some(None),
                Err(mpsc::TryRecvError::Empty) => None,
            }
        });
        match polled {
            Some(job) => job,
            None => {
                let job = self.rx.recv().ok();
                governor.woke(Instant::now());
                job
            }
        }
    }

    fn execute(&self, input: M::Input, intra: Option<&rayon::ThreadPool>) -> Result<M::Output> {
        call_model(&*self.model, input, intra)
    }
}

/// One model call, inside `intra` when given, a panic caught and returned as
/// [`Error::Panicked`].
fn call_model<M: Module>(
    model: &M,
    input: M::Input,
    intra: Option<&rayon::ThreadPool>,
) -> Result<M::Output> {
    let call = || match intra {
        Some(pool) => pool.install(|| model.forward(input)),
        None => model.forward(input),
    };
    match panic::catch_unwind(AssertUnwindSafe(call)) {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(Error::from_module(e)),
        Err(payload) => Err(Error::Panicked(panic_message(payload.as_ref()))),
    }
}

/// The model as seen from work running on the stream thread (see [`Stream::run`]).
pub(crate) struct Executor<'a, M: Module> {
    worker: &'a Worker<M>,
    intra: Option<&'a rayon::ThreadPool>,
    /// A job [`has_queued`](Self::has_queued) took off the channel, until it runs.
    queued: RefCell<Option<Job<M>>>,
}

impl<M: Module> Executor<'_, M> {
    /// Calls the model on this thread exactly as a submitted job runs: inside the stream's
    /// intra-op pool, a panic caught and returned as [`Error::Panicked`]. Counted as one job in
    /// the stream's [`StreamStats`].
    pub(crate) fn forward(&self, input: M::Input) -> Result<M::Output> {
        let counters = &self.worker.counters;
        counters.submitted.fetch_add(1, Ordering::Relaxed);
        let result = self.worker.execute(input, self.intra);
        self.worker.counters.finished(&result);
        result
    }

    /// How long the stream may poll now: its idle window, or zero while its
    /// [`Governor`](crate::idle::Governor) keeps it quiet (see [`idle`](crate::idle)).
    pub(crate) fn spin(&self) -> Duration {
        let max = self.worker.config.spin;
        self.worker.idle.borrow_mut().window(max, Instant::now())
    }

    /// Whether the stream's governor has seen another taker of its CPU lately (it is in a
    /// quiet period: see [`idle`](crate::idle)).
    pub(crate) fn contended(&self) -> bool {
        self.worker.idle.borrow().is_quiet(Instant::now())
    }

    /// Polls with `poll` for up to `window` (see [`idle::poll_for`]); the stream's governor
    /// records what the round saw.
    pub(crate) fn poll_for<T>(
        &self,
        window: Duration,
        poll: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        idle::poll_for(&mut self.worker.idle.borrow_mut(), window, poll)
    }

    /// Tells the stream's governor that the thread woke from a park (see
    /// [`Governor::woke`](crate::idle::Governor::woke)).
    pub(crate) fn woke(&self) {
        self.worker.idle.borrow_mut().woke(Instant::now());
    }

    /// Whether a job submitted to the stream directly is waiting (it is taken off the channel
    /// and held for [`run_queued`](Self::run_queued)). Never blocks.
    pub(crate) fn has_queued(&self) -> bool {
        let mut queued = self.queued.borrow_mut();
        if queued.is_none() {
            *queued = self.worker.rx.try_recv().ok();
        }
        queued.is_some()
    }

    /// Runs the job [`has_queued`](Self::has_queued) found, if any.
    pub(crate) fn run_queued(&self) {
        let job = self.queued.borrow_mut().take();
        if let Some(job) = job {
            self.worker.handle(job, self.intra);
        }
    }
}

/// A rayon pool of `cpus.len()` threads whose worker 0 is the calling (stream) thread and whose
/// worker `t > 0` is pinned to `cpus[t]`; every worker sees the stream as its
/// [`current_stream`](crate::current_stream).
fn intra_op_pool(name: &str, info: &StreamInfo) -> Result<rayon::ThreadPool> {
    let cpus = info.pool().cpus();
    let pinned: Arc<[usize]> = cpus.into();
    let prefix = name.to_owned();
    let info = info.clone();
    rayon::ThreadPoolBuilder::new()
        .num_threads(cpus.len())
        .use_current_thread()
        .thread_name(move |i| format!("{prefix}w{i}"))
        .start_handler(move |i| {
            // Worker 0 is the stream thread (no start handler runs for it); the others get one
            // CPU each. A failure leaves the worker on the stream's CPUs it inherited.
            if let Some(&cpu) = pinned.get(i) {
                let _ = affinity::set_current_cpus(&[cpu]);
            }
            context::set_current_stream(info.clone());
        })
        // A panic in a detached `rayon::spawn` inside a model must not abort the process.
        .panic_handler(|_| {})
        .build()
        .map_err(|e| Error::Spawn {
            name: name.to_owned(),
            source: io::Error::other(format!("intra-op pool: {e}")),
        })
}

/// The message of a panic payload (`&str` or `String`; anything else is named as such).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
