//! The batcher's width (`Width`): which batches run across every CPU of the module, that a
//! wide batch never shares the CPUs with a narrow one, what the model sees while it runs
//! wide, and the limits of an adaptive width.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use corestream::ndarray::{array, Array2};
use corestream::{
    affinity, current_stream, module_fn, Batcher, CpuPool, Error, Module, MultiStreamModule, Width,
};

/// What the model saw on one call.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    wide: bool,
    stream_cpus: Vec<usize>,
    thread_cpus: Vec<usize>,
}

/// A model that records each call, counts calls in flight by kind, and flags a wide call that
/// overlapped any other call.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Seen>>,
    in_flight: AtomicUsize,
    overlaps: AtomicUsize,
    wide_in_flight: AtomicUsize,
}

fn recording(
    recorder: &Arc<Recorder>,
    work: Duration,
) -> impl Module<Input = Array2<f32>, Output = Array2<f32>> {
    let recorder = Arc::clone(recorder);
    module_fn(move |x: Array2<f32>| {
        let stream = current_stream().expect("a batch runs on a stream");
        let wide = stream.is_wide();
        let others = recorder.in_flight.fetch_add(1, Ordering::SeqCst);
        if wide {
            recorder.wide_in_flight.fetch_add(1, Ordering::SeqCst);
        }
        if others > 0 && (wide || recorder.wide_in_flight.load(Ordering::SeqCst) > 0) {
            recorder.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        recorder.seen.lock().unwrap().push(Seen {
            wide,
            stream_cpus: stream.pool().cpus().to_vec(),
            thread_cpus: affinity::current_cpus().unwrap_or_default(),
        });
        thread::sleep(work);
        if wide {
            recorder.wide_in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        recorder.in_flight.fetch_sub(1, Ordering::SeqCst);
        Ok(x)
    })
}

fn batcher(
    recorder: &Arc<Recorder>,
    work: Duration,
    width: Width,
) -> Batcher<impl Module<Input = Array2<f32>, Output = Array2<f32>>> {
    let pool = CpuPool::all().unwrap();
    let streams = pool.len();
    let msm = MultiStreamModule::builder(recording(recorder, work))
        .pool(pool)
        .num_streams(corestream::Streams::Count(streams))
        .build()
        .unwrap();
    Batcher::builder(msm)
        .max_batch(8)
        .width(width)
        .build()
        .unwrap()
}

fn all_cpus() -> Vec<usize> {
    CpuPool::all().unwrap().cpus().to_vec()
}

#[test]
fn a_wide_batch_sees_every_cpu_and_runs_on_the_first() {
    let recorder = Arc::new(Recorder::default());
    let batcher = batcher(&recorder, Duration::ZERO, Width::Wide);
    assert_eq!(batcher.width(), Width::Wide);
    for i in 0..5 {
        let y = batcher.infer(array![[i as f32]]).wait().unwrap();
        assert_eq!(y, array![[i as f32]]);
    }
    let cpus = all_cpus();
    let seen = recorder.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 5);
    for s in &seen {
        if cpus.len() > 1 {
            assert!(s.wide, "{s:?}");
            assert_eq!(s.stream_cpus, cpus);
            assert_eq!(s.thread_cpus, cpus[..1], "thread zero on the first CPU");
        } else {
            // One CPU: wide and narrow are the same, and batches run narrow.
            assert!(!s.wide, "{s:?}");
        }
    }
    let wide = if cpus.len() > 1 { 5 } else { 0 };
    assert_eq!(batcher.stats().wide_batches, wide);
    assert_eq!(batcher.stats().batches, 5);
}

/// After a wide batch the stream thread is back on its own CPU: a narrow batch sees it there.
#[test]
fn a_stream_thread_goes_back_to_its_cpu_after_a_wide_batch() {
    let cpus = all_cpus();
    if cpus.len() < 2 {
        eprintln!("skipped: one CPU, no wide batch");
        return;
    }
    let recorder = Arc::new(Recorder::default());
    // Adaptive, wide batches of at most 1 row: a lone 1-row request runs wide, a 2-row one
    // narrow.
    let batcher = batcher(&recorder, Duration::ZERO, Width::adaptive(1));
    for _ in 0..3 {
        batcher.infer(array![[1.0f32]]).wait().unwrap();
        batcher.infer(array![[1.0f32], [2.0]]).wait().unwrap();
    }
    let seen = recorder.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 6);
    for (i, s) in seen.iter().enumerate() {
        // The 2-row requests never run wide; the lone 1-row ones do unless a stream saw a
        // busy neighbour on its CPU just then (this test's own threads can be one).
        assert!(!(s.wide && i % 2 == 1), "{i}: {s:?}");
        if s.wide {
            assert_eq!(s.thread_cpus, cpus[..1]);
        } else {
            assert_eq!(s.stream_cpus.len(), 1, "{s:?}");
            assert_eq!(s.thread_cpus, s.stream_cpus, "back on its own CPU: {s:?}");
        }
    }
    let wide = seen.iter().filter(|s| s.wide).count() as u64;
    assert_eq!(batcher.stats().wide_batches, wide);
    // A lone request goes wide once no stream sees a neighbour (quiet periods end).
    assert!(lone_request_runs_wide(&batcher));
    assert_eq!(
        recorder
            .seen
            .lock()
            .unwrap()
            .last()
            .map(|s| s.thread_cpus.clone()),
        Some(cpus[..1].to_vec())
    );
}

