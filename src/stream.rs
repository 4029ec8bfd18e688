//! The stream: one dedicated OS thread pinned to its CPUs, fed by a channel, answering through
//! oneshots, with an intra-op rayon pool when it owns more than one CPU.
//!
//! Invariants:
//! - the thread is pinned once, before it reports ready, and never re-pinned;
//! - every job's reply sender is either used or dropped, so every [`TaskFuture`] resolves;
//! - jobs whose future was dropped before they start are skipped, not run;
//! - dropping the [`Stream`] closes the channel; the thread drains what is queued, then exits,
//!   and the drop joins it (unless the drop happens on the stream thread itself).

use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use futures::channel::oneshot;

use crate::affinity;
use crate::context::{self, StreamInfo};
use crate::error::{Error, Result};
use crate::future::TaskFuture;
use crate::idle;
use crate::module::Module;
use crate::pool::CpuPool;

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

struct Job<M: Module> {
    input: M::Input,
    reply: oneshot::Sender<Result<M::Output>>,
}

/// The handle to one stream thread.
pub(crate) struct Stream<M: Module> {
    tx: Option<mpsc::Sender<Job<M>>>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
    config: StreamConfig,
}

impl<M: Module> Stream<M> {
    /// Starts the thread, pins it, builds its intra-op pool, and waits until it is ready.
    pub(crate) fn spawn(model: Arc<M>, config: StreamConfig) -> Result<Stream<M>> {
        let (tx, rx) = mpsc::channel::<Job<M>>();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<()>>(1);
        let counters = Arc::new(Counters::default());
        let worker = Worker {
            model,
            rx,
            counters: Arc::clone(&counters),
            config: config.clone(),
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
        match tx.send(Job { input, reply }) {
            Ok(()) => TaskFuture::pending(
                rx,
                (!self.config.spin.is_zero()).then(|| (self.config.spin, self.config.pool.clone())),
            ),
            // The thread is gone; the job (and its reply sender) came back and is dropped.
            Err(_) => TaskFuture::failed(Error::Shutdown),
        }
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
    }
}

/// The state owned by the stream thread.
struct Worker<M: Module> {
    model: Arc<M>,
    rx: mpsc::Receiver<Job<M>>,
    counters: Arc<Counters>,
    config: StreamConfig,
}

impl<M: Module> Worker<M> {
    fn run(self, ready: mpsc::SyncSender<Result<()>>) {
        let cpus = self.config.pool.cpus().to_vec();
        // Pinned, then the stream's OpenMP team (if the process has a runtime) sized and bound.
        if let Err(e) =
            affinity::set_current_cpus(&cpus).and_then(|()| crate::omp::bind_stream(&cpus))
        {
            let _ = ready.send(Err(e));
            return;
        }
        let info = StreamInfo::new(self.config.index, self.config.pool.clone());
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
            if job.reply.is_canceled() {
                self.counters.skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let result = self.execute(job.input, intra.as_ref());
            let counter = if result.is_ok() {
                &self.counters.completed
            } else {
                &self.counters.failed
            };
            counter.fetch_add(1, Ordering::Relaxed);
            // The caller may have dropped the future meanwhile: the result is discarded.
            let _ = job.reply.send(result);
        }
    }

    /// The next job: polls the queue for up to `spin` (see [`idle`](crate::idle)), then parks
    /// on the channel. `None` once the channel is closed and empty.
    fn next_job(&self) -> Option<Job<M>> {
        let polled = idle::poll_for(self.config.spin, || match self.rx.try_recv() {
            Ok(job) => Some(Some(job)),
            Err(mpsc::TryRecvError::Disconnected) => Some(None),
            Err(mpsc::TryRecvError::Empty) => None,
        });
        match polled {
            Some(job) => job,
            None => self.rx.recv().ok(),
        }
    }

    fn execute(&self, input: M::Input, intra: Option<&rayon::ThreadPool>) -> Result<M::Output> {
        let model = &*self.model;
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
