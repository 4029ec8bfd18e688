//! [`Batcher`]: dynamic batching of single requests onto a multi-stream module's streams.
//!
//! Requests wait in one bounded queue. Every stream of the module runs a serve loop on its own
//! thread: as soon as the stream is idle it takes the queued requests (up to `max_batch` rows),
//! stacks them along dim 0 with [`Batch::concat`], calls the model on the stream thread itself
//! (inside its intra-op pool, as a submitted job would run), and splits the output back to the
//! callers. No other thread stands between the callers and the streams: a request costs the
//! wake of an idle stream (none while the stream is still polling after its last batch) and the
//! wake of its caller. With the default `max_wait` of zero no stream idles while requests wait
//! (work-conserving), so batches form only under load, when they pay off; a positive `max_wait`
//! lets an idle stream linger up to that long after the oldest request arrived, to gather a
//! fuller batch at low load.
//!
//! How requests reach the streams, cheapest first:
//! - a caller reserves a place (an atomic count bounded by the capacity), sends the request
//!   through a channel (no lock) and sets a `pending` flag if it is not set yet;
//! - an idle serve loop polls that flag for the stream's idle window
//!   ([`spin`](crate::MultiStreamModuleBuilder::spin), see [`idle`](crate::idle)); one polling
//!   loop at a time claims the queue, moves what was sent into it under the lock, and takes its
//!   batch, so an arrival sends one stream to the lock, not all of them. At most half the
//!   streams poll at once when there are more than 4 (see `max_polling`): idle polling streams
//!   take CPU time from the callers;
//! - the others, and a loop whose window has passed, sleep on a condition variable; a caller
//!   signals one only when some loop sleeps and none polls. Callers therefore pay no lock and
//!   no system call while streams poll.
//!
//! Files: this one holds the batcher, its queue and the callers' side; `serve_loop.rs` the
//! streams' side (taking batches, running them, answering); `builder.rs` the builder that
//! starts the loops; `select.rs` which queued requests form a batch; `stats.rs`,
//! `telemetry.rs` and `health.rs` what is counted, exported and watched.
//!
//! Invariants:
//! - the queue never holds more than `queue_capacity` requests: a full queue answers
//!   [`Error::Overloaded`] at once;
//! - every accepted request is answered exactly once, or its caller has gone;
//! - a request whose future was dropped before its batch formed is removed, not run;
//! - one bad request fails alone: a batch that cannot be stacked, whose call fails or panics,
//!   or whose output cannot be split, is rerun one request at a time;
//! - jobs submitted to the module's streams directly still run: a serve loop takes them from its
//!   stream's channel between batches;
//! - dropping the batcher stops intake, then waits until every serve loop has drained the queue
//!   and ended, leaving the streams to the module again.

use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use crate::batch::{Batch, Hint};
use crate::error::{Error, Result};
use crate::future::TaskFuture;
use crate::module::{Infer, Module};
use crate::multi_stream::MultiStreamModule;
use crate::stream::panic_message;
use crate::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use crate::sync::{mpsc, oneshot, Condvar, Mutex, MutexGuard};

mod builder;
mod health;
mod payoff;
mod select;
mod serve_loop;
#[cfg(feature = "tower")]
mod service;
mod stats;
mod telemetry;
mod width;

pub use builder::BatcherBuilder;
pub use health::{BatcherHealth, BatcherProblem};
#[cfg(feature = "tower")]
pub use service::BatcherService;
pub use stats::{BatcherStats, LATENCY_BUCKETS};
pub use width::Width;

use health::Activity;
use stats::Counters;
use telemetry::{Queued, Telemetry};
use width::{Lane, WideGate};

/// The name of a batcher not given one (see [`BatcherBuilder::name`]).
pub(crate) const DEFAULT_NAME: &str = "batcher";

/// A request's cost function (see [`BatcherBuilder::tokens`]).
type TokenFn<I> = Arc<dyn Fn(&I) -> usize + Send + Sync>;

