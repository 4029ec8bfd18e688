//! [`corestream::Batcher`] under 64 concurrent callers of a cheap model, against the design it
//! replaced, in the same run.
//!
//! Each caller is a tokio task (multi-thread runtime, one worker per allowed CPU) that sends
//! one row of 16 `f32` at a time and awaits its answer, back to back, for a fixed time. The
//! model is row-wise `x * 2`; the batcher runs one stream per CPU of `CpuPool::all()`
//! (`Streams::Auto`, default spin), `max_batch` 32, `max_wait` zero, queue capacity 1024.
//!
//! Variants:
//!
//! - `stream`: today's [`Batcher`]: every stream thread takes its batches from the queue itself
//!   and runs them there;
//! - `feeder`: the previous design, kept only here as the baseline: one feeder thread per stream
//!   takes a batch from the same kind of queue, submits the stacked batch to its stream's
//!   [`Task`] and waits for it (`task.submit(stacked).wait()`), then answers the callers: one
//!   more cross-CPU hand-off per batch.
//!
//! The two alternate for several rounds (each round builds its batcher afresh and warms it up);
//! the report gives every round, then the best of each variant (highest requests/s; lowest
//! p50 and p99 over the rounds) and the ratios. Latency is measured by the caller, from just
//! before `infer` to the answer.
//!
//! A second comparison, `mixed` (module [`mixed`]), measures token-budget batching against
//! count-only batching on a mixed-length workload: one-row requests of 1 to 128 tokens
//! (uniform), a model whose cost is proportional to rows x the batch's padded length, the
//! same 64 callers and streams. Variants: `count` (`max_batch` 32, requests in arrival
//! order), `grouped` (the same plus a `tokens` function: batches grouped by length) and
//! `budget` (grouped, and `max_batch_tokens`, default 1024). It reports rows/s, p50/p99,
//! mean batch rows and the share of padded tokens that was padding.
//!
//! Run: `cargo bench --bench batcher` (`-- --quick` for a short smoke run; `-- --secs S
//! --rounds R` to choose; `-- --only feeder` or `-- --only mixed` for one comparison;
//! `-- --budget T` for the token budget).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corestream::ndarray::{Array, Array2};
use corestream::{Batcher, BoxError, CpuPool, Module, MultiStreamModule, Streams, Task};

/// Concurrent callers.
const CALLERS: usize = 64;
/// Row width.
const WIDTH: usize = 16;
const MAX_BATCH: usize = 32;
const CAPACITY: usize = 1024;

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Stream,
    Feeder,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Stream => "stream",
            Variant::Feeder => "feeder",
        }
    }
}

struct Sample {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
    mean_batch: f64,
}

/// The cheap row-wise model.
struct Double;

impl Module for Double {
    type Input = Array2<f32>;
    type Output = Array2<f32>;
    fn forward(&self, x: Array2<f32>) -> Result<Array2<f32>, BoxError> {
        Ok(x * 2.0)
    }
}

fn model() -> Double {
    Double
}

/// Runs `CALLERS` tasks calling `infer` back to back: `warmup`, then `secs` measured.
fn drive<F, Fut>(
    rt: &tokio::runtime::Runtime,
    infer: Arc<F>,
    warmup: Duration,
    measure: Duration,
) -> (usize, Vec<Duration>, Duration)
where
    F: Fn(Array2<f32>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = corestream::Result<Array2<f32>>> + Send,
{
    rt.block_on(async move {
        let start = Instant::now() + warmup;
        let end = start + measure;
        let mut handles = Vec::new();
        for caller in 0..CALLERS {
            let infer = Arc::clone(&infer);
            handles.push(tokio::spawn(async move {
                let x = Array::from_shape_fn((1, WIDTH), |(_, j)| (caller * WIDTH + j) as f32);
                let want = &x * 2.0;
                let mut latencies = Vec::with_capacity(1 << 16);
                loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        break;
                    }
                    let y = infer(x.clone()).await.expect("answer");
                    let t1 = Instant::now();
                    assert_eq!(y, want, "caller {caller} got another caller's row");
                    if t0 >= start {
                        latencies.push(t1 - t0);
                    }
                }
                latencies
            }));
        }
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.await.expect("caller"));
        }
        let n = all.len();
        (n, all, measure)
    })
}

