//! Cost and scaling of [`corestream::MultiStreamModule`] on `Array2<f32>` batches.
//!
//! Groups:
//!
//! - `overhead`: a model that returns its input, at B = 1, 16 and 64 rows of 16 `f32`:
//!   `direct` (calling the model on the bench thread) against `msm.forward(x).wait()` with
//!   `Streams::Count(1)` and with `Streams::Auto`, both on `CpuPool::all()`. The difference is
//!   what split + dispatch + hand-off + concat cost per call. Building the input (a clone) is
//!   left out of every timing (`iter_batched`).
//! - `scaling`: a compute-bound row-wise model (a few hundred microseconds of dependent integer
//!   arithmetic per row, kept alive by `black_box`) on a batch of 32 rows:
//!   - `direct`: the sequential model on the bench thread (reference);
//!   - `1stream_1core`: `Streams::Count(1)` on a one-CPU pool;
//!   - `Nstreams_1core`: `Streams::Auto` on `CpuPool::all()` (N streams of one core each);
//!   - `1stream_Ncores_intraop`: `Streams::Count(1)` on `CpuPool::all()`, the model running
//!     its rows with rayon `par_iter`, i.e. on the stream's pinned intra-op pool of N threads;
//!   - `Nstreams_1core_rayon_model`: as `Nstreams_1core` with the `par_iter` model: what a
//!     rayon-using model gets on one-core streams (they have no intra-op pool of their own);
//!   - `Nthreads_raw`: no corestream, the rows cut in N slices run by N unpinned scoped threads
//!     spawned per call: what the machine itself gives, to judge the others by on a shared or
//!     virtualised host where N cores do not always deliver N times one core.
//!
//!   Throughput is in rows/s. Before the group, one line per stream tells where a one-core
//!   stream's `par_iter` items ran (its own thread, or rayon's global pool). The group needs 2
//!   or more CPUs and is skipped with a note on a single-CPU machine.
//! - `interleaved` (printed, not criterion): the two comparisons that a noisy or shared host
//!   skews when they are measured minutes apart, measured in alternating rounds instead (the
//!   order flipping every round) and reported as the best round of each side and their ratio
//!   (`CORESTREAM_BENCH_ROUNDS` rounds, default 9):
//!   - `overhead`: `forward_sync(x)` (the caller runs the part of the stream whose CPU it is
//!     on) and `forward(x).wait()` (every part on a stream thread) on `Streams::Auto` over
//!     `CpuPool::all()` against the direct call, identity model, B = 16 rows: the cost per call
//!     of split + dispatch + hand-off + concat, in microseconds;
//!   - `phases`: the split and the concat of the `overhead` call alone (with the clone of
//!     their input), so the rest of the overhead is dispatch, hand-off and gather;
//!   - `scaling`: N one-core streams against N raw threads running the same rows (the
//!     `scaling` group's `Nstreams_1core` and `Nthreads_raw`): the ratio is corestream's share
//!     of what the machine delivers, whatever the neighbours do.
//!
//! Run: `cargo bench --bench multi_stream` (add `-- overhead`, `-- scaling` or
//! `-- interleaved` to run one group, `-- --quick` for a fast smoke run); with
//! `CORESTREAM_COTENANT=1` every group runs beside one busy thread per CPU
//! ([`corestream::Cotenant`]).

use std::hint::black_box;
use std::thread;
use std::time::{Duration, Instant};

use corestream::ndarray::{Array, Array1, Array2, ArrayView1};
use corestream::{module_fn, BoxError, CpuPool, Module, MultiStreamModule, Streams};
use criterion::{criterion_group, BatchSize, BenchmarkId, Criterion, Throughput};
use rayon::prelude::*;

/// Row width of the `overhead` inputs.
const WIDTH: usize = 16;

/// Rows per call in the `scaling` group.
const SCALING_ROWS: usize = 32;

/// Row width in the `scaling` group.
const SCALING_WIDTH: usize = 64;

