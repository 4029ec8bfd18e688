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
use crate::stream::{panic_message, Executor, WakeHook};
use crate::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use crate::sync::{mpsc, oneshot, Condvar, Mutex, MutexGuard};

mod health;
mod select;
#[cfg(feature = "tower")]
mod service;
mod stats;
mod telemetry;

pub use health::{BatcherHealth, BatcherProblem};
#[cfg(feature = "tower")]
pub use service::BatcherService;
pub use stats::{BatcherStats, LATENCY_BUCKETS};

use health::Activity;
use select::Limits;
use stats::{BatchShape, Counters};
use telemetry::{Queued, StreamTelemetry, Telemetry};

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
    /// Set by the one polling loop that is reaching for the lock (see [`Claim`]).
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
    name: String,
    counters: Counters,
    telemetry: Telemetry,
    /// Tasks waiting for a place in the queue ([`BatcherService`]'s `poll_ready`).
    #[cfg(feature = "tower")]
    ready: service::ReadyWaiters,
}

/// What a serve loop does next.
enum Work<M: Module> {
    Batch(Vec<Request<M>>),
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

    /// One stream's serve loop, on the stream thread: batches until closed and drained.
    fn serve(&self, exec: &Executor<'_, M>) {
        /// Restores `SERVING` however the loop ends.
        struct Serving(usize);
        impl Drop for Serving {
            fn drop(&mut self) {
                SERVING.with(|s| s.set(self.0));
            }
        }
        let _serving = Serving(SERVING.with(|s| s.replace(self as *const Self as usize)));
        let index = crate::context::current_stream().map_or(0, |s| s.index());
        let telemetry = self.telemetry.stream(index);
        loop {
            match self.next_work(exec) {
                // Empty when every request taken had been cancelled meanwhile.
                Work::Batch(batch) if batch.is_empty() => {}
                Work::Batch(batch) => {
                    let _running = self.activity.running(index);
                    self.run(exec, &telemetry, batch);
                }
                Work::Direct => {
                    let _running = self.activity.running(index);
                    exec.run_queued();
                }
                Work::Closed => break,
            }
        }
    }

    /// Blocks until a batch is due (and takes it), or a job submitted to the stream directly
    /// waits; `Closed` once closed and drained.
    ///
    /// For the stream's idle window after its last batch the loop polls, without the lock,
    /// until there is something to look at; only one polling loop at a time then reaches for
    /// the lock (see [`Claim`]), so an arrival sends one stream, not all, to the queue. A loop
    /// that finds nothing for it there (another stream took it) goes back to polling. Once the
    /// window has passed it sleeps on `arrived`, counted in `sleepers`.
    fn next_work(&self, exec: &Executor<'_, M>) -> Work<M> {
        let window_end = Instant::now() + exec.spin();
        loop {
            let slot = PollSlot::enter(self, window_end);
            let window = match slot {
                Some(_) => window_end.saturating_duration_since(Instant::now()),
                None => Duration::ZERO,
            };
            let polled = exec.poll_for(window, || {
                if exec.has_queued() || self.closed.load(Ordering::Acquire) {
                    return Some(None);
                }
                if !self.pending.load(Ordering::Acquire)
                    || self.taking.load(Ordering::Relaxed)
                    || self.taking.swap(true, Ordering::Acquire)
                {
                    return None;
                }
                Some(Some(Claim(&self.taking)))
            });
            let may_poll = slot.is_some();
            drop(slot);
            // Declared before the guard, so released after the lock.
            let mut claim = polled.flatten();
            let mut queue = self.lock();
            let mut purged = false;
            loop {
                if exec.has_queued() {
                    self.leave(&queue);
                    return Work::Direct;
                }
                // Read before the drain: once closed nobody sends any more, so a drain after
                // seeing `closed` finds every request sent before the close. (Read after it,
                // a request sent between the two was left in the intake and failed with
                // `Shutdown`: found by tests/loom_batcher.rs.)
                let closed = self.closed.load(Ordering::Acquire);
                self.drain(&mut queue);
                self.pop_cancelled(&mut queue);
                let timeout = if let Some(oldest) = queue.requests.front() {
                    let due = oldest.ticket.enqueued + self.max_wait;
                    let now = Instant::now();
                    let full = queue.rows >= self.max_batch
                        || self.max_batch_tokens.is_some_and(|t| queue.tokens >= t);
                    if full && !purged && !closed && now < due {
                        // Full before its time: count only the rows of callers still there.
                        self.drop_cancelled(&mut queue);
                        purged = true;
                        continue;
                    }
                    if full || closed || now >= due {
                        let batch = self.take(&mut queue);
                        self.leave(&queue);
                        self.telemetry
                            .queue_depth(self.places.len.load(Ordering::Relaxed));
                        return Work::Batch(batch);
                    }
                    // Lingering for a fuller batch: sleep until due or the next arrival.
                    Some(due - now)
                } else if closed {
                    return Work::Closed;
                } else if may_poll && Instant::now() < window_end {
                    break;
                } else {
                    None
                };
                claim = None;
                // The sleeper's side of `wake`.
                self.sleepers.fetch_add(1, Ordering::SeqCst);
                fence(Ordering::SeqCst);
                if self.received(&mut queue) || exec.has_queued() {
                    self.sleepers.fetch_sub(1, Ordering::Relaxed);
                    continue;
                }
                queue = match timeout {
                    Some(timeout) => {
                        self.arrived
                            .wait_timeout(queue, timeout)
                            .unwrap_or_else(|e| e.into_inner())
                            .0
                    }
                    None => self.arrived.wait(queue).unwrap_or_else(|e| e.into_inner()),
                };
                exec.woke();
                self.sleepers.fetch_sub(1, Ordering::Relaxed);
                purged = false;
            }
            drop(queue);
            drop(claim);
        }
    }

