//! [`Batcher`]: dynamic batching of single requests onto a multi-stream module's streams.
//!
//! Requests wait in one bounded queue. Each stream has a feeder: as soon as its stream is idle
//! it takes the queued requests (up to `max_batch` rows), stacks them along dim 0 with
//! [`Batch::concat`], runs them as one call, and splits the output back to the callers. With
//! the default `max_wait` of zero no stream idles while requests wait (work-conserving), so
//! batches form only under load, when they pay off; a positive `max_wait` lets an idle stream
//! linger up to that long after the oldest request arrived, to gather a fuller batch at low
//! load.
//!
//! Invariants:
//! - the queue never holds more than `queue_capacity` requests: a full queue answers
//!   [`Error::Overloaded`] at once;
//! - every accepted request is answered exactly once, or its caller has gone;
//! - a request whose future was dropped before its batch formed is removed, not run;
//! - one bad request fails alone: a batch that cannot be stacked, or whose call fails, is rerun
//!   one request at a time;
//! - dropping the batcher stops intake, drains the queue, then joins the feeders.

use std::collections::VecDeque;
use std::fmt;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use futures::channel::oneshot;

use crate::batch::{Batch, Hint};
use crate::error::{Error, Result};
use crate::future::TaskFuture;
use crate::module::{Infer, Module};
use crate::multi_stream::MultiStreamModule;
use crate::task::Task;

/// Upper bounds (seconds) of the latency histogram's buckets; a last `+Inf` bucket is implied.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Serves single requests by batching them dynamically onto the streams of a
/// [`MultiStreamModule`].
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
    feeders: Vec<JoinHandle<()>>,
    module: Arc<MultiStreamModule<M>>,
}

struct Request<M: Module> {
    input: M::Input,
    ticket: Ticket<M>,
}

/// Where and when a request's answer goes.
struct Ticket<M: Module> {
    rows: usize,
    reply: oneshot::Sender<Result<M::Output>>,
    enqueued: Instant,
}

struct Queue<M: Module> {
    requests: VecDeque<Request<M>>,
    rows: usize,
    closed: bool,
}

struct Shared<M: Module> {
    queue: Mutex<Queue<M>>,
    arrived: Condvar,
    max_batch: usize,
    max_wait: Duration,
    capacity: usize,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    rejected: AtomicU64,
    cancelled: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    batches: AtomicU64,
    /// `batch_sizes[i]`: batches of `i + 1` requests (the last slot counts larger ones too).
    batch_sizes: Vec<AtomicU64>,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_micros: AtomicU64,
}

/// A snapshot of a batcher's counters (see [`Batcher::stats`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BatcherStats {
    /// Requests waiting now.
    pub queue_depth: usize,
    /// Requests accepted into the queue.
    pub accepted: u64,
    /// Requests refused with [`Error::Overloaded`].
    pub rejected: u64,
    /// Requests whose caller left before their batch formed.
    pub cancelled: u64,
    /// Requests answered with an output.
    pub completed: u64,
    /// Requests answered with an error.
    pub failed: u64,
    /// Batches run.
    pub batches: u64,
    /// `batch_sizes[i]` is the number of batches of `i + 1` requests.
    pub batch_sizes: Vec<u64>,
    /// Request latency (queueing plus inference) histogram: counts per bucket of
    /// [`LATENCY_BUCKETS`], then the `+Inf` bucket; not cumulative.
    pub latency_buckets: Vec<u64>,
    /// Sum of all answered requests' latencies, in seconds.
    pub latency_sum_seconds: f64,
}