fn sample(n: usize, mut latencies: Vec<Duration>, measure: Duration, mean_batch: f64) -> Sample {
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    Sample {
        per_sec: n as f64 / measure.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        mean_batch,
    }
}

fn round(
    rt: &tokio::runtime::Runtime,
    variant: Variant,
    warmup: Duration,
    measure: Duration,
) -> Sample {
    let pool = CpuPool::all().expect("CpuPool::all");
    match variant {
        Variant::Stream => {
            let msm = MultiStreamModule::builder(model())
                .pool(pool)
                .num_streams(Streams::Auto)
                .build()
                .expect("streams");
            let batcher = Arc::new(
                Batcher::builder(msm)
                    .max_batch(MAX_BATCH)
                    .queue_capacity(CAPACITY)
                    .build()
                    .expect("batcher"),
            );
            let b = Arc::clone(&batcher);
            let (n, lat, m) = drive(rt, Arc::new(move |x| b.infer(x)), warmup, measure);
            let s = batcher.stats();
            let requests: u64 = s
                .batch_sizes
                .iter()
                .enumerate()
                .map(|(i, k)| (i as u64 + 1) * k)
                .sum();
            sample(n, lat, m, requests as f64 / s.batches.max(1) as f64)
        }
        Variant::Feeder => {
            let n_streams = pool.len();
            let tasks = pool
                .split(n_streams)
                .expect("split")
                .into_iter()
                .map(|p| Task::new(model(), p).expect("task"))
                .collect();
            let batcher = Arc::new(feeder::Batcher::new(
                tasks,
                MAX_BATCH,
                Duration::ZERO,
                CAPACITY,
            ));
            let b = Arc::clone(&batcher);
            let (n, lat, m) = drive(rt, Arc::new(move |x| b.infer(x)), warmup, measure);
            let mean = batcher.mean_batch();
            sample(n, lat, m, mean)
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<f64>().ok())
    };
    let quick = args.iter().any(|a| a == "--quick");
    let secs = value("--secs").unwrap_or(if quick { 0.5 } else { 2.0 });
    let rounds = value("--rounds").unwrap_or(if quick { 2.0 } else { 5.0 }) as usize;
    let measure = Duration::from_secs_f64(secs);
    let warmup = Duration::from_millis(if quick { 100 } else { 300 });
    let cpus = CpuPool::all().expect("CpuPool::all").len();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cpus)
        .enable_all()
        .build()
        .expect("runtime");
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    if only.as_deref() != Some("feeder") {
        let budget = value("--budget").unwrap_or(1024.0) as usize;
        mixed::compare(&rt, rounds, warmup, measure, budget);
        if only.as_deref() == Some("mixed") {
            return;
        }
        println!();
    }
    println!(
        "batcher: {CALLERS} callers (tokio tasks, {cpus} workers), rows of {WIDTH} f32, x * 2, \
         {cpus} streams, max_batch {MAX_BATCH}, max_wait 0; {rounds} rounds of {secs} s"
    );
    println!("| round | variant | requests/s | p50 us | p99 us | mean batch |");
    println!("|---|---|---|---|---|---|");
    let mut results: Vec<(Variant, Sample)> = Vec::new();
    for r in 0..rounds {
        // Alternate which goes first, so that neither always runs on a warmer machine.
        let order = if r % 2 == 0 {
            [Variant::Feeder, Variant::Stream]
        } else {
            [Variant::Stream, Variant::Feeder]
        };
        for v in order {
            let s = round(&rt, v, warmup, measure);
            println!(
                "| {} | {} | {:.0} | {:.1} | {:.1} | {:.2} |",
                r + 1,
                v.name(),
                s.per_sec,
                s.p50.as_secs_f64() * 1e6,
                s.p99.as_secs_f64() * 1e6,
                s.mean_batch
            );
            results.push((v, s));
        }
    }
    let best = |v: Variant| {
        let of = || results.iter().filter(move |(w, _)| *w == v).map(|(_, s)| s);
        (
            of().map(|s| s.per_sec).fold(0.0, f64::max),
            of().map(|s| s.p50).min().unwrap(),
            of().map(|s| s.p99).min().unwrap(),
        )
    };
    let (sr, s50, s99) = best(Variant::Stream);
    let (fr, f50, f99) = best(Variant::Feeder);
    println!();
    println!("| best of {rounds} | requests/s | p50 us | p99 us |");
    println!("|---|---|---|---|");
    for (name, r, p50, p99) in [
        ("feeder (before)", fr, f50, f99),
        ("stream (now)", sr, s50, s99),
    ] {
        println!(
            "| {name} | {r:.0} | {:.1} | {:.1} |",
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6
        );
    }
    println!(
        "\nstream / feeder: throughput {:.2}x, p50 {:.2}x, p99 {:.2}x (latency: lower is better)",
        sr / fr,
        s50.as_secs_f64() / f50.as_secs_f64(),
        s99.as_secs_f64() / f99.as_secs_f64()
    );
}