    /// Whether a caller has sent a request not yet in the queue (it is moved there).
    fn received(&self, queue: &mut Queue<M>) -> bool {
        match queue.intake.try_recv() {
            Ok(request) => {
                queue.push(request);
                true
            }
            Err(_) => false,
        }
    }

    /// Removes the requests at the front whose callers have left.
    fn pop_cancelled(&self, queue: &mut Queue<M>) {
        let mut gone = 0;
        while let Some(front) = queue.requests.front() {
            if !front.ticket.reply.is_canceled() {
                break;
            }
            if let Some(request) = queue.requests.pop_front() {
                queue.removed(&request.ticket);
            }
            gone += 1;
        }
        self.cancelled(gone);
    }

    /// Removes every request whose caller has left. It looks at each queued request, so it
    /// runs only where the answer changes a decision: a full queue, a batch full early.
    fn drop_cancelled(&self, queue: &mut Queue<M>) {
        let before = queue.requests.len();
        let (mut rows, mut tokens) = (0, 0);
        queue.requests.retain(|r| {
            let keep = !r.ticket.reply.is_canceled();
            if keep {
                rows += r.ticket.rows;
                tokens += r.ticket.tokens();
            }
            keep
        });
        queue.rows = rows;
        queue.tokens = tokens;
        self.cancelled(before - queue.requests.len());
    }

    /// Takes the next batch: with a token function, grouped by length within the limits (see
    /// [`select`]); without, live requests from the front while they fit in `max_batch` rows.
    /// Always at least one when a live one is queued; requests whose callers have left are
    /// removed on the way.
    fn take(&self, queue: &mut Queue<M>) -> Vec<Request<M>> {
        if self.tokens.is_some() {
            return self.take_grouped(queue);
        }
        let mut batch = Vec::new();
        let mut rows = 0;
        let mut gone = 0;
        while let Some(next) = queue.requests.front() {
            let cancelled = next.ticket.reply.is_canceled();
            if !cancelled && !batch.is_empty() && rows + next.ticket.rows > self.max_batch {
                break;
            }
            let Some(next) = queue.requests.pop_front() else {
                break;
            };
            queue.removed(&next.ticket);
            if cancelled {
                gone += 1;
            } else {
                rows += next.ticket.rows;
                batch.push(next);
            }
        }
        self.release(batch.len());
        self.cancelled(gone);
        batch
    }

    /// [`take`](Self::take) with a token function: looks at the first [`select::SCAN`] queued
    /// requests, lets [`select::choose`] pick the batch, and puts the others back in order.
    fn take_grouped(&self, queue: &mut Queue<M>) -> Vec<Request<M>> {
        let n = queue.requests.len().min(select::SCAN);
        let mut window: Vec<Request<M>> = queue.requests.drain(..n).collect();
        for request in &window {
            queue.removed(&request.ticket);
        }
        let before = window.len();
        window.retain(|r| !r.ticket.reply.is_canceled());
        let gone = before - window.len();
        let candidates: Vec<(usize, usize)> = window
            .iter()
            .map(|r| (r.ticket.rows, r.ticket.len))
            .collect();
        let limits = Limits {
            max_rows: self.max_batch,
            max_tokens: self.max_batch_tokens.unwrap_or(usize::MAX),
        };
        let mut chosen = select::choose(&candidates, limits).into_iter().peekable();
        let mut batch = Vec::new();
        let mut rest = Vec::with_capacity(window.len());
        for (i, request) in window.into_iter().enumerate() {
            if chosen.next_if_eq(&i).is_some() {
                batch.push(request);
            } else {
                rest.push(request);
            }
        }
        for request in rest.into_iter().rev() {
            queue.rows += request.ticket.rows;
            queue.tokens += request.ticket.tokens();
            queue.requests.push_front(request);
        }
        self.release(batch.len());
        self.cancelled(gone);
        batch
    }