/// Passes over a row in the `scaling` model: ~64 * 4000 dependent multiply-adds, a few hundred
/// microseconds per row.
const PASSES: u64 = 4000;

fn input(rows: usize, width: usize) -> Array2<f32> {
    Array::from_shape_fn((rows, width), |(i, j)| (i * width + j) as f32 * 0.5)
}

fn msm<M: Module<Input = Array2<f32>>>(
    model: M,
    pool: CpuPool,
    streams: Streams,
) -> MultiStreamModule<M>
where
    M::Output: corestream::Batch,
{
    MultiStreamModule::builder(model)
        .pool(pool)
        .num_streams(streams)
        .build()
        .expect("start the streams")
}

fn overhead(c: &mut Criterion) {
    let all = CpuPool::all().expect("CpuPool::all");
    let identity = || module_fn(|x: Array2<f32>| Ok::<_, BoxError>(x));
    let direct = identity();
    let one = msm(identity(), all.clone(), Streams::Count(1));
    let auto = msm(identity(), all.clone(), Streams::Auto);
    let auto_label = format!("forward_auto{}", auto.num_streams());

    let mut group = c.benchmark_group("overhead");
    for rows in [1, 16, 64] {
        let x = input(rows, WIDTH);
        group.throughput(Throughput::Elements(rows as u64));
        group.bench_with_input(BenchmarkId::new("direct", rows), &x, |b, x| {
            b.iter_batched(
                || x.clone(),
                |x| direct.forward(black_box(x)).expect("ok"),
                BatchSize::SmallInput,
            )
        });
        group.bench_with_input(BenchmarkId::new("forward_count1", rows), &x, |b, x| {
            b.iter_batched(
                || x.clone(),
                |x| one.forward(black_box(x)).wait().expect("ok"),
                BatchSize::SmallInput,
            )
        });
        group.bench_with_input(BenchmarkId::new(auto_label.as_str(), rows), &x, |b, x| {
            b.iter_batched(
                || x.clone(),
                |x| auto.forward(black_box(x)).wait().expect("ok"),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// The per-row work: `PASSES` dependent multiply-adds over every element.
fn row_work(row: ArrayView1<'_, f32>) -> f32 {
    let mut acc: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..black_box(PASSES) {
        for &v in row {
            acc = acc
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(u64::from(v.to_bits()));
        }
    }
    black_box(acc) as f32
}

fn rows_sequential(x: Array2<f32>) -> Result<Array1<f32>, BoxError> {
    Ok(x.outer_iter().map(row_work).collect())
}

/// The machine's own scaling, without corestream: the rows cut into `n` contiguous slices,
/// each run by a scoped thread spawned for the call. The threads are left unpinned: a thread
/// that pins itself after it was spawned can find its sibling queued behind it on the CPU it
/// moved to, which then waits for the load balancer (milliseconds).
fn rows_threads(x: &Array2<f32>, n: usize) -> Array1<f32> {
    let rows = x.nrows();
    thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|t| {
                s.spawn(move || {
                    (t * rows / n..(t + 1) * rows / n)
                        .map(|i| row_work(x.row(i)))
                        .collect::<Vec<f32>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("raw thread"))
            .collect()
    })
}

fn rows_parallel(x: Array2<f32>) -> Result<Array1<f32>, BoxError> {
    let out: Vec<f32> = (0..x.nrows())
        .into_par_iter()
        .map(|i| row_work(x.row(i)))
        .collect();
    Ok(Array1::from(out))
}

type RowModel = corestream::FnModule<
    fn(Array2<f32>) -> Result<Array1<f32>, BoxError>,
    Array2<f32>,
    Array1<f32>,
>;

/// One way of running the `scaling` batch.
type Runner<'a> = &'a dyn Fn(Array2<f32>) -> Array1<f32>;

fn row_model(f: fn(Array2<f32>) -> Result<Array1<f32>, BoxError>) -> RowModel {
    module_fn(f)
}

/// Prints where the `par_iter` items of a one-core stream run: on the stream's own thread, or
/// on threads of rayon's global pool (which in this binary criterion has already started, from
/// the unpinned main thread; in a fresh process it would be started from the first stream
/// thread that uses rayon, inheriting that thread's one-CPU mask and size).
fn report_rayon_placement(all: &CpuPool) {
    let probe = module_fn(|x: Array2<f32>| {
        let stream = thread::current().name().unwrap_or("?").to_owned();
        let ran_on: Vec<String> = (0..x.nrows())
            .into_par_iter()
            .map(|_| thread::current().name().unwrap_or("unnamed").to_owned())
            .collect();
        let elsewhere = ran_on.iter().filter(|t| **t != stream).count();
        eprintln!(
            "scaling: stream {stream}: {elsewhere} of {} par_iter items ran off the stream \
             thread (rayon::current_num_threads() = {})",
            ran_on.len(),
            rayon::current_num_threads()
        );
        Ok::<_, BoxError>(x)
    });
    let m = msm(probe, all.clone(), Streams::Auto);
    m.forward_sync(input(8 * m.num_streams(), 1))
        .expect("placement probe");
}

fn scaling(c: &mut Criterion) {
    let all = CpuPool::all().expect("CpuPool::all");
    let n = all.len();
    if n < 2 {
        eprintln!("scaling: skipped, CpuPool::all() has {n} CPU (needs 2 or more)");
        return;
    }
    let first = CpuPool::new([all.cpus()[0]]).expect("one-cpu pool");
    let direct = row_model(rows_sequential);
    let single = msm(row_model(rows_sequential), first, Streams::Count(1));
    let streams = msm(row_model(rows_sequential), all.clone(), Streams::Auto);
    let intra = msm(row_model(rows_parallel), all.clone(), Streams::Count(1));
    let streams_par = msm(row_model(rows_parallel), all.clone(), Streams::Auto);
    let x = input(SCALING_ROWS, SCALING_WIDTH);

    // The three ways must compute the same thing.
    let reference = direct.forward(x.clone()).expect("ok");
    for m in [&single, &streams, &intra, &streams_par] {
        assert_eq!(m.forward_sync(x.clone()).expect("ok"), reference);
    }

    report_rayon_placement(&all);

    let mut group = c.benchmark_group("scaling");
    group.throughput(Throughput::Elements(SCALING_ROWS as u64));
    group.sample_size(20);
    let cases: [(String, Runner<'_>); 6] = [
        ("direct".into(), &|x| direct.forward(x).expect("ok")),
        ("1stream_1core".into(), &|x| {
            single.forward(x).wait().expect("ok")
        }),
        (format!("{n}streams_1core"), &|x| {
            streams.forward(x).wait().expect("ok")
        }),
        (format!("1stream_{n}cores_intraop"), &|x| {
            intra.forward(x).wait().expect("ok")
        }),
        (format!("{n}streams_1core_rayon_model"), &|x| {
            streams_par.forward(x).wait().expect("ok")
        }),
        (format!("{n}threads_raw"), &|x| rows_threads(&x, n)),
    ];
    for (label, run) in cases {
        group.bench_function(label, |b| {
            b.iter_batched(|| x.clone(), |x| run(black_box(x)), BatchSize::SmallInput)
        });
    }
    group.finish();
}

/// The best (shortest) of `rounds` timings of `a` and of `b`, each timing `calls` calls, the
/// order flipping every round so that neither side always runs first.
fn alternate(
    rounds: usize,
    calls: usize,
    a: &mut dyn FnMut(),
    b: &mut dyn FnMut(),
) -> (Duration, Duration) {
    let time = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..calls {
            f();
        }
        start.elapsed() / calls as u32
    };
    let (mut best_a, mut best_b) = (Duration::MAX, Duration::MAX);
    for round in 0..rounds {
        if round % 2 == 0 {
            best_a = best_a.min(time(a));
            best_b = best_b.min(time(b));
        } else {
            best_b = best_b.min(time(b));
            best_a = best_a.min(time(a));
        }
    }
    (best_a, best_b)
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn interleaved() {
    let rounds = std::env::var("CORESTREAM_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(9);
    let all = CpuPool::all().expect("CpuPool::all");
    let n = all.len();

    let identity = || module_fn(|x: Array2<f32>| Ok::<_, BoxError>(x));
    let direct = identity();
    let auto = msm(identity(), all.clone(), Streams::Auto);
    let x = input(16, WIDTH);
    // Each blocking way to call the module against the direct call, in its own alternation.
    let calls: [(&str, &dyn Fn()); 2] = [
        ("forward_sync()", &|| {
            black_box(auto.forward_sync(black_box(x.clone())).expect("ok"));
        }),
        ("forward().wait() (every part on a stream)", &|| {
            black_box(auto.forward(black_box(x.clone())).wait().expect("ok"));
        }),
    ];
    for (label, call) in calls {
        let (t_direct, t_msm) = alternate(
            rounds,
            2000,
            &mut || {
                black_box(direct.forward(black_box(x.clone())).expect("ok"));
            },
            &mut || call(),
        );
        println!(
            "interleaved/overhead: identity model, B=16, {} streams: direct {:.2} us, {label} \
             {:.2} us, overhead {:.2} us per call (best of {rounds} alternating rounds)",
            auto.num_streams(),
            micros(t_direct),
            micros(t_msm),
            micros(t_msm.saturating_sub(t_direct)),
        );
    }
    // Where the call's time goes: the split and the concat alone (the rest is dispatch,
    // hand-off and gather).
    let sizes = corestream::batch::split_sizes(16, auto.num_streams());
    let hint = corestream::Hint::Dim(0);
    let parts = corestream::Batch::split(x.clone(), &hint, &sizes).expect("split");
    let (t_split, t_concat) = alternate(
        rounds,
        2000,
        &mut || {
            black_box(corestream::Batch::split(black_box(x.clone()), &hint, &sizes).expect("ok"));
        },
        &mut || {
            let parts = black_box(parts.clone());
            black_box(<Array2<f32> as corestream::Batch>::concat(parts, &hint).expect("ok"));
        },
    );
    println!(
        "interleaved/phases: B=16 into {} parts: clone + split {:.2} us, clone + concat {:.2} us \
         (best of {rounds} alternating rounds)",
        sizes.len(),
        micros(t_split),
        micros(t_concat),
    );
    drop(auto);

    if n < 2 {
        println!("interleaved/scaling: skipped, CpuPool::all() has {n} CPU (needs 2 or more)");
        return;
    }
    let streams = msm(row_model(rows_sequential), all, Streams::Auto);
    let x = input(SCALING_ROWS, SCALING_WIDTH);
    assert_eq!(
        streams.forward_sync(x.clone()).expect("ok"),
        rows_threads(&x, n)
    );
    let (t_streams, t_raw) = alternate(
        rounds,
        20,
        &mut || {
            black_box(streams.forward(black_box(x.clone())).wait().expect("ok"));
        },
        &mut || {
            black_box(rows_threads(black_box(&x), n));
        },
    );
    let rate = |t: Duration| SCALING_ROWS as f64 / t.as_secs_f64();
    println!(
        "interleaved/scaling: {n} streams {:.0} rows/s, {n} raw threads {:.0} rows/s: \
         {:.3}x (best of {rounds} alternating rounds)",
        rate(t_streams),
        rate(t_raw),
        t_raw.as_secs_f64() / t_streams.as_secs_f64(),
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = overhead, scaling
}

fn main() {
    // CORESTREAM_COTENANT=1: everything beside one busy thread per CPU.
    let _neighbour = corestream::Cotenant::from_env().expect("start the neighbour");
    // The same filter rule as criterion's: the first argument that is not a flag selects the
    // groups whose name contains it.
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    if "interleaved".contains(filter.as_str()) {
        interleaved();
    }
    if filter != "interleaved" {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
}
