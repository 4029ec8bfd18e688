//! Batcher: batch-size bound, max_wait, routing under random arrival (proptest), backpressure,
//! cancellation, failure isolation, shutdown drain, counters, several batchers in one Prometheus
//! exposition.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use corestream::ndarray::{array, Array2, Axis};
use corestream::{
    Batcher, BoxError, CpuPool, Error, Infer, Module, MultiStreamModule, Streams, TaskFuture,
};
use proptest::prelude::*;

/// y = 10 x + row index within the batch is NOT used: outputs depend only on each row, so any
/// mix-up between callers shows. Records every batch's row count.
struct Recorder {
    batches: Mutex<Vec<usize>>,
    gate: Mutex<Option<mpsc::Receiver<()>>>,
}

impl Module for Recorder {
    type Input = Array2<f32>;
    type Output = Array2<f32>;
    fn forward(&self, x: Array2<f32>) -> Result<Array2<f32>, BoxError> {
        if let Some(gate) = self.gate.lock().unwrap().as_ref() {
            gate.recv()?;
        }
        if x.ncols() != 2 {
            return Err(format!("rows must have 2 columns, got {}", x.ncols()).into());
        }
        self.batches.lock().unwrap().push(x.nrows());
        Ok(x * 10.0)
    }
}

fn recorder(gated: bool) -> (Arc<Recorder>, Option<mpsc::Sender<()>>) {
    let (tx, rx) = mpsc::channel();
    let model = Arc::new(Recorder {
        batches: Mutex::default(),
        gate: Mutex::new(gated.then_some(rx)),
    });
    (model, gated.then_some(tx))
}

fn batcher(
    model: Arc<Recorder>,
    streams: usize,
    max_batch: usize,
    max_wait: Duration,
    capacity: usize,
) -> Batcher<Arc<Recorder>> {
    let pool = CpuPool::all().unwrap();
    let msm = MultiStreamModule::builder(model)
        .pool(pool.clone())
        .num_streams(Streams::Count(streams.min(pool.len())))
        .build()
        .unwrap();
    Batcher::builder(msm)
        .max_batch(max_batch)
        .max_wait(max_wait)
        .queue_capacity(capacity)
        .build()
        .unwrap()
}

/// Waits (up to 5 s) until the streams have taken every queued request.
fn wait_until_taken<M>(b: &Batcher<M>)
where
    M: Module,
    M::Input: corestream::Batch + Clone,
    M::Output: corestream::Batch,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.stats().queue_depth > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn row(v: f32) -> Array2<f32> {
    array![[v, v + 0.5]]
}

#[test]
fn batches_never_exceed_max_batch_and_callers_get_their_rows() {
    let (model, gate) = recorder(true);
    let gate = gate.unwrap();
    let b = batcher(Arc::clone(&model), 1, 4, Duration::ZERO, 1000);
    // The first request occupies the stream; the rest queue up and are batched by 4.
    let futures: Vec<TaskFuture<Array2<f32>>> = (0..41).map(|i| b.infer(row(i as f32))).collect();
    for _ in 0..41 {
        let _ = gate.send(());
    }
    for (i, f) in futures.into_iter().enumerate() {
        assert_eq!(f.wait().unwrap(), row(i as f32) * 10.0, "caller {i}");
    }
    let batches = model.batches.lock().unwrap().clone();
    assert!(batches.iter().all(|&n| n <= 4), "{batches:?}");
    assert_eq!(batches.iter().sum::<usize>(), 41);
    assert!(batches.contains(&4), "no full batch formed: {batches:?}");
    let stats = b.stats();
    assert_eq!(stats.completed, 41);
    assert_eq!(stats.batch_sizes.len(), 4);
    assert_eq!(stats.batch_sizes.iter().sum::<u64>(), stats.batches);
}

#[test]
fn multi_row_requests_count_as_rows() {
    let (model, _) = recorder(false);
    let b = batcher(Arc::clone(&model), 1, 5, Duration::from_millis(50), 100);
    let x = array![[1.0f32, 2.0], [3.0, 4.0], [5.0, 6.0]];
    let (a, c) = futures::executor::block_on(async {
        futures::join!(b.infer(x.clone()), b.infer(x.clone()))
    });
    assert_eq!(a.unwrap(), &x * 10.0);
    assert_eq!(c.unwrap(), &x * 10.0);
    // 3 + 3 rows exceed max_batch 5: two batches of 3.
    assert_eq!(*model.batches.lock().unwrap(), [3, 3]);
}