    /// Counts the answers, then sends them: a caller that has its answer sees it counted. One
    /// update of each shared counter per batch, not per request.
    fn answer(
        &self,
        telemetry: &StreamTelemetry<'_>,
        answers: Vec<(Ticket<M>, Result<M::Output>)>,
    ) {
        let now = Instant::now();
        let outcomes = || {
            answers.iter().map(move |(ticket, result)| {
                (
                    now.saturating_duration_since(ticket.enqueued),
                    result.is_ok(),
                )
            })
        };
        self.counters.answers(outcomes());
        telemetry.answered(outcomes());
        for (ticket, result) in answers {
            // The caller may have gone meanwhile: the result is discarded.
            let _ = ticket.reply.send(result);
        }
    }

    /// Runs one (non-empty) batch on this stream thread and answers its requests.
    fn run(&self, exec: &Executor<'_, M>, telemetry: &StreamTelemetry<'_>, batch: Vec<Request<M>>) {
        let now = Instant::now();
        let rows: usize = batch.iter().map(|r| r.ticket.rows).sum();
        let longest = batch.iter().map(|r| r.ticket.len).max().unwrap_or(0);
        let shape = BatchShape {
            requests: batch.len(),
            rows,
            tokens: select::cost(rows, longest),
            unpadded: batch.iter().map(|r| r.ticket.tokens()).sum(),
        };
        self.counters.batch(shape);
        let scope = telemetry.batch(shape);
        let (inputs, tickets): (Vec<M::Input>, Vec<Ticket<M>>) = batch
            .into_iter()
            .map(|mut r| {
                let waited = now.saturating_duration_since(r.ticket.enqueued);
                telemetry.taken(std::mem::take(&mut r.ticket.queued), waited);
                (r.input, r.ticket)
            })
            .unzip();
        self.run_batch(exec, telemetry, shape, inputs, tickets);
        telemetry.batch_done(scope);
    }

    fn run_batch(
        &self,
        exec: &Executor<'_, M>,
        telemetry: &StreamTelemetry<'_>,
        shape: BatchShape,
        mut inputs: Vec<M::Input>,
        tickets: Vec<Ticket<M>>,
    ) {
        if tickets.len() == 1 {
            if let (Some(input), Some(ticket)) = (inputs.pop(), tickets.into_iter().next()) {
                let result = telemetry.run(shape, || exec.forward(input));
                self.answer(telemetry, vec![(ticket, result)]);
            }
            return;
        }
        let sizes: Vec<usize> = tickets.iter().map(|t| t.rows).collect();
        // Copies to rerun one by one if the batch as a whole fails. The input's `Clone` is the
        // caller's code: a panic there fails this batch's requests, not the serve loop.
        let copies = match panic::catch_unwind(AssertUnwindSafe(|| inputs.clone())) {
            Ok(copies) => copies,
            Err(payload) => {
                let why = panic_message(payload.as_ref());
                let failed = tickets
                    .into_iter()
                    .map(|t| {
                        let e = Error::Panicked(format!("cloning a batch's inputs: {why}"));
                        (t, Err(e))
                    })
                    .collect();
                self.answer(telemetry, failed);
                return;
            }
        };
        let n = tickets.len();
        // `exec.forward` catches the model's panics; this catches those of `Batch` code.
        let parts = panic::catch_unwind(AssertUnwindSafe(|| {
            telemetry
                .form(shape, || M::Input::concat(inputs, &Hint::Dim(0)))
                .and_then(|stacked| {
                    telemetry.run(shape, || {
                        exec.forward(stacked)
                            .and_then(|out| out.split(&Hint::Dim(0), &sizes))
                    })
                })
                .and_then(|parts| {
                    if parts.len() == n {
                        Ok(parts)
                    } else {
                        Err(Error::Concat(format!(
                            "the output split into {} parts for {n} requests",
                            parts.len(),
                        )))
                    }
                })
        }))
        .unwrap_or_else(|payload| Err(Error::Panicked(panic_message(payload.as_ref()))));
        match parts {
            Ok(parts) => self.answer(
                telemetry,
                tickets.into_iter().zip(parts.into_iter().map(Ok)).collect(),
            ),
            // One bad request must not fail its neighbours: run each alone.
            Err(_) => {
                for (ticket, input) in tickets.into_iter().zip(copies) {
                    if ticket.reply.is_canceled() {
                        // Its caller left while the batch ran: counted as cancelled (its place
                        // was freed when it was taken), so that accepted = completed + failed +
                        // cancelled (found by benches/soak.rs).
                        self.counters.cancelled.fetch_add(1, Ordering::Relaxed);
                        self.telemetry.cancelled(1);
                        continue;
                    }
                    let one = BatchShape {
                        requests: 1,
                        rows: ticket.rows,
                        tokens: ticket.tokens(),
                        unpadded: ticket.tokens(),
                    };
                    let result = telemetry.run(one, || exec.forward(input));
                    self.answer(telemetry, vec![(ticket, result)]);
                }
            }
        }
    }
}

