//! `forward_sync` on the CPU of a one-CPU stream runs that stream's part on the calling thread
//! (`MultiStreamModuleBuilder::caller_runs`, on by default): as the stream would (its stats,
//! `current_stream()`, panics as errors), the other parts on their streams, the output the
//! same; `caller_runs(false)` and the async `forward` keep every part on stream threads.

use std::sync::Mutex;
use std::thread::{self, ThreadId};

use corestream::ndarray::{Array, Array2, Axis};
use corestream::{
    current_stream, BoxError, CpuPool, Error, Module, MultiStreamModule, MultiStreamModuleBuilder,
};

/// Records, per part, its first value, the thread it ran on and the stream it saw; panics on
/// a part whose first value is negative.
#[derive(Default)]
struct Where(Mutex<Vec<(f32, ThreadId, Option<usize>)>>);

impl Module for Where {
    type Input = Array2<f32>;
    type Output = Array2<f32>;
    fn forward(&self, x: Array2<f32>) -> Result<Array2<f32>, BoxError> {
        let first = x[[0, 0]];
        assert!(first >= 0.0, "negative input");
        let stream = current_stream().map(|s| s.index());
        self.0
            .lock()
            .unwrap()
            .push((first, thread::current().id(), stream));
        Ok(x * 3.0)
    }
}

fn input(rows: usize) -> Array2<f32> {
    Array::from_shape_fn((rows, 2), |(i, j)| (i * 2 + j) as f32)
}

/// A module over every CPU, one stream each, the calling thread pinned to the last CPU's stream.
fn module(
    configure: impl FnOnce(MultiStreamModuleBuilder<Where>) -> MultiStreamModuleBuilder<Where>,
) -> (MultiStreamModule<Where>, corestream::PinGuard, usize) {
    let all = CpuPool::all().unwrap();
    let msm = configure(MultiStreamModule::builder(Where::default()).pool(all.clone()))
        .build()
        .unwrap();
    let k = msm.num_streams() - 1;
    let pin = msm.pools()[k].pin_current().unwrap();
    (msm, pin, k)
}

/// The part index (by its first row) each record belongs to, with `rows` split over `n`.
fn part_of(first: f32, starts: &[usize]) -> usize {
    let row = first as usize / 2;
    starts.iter().rposition(|&s| s <= row).unwrap()
}

fn starts(rows: usize, n: usize) -> Vec<usize> {
    let sizes = corestream::batch::split_sizes(rows, n);
    sizes
        .iter()
        .scan(0, |at, s| {
            let start = *at;
            *at += s;
            Some(start)
        })
        .collect()
}

#[test]
fn the_caller_runs_the_part_of_the_stream_whose_cpu_it_is_on() {
    let (msm, _pin, k) = module(|b| b);
    let n = msm.num_streams();
    let rows = 4 * n;
    let x = input(rows);
    let y = msm.forward_sync(x.clone()).unwrap();
    assert_eq!(y, &x * 3.0);
    let records = msm.model().0.lock().unwrap().clone();
    assert_eq!(records.len(), n);
    let me = thread::current().id();
    let starts = starts(rows, n);
    for (first, thread, stream) in records {
        let part = part_of(first, &starts);
        // Every part saw its own stream; only part k ran here.
        assert_eq!(stream, Some(part));
        assert_eq!(
            thread == me,
            part == k,
            "part {part} ran on the caller: {}",
            thread == me
        );
    }
    // Counted in the stream's stats; the caller is itself again afterwards.
    assert_eq!(msm.stats()[k].completed, 1);
    assert!(current_stream().is_none());
    // The output concatenates in stream order whichever thread ran what.
    assert_eq!(y.len_of(Axis(0)), rows);
}

/// Asserts that every part `msm`'s model saw ran on a thread other than this one.
fn assert_no_part_ran_here(msm: &MultiStreamModule<Where>) {
    let me = thread::current().id();
    let records = msm.model().0.lock().unwrap();
    assert!(
        records.iter().all(|(_, t, _)| *t != me),
        "a part ran on the caller"
    );
}

#[test]
fn caller_runs_false_keeps_every_part_on_the_streams() {
    let (msm, _pin, _) = module(|b| b.caller_runs(false));
    let x = input(4 * msm.num_streams());
    assert_eq!(msm.forward_sync(x.clone()).unwrap(), &x * 3.0);
    assert_no_part_ran_here(&msm);
}

#[test]
fn the_async_forward_never_runs_on_the_caller() {
    let (msm, _pin, _) = module(|b| b);
    let x = input(4 * msm.num_streams());
    let y = futures::executor::block_on(msm.forward(x.clone())).unwrap();
    assert_eq!(y, &x * 3.0);
    assert_no_part_ran_here(&msm);
}

#[test]
fn a_panic_in_the_callers_part_fails_that_call_only() {
    let (msm, _pin, k) = module(|b| b);
    let n = msm.num_streams();
    let rows = 2 * n;
    // Negative values in the caller's part only.
    let mut x = input(rows);
    let start = starts(rows, n)[k];
    x.row_mut(start).fill(-1.0);
    match msm.forward_sync(x) {
        Err(Error::Panicked(message)) => assert!(message.contains("negative input"), "{message}"),
        other => panic!("expected Panicked, got {other:?}"),
    }
    assert_eq!(msm.stats()[k].failed, 1);
    assert!(current_stream().is_none());
    let x = input(rows);
    assert_eq!(msm.forward_sync(x.clone()).unwrap(), &x * 3.0);
}

#[test]
fn fewer_rows_than_streams_still_work_from_any_cpu() {
    let (msm, _pin, _) = module(|b| b);
    // One row: only stream 0 gets a part; the caller may or may not be on it.
    let x = input(1);
    assert_eq!(msm.forward_sync(x.clone()).unwrap(), &x * 3.0);
    assert_eq!(msm.stats().iter().map(|s| s.completed).sum::<u64>(), 1);
}

#[test]
fn a_failing_part_on_another_stream_fails_the_call_while_the_caller_polls() {
    let (msm, _pin, k) = module(|b| b);
    let n = msm.num_streams();
    if n < 2 {
        eprintln!("skipped: one CPU, no other stream");
        return;
    }
    let rows = 2 * n;
    let other = (k + 1) % n;
    let mut x = input(rows);
    x.row_mut(starts(rows, n)[other]).fill(-1.0);
    match msm.forward_sync(x) {
        Err(Error::Panicked(message)) => assert!(message.contains("negative input"), "{message}"),
        other => panic!("expected Panicked, got {other:?}"),
    }
    assert_eq!(msm.stats()[other].failed, 1);
    // With no polling at all (parking at once) the same.
    let (parked, _pin, k) = module(|b| b.spin(std::time::Duration::ZERO));
    let other = (k + 1) % n;
    let mut x = input(rows);
    x.row_mut(starts(rows, n)[other]).fill(-1.0);
    assert!(matches!(parked.forward_sync(x), Err(Error::Panicked(_))));
    let x = input(rows);
    assert_eq!(parked.forward_sync(x.clone()).unwrap(), &x * 3.0);
}