#[test]
fn a_lone_request_waits_at_most_max_wait() {
    let (model, _) = recorder(false);
    let wait = Duration::from_millis(150);
    let b = batcher(model, 1, 8, wait, 100);
    let start = Instant::now();
    b.infer(row(1.0)).wait().unwrap();
    let took = start.elapsed();
    assert!(
        took >= wait,
        "dispatched before max_wait with room in the batch: {took:?}"
    );
    assert!(took < wait + Duration::from_millis(500), "waited {took:?}");
    // With max_wait zero an idle stream takes the request at once.
    let (model, _) = recorder(false);
    let b = batcher(model, 1, 8, Duration::ZERO, 100);
    let start = Instant::now();
    b.infer(row(1.0)).wait().unwrap();
    assert!(
        start.elapsed() < Duration::from_millis(100),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_full_queue_answers_overloaded_at_once() {
    let (model, gate) = recorder(true);
    let gate = gate.unwrap();
    let b = batcher(model, 1, 1, Duration::ZERO, 3);
    let running = b.infer(row(0.0));
    // Wait until the stream has taken the first request, so exactly 3 more fit.
    wait_until_taken(&b);
    let queued: Vec<_> = (1..=3).map(|i| b.infer(row(i as f32))).collect();
    let start = Instant::now();
    let refused = b.infer(row(9.0)).wait();
    assert!(
        matches!(refused, Err(Error::Overloaded { capacity: 3 })),
        "{refused:?}"
    );
    assert!(start.elapsed() < Duration::from_millis(100));
    assert_eq!(b.stats().rejected, 1);
    for _ in 0..4 {
        gate.send(()).unwrap();
    }
    running.wait().unwrap();
    for (i, f) in (1..=3).zip(queued) {
        assert_eq!(f.wait().unwrap(), row(i as f32) * 10.0);
    }
}

#[test]
fn dropped_requests_are_removed_without_disturbing_the_rest() {
    let (model, gate) = recorder(true);
    let gate = gate.unwrap();
    let b = batcher(Arc::clone(&model), 1, 64, Duration::ZERO, 100);
    let first = b.infer(row(0.0));
    wait_until_taken(&b);
    let kept: Vec<_> = (1..=5).map(|i| b.infer(row(i as f32))).collect();
    for i in 6..=10 {
        drop(b.infer(row(i as f32)));
    }
    for _ in 0..2 {
        gate.send(()).unwrap();
    }
    first.wait().unwrap();
    for (i, f) in (1..=5).zip(kept) {
        assert_eq!(f.wait().unwrap(), row(i as f32) * 10.0);
    }
    assert_eq!(*model.batches.lock().unwrap(), [1, 5]);
    assert_eq!(b.stats().cancelled, 5);
}

#[test]
fn one_bad_request_fails_alone() {
    let (model, gate) = recorder(true);
    let gate = gate.unwrap();
    let b = batcher(model, 1, 16, Duration::ZERO, 100);
    let first = b.infer(row(0.0));
    wait_until_taken(&b);
    let good1 = b.infer(row(1.0));
    let bad = b.infer(array![[1.0f32, 2.0, 3.0]]);
    let good2 = b.infer(row(2.0));
    for _ in 0..10 {
        let _ = gate.send(());
    }
    first.wait().unwrap();
    assert_eq!(good1.wait().unwrap(), row(1.0) * 10.0);
    assert_eq!(good2.wait().unwrap(), row(2.0) * 10.0);
    let err = bad.wait().unwrap_err();
    assert!(
        matches!(&err, Error::Module(e) if e.to_string().contains("2 columns")),
        "{err}"
    );
}

#[test]
fn dropping_the_batcher_drains_every_queued_request() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let model = corestream::module_fn(move |x: Array2<f32>| {
        std::thread::sleep(Duration::from_millis(1));
        c.fetch_add(x.nrows(), Ordering::SeqCst);
        Ok(x)
    });
    let msm = MultiStreamModule::builder(model)
        .pool(CpuPool::all().unwrap())
        .build()
        .unwrap();
    let b = Batcher::builder(msm).max_batch(3).build().unwrap();
    let futures: Vec<_> = (0..50).map(|i| b.infer(row(i as f32))).collect();
    drop(b);
    assert_eq!(calls.load(Ordering::SeqCst), 50);
    for (i, f) in futures.into_iter().enumerate() {
        assert_eq!(f.wait().unwrap(), row(i as f32));
    }
}

#[test]
fn bad_configuration_and_inputs_are_typed_errors() {
    let (model, _) = recorder(false);
    let msm = MultiStreamModule::builder(model)
        .pool(CpuPool::all().unwrap())
        .build()
        .unwrap();
    let err = Batcher::builder(msm).max_batch(0).build().unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    let (model, _) = recorder(false);
    let b = batcher(model, 1, 4, Duration::ZERO, 4);
    let empty = Array2::<f32>::zeros((0, 2));
    assert!(matches!(b.infer(empty).wait(), Err(Error::EmptyBatch)));
}

#[test]
fn infer_trait_and_prometheus_text() {
    let (model, _) = recorder(false);
    let b = batcher(model, 2, 8, Duration::ZERO, 16);
    let service: Arc<dyn Infer<Array2<f32>, Array2<f32>>> = Arc::new(b);
    let y = futures::executor::block_on(service.infer(row(3.0))).unwrap();
    assert_eq!(y, row(3.0) * 10.0);
    let (model, _) = recorder(false);
    let b = batcher(model, 2, 8, Duration::ZERO, 16);
    b.infer(row(1.0)).wait().unwrap();
    let text = b.stats().prometheus("cs");
    for needle in [
        "cs_queue_depth 0",
        "cs_requests_completed_total 1",
        "cs_batch_size_bucket{le=\"1\"} 1",
        "cs_request_seconds_count 1",
        "# TYPE cs_request_seconds histogram",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn results_reach_the_right_callers_under_random_arrival(
        requests in prop::collection::vec((1usize..4, 0u64..300), 1..40),
        max_batch in 1usize..8,
        streams in 1usize..3,
    ) {
        let (model, _) = recorder(false);
        let b = Arc::new(batcher(model, streams, max_batch, Duration::from_micros(200), 1000));
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_time().build().unwrap();
        rt.block_on(async {
            let mut handles = Vec::new();
            for (i, (rows, delay)) in requests.into_iter().enumerate() {
                let b = Arc::clone(&b);
                handles.push(tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_micros(delay)).await;
                    let x = Array2::from_shape_fn((rows, 2), |(r, c)| (i * 100 + r * 2 + c) as f32);
                    let y = b.infer(x.clone()).await.unwrap();
                    assert_eq!(y.len_of(Axis(0)), rows);
                    assert_eq!(y, x * 10.0, "caller {}", i);
                }));
            }
            for h in handles {
                h.await.unwrap();
            }
        });
    }
}

