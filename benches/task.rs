//! Latency and throughput of one [`corestream::Task`] stream with a no-op model (`x + 1` on a
//! `u64`), against the usual alternatives.
//!
//! Groups:
//!
//! - `round_trip`: one job in flight at a time, side by side:
//!   - `direct`: calling the model on the bench thread (the floor);
//!   - `raw_handoff`: a plain `std::thread` fed by a `std::sync::mpsc` channel and answering
//!     through another one (the lower bound for any thread handoff);
//!   - `spawn_blocking`: `tokio::task::spawn_blocking(move || x + 1).await` on a multi-thread
//!     runtime with 1 worker (the naive baseline);
//!   - `await` / `wait`: `task.submit(x).await` in a tokio current-thread runtime, and
//!     `task.submit(x).wait()` on the bench thread, at the defaults (the stream and `wait` poll
//!     for `DEFAULT_SPIN` before parking);
//!   - `park_await` / `park_wait`: the same with `spin(Duration::ZERO)` (park at once);
//!   - `spin50us_await` / `spin50us_wait`: the same with `Task::builder(..).spin(50 us)`;
//!   - `spawn_blocking_unpinned`: as `spawn_blocking`, tokio's threads free to run on any CPU;
//!   - `spin50us_pollwait`: a spin-then-park wait prototyped in this file (the caller polls the
//!     `TaskFuture` for 50 us before parking) against a spinning stream; with 2+ CPUs only.
//! - `pipelined`: 1000 jobs submitted back to back on one stream, then awaited (or waited) in
//!   order; criterion reports jobs/s (`Throughput::Elements(1000)`).
//! - `runtimes`: the async path under each executor users bring, one job in flight at the
//!   defaults: `<runtime>/await` (`task.submit(x).await`), `<runtime>/forward_await`
//!   (`msm.forward(x).await` on a 2-stream `MultiStreamModule` of the same model over both
//!   CPUs, 16 rows split 8 + 8) and `<runtime>/spawn_blocking` (that runtime's own way to run
//!   blocking work: `tokio::task::spawn_blocking`, `smol::unblock`, its threads pinned to the
//!   worker CPU on first use), for
//!   `tokio_ct` (current-thread runtime on the bench thread), `tokio_mt` (the loop spawned on a
//!   1-worker multi-thread runtime whose worker shares the bench thread's CPU), `smol`
//!   (`smol::block_on`). async-std, measured until December 2026, is discontinued
//!   (RUSTSEC-2025-0052) and no longer a dev-dependency; smol is its successor.
//!
//! Placement: with 2 or more CPUs (from `CpuPool::all()`), the bench thread is pinned to the
//! first CPU and every worker (the stream, the raw handoff thread, tokio's blocking pool) to
//! the last one, so every variant crosses the same pair of cores. With 1 CPU everything shares
//! it.
//!
//! Run: `cargo bench --bench task` (add `-- round_trip` or `-- pipelined` to run one group,
//! `-- --quick` for a fast smoke run); with `CORESTREAM_COTENANT=1` every group runs beside one
//! busy thread per CPU ([`corestream::Cotenant`]); `benches/cotenant.rs` puts both conditions
//! side by side.

use std::cell::Cell;
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use corestream::batch::Rows;
use corestream::{
    module_fn, CpuPool, Module, MultiStreamModule, PinGuard, Streams, Task, TaskFuture,
    DEFAULT_SPIN,
};
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};

mod support;
use support::Handoff;

/// Jobs in flight per iteration of the `pipelined` group.
const PIPELINE: u64 = 1000;

/// The idle spin of the `spin50us` variants.
const SPIN: Duration = Duration::from_micros(50);

/// Where the bench thread and the workers run.
struct Placement {
    /// The bench thread's CPU.
    caller: CpuPool,
    /// The workers' CPU.
    worker: CpuPool,
}

impl Placement {
    fn new() -> Placement {
        let all = CpuPool::all().expect("CpuPool::all");
        let cpus = all.cpus();
        let one = |cpu: usize| CpuPool::new([cpu]).expect("one-cpu pool");
        Placement {
            caller: one(cpus[0]),
            worker: one(cpus[cpus.len() - 1]),
        }
    }

    /// Pins the bench thread until the guard drops.
    fn pin_caller(&self) -> PinGuard {
        self.caller.pin_current().expect("pin the bench thread")
    }
}

fn plus_one(x: u64) -> Result<u64, corestream::BoxError> {
    Ok(x + 1)
}

type PlusOne = corestream::FnModule<fn(u64) -> Result<u64, corestream::BoxError>, u64, u64>;

