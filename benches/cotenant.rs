//! Hand-offs on a quiet machine and beside a busy neighbour, side by side in alternating
//! rounds: what corestream's idle strategy costs where users run it.
//!
//! The neighbour is [`corestream::Cotenant`]: one busy thread per allowed CPU, pinned, at the
//! bench's own priority, started before and stopped after each neighbour block of each round
//! (the in-process twin of `scripts/cotenant.sh`, which runs one `sh -c 'while :; do :; done'`
//! per CPU around any command). Each round runs every variant for `CORESTREAM_BENCH_BLOCK_MS`
//! (default 300 ms) quiet, then every variant beside the neighbour (then 600 ms for the
//! threads' quiet periods to run out), the variants' order flipping every round; `CORESTREAM_BENCH_ROUNDS` rounds (default 5). Reported per variant and
//! condition: the median over rounds of the mean time per call (what throughput sees: a lost
//! scheduler slice among thousands of fast calls shows in the mean, not the median) and of the
//! 99th percentile.
//!
//! Variants, one call in flight at a time, the bench thread pinned to the first CPU and every
//! worker to the last (as in `benches/task.rs`):
//! - `spinning handoff`: a plain thread and the caller busy-polling two channels (`try_recv`
//!   in a loop; the thread exists during its block only): the floor of any hand-off on an
//!   idle machine, and what a thread that never parks costs beside a neighbour;
//! - `blocking handoff`: the same over blocking `recv` (std's channel spins briefly, then parks);
//! - `spawn_blocking`: `tokio::task::spawn_blocking(..).await` on a current-thread runtime, its
//!   blocking thread pinned to the worker CPU;
//! - `task.submit(x).await` (tokio current-thread runtime) and `task.submit(x).wait()`, at the
//!   defaults;
//! - `msm forward_sync - direct`: `forward_sync` on a `MultiStreamModule` of an identity model
//!   over `CpuPool::all()` (`Streams::Auto`), B = 16 rows of 16 `f32`, minus the direct call,
//!   the caller unpinned as users' callers are: the per-call cost of split, dispatch, hand-off
//!   and concat.
//!
//! Run: `cargo bench --bench cotenant`. Needs 2 or more CPUs for its placement; on one CPU
//! everything shares it.

use std::hint::black_box;
use std::thread;
use std::time::{Duration, Instant};

use corestream::ndarray::Array2;
use corestream::{module_fn, BoxError, Cotenant, CpuPool, Module, MultiStreamModule, Task};

mod support;
use support::Handoff;

/// Timings of one block: per-call mean and p99, in microseconds.
#[derive(Debug, Clone, Copy)]
struct Block {
    mean_us: f64,
    p99_us: f64,
}

/// Calls `call` for `block` and summarises the times.
fn measure(block: Duration, mut call: impl FnMut(u64)) -> Block {
    for i in 0..20 {
        call(i);
    }
    let mut times = Vec::new();
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < block {
        let t = Instant::now();
        call(i);
        times.push(t.elapsed());
        i += 1;
    }
    let total = start.elapsed();
    times.sort_unstable();
    Block {
        mean_us: total.as_secs_f64() * 1e6 / times.len() as f64,
        p99_us: times[(times.len() - 1) * 99 / 100].as_secs_f64() * 1e6,
    }
}

const VARIANTS: [&str; 6] = [
    "spinning handoff",
    "blocking handoff",
    "spawn_blocking",
    "task.submit(x).await",
    "task.submit(x).wait()",
    "msm forward_sync - direct",
];

/// Everything the variants call, built once.
struct Bench<M: Module<Input = u64, Output = u64>, I: Module<Input = Array2<f32>>> {
    caller: CpuPool,
    worker: CpuPool,
    blocking: Handoff,
    runtime: tokio::runtime::Runtime,
    task: Task<M>,
    msm: MultiStreamModule<I>,
    identity: I,
}