/// Names of this process's threads, from `/proc/self/task/*/comm`.
#[cfg(target_os = "linux")]
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim_end().to_owned())
        .collect()
}

#[test]
fn batches_run_on_the_stream_threads_themselves() {
    let names = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&names);
    let model = corestream::module_fn(move |x: Array2<f32>| {
        let here = std::thread::current().name().map(str::to_owned);
        let stream = corestream::current_stream().map(|s| s.index());
        seen.lock().unwrap().push((here, stream, x.nrows()));
        Ok(x * 2.0)
    });
    let pool = CpuPool::all().unwrap();
    let msm = MultiStreamModule::builder(model)
        .pool(pool.clone())
        .build()
        .unwrap();
    let b = Batcher::builder(msm).max_batch(8).build().unwrap();
    let futures: Vec<_> = (0..64).map(|i| b.infer(row(i as f32))).collect();
    for (i, f) in futures.into_iter().enumerate() {
        assert_eq!(f.wait().unwrap(), row(i as f32) * 2.0);
    }
    let names = names.lock().unwrap().clone();
    assert!(!names.is_empty());
    for (name, stream, _) in &names {
        let name = name.as_deref().unwrap_or("<unnamed>");
        assert!(name.starts_with("corestream-s"), "model ran on {name}");
        assert!(
            matches!(stream, Some(i) if *i < pool.len()),
            "not a stream: {stream:?}"
        );
    }
    #[cfg(target_os = "linux")]
    {
        let threads = thread_names();
        assert!(
            !threads.iter().any(|t| t.starts_with("corestream-b")),
            "a feeder thread exists: {threads:?}"
        );
    }
    // Every model call is one job of its stream, and none is left in flight.
    let stats = b.module().stats();
    let calls: u64 = stats.iter().map(|s| s.completed).sum();
    assert_eq!(calls, names.len() as u64);
    assert_eq!(calls, b.stats().batches);
    assert!(stats.iter().all(|s| s.in_flight() == 0), "{stats:?}");
}