impl BatcherStats {
    /// The counters in Prometheus' text exposition format, names prefixed by `namespace`.
    pub fn prometheus(&self, namespace: &str) -> String {
        let mut out = String::new();
        let ns = namespace;
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {ns}_{name} {help}\n# TYPE {ns}_{name} counter");
            let _ = writeln!(out, "{ns}_{name} {v}");
        };
        let _ = writeln!(
            out,
            "# HELP {ns}_queue_depth Requests waiting for a stream.\n# TYPE {ns}_queue_depth gauge\n{ns}_queue_depth {}",
            self.queue_depth
        );
        counter(
            &mut out,
            "requests_accepted_total",
            "Requests queued.",
            self.accepted,
        );
        counter(
            &mut out,
            "requests_rejected_total",
            "Requests refused because the queue was full.",
            self.rejected,
        );
        counter(
            &mut out,
            "requests_cancelled_total",
            "Requests whose caller left before they ran.",
            self.cancelled,
        );
        counter(
            &mut out,
            "requests_completed_total",
            "Requests answered with an output.",
            self.completed,
        );
        counter(
            &mut out,
            "requests_failed_total",
            "Requests answered with an error.",
            self.failed,
        );
        counter(&mut out, "batches_total", "Batches run.", self.batches);
        let _ = writeln!(
            out,
            "# HELP {ns}_batch_size Requests per batch.\n# TYPE {ns}_batch_size histogram"
        );
        let mut cumulative = 0;
        let mut sum = 0;
        for (i, n) in self.batch_sizes.iter().enumerate() {
            cumulative += n;
            sum += n * (i as u64 + 1);
            let _ = writeln!(
                out,
                "{ns}_batch_size_bucket{{le=\"{}\"}} {cumulative}",
                i + 1
            );
        }
        let _ = writeln!(out, "{ns}_batch_size_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(
            out,
            "{ns}_batch_size_sum {sum}\n{ns}_batch_size_count {cumulative}"
        );
        let _ = writeln!(
            out,
            "# HELP {ns}_request_seconds Request latency, queueing included.\n# TYPE {ns}_request_seconds histogram"
        );
        let mut cumulative = 0;
        for (i, n) in self.latency_buckets.iter().enumerate() {
            cumulative += n;
            match LATENCY_BUCKETS.get(i) {
                Some(le) => {
                    let _ = writeln!(
                        out,
                        "{ns}_request_seconds_bucket{{le=\"{le}\"}} {cumulative}"
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "{ns}_request_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "{ns}_request_seconds_sum {}\n{ns}_request_seconds_count {cumulative}",
            self.latency_sum_seconds
        );
        out
    }
}

impl<M> fmt::Debug for Batcher<M>
where
    M: Module,
    M::Input: Batch + Clone,
    M::Output: Batch,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batcher")
            .field("streams", &self.feeders.len())
            .field("max_batch", &self.shared.max_batch)
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
            max_wait: Duration::ZERO,
            capacity: 1024,
        }
    }

    /// Queues one request (one or more rows along dim 0) and returns the future of its own
    /// output rows. Never blocks.
    ///
    /// The future resolves to [`Error::Overloaded`] at once when the queue is full,
    /// [`Error::Shutdown`] after shutdown, [`Error::EmptyBatch`] or a [`Batch`] error for an
    /// input without rows along dim 0, or the model's error for this request.
    pub fn infer(&self, input: M::Input) -> TaskFuture<M::Output> {
        let rows = match input.batch_size(&Hint::Dim(0)) {
            Ok(Some(0)) => return TaskFuture::failed(Error::EmptyBatch),
            Ok(Some(rows)) => rows,
            Ok(None) => return TaskFuture::failed(Error::NoSplitDim { hint: Hint::Dim(0) }),
            Err(e) => return TaskFuture::failed(e),
        };
        let (reply, rx) = oneshot::channel();
        let c = &self.shared.counters;
        {
            let mut queue = self.shared.lock();
            if queue.closed {
                return TaskFuture::failed(Error::Shutdown);
            }
            if queue.requests.len() >= self.shared.capacity {
                c.rejected.fetch_add(1, Ordering::Relaxed);
                return TaskFuture::failed(Error::Overloaded {
                    capacity: self.shared.capacity,
                });
            }
            queue.rows += rows;
            queue.requests.push_back(Request {
                input,
                ticket: Ticket {
                    rows,
                    reply,
                    enqueued: Instant::now(),
                },
            });
        }
        c.accepted.fetch_add(1, Ordering::Relaxed);
        self.shared.arrived.notify_one();
        TaskFuture::pending(rx, None)
    }

    /// The multi-stream module whose streams run the batches.
    pub fn module(&self) -> &MultiStreamModule<M> {
        &self.module
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> BatcherStats {
        let c = &self.shared.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        BatcherStats {
            queue_depth: self.shared.lock().requests.len(),
            accepted: load(&c.accepted),
            rejected: load(&c.rejected),
            cancelled: load(&c.cancelled),
            completed: load(&c.completed),
            failed: load(&c.failed),
            batches: load(&c.batches),
            batch_sizes: c.batch_sizes.iter().map(load).collect(),
            latency_buckets: c.latency_buckets.iter().map(load).collect(),
            latency_sum_seconds: load(&c.latency_micros) as f64 / 1e6,
        }
    }
}

