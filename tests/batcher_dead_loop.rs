//! A serve loop that dies: a panic outside any model call (here the process's metrics
//! recorder, user code the serve loop calls after every batch) ends the loop. The batcher
//! notices: [`Batcher::health`] reports the loop ended, `infer` fails at once with
//! [`Error::NotServing`] instead of queueing work nothing will take, and the stream itself
//! still runs calls made through the module. (Its own binary: it installs the global
//! recorder.)
#![cfg(feature = "metrics")]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use corestream::batch::Rows;
use corestream::{module_fn, Batcher, BatcherProblem, CpuPool, Error, MultiStreamModule, Streams};
use metrics::{Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder};
use metrics::{SharedString, Unit};

/// Counters that panic once `ARMED` is set; gauges and histograms do nothing.
struct Booby;

static ARMED: AtomicBool = AtomicBool::new(false);

impl CounterFn for Booby {
    fn increment(&self, _: u64) {
        assert!(!ARMED.load(Ordering::SeqCst), "the metrics recorder failed");
    }
    fn absolute(&self, _: u64) {}
}

struct BoobyRecorder;

impl Recorder for BoobyRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Booby))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[test]
fn a_dead_serve_loop_is_noticed_and_infer_refuses() {
    metrics::set_global_recorder(BoobyRecorder).unwrap();
    let cpu = CpuPool::all().unwrap().cpus()[0];
    let (gate, rx) = mpsc::channel::<()>();
    let rx = Mutex::new(rx);
    let model = module_fn(move |x: Rows<u32>| {
        rx.lock().unwrap().recv()?;
        Ok(x)
    });
    let msm = MultiStreamModule::builder(model)
        .pool(CpuPool::new([cpu]).unwrap())
        .num_streams(Streams::Count(1))
        .build()
        .unwrap();
    let b = Batcher::builder(msm).build().unwrap();
    gate.send(()).unwrap();
    let ok = futures::executor::block_on(b.infer(Rows(vec![1])));
    assert_eq!(ok.unwrap(), Rows(vec![1]));

    // Queued (and counted) while the recorder still works; the loop runs the model, then
    // panics counting the answer: this caller is not answered.
    let lost = b.infer(Rows(vec![2]));
    ARMED.store(true, Ordering::SeqCst);
    gate.send(()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.health().serving > 0 {
        assert!(Instant::now() < deadline, "the loop's end was not counted");
        std::thread::sleep(Duration::from_millis(2));
    }
    ARMED.store(false, Ordering::SeqCst);
    let lost = futures::executor::block_on(lost);
    assert!(matches!(lost, Err(Error::Shutdown)), "{lost:?}");

    let h = b.health();
    assert_eq!((h.streams, h.serving, h.ended), (1, 0, 1), "{h:?}");
    assert_eq!(
        h.problem(Duration::from_secs(60)),
        Some(BatcherProblem::LoopsEnded {
            ended: 1,
            streams: 1
        })
    );
    // Refused at once, not queued for ever.
    let refused = futures::executor::block_on(b.infer(Rows(vec![3])));
    assert!(
        matches!(refused, Err(Error::NotServing { streams: 1 })),
        "{refused:?}"
    );
    assert_eq!(b.stats().queue_depth, 0);
    // The stream itself lives: calls made through the module still run.
    gate.send(()).unwrap();
    let direct = futures::executor::block_on(b.module().forward(Rows(vec![4])));
    assert_eq!(direct.unwrap(), Rows(vec![4]));
}