/// Panics on a row whose first value is 666; otherwise like [`Recorder`] (records batches).
struct Panicker {
    batches: Mutex<Vec<usize>>,
    gate: Mutex<mpsc::Receiver<()>>,
}

impl Module for Panicker {
    type Input = Array2<f32>;
    type Output = Array2<f32>;
    fn forward(&self, x: Array2<f32>) -> Result<Array2<f32>, BoxError> {
        self.gate.lock().unwrap().recv()?;
        self.batches.lock().unwrap().push(x.nrows());
        assert!(x.column(0).iter().all(|&v| v != 666.0), "poisoned row");
        Ok(x * 10.0)
    }
}

#[test]
fn a_panicking_request_fails_alone_and_its_batch_neighbours_are_answered() {
    let (gate, rx) = mpsc::channel();
    let model = Arc::new(Panicker {
        batches: Mutex::default(),
        gate: Mutex::new(rx),
    });
    let msm = MultiStreamModule::builder(Arc::clone(&model))
        .pool(CpuPool::all().unwrap())
        .num_streams(Streams::Count(1))
        .build()
        .unwrap();
    let b = Batcher::builder(msm).max_batch(16).build().unwrap();
    // The first request occupies the stream, so the next three form one batch.
    let first = b.infer(row(0.0));
    wait_until_taken(&b);
    let good1 = b.infer(row(1.0));
    let bad = b.infer(row(666.0));
    let good2 = b.infer(row(2.0));
    for _ in 0..5 {
        gate.send(()).unwrap();
    }
    first.wait().unwrap();
    assert_eq!(good1.wait().unwrap(), row(1.0) * 10.0);
    assert_eq!(good2.wait().unwrap(), row(2.0) * 10.0);
    let err = bad.wait().unwrap_err();
    assert!(
        matches!(&err, Error::Panicked(m) if m.contains("poisoned row")),
        "{err}"
    );
    // The batch of 3 panicked, then each request ran alone.
    assert_eq!(*model.batches.lock().unwrap(), [1, 3, 1, 1, 1]);
    // The stream lives on and keeps serving.
    gate.send(()).unwrap();
    assert_eq!(b.infer(row(5.0)).wait().unwrap(), row(5.0) * 10.0);
    let stats = b.stats();
    assert_eq!((stats.completed, stats.failed), (4, 1));
    let stream = b.module().stats()[0];
    // Model calls: 1 + the failed batch + 3 reruns + 1.
    assert_eq!((stream.completed, stream.failed), (4, 2));
}

#[test]
fn dropping_the_batcher_drains_at_once_exactly_once_despite_max_wait() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let model = corestream::module_fn(move |x: Array2<f32>| {
        c.fetch_add(x.nrows(), Ordering::SeqCst);
        Ok(x)
    });
    let msm = MultiStreamModule::builder(model)
        .pool(CpuPool::all().unwrap())
        .build()
        .unwrap();
    // A lingering stream would wait 10 s for a fuller batch; closing cuts that short.
    let b = Batcher::builder(msm)
        .max_batch(1000)
        .max_wait(Duration::from_secs(10))
        .build()
        .unwrap();
    let futures: Vec<_> = (0..50).map(|i| b.infer(row(i as f32))).collect();
    let start = Instant::now();
    drop(b);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 50);
    for (i, f) in futures.into_iter().enumerate() {
        assert_eq!(f.wait().unwrap(), row(i as f32));
    }
}

