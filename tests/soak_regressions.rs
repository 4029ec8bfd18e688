//! Regression tests for the bugs the soak run (`benches/soak.rs`) and the loom models
//! (`tests/loom_*.rs`) found, each made deterministic.

use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use corestream::ndarray::{array, Array2};
use corestream::{module_fn, Batcher, BatcherStats, CpuPool, Error, MultiStreamModule, Streams};

/// Polls `stats` until `done` holds (5 s at most) and returns the last snapshot.
fn settle(stats: impl Fn() -> BatcherStats, done: impl Fn(&BatcherStats) -> bool) -> BatcherStats {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let s = stats();
        if done(&s) || Instant::now() >= end {
            return s;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Soak: a request whose caller left while its batch ran, the batch then failing and being
/// rerun one request at a time, was skipped without being counted, so `accepted` never
/// equalled `completed + failed + cancelled` again (the soak's drain check timed out).
#[test]
fn request_dropped_during_a_failing_batch_is_counted_as_cancelled() {
    let (gate_tx, gate_rx) = mpsc::channel::<()>();
    let (started_tx, started_rx) = mpsc::channel::<&'static str>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let gate_rx = Mutex::new(gate_rx);
    let go_rx = Mutex::new(go_rx);
    let started_tx = Mutex::new(started_tx);
    // Row value 1: blocks until the gate opens; 2: poison (fails), and a batch holding it
    // waits for the test before failing; anything else: echoed.
    let model = module_fn(move |x: Array2<f32>| {
        let has = |v: f32| x.column(0).iter().any(|&c| c == v);
        if has(1.0) {
            started_tx.lock().unwrap().send("gated").unwrap();
            gate_rx.lock().unwrap().recv()?;
        }
        if has(2.0) {
            if x.nrows() > 1 {
                started_tx.lock().unwrap().send("batch").unwrap();
                go_rx.lock().unwrap().recv()?;
            }
            return Err("poison row".into());
        }
        Ok(x)
    });
    let msm = MultiStreamModule::builder(model)
        .pool(CpuPool::all().unwrap())
        .num_streams(Streams::Count(1))
        .build()
        .unwrap();
    let batcher = Batcher::builder(msm).max_batch(8).build().unwrap();
    let gated = batcher.infer(array![[1.0f32]]);
    assert_eq!(started_rx.recv().unwrap(), "gated");
    // Both queued behind the gated request, so they form one batch.
    let poison = batcher.infer(array![[2.0f32]]);
    let left = batcher.infer(array![[3.0f32]]);
    gate_tx.send(()).unwrap();
    assert_eq!(gated.wait().unwrap(), array![[1.0f32]]);
    assert_eq!(started_rx.recv().unwrap(), "batch");
    // The caller leaves while its batch runs; the batch then fails.
    drop(left);
    go_tx.send(()).unwrap();
    assert!(matches!(poison.wait(), Err(Error::Module(e)) if e.to_string() == "poison row"));
    let s = settle(
        || batcher.stats(),
        |s| s.accepted == s.completed + s.failed + s.cancelled,
    );
    assert_eq!(
        (
            s.accepted,
            s.completed,
            s.failed,
            s.cancelled,
            s.queue_depth
        ),
        (3, 1, 1, 1, 0),
        "{s:?}"
    );
}
