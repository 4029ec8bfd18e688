//! The ONNX Runtime backend's concurrent `Run`: several threads, streams and a batcher running
//! one shared `OrtModel` at the same time, each answer equal to a sequential run of the same
//! input. Written for `scripts/sanitize.sh` (ThreadSanitizer over these paths) and run by every
//! `cargo test` as well:
//!
//! - first calls racing to create the one-thread session shared by plain calls and one-CPU
//!   streams (`OrtModel::shared_session`: one wins, the others' sessions are dropped), then
//!   plain calls on it from several threads;
//! - several one-CPU streams (`Task`s, more of them than CPUs) submitting to that one session;
//! - two-CPU streams (their own sessions made at the same time from the shared weights, an ONNX
//!   Runtime worker each) beside one-CPU streams and plain calls;
//! - a `Batcher` fed single rows by several caller threads.
//!
//! Each skips with a notice when no ONNX Runtime library is found (run
//! `scripts/fetch-onnxruntime.sh`), and fails instead when `CORESTREAM_REQUIRE_ORT=1`.
#![cfg(feature = "ort")]

mod common;

use std::sync::{Arc, Barrier};
use std::thread;

use corestream::backend::ort::OrtModel;
use corestream::backend::Tensor;
use corestream::ndarray::{ArrayD, IxDyn};
use corestream::{Batcher, CpuPool, Module, MultiStreamModule, Streams, Task};

use common::have_ort;

/// Caller threads per test.
const THREADS: usize = 4;
/// Runs per caller thread.
const RUNS: usize = 4;

fn model() -> OrtModel {
    let path = format!(
        "{}/assets/models/examplenet1.onnx",
        env!("CARGO_MANIFEST_DIR")
    );
    OrtModel::load(path).unwrap()
}

/// Deterministic pseudo-random f32 data in [-1, 1), `[rows, 64, 3, 3]` (ExampleNet1's input).
fn input(rows: usize, seed: u64) -> Tensor {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    Tensor::from(ArrayD::from_shape_simple_fn(
        IxDyn(&[rows, 64, 3, 3]),
        || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        },
    ))
}

/// Seed of caller `t`'s run `r`: every run has its own input.
fn seed(t: usize, r: usize) -> u64 {
    (t * RUNS + r) as u64 + 1
}

/// The sequential answers: each input run alone, one after the other, through plain calls on a
/// model of its own (its one-thread session, as the concurrent plain calls and one-CPU streams
/// use).
fn sequential(rows: usize) -> Vec<Vec<Tensor>> {
    let m = model();
    (0..THREADS)
        .flat_map(|t| (0..RUNS).map(move |r| (t, r)))
        .map(|(t, r)| m.forward(vec![input(rows, seed(t, r))]).unwrap())
        .collect()
}

/// Exactly equal: the same one-thread session configuration computes the same bits.
fn assert_same(got: &[Tensor], want: &[Tensor], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: output count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g, w, "{what}: output {i}");
    }
}

/// Equal within 1e-5 of the largest magnitude: a session with other intra-op threads, or a
/// batch of other rows, may order its sums differently (as in tests/ort.rs).
fn assert_close(got: &[Tensor], want: &[Tensor], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: output count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.shape(), w.shape(), "{what}: output {i} shape");
        let (g, w) = (g.view::<f32>().unwrap(), w.view::<f32>().unwrap());
        let scale = w.iter().fold(1e-12f32, |m, v| m.max(v.abs()));
        let diff = g
            .iter()
            .zip(w.iter())
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff <= 1e-5 * scale,
            "{what}: output {i} differs by {diff} (largest magnitude {scale})"
        );
    }
}

/// Runs `call(t, r)` for every caller `t` on its own thread (all released at once) and run `r`,
/// and checks each answer against `want` (caller-major order, as [`sequential`]).
fn concurrently(
    want: &[Vec<Tensor>],
    check: fn(&[Tensor], &[Tensor], &str),
    call: impl Fn(usize, usize) -> Vec<Tensor> + Sync,
) {
    let start = Barrier::new(THREADS);
    thread::scope(|s| {
        for t in 0..THREADS {
            let (start, call) = (&start, &call);
            s.spawn(move || {
                start.wait();
                for r in 0..RUNS {
                    let got = call(t, r);
                    check(&got, &want[t * RUNS + r], &format!("caller {t}, run {r}"));
                }
            });
        }
    });
}