#[test]
fn direct_calls_on_the_module_run_while_the_batcher_serves() {
    for spin in [Duration::ZERO, corestream::DEFAULT_SPIN] {
        let (model, _) = recorder(false);
        let msm = MultiStreamModule::builder(model)
            .pool(CpuPool::all().unwrap())
            .spin(spin)
            .build()
            .unwrap();
        let b = Batcher::builder(msm).build().unwrap();
        // Let every serve loop go idle (past its polling window, asleep).
        std::thread::sleep(Duration::from_millis(20));
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let x = array![[1.0f32, 2.0], [3.0, 4.0]];
                let _ = tx.send(b.module().forward_sync(x));
            });
            let y = rx.recv_timeout(Duration::from_secs(5));
            assert_eq!(
                y.expect("a direct call is stuck behind the batcher")
                    .unwrap(),
                array![[10.0f32, 20.0], [30.0, 40.0]]
            );
        });
        // Batches and direct calls interleave.
        let batched: Vec<_> = (0..20).map(|i| b.infer(row(i as f32))).collect();
        let direct = b.module().forward(array![[7.0f32, 8.0]]);
        assert_eq!(
            futures::executor::block_on(direct).unwrap(),
            array![[70.0f32, 80.0]]
        );
        for (i, f) in batched.into_iter().enumerate() {
            assert_eq!(f.wait().unwrap(), row(i as f32) * 10.0);
        }
        // Once the batcher is gone its streams are gone too, with the module it owned.
        drop(b);
    }
}

#[test]
fn a_module_that_parks_at_once_serves_batches() {
    let (model, _) = recorder(false);
    let msm = MultiStreamModule::builder(Arc::clone(&model))
        .pool(CpuPool::all().unwrap())
        .spin(Duration::ZERO)
        .build()
        .unwrap();
    let b = Arc::new(Batcher::builder(msm).max_batch(4).build().unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut handles = Vec::new();
        for i in 0..200 {
            let b = Arc::clone(&b);
            handles.push(tokio::spawn(async move {
                if i % 3 == 0 {
                    tokio::time::sleep(Duration::from_micros(50)).await;
                }
                let y = b.infer(row(i as f32)).await.unwrap();
                assert_eq!(y, row(i as f32) * 10.0);
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
    });
    assert_eq!(b.stats().completed, 200);
    assert_eq!(model.batches.lock().unwrap().iter().sum::<usize>(), 200);
}

/// Several batchers, two of them with one name, in one exposition: each family's HELP and
/// TYPE once, each series once (the same name summed), labelled by model.
#[test]
fn prometheus_many_has_no_duplicate_families_or_series() {
    let named = |name: &str| {
        let (model, _) = recorder(false);
        let pool = CpuPool::all().unwrap();
        let msm = MultiStreamModule::builder(model)
            .pool(pool)
            .num_streams(Streams::Count(1))
            .build()
            .unwrap();
        Batcher::builder(msm)
            .name(name)
            .max_batch(4)
            .build()
            .unwrap()
    };
    let (a, b, c) = (named("minilm"), named("minilm"), named("resnet \"18\""));
    a.infer(row(1.0)).wait().unwrap();
    b.infer(row(2.0)).wait().unwrap();
    b.infer(row(3.0)).wait().unwrap();
    c.infer(array![[1.0f32]]).wait().unwrap_err();
    let stats = [a.stats(), b.stats(), c.stats()];
    let text = corestream::BatcherStats::prometheus_many("cs", &stats);
    let mut families = std::collections::BTreeSet::new();
    let mut series = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            assert!(
                families.insert(rest.to_owned()),
                "repeated {line:?} in\n{text}"
            );
        } else {
            let (key, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line:?}");
            assert!(
                series.insert(key.to_owned()),
                "repeated series {key:?} in\n{text}"
            );
        }
    }
    for needle in [
        "cs_requests_completed_total{model=\"minilm\"} 3\n",
        "cs_requests_failed_total{model=\"resnet \\\"18\\\"\"} 1\n",
        "cs_batch_size_bucket{model=\"minilm\",le=\"1\"} 3\n",
        "cs_request_seconds_count{model=\"minilm\"} 3\n",
        "# TYPE cs_request_seconds histogram\n",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    // One batcher's own text, concatenated twice, is what this avoids.
    let twice = stats[0].prometheus("cs") + &stats[1].prometheus("cs");
    assert_eq!(twice.matches("# TYPE cs_batches_total counter").count(), 2);
    assert_eq!(text.matches("# TYPE cs_batches_total counter").count(), 1);
}