/// Token-budget vs count-only batching on mixed lengths (see the file's docs).
mod mixed {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use corestream::ndarray::{array, Array2};
    use corestream::{Batcher, BoxError, CpuPool, Module, MultiStreamModule, Streams};

    use super::{CALLERS, CAPACITY, MAX_BATCH};

    /// Longest request, in tokens.
    const MAX_LEN: usize = 128;
    /// Multiply-adds per padded token: sets the model's cost per token.
    const WORK_PER_TOKEN: usize = 64;

    #[derive(Clone, Copy, PartialEq)]
    enum Variant {
        Count,
        Grouped,
        Budget,
    }

    impl Variant {
        fn name(self) -> &'static str {
            match self {
                Variant::Count => "count",
                Variant::Grouped => "grouped",
                Variant::Budget => "budget",
            }
        }
    }

    /// Rows are `[caller, length]`; costs rows x the batch's longest length in arithmetic (as
    /// a padded encoder does), counts padded and real tokens, answers x * 2.
    #[derive(Default)]
    struct Padded {
        padded: AtomicU64,
        real: AtomicU64,
    }

    impl Module for Padded {
        type Input = Array2<f32>;
        type Output = Array2<f32>;
        fn forward(&self, x: Array2<f32>) -> Result<Array2<f32>, BoxError> {
            let lens: Vec<usize> = x.column(1).iter().map(|&l| l as usize).collect();
            let longest = lens.iter().copied().max().unwrap_or(0);
            let mut acc = 0.0f32;
            for r in 0..x.nrows() {
                let v = x[[r, 0]];
                for t in 0..longest * WORK_PER_TOKEN {
                    acc = std::hint::black_box(acc.mul_add(0.999, v + t as f32));
                }
            }
            std::hint::black_box(acc);
            self.padded
                .fetch_add((x.nrows() * longest) as u64, Ordering::Relaxed);
            self.real
                .fetch_add(lens.iter().sum::<usize>() as u64, Ordering::Relaxed);
            Ok(x * 2.0)
        }
    }

    struct Sample {
        rows_per_sec: f64,
        p50: Duration,
        p99: Duration,
        mean_batch: f64,
        padding: f64,
    }

    fn round(
        rt: &tokio::runtime::Runtime,
        variant: Variant,
        warmup: Duration,
        measure: Duration,
        budget: usize,
    ) -> Sample {
        let model = Arc::new(Padded::default());
        let msm = MultiStreamModule::builder(Arc::clone(&model))
            .pool(CpuPool::all().expect("CpuPool::all"))
            .num_streams(Streams::Auto)
            .build()
            .expect("streams");
        let mut builder = Batcher::builder(msm)
            .name(variant.name())
            .max_batch(MAX_BATCH)
            .queue_capacity(CAPACITY);
        if variant != Variant::Count {
            builder = builder
                .tokens(|x: &Array2<f32>| x.column(1).iter().fold(0, |m, &l| m.max(l as usize)));
        }
        if variant == Variant::Budget {
            builder = builder.max_batch_tokens(budget);
        }
        let batcher = Arc::new(builder.build().expect("batcher"));
        let (n, mut latencies) = rt.block_on({
            let batcher = Arc::clone(&batcher);
            async move {
                let start = Instant::now() + warmup;
                let end = start + measure;
                let handles: Vec<_> = (0..CALLERS)
                    .map(|caller| {
                        let batcher = Arc::clone(&batcher);
                        tokio::spawn(async move {
                            // A small LCG per caller: lengths uniform in 1..=MAX_LEN.
                            let mut seed = caller as u64 * 0x9E37_79B9_7F4A_7C15 + 1;
                            let mut latencies = Vec::with_capacity(1 << 14);
                            loop {
                                seed = seed
                                    .wrapping_mul(6_364_136_223_846_793_005)
                                    .wrapping_add(1_442_695_040_888_963_407);
                                let len = 1 + (seed >> 33) as usize % MAX_LEN;
                                let x = array![[caller as f32, len as f32]];
                                let t0 = Instant::now();
                                if t0 >= end {
                                    break;
                                }
                                let y = batcher.infer(x.clone()).await.expect("answer");
                                let t1 = Instant::now();
                                assert_eq!(y, x * 2.0, "caller {caller} got another's row");
                                if t0 >= start {
                                    latencies.push(t1 - t0);
                                }
                            }
                            latencies
                        })
                    })
                    .collect();
                let mut all = Vec::new();
                for h in handles {
                    all.extend(h.await.expect("caller"));
                }
                (all.len(), all)
            }
        });
        latencies.sort_unstable();
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
        let stats = batcher.stats();
        let padded = model.padded.load(Ordering::Relaxed) as f64;
        let real = model.real.load(Ordering::Relaxed) as f64;
        Sample {
            rows_per_sec: n as f64 / measure.as_secs_f64(),
            p50: at(0.50),
            p99: at(0.99),
            mean_batch: stats.batch_rows as f64 / stats.batches.max(1) as f64,
            padding: if padded > 0.0 {
                1.0 - real / padded
            } else {
                0.0
            },
        }
    }

    /// Alternates the variants for `rounds` rounds; prints each round, the best of each and
    /// the ratios to `count`.
    pub fn compare(
        rt: &tokio::runtime::Runtime,
        rounds: usize,
        warmup: Duration,
        measure: Duration,
        budget: usize,
    ) {
        let cpus = CpuPool::all().expect("CpuPool::all").len();
        println!(
            "mixed lengths: {CALLERS} callers, one-row requests of 1..={MAX_LEN} tokens \
             (uniform), cost rows x padded length ({WORK_PER_TOKEN} mul-adds per token), \
             {cpus} streams, max_batch {MAX_BATCH}, budget {budget} tokens; {rounds} rounds of \
             {} s",
            measure.as_secs_f64()
        );
        println!("| round | variant | rows/s | p50 us | p99 us | mean batch rows | padding |");
        println!("|---|---|---|---|---|---|---|");
        let variants = [Variant::Count, Variant::Grouped, Variant::Budget];
        let mut results: Vec<(Variant, Sample)> = Vec::new();
        for r in 0..rounds {
            let mut order = variants;
            order.rotate_left(r % variants.len());
            for v in order {
                let s = round(rt, v, warmup, measure, budget);
                println!(
                    "| {} | {} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1}% |",
                    r + 1,
                    v.name(),
                    s.rows_per_sec,
                    s.p50.as_secs_f64() * 1e6,
                    s.p99.as_secs_f64() * 1e6,
                    s.mean_batch,
                    s.padding * 100.0
                );
                results.push((v, s));
            }
        }
        let best = |v: Variant| {
            let of = || results.iter().filter(move |(w, _)| *w == v).map(|(_, s)| s);
            (
                of().map(|s| s.rows_per_sec).fold(0.0, f64::max),
                of().map(|s| s.p50).min().unwrap(),
                of().map(|s| s.p99).min().unwrap(),
            )
        };
        let (c_rate, c50, c99) = best(Variant::Count);
        println!();
        println!(
            "| best of {rounds} | rows/s | p50 us | p99 us | rows/s vs count | p99 vs count |"
        );
        println!("|---|---|---|---|---|---|");
        for v in variants {
            let (rate, p50, p99) = best(v);
            println!(
                "| {} | {rate:.0} | {:.0} | {:.0} | {:.2}x | {:.2}x |",
                v.name(),
                p50.as_secs_f64() * 1e6,
                p99.as_secs_f64() * 1e6,
                rate / c_rate,
                p99.as_secs_f64() / c99.as_secs_f64()
            );
        }
        let _ = c50;
    }
}