#[test]
fn racing_first_calls_and_plain_calls_share_one_session() {
    if !have_ort() {
        return;
    }
    let want = sequential(3);
    let model = model();
    // Every caller's first call races for the shared session; the later ones run on it.
    concurrently(&want, assert_same, |t, r| {
        model.forward(vec![input(3, seed(t, r))]).unwrap()
    });
    assert_eq!(model.session_count(), 1, "the losers' sessions are dropped");
}

#[test]
fn more_one_cpu_streams_than_cpus_run_their_sessions_at_once() {
    if !have_ort() {
        return;
    }
    let want = sequential(2);
    let model = Arc::new(model());
    let cpus = CpuPool::all().unwrap().cpus().to_vec();
    // One one-CPU stream per caller, on the CPUs in turn: with fewer CPUs than callers, several
    // stream threads share a CPU and the scheduler interleaves their runs.
    let tasks: Vec<_> = (0..THREADS)
        .map(|t| {
            Task::new(
                Arc::clone(&model),
                CpuPool::new([cpus[t % cpus.len()]]).unwrap(),
            )
        })
        .collect::<Result<_, _>>()
        .unwrap();
    // Every request submitted before any answer is awaited.
    let start = Barrier::new(THREADS);
    thread::scope(|s| {
        for (t, task) in tasks.iter().enumerate() {
            let (start, want) = (&start, &want);
            s.spawn(move || {
                start.wait();
                let futures: Vec<_> = (0..RUNS)
                    .map(|r| task.submit(vec![input(2, seed(t, r))]))
                    .collect();
                for (r, future) in futures.into_iter().enumerate() {
                    let got = future.wait().unwrap();
                    assert_same(&got, &want[t * RUNS + r], &format!("stream {t}, run {r}"));
                }
            });
        }
    });
    assert_eq!(
        model.session_count(),
        THREADS,
        "a session for each one-CPU stream"
    );
}

#[test]
fn two_cpu_streams_run_beside_one_cpu_streams_and_plain_calls() {
    if !have_ort() {
        return;
    }
    let cpus = CpuPool::all().unwrap();
    if cpus.len() < 2 {
        eprintln!("skipped: needs 2 cpus, this process may use {cpus}");
        return;
    }
    let pair = CpuPool::new(cpus.cpus()[..2].to_vec()).unwrap();
    let want = sequential(4);
    let model = Arc::new(model());
    // Two two-CPU streams on the same two CPUs: each makes its own session on its first
    // request, both from the one copy of the weights, at the same time.
    let wide: Vec<_> = (0..2)
        .map(|_| Task::new(Arc::clone(&model), pair.clone()))
        .collect::<Result<_, _>>()
        .unwrap();
    // Two one-CPU streams: a one-thread session each.
    let narrow = MultiStreamModule::builder(Arc::clone(&model))
        .pool(pair.clone())
        .num_streams(Streams::Count(2))
        .caller_runs(false)
        .build()
        .unwrap();
    // Callers 0 and 1 on the two-CPU streams, 2 on the one-CPU streams (its batch of 4 split
    // into two parts of 2), 3 plain calls (the one-thread session of calls outside streams).
    concurrently(&want, assert_close, |t, r| {
        let x = vec![input(4, seed(t, r))];
        match t {
            0 | 1 => wide[t].run_sync(x).unwrap(),
            2 => narrow.forward_sync(x).unwrap(),
            _ => model.forward(x).unwrap(),
        }
    });
    assert!(
        matches!(model.weight_sharing(), Some(Ok(_))),
        "{:?}",
        model.weight_sharing()
    );
    // The streams' four sessions, and the one of plain calls.
    assert_eq!(model.session_count(), 5);
}

#[test]
fn a_batcher_fed_by_several_callers_answers_each_its_own_row() {
    if !have_ort() {
        return;
    }
    let want = sequential(1);
    let streams = CpuPool::all().unwrap().len().min(2);
    let msm = MultiStreamModule::builder(Arc::new(model()))
        .pool(CpuPool::all().unwrap())
        .num_streams(Streams::Count(streams))
        .build()
        .unwrap();
    let batcher = Batcher::builder(msm).max_batch(4).build().unwrap();
    // Single rows from every caller, batched together: each answer is its own row's.
    concurrently(&want, assert_close, |t, r| {
        batcher.infer(vec![input(1, seed(t, r))]).wait().unwrap()
    });
    assert_eq!(batcher.stats().completed, (THREADS * RUNS) as u64);
}