impl<M> Drop for Batcher<M>
where
    M: Module,
    M::Input: Batch + Clone,
    M::Output: Batch,
{
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.arrived.notify_all();
        for feeder in self.feeders.drain(..) {
            let _ = feeder.join();
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
        // A feeder never panics while holding the lock (model code runs outside it), so a
        // poisoned lock still guards a consistent queue.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks until a batch is due, and takes it; `None` once closed and drained.
    fn next_batch(&self) -> Option<Vec<Request<M>>> {
        let mut queue = self.lock();
        loop {
            self.drop_cancelled(&mut queue);
            if let Some(oldest) = queue.requests.front() {
                let due = oldest.ticket.enqueued + self.max_wait;
                let now = Instant::now();
                if queue.rows >= self.max_batch || queue.closed || now >= due {
                    return Some(self.take(&mut queue));
                }
                queue = self
                    .arrived
                    .wait_timeout(queue, due - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            } else if queue.closed {
                return None;
            } else {
                queue = self.arrived.wait(queue).unwrap_or_else(|e| e.into_inner());
            }
        }
    }

    fn drop_cancelled(&self, queue: &mut Queue<M>) {
        let before = queue.requests.len();
        let mut rows = 0;
        queue.requests.retain(|r| {
            let keep = !r.ticket.reply.is_canceled();
            if keep {
                rows += r.ticket.rows;
            }
            keep
        });
        queue.rows = rows;
        let gone = (before - queue.requests.len()) as u64;
        if gone > 0 {
            self.counters.cancelled.fetch_add(gone, Ordering::Relaxed);
        }
    }

    /// Takes requests from the front while they fit in `max_batch` rows (always at least one).
    fn take(&self, queue: &mut Queue<M>) -> Vec<Request<M>> {
        let mut batch = Vec::new();
        let mut rows = 0;
        while let Some(next) = queue.requests.front() {
            if !batch.is_empty() && rows + next.ticket.rows > self.max_batch {
                break;
            }
            rows += next.ticket.rows;
            queue.rows -= next.ticket.rows;
            batch.extend(queue.requests.pop_front());
        }
        batch
    }

    fn answer(&self, ticket: Ticket<M>, result: Result<M::Output>) {
        let c = &self.counters;
        let counter = if result.is_ok() {
            &c.completed
        } else {
            &c.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let latency = ticket.enqueued.elapsed();
        let secs = latency.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(LATENCY_BUCKETS.len());
        c.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        c.latency_micros
            .fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
        // The caller may have gone meanwhile: the result is discarded.
        let _ = ticket.reply.send(result);
    }

    /// Runs one batch on `task` and answers its requests.
    fn run(&self, task: &Task<M>, batch: Vec<Request<M>>) {
        let c = &self.counters;
        c.batches.fetch_add(1, Ordering::Relaxed);
        let slot = (batch.len() - 1).min(c.batch_sizes.len() - 1);
        c.batch_sizes[slot].fetch_add(1, Ordering::Relaxed);
        if batch.len() == 1 {
            for Request { input, ticket } in batch {
                self.answer(ticket, task.submit(input).wait());
            }
            return;
        }
        let sizes: Vec<usize> = batch.iter().map(|r| r.ticket.rows).collect();
        let (inputs, tickets): (Vec<M::Input>, Vec<Ticket<M>>) =
            batch.into_iter().map(|r| (r.input, r.ticket)).unzip();
        // Copies to rerun one by one if the batch as a whole fails.
        let copies = inputs.clone();
        let parts = M::Input::concat(inputs, &Hint::Dim(0))
            .and_then(|stacked| task.submit(stacked).wait())
            .and_then(|out| out.split(&Hint::Dim(0), &sizes))
            .and_then(|parts| {
                if parts.len() == tickets.len() {
                    Ok(parts)
                } else {
                    Err(Error::Concat(format!(
                        "the output split into {} parts for {} requests",
                        parts.len(),
                        tickets.len()
                    )))
                }
            });
        match parts {
            Ok(parts) => {
                for (ticket, part) in tickets.into_iter().zip(parts) {
                    self.answer(ticket, Ok(part));
                }
            }
            // One bad request must not fail its neighbours: run each alone.
            Err(_) => {
                for (ticket, input) in tickets.into_iter().zip(copies) {
                    if ticket.reply.is_canceled() {
                        continue;
                    }
                    let result = task.submit(input).wait();
                    self.answer(ticket, result);
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
    max_wait: Duration,
    capacity: usize,
}

impl<M: Module> fmt::Debug for BatcherBuilder<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatcherBuilder")
            .field("max_batch", &self.max_batch)
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

    /// Starts one feeder thread per stream.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a zero `max_batch` or `queue_capacity`, [`Error::Spawn`]
    /// when a feeder thread cannot start.
    pub fn build(self) -> Result<Batcher<M>> {
        if self.max_batch == 0 || self.capacity == 0 {
            return Err(Error::InvalidConfig(format!(
                "max_batch ({}) and queue_capacity ({}) must be at least 1",
                self.max_batch, self.capacity
            )));
        }
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                requests: VecDeque::with_capacity(self.capacity.min(4096)),
                rows: 0,
                closed: false,
            }),
            arrived: Condvar::new(),
            max_batch: self.max_batch,
            max_wait: self.max_wait,
            capacity: self.capacity,
            counters: Counters {
                batch_sizes: (0..self.max_batch).map(|_| AtomicU64::new(0)).collect(),
                ..Counters::default()
            },
        });
        let module = Arc::new(self.module);
        let mut feeders = Vec::new();
        for (i, task) in module.tasks().iter().enumerate() {
            let feeder = Arc::clone(&shared);
            let task = task.clone();
            let name = format!("corestream-b{i}");
            let spawned = thread::Builder::new().name(name.clone()).spawn(move || {
                while let Some(batch) = feeder.next_batch() {
                    feeder.run(&task, batch);
                }
            });
            match spawned {
                Ok(handle) => feeders.push(handle),
                Err(e) => {
                    shared.lock().closed = true;
                    shared.arrived.notify_all();
                    for f in feeders {
                        let _ = f.join();
                    }
                    return Err(Error::Spawn { name, source: e });
                }
            }
        }
        Ok(Batcher {
            shared,
            feeders,
            module,
        })
    }
}
