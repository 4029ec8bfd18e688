//! Batcher metrics (feature `metrics`) through the `metrics` facade, read back with
//! metrics-util's `DebuggingRecorder`: request counters labelled by model, batch, queue-time
//! and run-time figures labelled by model and stream.
#![cfg(feature = "metrics")]

use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use corestream::ndarray::Array2;
use corestream::{Batcher, BoxError, CpuPool, Error, Module, MultiStreamModule, Streams};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::MetricKind;

/// x + 1 after the gate opens; a negative value is a model error.
struct Gated(Mutex<mpsc::Receiver<()>>);

impl Module for Gated {
    type Input = Array2<f32>;
    type Output = Array2<f32>;
    fn forward(&self, x: Array2<f32>) -> Result<Array2<f32>, BoxError> {
        self.0.lock().unwrap().recv()?;
        if x.iter().any(|&v| v < 0.0) {
            return Err("negative".into());
        }
        Ok(x + 1.0)
    }
}

#[test]
fn counters_and_histograms_are_labelled_by_model_and_stream() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let (gate, rx) = mpsc::channel();
    let pool = CpuPool::new([CpuPool::all().unwrap().cpus()[0]]).unwrap();
    let msm = MultiStreamModule::builder(Gated(Mutex::new(rx)))
        .pool(pool)
        .num_streams(Streams::Count(1))
        .build()
        .unwrap();
    let b = Batcher::builder(msm)
        .name("encoder")
        .max_batch(8)
        .queue_capacity(4)
        .tokens(|x: &Array2<f32>| x.ncols())
        .build()
        .unwrap();
    let first = b.infer(Array2::zeros((1, 3)));
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.stats().queue_depth > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    // Queued behind it: 2 good requests, one failing, one cancelled; then the queue is full.
    let good = [
        b.infer(Array2::zeros((2, 3))),
        b.infer(Array2::zeros((1, 3))),
    ];
    let bad = b.infer(Array2::from_elem((1, 3), -1.0));
    drop(b.infer(Array2::zeros((1, 3))));
    // The dropped request still holds its place until a stream or a full queue removes it,
    // so the queue is full: this one is removed then, and the next one is refused.
    let refused: Vec<_> = (0..2).map(|_| b.infer(Array2::zeros((1, 3)))).collect();
    // Enough for every call: the failing batch is rerun one request at a time.
    for _ in 0..20 {
        let _ = gate.send(());
    }
    first.wait().unwrap();
    for f in good {
        f.wait().unwrap();
    }
    assert!(matches!(bad.wait(), Err(Error::Module(_))));
    let refused: Vec<_> = refused.into_iter().map(|f| f.wait()).collect();
    let stats = b.stats();
    drop(b);

    let snapshot = snapshotter.snapshot().into_vec();
    let find = |name: &str, kind: MetricKind| {
        snapshot
            .iter()
            .filter(|(k, ..)| k.kind() == kind && k.key().name() == name)
            .map(|(k, _, _, v)| {
                let labels: Vec<(String, String)> = k
                    .key()
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect();
                (labels, v)
            })
            .collect::<Vec<_>>()
    };
    let model = vec![("model".to_owned(), "encoder".to_owned())];
    let model_stream = vec![
        ("model".to_owned(), "encoder".to_owned()),
        ("stream".to_owned(), "0".to_owned()),
    ];
    let counter = |name: &str, labels: &Vec<(String, String)>| -> u64 {
        let found = find(name, MetricKind::Counter);
        match found.iter().find(|(l, _)| l == labels) {
            Some((_, DebugValue::Counter(n))) => *n,
            other => panic!("{name} {labels:?}: {other:?} in {found:?}"),
        }
    };
    let samples = |name: &str| -> Vec<f64> {
        let found = find(name, MetricKind::Histogram);
        match found.iter().find(|(l, _)| *l == model_stream) {
            Some((_, DebugValue::Histogram(v))) => v.iter().map(|x| x.into_inner()).collect(),
            other => panic!("{name}: {other:?} in {found:?}"),
        }
    };
    let rejected = refused
        .iter()
        .filter(|r| matches!(r, Err(Error::Overloaded { .. })))
        .count();
    let served = refused.len() - rejected;
    assert_eq!(rejected as u64, stats.rejected);
    assert_eq!(
        counter("corestream_batcher_requests_accepted_total", &model),
        stats.accepted
    );
    assert_eq!(
        counter("corestream_batcher_requests_rejected_total", &model),
        stats.rejected
    );
    assert_eq!(
        counter("corestream_batcher_requests_cancelled_total", &model),
        1
    );
    assert_eq!(
        counter("corestream_batcher_requests_completed_total", &model_stream),
        3 + served as u64
    );
    assert_eq!(
        counter("corestream_batcher_requests_failed_total", &model_stream),
        1
    );
    assert_eq!(
        counter("corestream_batcher_batches_total", &model_stream),
        stats.batches
    );
    let rows = samples("corestream_batcher_batch_rows");
    assert_eq!(rows.len() as u64, stats.batches);
    assert_eq!(rows.iter().sum::<f64>() as u64, stats.batch_rows);
    let tokens = samples("corestream_batcher_batch_tokens");
    assert_eq!(tokens.iter().sum::<f64>() as u64, stats.batch_tokens);
    assert!(
        tokens.contains(&3.0),
        "the first batch: 1 row x 3 tokens: {tokens:?}"
    );
    // Queue time per request taken, run time per batch, latency per answer.
    assert_eq!(
        samples("corestream_batcher_queue_seconds").len() as u64,
        stats.accepted - 1
    );
    assert_eq!(
        samples("corestream_batcher_run_seconds").len() as u64,
        stats.batches
    );
    assert_eq!(
        samples("corestream_batcher_request_seconds").len() as u64,
        stats.completed + stats.failed
    );
    let depth = find("corestream_batcher_queue_depth", MetricKind::Gauge);
    assert!(depth.iter().any(|(l, _)| *l == model), "{depth:?}");
}