/// The batcher as it was before the streams took their batches themselves: a copy of its
/// scheduling (queue, cancellation, batching, failure isolation, counters), with one feeder
/// thread per stream in between. Only the bench's baseline.
mod feeder {
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Condvar, Mutex, MutexGuard};
    use std::thread::{self, JoinHandle};
    use std::time::{Duration, Instant};

    use corestream::{Batch, Error, Hint, Module, Result, Task, LATENCY_BUCKETS};
    use futures::channel::oneshot;
    use futures::FutureExt;

    struct Request<M: Module> {
        input: M::Input,
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
        accepted: AtomicU64,
        rejected: AtomicU64,
        cancelled: AtomicU64,
        completed: AtomicU64,
        failed: AtomicU64,
        batches: AtomicU64,
        batch_sizes: Vec<AtomicU64>,
        latency_buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
        latency_micros: AtomicU64,
    }

    pub struct Batcher<M: Module>
    where
        M::Input: Batch + Clone,
        M::Output: Batch,
    {
        shared: Arc<Shared<M>>,
        feeders: Vec<JoinHandle<()>>,
    }

    impl<M: Module> Batcher<M>
    where
        M::Input: Batch + Clone,
        M::Output: Batch,
    {
        pub fn new(
            tasks: Vec<Task<M>>,
            max_batch: usize,
            max_wait: Duration,
            capacity: usize,
        ) -> Self {
            let shared = Arc::new(Shared {
                queue: Mutex::new(Queue {
                    requests: VecDeque::with_capacity(capacity.min(4096)),
                    rows: 0,
                    closed: false,
                }),
                arrived: Condvar::new(),
                max_batch,
                max_wait,
                capacity,
                accepted: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                cancelled: AtomicU64::new(0),
                completed: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                batches: AtomicU64::new(0),
                batch_sizes: (0..max_batch).map(|_| AtomicU64::new(0)).collect(),
                latency_buckets: Default::default(),
                latency_micros: AtomicU64::new(0),
            });
            let feeders = tasks
                .into_iter()
                .enumerate()
                .map(|(i, task)| {
                    let feeder = Arc::clone(&shared);
                    thread::Builder::new()
                        .name(format!("bench-feeder{i}"))
                        .spawn(move || {
                            while let Some(batch) = feeder.next_batch() {
                                feeder.run(&task, batch);
                            }
                        })
                        .expect("feeder thread")
                })
                .collect();
            Batcher { shared, feeders }
        }

        pub fn infer(
            &self,
            input: M::Input,
        ) -> impl std::future::Future<Output = Result<M::Output>> {
            let rows = match input.batch_size(&Hint::Dim(0)) {
                Ok(Some(rows)) if rows > 0 => rows,
                _ => return futures::future::ready(Err(Error::EmptyBatch)).left_future(),
            };
            let (reply, rx) = oneshot::channel();
            {
                let mut queue = self.shared.lock();
                if queue.requests.len() >= self.shared.capacity {
                    self.shared.rejected.fetch_add(1, Ordering::Relaxed);
                    return futures::future::ready(Err(Error::Overloaded {
                        capacity: self.shared.capacity,
                    }))
                    .left_future();
                }
                queue.rows += rows;
                queue.requests.push_back(Request {
                    input,
                    rows,
                    reply,
                    enqueued: Instant::now(),
                });
            }
            self.shared.accepted.fetch_add(1, Ordering::Relaxed);
            self.shared.arrived.notify_one();
            rx.map(|r| r.unwrap_or(Err(Error::Shutdown))).right_future()
        }

        pub fn mean_batch(&self) -> f64 {
            let s = &self.shared;
            let requests: u64 = s
                .batch_sizes
                .iter()
                .enumerate()
                .map(|(i, k)| (i as u64 + 1) * k.load(Ordering::Relaxed))
                .sum();
            requests as f64 / s.batches.load(Ordering::Relaxed).max(1) as f64
        }
    }

    impl<M: Module> Drop for Batcher<M>
    where
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

    impl<M: Module> Shared<M>
    where
        M::Input: Batch + Clone,
        M::Output: Batch,
    {
        fn lock(&self) -> MutexGuard<'_, Queue<M>> {
            self.queue.lock().unwrap_or_else(|e| e.into_inner())
        }

        fn next_batch(&self) -> Option<Vec<Request<M>>> {
            let mut queue = self.lock();
            loop {
                self.drop_cancelled(&mut queue);
                if let Some(oldest) = queue.requests.front() {
                    let due = oldest.enqueued + self.max_wait;
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
                let keep = !r.reply.is_canceled();
                if keep {
                    rows += r.rows;
                }
                keep
            });
            queue.rows = rows;
            let gone = (before - queue.requests.len()) as u64;
            if gone > 0 {
                self.cancelled.fetch_add(gone, Ordering::Relaxed);
            }
        }

        fn take(&self, queue: &mut Queue<M>) -> Vec<Request<M>> {
            let mut batch = Vec::new();
            let mut rows = 0;
            while let Some(next) = queue.requests.front() {
                if !batch.is_empty() && rows + next.rows > self.max_batch {
                    break;
                }
                rows += next.rows;
                queue.rows -= next.rows;
                batch.extend(queue.requests.pop_front());
            }
            batch
        }

        fn answer(
            &self,
            reply: oneshot::Sender<Result<M::Output>>,
            enqueued: Instant,
            result: Result<M::Output>,
        ) {
            let counter = if result.is_ok() {
                &self.completed
            } else {
                &self.failed
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let latency = enqueued.elapsed();
            let secs = latency.as_secs_f64();
            let bucket = LATENCY_BUCKETS
                .iter()
                .position(|&le| secs <= le)
                .unwrap_or(LATENCY_BUCKETS.len());
            self.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
            self.latency_micros
                .fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
            let _ = reply.send(result);
        }

        fn run(&self, task: &Task<M>, batch: Vec<Request<M>>) {
            self.batches.fetch_add(1, Ordering::Relaxed);
            let slot = (batch.len() - 1).min(self.batch_sizes.len() - 1);
            self.batch_sizes[slot].fetch_add(1, Ordering::Relaxed);
            if batch.len() == 1 {
                for r in batch {
                    self.answer(r.reply, r.enqueued, task.submit(r.input).wait());
                }
                return;
            }
            let sizes: Vec<usize> = batch.iter().map(|r| r.rows).collect();
            let mut inputs = Vec::with_capacity(batch.len());
            let mut tickets = Vec::with_capacity(batch.len());
            for r in batch {
                inputs.push(r.input);
                tickets.push((r.reply, r.enqueued));
            }
            let copies = inputs.clone();
            let parts = M::Input::concat(inputs, &Hint::Dim(0))
                .and_then(|stacked| task.submit(stacked).wait())
                .and_then(|out| out.split(&Hint::Dim(0), &sizes))
                .and_then(|parts| {
                    if parts.len() == tickets.len() {
                        Ok(parts)
                    } else {
                        Err(Error::Concat("part count".into()))
                    }
                });
            match parts {
                Ok(parts) => {
                    for ((reply, enqueued), part) in tickets.into_iter().zip(parts) {
                        self.answer(reply, enqueued, Ok(part));
                    }
                }
                Err(_) => {
                    for ((reply, enqueued), input) in tickets.into_iter().zip(copies) {
                        if reply.is_canceled() {
                            continue;
                        }
                        let result = task.submit(input).wait();
                        self.answer(reply, enqueued, result);
                    }
                }
            }
        }
    }
}