/// Configures a [`Batcher`]; see [`Batcher::builder`].
#[must_use = "a builder does nothing until .build() is called"]
pub struct BatcherBuilder<M: Module> {
    module: MultiStreamModule<M>,
    max_batch: usize,
    max_batch_tokens: Option<usize>,
    tokens: Option<TokenFn<M::Input>>,
    max_wait: Duration,
    capacity: usize,
    name: String,
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
    /// field of its spans (feature `tracing`) and [`BatcherStats::name`] (default
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

    /// Starts the batcher's serve loop on every stream of the module (no thread of its own).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a zero `max_batch`, `queue_capacity` or
    /// `max_batch_tokens`, or a `max_batch_tokens` without a `tokens` function;
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
            counters: Counters::new(self.max_batch),
            telemetry: Telemetry::new(&self.name, self.module.num_streams()),
            name: self.name,
            #[cfg(feature = "tower")]
            ready: service::ReadyWaiters::default(),
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

/// The right of one polling serve loop to reach for the queue's lock; released on drop. The
/// other polling loops keep polling meanwhile instead of piling onto the lock (and the callers
/// behind it); loops woken from sleep and callers take the lock without it.
struct Claim<'a>(&'a AtomicBool);

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// How many of `streams` serve loops may poll at once: all of up to 4, half of more. Idle
/// polling streams take CPU time from the callers on their CPUs; one that sleeps costs a
/// caller a wake-up when the polling ones are all busy. Measured (benches/batcher.rs, 64
/// callers, 16-core Xeon): half of 16 polling gave 1.42x the throughput of all 16 polling;
/// half of 2 gave 0.80x (the one left polling is busy running batches half the time).
fn max_polling(streams: usize) -> usize {
    streams.min(4).max(streams.div_ceil(2))
}

/// One of the `max_polling` places of polling serve loops; released on drop.
struct PollSlot<'a>(&'a AtomicUsize);

impl<'a> PollSlot<'a> {
    /// A place, if the window has not passed and one is free.
    fn enter<M: Module>(shared: &'a Shared<M>, window_end: Instant) -> Option<PollSlot<'a>> {
        if Instant::now() >= window_end {
            return None;
        }
        let polling = &shared.polling;
        polling
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < shared.max_polling).then_some(n + 1)
            })
            .ok()
            .map(|_| PollSlot(polling))
    }
}

impl Drop for PollSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Held by one serve loop; its drop counts the loop as ended.
struct LoopEnded<M>(Arc<Shared<M>>)
where
    M: Module,
    M::Input: Batch + Clone,
    M::Output: Batch;

impl<M> Drop for LoopEnded<M>
where
    M: Module,
    M::Input: Batch + Clone,
    M::Output: Batch,
{
    fn drop(&mut self) {
        // A loop that ends while the batcher is open died (a panic outside any model call).
        // When it was the last, nothing will take what is queued: fail it, and `infer`
        // refuses from now on (see the other side in `send`).
        let open = !self.0.closed.load(Ordering::Acquire);
        let left = self.0.activity.loop_gone(open);
        fence(Ordering::SeqCst);
        if open && left == 0 {
            self.0.fail_queued();
        }
        let mut loops = self.0.loops.lock().unwrap_or_else(|e| e.into_inner());
        *loops -= 1;
        drop(loops);
        self.0.loop_ended.notify_all();
    }
}