fn model() -> PlusOne {
    module_fn(plus_one as fn(u64) -> Result<u64, corestream::BoxError>)
}

fn task(worker: &CpuPool, spin: Duration) -> Task<PlusOne> {
    Task::builder(model())
        .pool(worker.clone())
        .spin(spin)
        .build()
        .expect("start the stream")
}

/// Polls `fut` with a no-op waker for up to `spin`, then blocks in [`TaskFuture::wait`].
fn poll_wait<T>(mut fut: TaskFuture<T>, spin: Duration) -> corestream::Result<T> {
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let deadline = Instant::now() + spin;
    loop {
        if let Poll::Ready(out) = Pin::new(&mut fut).poll(&mut cx) {
            return out;
        }
        if Instant::now() >= deadline {
            return fut.wait();
        }
        std::hint::spin_loop();
    }
}

fn current_thread_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio current-thread runtime")
}

fn round_trip(c: &mut Criterion) {
    let place = Placement::new();
    let _pin = place.pin_caller();
    let mut group = c.benchmark_group("round_trip");

    let direct = model();
    group.bench_function("direct", |b| {
        b.iter(|| direct.forward(black_box(7)).expect("ok"))
    });

    {
        let raw = Handoff::new(&place.worker, false);
        group.bench_function("raw_handoff", |b| b.iter(|| raw.call(black_box(7))));
    }

    // tokio's blocking pool, with its threads pinned like the other workers, then left free
    // to run on any allowed CPU (the default a naive user gets).
    let all = CpuPool::all().expect("CpuPool::all");
    for (name, threads) in [
        ("spawn_blocking", &place.worker),
        ("spawn_blocking_unpinned", &all),
    ] {
        let cpus = threads.cpus().to_vec();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .on_thread_start(move || {
                let _ = corestream::affinity::set_current_cpus(&cpus);
            })
            .build()
            .expect("tokio multi-thread runtime");
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let x = black_box(7u64);
                tokio::task::spawn_blocking(move || x + 1)
                    .await
                    .expect("join")
            })
        });
    }

    let rt = current_thread_rt();
    for (label, spin) in [
        ("", DEFAULT_SPIN),
        ("park_", Duration::ZERO),
        ("spin50us_", SPIN),
    ] {
        let task = task(&place.worker, spin);
        group.bench_function(format!("{label}await"), |b| {
            b.to_async(&rt)
                .iter(|| async { task.submit(black_box(7)).await.expect("ok") })
        });
        group.bench_function(format!("{label}wait"), |b| {
            b.iter(|| task.submit(black_box(7)).wait().expect("ok"))
        });
    }
    // A prototype of a spinning `wait` (not corestream API): both sides poll instead of
    // parking. Spinning against a thread on the same CPU only burns its time slice, so this
    // runs only when the bench thread and the stream have a CPU each.
    if place.caller != place.worker {
        let task = task(&place.worker, SPIN);
        group.bench_function("spin50us_pollwait", |b| {
            b.iter(|| poll_wait(task.submit(black_box(7)), SPIN).expect("ok"))
        });
    }
    group.finish();
}

fn pipelined(c: &mut Criterion) {
    let place = Placement::new();
    let _pin = place.pin_caller();
    let rt = current_thread_rt();
    let mut group = c.benchmark_group("pipelined");
    group.throughput(Throughput::Elements(PIPELINE));

    let submit_all = |task: &Task<PlusOne>| -> Vec<TaskFuture<u64>> {
        (0..PIPELINE).map(|i| task.submit(black_box(i))).collect()
    };

    for (label, spin) in [
        ("default", DEFAULT_SPIN),
        ("park", Duration::ZERO),
        ("spin50us", SPIN),
    ] {
        let task = task(&place.worker, spin);
        group.bench_function(BenchmarkId::new("await", label), |b| {
            b.to_async(&rt).iter(|| async {
                let mut sum = 0;
                for fut in submit_all(&task) {
                    sum += fut.await.expect("ok");
                }
                sum
            })
        });
        group.bench_function(BenchmarkId::new("wait", label), |b| {
            b.iter(|| {
                submit_all(&task)
                    .into_iter()
                    .map(|fut| fut.wait().expect("ok"))
                    .sum::<u64>()
            })
        });
    }
    group.finish();
}

/// The worker CPU of the `runtimes` group, for [`on_worker_cpu`].
static WORKER_CPUS: OnceLock<Vec<usize>> = OnceLock::new();

thread_local! {
    static PINNED: Cell<bool> = const { Cell::new(false) };
}