/// Serves single requests by batching them dynamically onto the streams of a
/// [`MultiStreamModule`].
///
/// The batcher occupies its module's streams: each runs the batcher's serve loop until the
/// batcher is dropped. Calls made meanwhile through [`module`](Self::module) (e.g.
/// `batcher.module().forward(x)`) still run on the streams, taken between batches, and
/// [`MultiStreamModule::stats`] counts every model call a batch makes (see
/// [`StreamStats`](crate::StreamStats)).
///
/// ```
/// use corestream::ndarray::{array, Array2};
/// use corestream::{module_fn, Batcher, CpuPool, MultiStreamModule};
///
/// # futures::executor::block_on(async {
/// let model = module_fn(|x: Array2<f32>| Ok(x * 2.0));
/// let msm = MultiStreamModule::builder(model).pool(CpuPool::all()?).build()?;
/// let batcher = Batcher::builder(msm).max_batch(16).queue_capacity(256).build()?;
/// // Each caller sends one row and gets its own row back.
/// let (a, b) = futures::join!(
///     batcher.infer(array![[1.0f32, 2.0]]),
///     batcher.infer(array![[3.0f32, 4.0]]),
/// );
/// assert_eq!(a?, array![[2.0f32, 4.0]]);
/// assert_eq!(b?, array![[6.0f32, 8.0]]);
/// # Ok::<(), corestream::Error>(())
/// # })?;
/// # Ok::<(), corestream::Error>(())
/// ```
pub struct Batcher<M>
where
    M: Module,
    M::Input: Batch + Clone,
    M::Output: Batch,
{
    shared: Arc<Shared<M>>,
    /// Callers send their requests here, without a lock; serve loops move them into the queue.
    intake: mpsc::Sender<Request<M>>,
    module: Arc<MultiStreamModule<M>>,
}

struct Request<M: Module> {
    input: M::Input,
    ticket: Ticket<M>,
}

/// Where and when a request's answer goes.
struct Ticket<M: Module> {
    rows: usize,
    /// Padded length of each of its rows (0 without a token function).
    len: usize,
    reply: oneshot::Sender<Result<M::Output>>,
    enqueued: Instant,
    /// Its queue-wait span (feature `tracing`), ended when a stream takes it.
    queued: Queued,
}

impl<M: Module> Ticket<M> {
    /// The request's own tokens: `rows` x `len`.
    fn tokens(&self) -> usize {
        self.rows.saturating_mul(self.len)
    }
}

/// Only serve loops (and a caller finding the queue full) take its lock; callers send.
struct Queue<M: Module> {
    /// Requests sent by callers and not yet moved into `requests` (see [`Shared::drain`]).
    intake: mpsc::Receiver<Request<M>>,
    requests: VecDeque<Request<M>>,
    /// Rows of `requests`.
    rows: usize,
    /// Tokens of `requests`, unpadded (see [`Ticket::tokens`]).
    tokens: usize,
}

impl<M: Module> Queue<M> {
    fn push(&mut self, request: Request<M>) {
        self.rows += request.ticket.rows;
        self.tokens += request.ticket.tokens();
        self.requests.push_back(request);
    }

    /// Accounts for a request taken out of `requests`.
    fn removed(&mut self, ticket: &Ticket<M>) {
        self.rows -= ticket.rows;
        self.tokens -= ticket.tokens();
    }
}

/// What callers write on every request: on a cache line of its own.
#[derive(Default)]
struct Places {
    /// Requests accepted and neither taken nor removed yet, in the intake or the queue: a
    /// caller reserves its place here before it sends, so it never exceeds the capacity.
    len: AtomicUsize,
    accepted: AtomicU64,
}

struct Shared<M: Module> {
    queue: Mutex<Queue<M>>,
    arrived: Condvar,
    places: CachePadded<Places>,
    /// Requests may wait for a serve loop: sent since the last drain, or left in the queue. What
    /// polling loops watch: callers only read it while it is set, so under load it does not
    /// move from cache to cache on every request as `places` does.
    pending: CachePadded<AtomicBool>,
    /// Serve loops asleep on `arrived` (or about to be): callers signal only when there is one
    /// and no loop polls.
    sleepers: AtomicUsize,
    /// Serve loops polling now, at most `max_polling`: the others sleep, so that idle streams
    /// do not take the CPUs from the callers.
    polling: CachePadded<AtomicUsize>,
    max_polling: usize,
    /// Set (once, by the drop) when intake has stopped.
    closed: AtomicBool,
    /// Set by the one polling loop that is reaching for the lock (see `serve_loop::Claim`).
    taking: CachePadded<AtomicBool>,
    /// Serve loops that have not ended (or whose work has not been dropped unrun).
    loops: Mutex<usize>,
    /// Which streams are in a batch since when, and serve loops running or ended (see
    /// [`BatcherHealth`]).
    activity: Activity,
    loop_ended: Condvar,
    max_batch: usize,
    /// The token budget of a batch, if any.
    max_batch_tokens: Option<usize>,
    /// The request cost function: with one, batches are grouped by length (see [`select`]).
    tokens: Option<TokenFn<M::Input>>,
    max_wait: Duration,
    capacity: usize,
    /// Which batches run across all the module's CPUs (see `width.rs`).
    wide: WideGate,
    name: String,
    counters: Counters,
    telemetry: Telemetry,
    /// Tasks waiting for a place in the queue ([`BatcherService`]'s `poll_ready`).
    #[cfg(feature = "tower")]
    ready: service::ReadyWaiters,
}