/// Sends lone 1-row requests, 20 ms apart, until one runs wide (2 s at most): a stream that
/// saw a neighbour on its CPU keeps batches narrow for a quiet period of up to 0.5 s.
fn lone_request_runs_wide(
    batcher: &Batcher<impl Module<Input = Array2<f32>, Output = Array2<f32>>>,
) -> bool {
    let before = batcher.stats().wide_batches;
    for _ in 0..100 {
        batcher.infer(array![[1.0f32]]).wait().unwrap();
        if batcher.stats().wide_batches > before {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Under load, an adaptive batcher runs narrow batches side by side and never a wide batch
/// beside another batch; every request is answered with its own rows.
#[test]
fn adaptive_never_runs_wide_beside_another_batch() {
    let cpus = all_cpus();
    let recorder = Arc::new(Recorder::default());
    let batcher = Arc::new(batcher(
        &recorder,
        Duration::from_micros(300),
        Width::adaptive(4),
    ));
    let callers: Vec<_> = (0..16)
        .map(|c| {
            let batcher = Arc::clone(&batcher);
            thread::spawn(move || {
                for i in 0..40 {
                    let x = (c * 1000 + i) as f32;
                    let y = batcher.infer(array![[x]]).wait().unwrap();
                    assert_eq!(y, array![[x]]);
                }
            })
        })
        .collect();
    for c in callers {
        c.join().unwrap();
    }
    let stats = batcher.stats();
    assert_eq!(stats.completed, 16 * 40);
    assert_eq!(recorder.overlaps.load(Ordering::SeqCst), 0, "{stats:?}");
    if cpus.len() < 2 {
        assert_eq!(stats.wide_batches, 0);
    }
    // A lone request afterwards, on the quiet pool, runs wide.
    if cpus.len() > 1 {
        assert!(lone_request_runs_wide(&batcher));
    }
}

/// The default width is narrow: no batch sees the wide stream.
#[test]
fn narrow_is_the_default() {
    let recorder = Arc::new(Recorder::default());
    let pool = CpuPool::all().unwrap();
    let msm = MultiStreamModule::builder(recording(&recorder, Duration::ZERO))
        .pool(pool)
        .build()
        .unwrap();
    let batcher = Batcher::builder(msm).build().unwrap();
    assert_eq!(batcher.width(), Width::Narrow);
    batcher.infer(array![[1.0f32]]).wait().unwrap();
    assert_eq!(batcher.stats().wide_batches, 0);
    assert!(recorder.seen.lock().unwrap().iter().all(|s| !s.wide));
}

#[test]
fn adaptive_limits_of_zero_are_refused() {
    for width in [
        Width::adaptive(0),
        Width::Adaptive {
            rows: 4,
            tokens: Some(0),
        },
    ] {
        let msm = MultiStreamModule::builder(module_fn(|x: Array2<f32>| Ok(x)))
            .pool(CpuPool::all().unwrap())
            .build()
            .unwrap();
        let err = Batcher::builder(msm).width(width).build().unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
        assert!(err.to_string().contains("at least 1"), "{err}");
    }
}

/// A wide batch that fails or panics fails its own requests only, and gives the CPUs back:
/// the batcher goes on serving.
#[test]
fn a_panicking_wide_batch_gives_the_cpus_back() {
    let msm = MultiStreamModule::builder(module_fn(|x: Array2<f32>| {
        if x[[0, 0]] < 0.0 {
            panic!("negative input");
        }
        Ok(x)
    }))
    .pool(CpuPool::all().unwrap())
    .build()
    .unwrap();
    let batcher = Batcher::builder(msm).width(Width::Wide).build().unwrap();
    for _ in 0..3 {
        let err = batcher.infer(array![[-1.0f32]]).wait().unwrap_err();
        assert!(matches!(err, Error::Panicked(_)), "{err}");
        assert_eq!(
            batcher.infer(array![[2.0f32]]).wait().unwrap(),
            array![[2.0f32]]
        );
    }
}

/// A model taking `narrow` per call on a narrow stream and `wide` on the wide one.
fn timed(
    narrow: Duration,
    wide: Duration,
) -> impl Module<Input = Array2<f32>, Output = Array2<f32>> {
    module_fn(move |x: Array2<f32>| {
        let is_wide = current_stream().is_some_and(|s| s.is_wide());
        thread::sleep(if is_wide { wide } else { narrow });
        Ok(x)
    })
}

/// One caller's lone requests for `span` on an adaptive batcher of `model`: (wide, all)
/// batches.
fn lone_calls(
    model: impl Module<Input = Array2<f32>, Output = Array2<f32>>,
    span: Duration,
) -> (u64, u64) {
    let pool = CpuPool::all().unwrap();
    let streams = pool.len();
    let msm = MultiStreamModule::builder(model)
        .pool(pool)
        .num_streams(corestream::Streams::Count(streams))
        .build()
        .unwrap();
    let batcher = Batcher::builder(msm)
        .width(Width::adaptive(8))
        .build()
        .unwrap();
    let end = std::time::Instant::now() + span;
    while std::time::Instant::now() < end {
        batcher.infer(array![[1.0f32]]).wait().unwrap();
    }
    let stats = batcher.stats();
    (stats.wide_batches, stats.batches)
}

/// Adaptive width measures its batches: where wide batches are slower than narrow ones (as
/// beside a busy neighbour, whatever the idle governor saw) lone requests run narrow but for
/// one probe per 250 ms; where wide ones are faster they run wide but for one narrow batch per
/// second that keeps the comparison current.
#[test]
fn adaptive_runs_wide_only_while_wide_is_measured_faster() {
    if all_cpus().len() < 2 {
        eprintln!("skipped: one CPU runs every batch narrow");
        return;
    }
    let ms = Duration::from_millis;
    let (wide, all) = lone_calls(timed(ms(1), ms(6)), ms(800));
    // 800 ms: the first batches measure each lane, then one probe per 250 ms.
    assert!(
        wide <= 8,
        "{wide} of {all} batches ran wide though wide was 6x slower"
    );
    assert!(all >= 60, "{all} batches");
    let (wide, all) = lone_calls(timed(ms(4), ms(1)), ms(800));
    assert!(
        wide * 10 >= all * 8,
        "{wide} of {all} batches ran wide though wide was 4x faster"
    );
    assert!(all - wide >= 1, "narrow is measured too");
}