/// Pins a runtime's blocking thread to the worker CPU the first time it runs a job.
fn on_worker_cpu() {
    PINNED.with(|pinned| {
        if !pinned.get() {
            let cpus = WORKER_CPUS.get().expect("worker CPUs set");
            corestream::affinity::set_current_cpus(cpus).expect("pin a blocking thread");
            pinned.set(true);
        }
    });
}

/// An executor of the `runtimes` group.
enum Runtime {
    TokioCt(tokio::runtime::Runtime),
    TokioMt(tokio::runtime::Runtime),
    Smol,
}

impl Runtime {
    fn name(&self) -> &'static str {
        match self {
            Runtime::TokioCt(_) => "tokio_ct",
            Runtime::TokioMt(_) => "tokio_mt",
            Runtime::Smol => "smol",
        }
    }

    /// Runs `fut` to completion the way an application on this runtime would: on the bench
    /// thread, or (multi-thread tokio) spawned onto a worker.
    fn run<F>(&self, fut: F) -> Duration
    where
        F: Future<Output = Duration> + Send + 'static,
    {
        match self {
            Runtime::TokioCt(rt) => rt.block_on(fut),
            Runtime::TokioMt(rt) => rt.block_on(rt.spawn(fut)).expect("join"),
            Runtime::Smol => smol::block_on(fut),
        }
    }

    /// This runtime's offload of blocking work, answering `x + 1`.
    async fn spawn_blocking(&self, x: u64) -> u64 {
        let job = move || {
            on_worker_cpu();
            x + 1
        };
        match self {
            Runtime::TokioCt(_) | Runtime::TokioMt(_) => {
                tokio::task::spawn_blocking(job).await.expect("join")
            }
            Runtime::Smol => smol::unblock(job).await,
        }
    }
}

type RowsPlusOne = corestream::FnModule<
    fn(Rows<u64>) -> Result<Rows<u64>, corestream::BoxError>,
    Rows<u64>,
    Rows<u64>,
>;

fn rows_plus_one(x: Rows<u64>) -> Result<Rows<u64>, corestream::BoxError> {
    Ok(Rows(x.0.into_iter().map(|v| v + 1).collect()))
}

fn runtimes(c: &mut Criterion) {
    let place = Placement::new();
    let _pin = place.pin_caller();
    let _ = WORKER_CPUS.set(place.worker.cpus().to_vec());
    let caller_cpus = place.caller.cpus().to_vec();
    let tokio_mt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .on_thread_start(move || {
            // Workers share the bench thread's CPU; blocking threads move to the worker CPU
            // when they first run a job (`on_worker_cpu`).
            let _ = corestream::affinity::set_current_cpus(&caller_cpus);
        })
        .build()
        .expect("tokio multi-thread runtime");
    let runtimes = [
        Arc::new(Runtime::TokioCt(current_thread_rt())),
        Arc::new(Runtime::TokioMt(tokio_mt)),
        Arc::new(Runtime::Smol),
    ];
    let task = Arc::new(task(&place.worker, DEFAULT_SPIN));
    let all = CpuPool::all().expect("CpuPool::all");
    let msm = Arc::new(
        MultiStreamModule::builder(module_fn(
            rows_plus_one as fn(Rows<u64>) -> Result<Rows<u64>, corestream::BoxError>,
        ) as RowsPlusOne)
        .pool(all)
        .num_streams(Streams::Count(2))
        .build()
        .expect("start the streams"),
    );
    let rows = Rows((0..16).collect::<Vec<u64>>());

    let mut group = c.benchmark_group("runtimes");
    for rt in &runtimes {
        let name = rt.name();
        group.bench_function(BenchmarkId::new(name, "await"), |b| {
            b.iter_custom(|iters| {
                let task = Arc::clone(&task);
                rt.run(async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(task.submit(black_box(7)).await.expect("ok"));
                    }
                    start.elapsed()
                })
            })
        });
        group.bench_function(BenchmarkId::new(name, "forward_await"), |b| {
            b.iter_custom(|iters| {
                let (msm, rows) = (Arc::clone(&msm), rows.clone());
                rt.run(async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(msm.forward(black_box(rows.clone())).await.expect("ok"));
                    }
                    start.elapsed()
                })
            })
        });
        group.bench_function(BenchmarkId::new(name, "spawn_blocking"), |b| {
            b.iter_custom(|iters| {
                let inner = Arc::clone(rt);
                rt.run(async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(inner.spawn_blocking(black_box(7)).await);
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = round_trip, pipelined, runtimes
}
fn main() {
    // CORESTREAM_COTENANT=1: every group beside one busy thread per CPU.
    let _neighbour = corestream::Cotenant::from_env().expect("start the neighbour");
    benches();
    Criterion::default().configure_from_args().final_summary();
}