/// What a serve loop does next.
enum Work<M: Module> {
    /// A batch taken from the queue, and where it runs (counted by the gate until it ends).
    Batch(Vec<Request<M>>, Lane),
    /// A job submitted to the stream directly waits in the stream's channel.
    Direct,
    Closed,
}

#[cfg(not(corestream_loom))]
thread_local! {
    /// The batcher whose serve loop runs on this thread (its `Shared`'s address), if any.
    static SERVING: Cell<usize> = const { Cell::new(0) };
}

// loom's threads share one OS thread: the same, per loom thread (see `crate::sync`).
#[cfg(corestream_loom)]
loom::thread_local! {
    static SERVING: Cell<usize> = Cell::new(0);
}

impl<M> fmt::Debug for Batcher<M>
where
    M: Module,
    M::Input: Batch + Clone,
    M::Output: Batch,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batcher")
            .field("streams", &self.module.num_streams())
            .field("name", &self.shared.name)
            .field("max_batch", &self.shared.max_batch)
            .field("max_batch_tokens", &self.shared.max_batch_tokens)
            .field("tokens", &self.shared.tokens.is_some())
            .field("max_wait", &self.shared.max_wait)
            .field("queue_capacity", &self.shared.capacity)
            .field("width", &self.shared.wide.width())
            .finish_non_exhaustive()
    }
}