impl<M, I> Bench<M, I>
where
    M: Module<Input = u64, Output = u64>,
    I: Module<Input = Array2<f32>, Output = Array2<f32>>,
{
    fn run(&self, variant: usize, block: Duration) -> Block {
        let x = Array2::<f32>::ones((16, 16));
        let _pin = (variant != 5).then(|| self.caller.pin_current().expect("pin the caller"));
        match variant {
            0 => {
                // Started for its block only: it never parks, so it would be a neighbour of
                // every other variant.
                let spinning = Handoff::new(&self.worker, true);
                measure(block, |i| assert_eq!(spinning.call(i), i + 1))
            }
            1 => measure(block, |i| assert_eq!(self.blocking.call(i), i + 1)),
            2 => measure(block, |i| {
                let y = self.runtime.block_on(async move {
                    tokio::task::spawn_blocking(move || black_box(i) + 1).await
                });
                assert_eq!(y.expect("join"), i + 1);
            }),
            3 => measure(block, |i| {
                let y = self.runtime.block_on(self.task.submit(i));
                assert_eq!(y.expect("ok"), i + 1);
            }),
            4 => measure(block, |i| {
                assert_eq!(self.task.submit(i).wait().expect("ok"), i + 1)
            }),
            _ => {
                let msm = measure(block, |_| {
                    black_box(self.msm.forward_sync(x.clone()).expect("ok"));
                });
                let direct = measure(block, |_| {
                    black_box(self.identity.forward(x.clone()).expect("ok"));
                });
                Block {
                    mean_us: msm.mean_us - direct.mean_us,
                    p99_us: msm.p99_us,
                }
            }
        }
    }
}

type Identity = corestream::FnModule<
    fn(Array2<f32>) -> Result<Array2<f32>, BoxError>,
    Array2<f32>,
    Array2<f32>,
>;

fn identity() -> Identity {
    fn same(x: Array2<f32>) -> Result<Array2<f32>, BoxError> {
        Ok(x)
    }
    module_fn(same as fn(Array2<f32>) -> Result<Array2<f32>, BoxError>)
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let all = CpuPool::all().expect("CpuPool::all");
    let cpus = all.cpus();
    let one = |cpu: usize| CpuPool::new([cpu]).expect("one-CPU pool");
    let caller = one(cpus[0]);
    let worker = one(cpus[cpus.len() - 1]);
    let rounds = env("CORESTREAM_BENCH_ROUNDS", 5) as usize;
    let block = Duration::from_millis(env("CORESTREAM_BENCH_BLOCK_MS", 300));
    let worker_cpus = worker.cpus().to_vec();
    let bench = Bench {
        caller: caller.clone(),
        worker: worker.clone(),
        blocking: Handoff::new(&worker, false),
        runtime: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(1)
            .on_thread_start(move || {
                let _ = corestream::affinity::set_current_cpus(&worker_cpus);
            })
            .build()
            .expect("tokio runtime"),
        task: Task::builder(module_fn(|x: u64| Ok::<_, BoxError>(x + 1)))
            .pool(worker.clone())
            .build()
            .expect("start the stream"),
        msm: MultiStreamModule::builder(identity())
            .pool(all.clone())
            .build()
            .expect("start the streams"),
        identity: identity(),
    };
    // Quiet and neighbour results: [condition][variant] -> per-round blocks.
    let mut results = vec![vec![Vec::<Block>::new(); VARIANTS.len()]; 2];
    for round in 0..rounds {
        for (condition, rows) in results.iter_mut().enumerate() {
            let neighbour =
                (condition == 1).then(|| Cotenant::start(&all).expect("start the neighbour"));
            let order: Vec<usize> = if round % 2 == 0 {
                (0..VARIANTS.len()).collect()
            } else {
                (0..VARIANTS.len()).rev().collect()
            };
            for v in order {
                rows[v].push(bench.run(v, block));
            }
            if let Some(neighbour) = neighbour {
                drop(neighbour);
                // The quiet column is the steady state: let the threads' quiet periods (at most
                // 500 ms) run out before the next quiet block.
                thread::sleep(Duration::from_millis(600));
            }
        }
        eprintln!("round {}/{rounds} done", round + 1);
    }
    println!(
        "cotenant: {} CPUs, caller on CPU {}, workers on CPU {}; {rounds} alternating rounds of {} ms blocks; \
         median over rounds of the mean per call (p99), us",
        cpus.len(),
        cpus[0],
        cpus[cpus.len() - 1],
        block.as_millis()
    );
    println!("| variant | quiet | beside a busy thread per CPU | neighbour / spawn_blocking |");
    println!("|---|---:|---:|---:|");
    let stat = |c: usize, v: usize| {
        let mean = median(results[c][v].iter().map(|b| b.mean_us).collect());
        let p99 = median(results[c][v].iter().map(|b| b.p99_us).collect());
        (mean, p99)
    };
    let (spawn_blocking, _) = stat(1, 2);
    for (v, name) in VARIANTS.iter().enumerate() {
        let (quiet, quiet_p99) = stat(0, v);
        let (busy, busy_p99) = stat(1, v);
        println!(
            "| {name} | {quiet:.2} ({quiet_p99:.1}) | {busy:.2} ({busy_p99:.1}) | {:.3}x |",
            busy / spawn_blocking
        );
    }
}