impl<M> Batcher<M>
where
    M: Module,
    M::Input: Batch + Clone,
    M::Output: Batch,
{
    /// A builder over the streams of `module`.
    pub fn builder(module: MultiStreamModule<M>) -> BatcherBuilder<M> {
        BatcherBuilder {
            module,
            max_batch: 32,
            max_batch_tokens: None,
            tokens: None,
            max_wait: Duration::ZERO,
            capacity: 1024,
            name: DEFAULT_NAME.to_owned(),
            width: Width::Narrow,
        }
    }

    /// Queues one request (one or more rows along dim 0) and returns the future of its own
    /// output rows. Never blocks.
    ///
    /// The future resolves to [`Error::Overloaded`] at once when the queue is full,
    /// [`Error::Shutdown`] after shutdown, [`Error::EmptyBatch`] or a [`Batch`] error for an
    /// input without rows along dim 0, [`Error::Panicked`] when the builder's
    /// [`tokens`](BatcherBuilder::tokens) function panics on it, or the model's error for
    /// this request.
    pub fn infer(&self, input: M::Input) -> TaskFuture<M::Output> {
        let (rows, len) = match self.shared.measure(&input) {
            Ok(measured) => measured,
            Err(e) => return TaskFuture::failed(e),
        };
        let shared = &*self.shared;
        if shared.closed.load(Ordering::Acquire) {
            return TaskFuture::failed(Error::Shutdown);
        }
        if shared.activity.serving() == 0 {
            return TaskFuture::failed(Error::NotServing {
                streams: shared.activity.streams(),
            });
        }
        if !shared.reserve() {
            // Requests whose callers left do not hold places.
            shared.purge();
            if !shared.reserve() {
                shared.counters.rejected.fetch_add(1, Ordering::Relaxed);
                shared.telemetry.rejected();
                return TaskFuture::failed(Error::Overloaded {
                    capacity: shared.capacity,
                });
            }
        }
        self.send(input, rows, len)
    }

    /// Queues a request for which a place is reserved already (see
    /// [`BatcherService`]); the place is released if the request is refused.
    #[cfg(feature = "tower")]
    fn infer_reserved(&self, input: M::Input) -> TaskFuture<M::Output> {
        let shared = &*self.shared;
        let measured = match shared.measure(&input) {
            Ok(_) if shared.closed.load(Ordering::Acquire) => Err(Error::Shutdown),
            other => other,
        };
        match measured {
            Ok((rows, len)) => self.send(input, rows, len),
            Err(e) => {
                shared.release(1);
                TaskFuture::failed(e)
            }
        }
    }

    /// Sends a request that holds a place to the serve loops.
    fn send(&self, input: M::Input, rows: usize, len: usize) -> TaskFuture<M::Output> {
        let shared = &*self.shared;
        let (reply, rx) = oneshot::channel();
        let request = Request {
            input,
            ticket: Ticket {
                rows,
                len,
                reply,
                enqueued: Instant::now(),
                queued: shared
                    .telemetry
                    .queued(rows, shared.tokens.is_some().then_some(len)),
            },
        };
        if self.intake.send(request).is_err() {
            // Not while `shared`, which holds the receiver, lives; the reply sender is dropped.
            shared.release(1);
            return TaskFuture::pending(rx, None);
        }
        shared.places.accepted.fetch_add(1, Ordering::Relaxed);
        shared.telemetry.accepted();
        shared.announce();
        // The last serve loop may have died after the check in `infer` and failed what was
        // queued before this request arrived: then nothing would ever take it (see
        // `LoopEnded`; both sides store, fence, then look).
        fence(Ordering::SeqCst);
        if shared.activity.serving() == 0 && !shared.closed.load(Ordering::Acquire) {
            shared.fail_queued();
        }
        TaskFuture::pending(rx, None)
    }

    /// The multi-stream module whose streams run the batches. Its streams serve the batcher;
    /// calls made through it run between batches.
    pub fn module(&self) -> &MultiStreamModule<M> {
        &self.module
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> BatcherStats {
        let shared = &*self.shared;
        shared.counters.snapshot(
            &shared.name,
            shared.places.len.load(Ordering::Acquire),
            shared.places.accepted.load(Ordering::Relaxed),
        )
    }

    /// Whether the serve loops are alive and making progress: loops running and ended, the
    /// oldest queued request's wait, the longest-running batch. A liveness probe should fail
    /// on [`BatcherHealth::problem`] (the struct has an example). Takes the queue's lock
    /// once, to look at the waiting requests.
    pub fn health(&self) -> BatcherHealth {
        let shared = &*self.shared;
        let mut queue = shared.lock();
        shared.drain(&mut queue);
        let live = queue
            .requests
            .iter()
            .filter(|r| !r.ticket.reply.is_canceled());
        let (queued, oldest) = live.fold((0, None), |(n, oldest): (usize, Option<Instant>), r| {
            let t = r.ticket.enqueued;
            (n + 1, Some(oldest.map_or(t, |o| o.min(t))))
        });
        shared.leave(&queue);
        drop(queue);
        shared.activity.snapshot(queued, oldest)
    }

    /// The batcher's name (see [`BatcherBuilder::name`], which has an example).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// How wide its batches run (see [`BatcherBuilder::width`]; [`Width`] has an example).
    pub fn width(&self) -> Width {
        self.shared.wide.width()
    }
}

impl<M> Drop for Batcher<M>
where
    M: Module,
    M::Input: Batch + Clone,
    M::Output: Batch,
{
    fn drop(&mut self) {
        self.shared.close();
        // The serve loops drain the queue, then end. A drop that runs inside one of them (a
        // model dropping the batcher) leaves its own loop to finish after it.
        let own = SERVING.with(Cell::get) == Arc::as_ptr(&self.shared) as usize;
        self.shared.wait_for_loops(usize::from(own));
        self.shared.wide.end();
        if !own {
            for task in self.module.tasks() {
                task.set_wake_hook(None);
            }
            // Only if every loop died (a panic outside any model call): nothing else answers
            // these; dropping their reply senders resolves them to `Error::Shutdown`.
            let mut queue = self.shared.lock();
            self.shared.drain(&mut queue);
            queue.requests.clear();
            queue.rows = 0;
            queue.tokens = 0;
            self.shared.places.len.store(0, Ordering::Release);
            #[cfg(feature = "tower")]
            self.shared.ready.wake_all();
        }
    }
}

#[async_trait::async_trait]
impl<M> Infer<M::Input, M::Output> for Batcher<M>
where
    M: Module,
    M::Input: Batch + Clone,
    M::Output: Batch,
{
    async fn infer(&self, input: M::Input) -> Result<M::Output> {
        Batcher::infer(self, input).await
    }
}

impl<M> Shared<M>
where
    M: Module,
    M::Input: Batch + Clone,
    M::Output: Batch,
{
    fn lock(&self) -> MutexGuard<'_, Queue<M>> {
        // No code that can panic runs while the lock is held (model and `Batch` code run
        // outside it), so a poisoned lock still guards a consistent queue.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request's rows along dim 0 and padded length per row (0 without a token function).
    fn measure(&self, input: &M::Input) -> Result<(usize, usize)> {
        let rows = match input.batch_size(&Hint::Dim(0)) {
            Ok(Some(0)) => return Err(Error::EmptyBatch),
            Ok(Some(rows)) => rows,
            Ok(None) => return Err(Error::NoSplitDim { hint: Hint::Dim(0) }),
            Err(e) => return Err(e),
        };
        let len = match &self.tokens {
            None => 0,
            Some(tokens) => {
                panic::catch_unwind(AssertUnwindSafe(|| tokens(input))).map_err(|payload| {
                    Error::Panicked(format!(
                        "the batcher's tokens function: {}",
                        panic_message(payload.as_ref())
                    ))
                })?
            }
        };
        Ok((rows, len))
    }

    /// Frees `n` places (requests taken, removed or refused after all) and wakes the tasks
    /// waiting for one.
    fn release(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.places.len.fetch_sub(n, Ordering::Release);
        #[cfg(feature = "tower")]
        self.ready.released();
    }

    /// Frees the places of `n` requests removed because their callers left, and counts them.
    fn cancelled(&self, n: usize) {
        if n > 0 {
            self.release(n);
            self.counters
                .cancelled
                .fetch_add(n as u64, Ordering::Relaxed);
            self.telemetry.cancelled(n);
        }
    }

    /// Reserves a place for one request; `false` when the queue is full.
    fn reserve(&self) -> bool {
        self.places
            .len
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .is_ok()
    }

    /// Tells the serve loops about a request just sent: sets `pending` for the polling ones,
    /// signals a sleeping one.
    ///
    /// Both follow the same pattern with the loop's side in [`next_work`](Self::next_work): the
    /// caller sends, fences, then reads the flag; the loop writes the flag (clears `pending`,
    /// or counts itself in `sleepers`), fences, then looks at the intake. Either the caller
    /// sees the loop's write (and sets `pending` again, or signals), or the loop sees the
    /// request.
    fn announce(&self) {
        fence(Ordering::SeqCst);
        if !self.pending.load(Ordering::Relaxed) {
            self.pending.store(true, Ordering::Release);
        }
        // A polling loop takes the request (one that stops polling looks at the intake after
        // it has left `polling`, see `next_work`).
        if self.polling.load(Ordering::Relaxed) == 0 {
            self.wake_sleepers(false);
        }
    }

    /// Signals one sleeping serve loop (all, for a job submitted to a stream directly), after
    /// a fence (see [`announce`](Self::announce)).
    fn wake(&self, all: bool) {
        fence(Ordering::SeqCst);
        self.wake_sleepers(all);
    }

    fn wake_sleepers(&self, all: bool) {
        if self.sleepers.load(Ordering::Relaxed) > 0 {
            // Taking the lock makes sure the sleeper is waiting, not about to.
            drop(self.lock());
            if all {
                self.arrived.notify_all();
            } else {
                self.arrived.notify_one();
            }
        }
    }

    /// Moves what callers have sent into the queue (clearing `pending` first, see
    /// [`announce`](Self::announce)).
    fn drain(&self, queue: &mut Queue<M>) {
        self.pending.store(false, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let queue = &mut *queue;
        while let Ok(request) = queue.intake.try_recv() {
            queue.push(request);
        }
    }

    /// Frees the places of requests whose callers have left (a caller found the queue full).
    fn purge(&self) {
        let mut queue = self.lock();
        self.drain(&mut queue);
        self.drop_cancelled(&mut queue);
        self.leave(&queue);
    }

    /// Before the lock is released: sets `pending` when requests are left for other loops.
    fn leave(&self, queue: &Queue<M>) {
        if !queue.requests.is_empty() {
            self.pending.store(true, Ordering::Release);
        }
    }

    /// Stops intake and wakes every serve loop to drain the queue. Runs in the drop, so no
    /// caller is sending any more.
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        drop(self.lock());
        self.arrived.notify_all();
    }

    /// Fails every queued request with [`Error::NotServing`]: no serve loop is left to answer
    /// them.
    fn fail_queued(&self) {
        let mut queue = self.lock();
        self.drain(&mut queue);
        let failed: Vec<Request<M>> = queue.requests.drain(..).collect();
        queue.rows = 0;
        queue.tokens = 0;
        drop(queue);
        self.release(failed.len());
        let streams = self.activity.streams();
        for request in failed {
            let _ = request
                .ticket
                .reply
                .send(Err(Error::NotServing { streams }));
        }
    }

    /// Blocks until at most `left` serve loops are still running.
    fn wait_for_loops(&self, left: usize) {
        let mut loops = self.loops.lock().unwrap_or_else(|e| e.into_inner());
        while *loops > left {
            loops = self
                .loop_ended
                .wait(loops)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}
