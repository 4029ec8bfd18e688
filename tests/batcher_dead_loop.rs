//! A serve loop that dies: a panic outside any model call (here the process's metrics
//! recorder, user code the serve loop calls as it opens a batch and as it answers) ends the
//! loop. The batcher
//! notices: [`Batcher::health`] reports the loop ended, `infer` fails at once with
//! [`Error::NotServing`] instead of queueing work nothing will take, and the stream itself
//! still runs calls made through the module. (Its own binary: it installs the global
//! recorder.)
#![cfg(feature = "metrics")]

use std::sync::{mpsc, Arc, Mutex, Once};
use std::time::{Duration, Instant};

use corestream::batch::Rows;
use corestream::{module_fn, Batcher, BatcherProblem, CpuPool, Error, MultiStreamModule, Streams};
use metrics::{Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder};
use metrics::{SharedString, Unit};

/// Counters that panic once armed: each knows its name and its batcher (the `model` label),
/// and panics while that pair is in `ARMED`; gauges and histograms do nothing.
struct Booby {
    name: String,
    model: String,
}

static ARMED: Mutex<Vec<(&'static str, &'static str)>> = Mutex::new(Vec::new());
static INSTALL: Once = Once::new();

fn arm(model: &'static str, counter: &'static str, armed: bool) {
    let mut set = ARMED.lock().unwrap_or_else(|e| e.into_inner());
    set.retain(|&pair| pair != (model, counter));
    if armed {
        set.push((model, counter));
    }
}

impl CounterFn for Booby {
    fn increment(&self, _: u64) {
        let armed = ARMED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|&(model, name)| model == self.model && name == self.name);
        assert!(!armed, "the metrics recorder failed");
    }
    fn absolute(&self, _: u64) {}
}

struct BoobyRecorder;

impl Recorder for BoobyRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let model = key
            .labels()
            .find(|l| l.key() == "model")
            .map_or(String::new(), |l| l.value().to_owned());
        Counter::from_arc(Arc::new(Booby {
            name: key.name().to_owned(),
            model,
        }))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

const BATCHES: &str = "corestream_batcher_batches_total";
const COMPLETED: &str = "corestream_batcher_requests_completed_total";

/// A one-stream batcher named `name` over a model that waits for `gate` before each call.
fn gated(
    name: &str,
) -> (
    Batcher<impl corestream::Module<Input = Rows<u32>, Output = Rows<u32>>>,
    mpsc::Sender<()>,
) {
    INSTALL.call_once(|| metrics::set_global_recorder(BoobyRecorder).unwrap());
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
    (Batcher::builder(msm).name(name).build().unwrap(), gate)
}

/// Waits (60 s at most) for the batcher's one serve loop to be counted as ended. The loop's
/// end is counted once the panic hook has returned: with `RUST_BACKTRACE=1` it symbolises a
/// backtrace first, which takes about 9 s in a ThreadSanitizer build.
fn until_ended<M>(b: &Batcher<M>)
where
    M: corestream::Module,
    M::Input: corestream::batch::Batch + Clone,
    M::Output: corestream::batch::Batch,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while b.health().serving > 0 {
        assert!(
            Instant::now() < deadline,
            "the loop's end was not counted: {:?}",
            b.health()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// After the loop died: health says so, `infer` refuses at once, the stream still runs
/// calls made through the module.
fn dead_and_refusing<M>(b: &Batcher<M>, gate: &mpsc::Sender<()>)
where
    M: corestream::Module<Input = Rows<u32>, Output = Rows<u32>>,
{
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

#[test]
fn a_loop_that_dies_answering_is_noticed_and_infer_refuses() {
    let (b, gate) = gated("answering");
    gate.send(()).unwrap();
    let ok = futures::executor::block_on(b.infer(Rows(vec![1])));
    assert_eq!(ok.unwrap(), Rows(vec![1]));

    // The loop takes this request and waits in the model; armed meanwhile, it panics
    // counting the answer: this caller is not answered.
    let lost = b.infer(Rows(vec![2]));
    let deadline = Instant::now() + Duration::from_secs(60);
    while b.health().longest_run.is_none() {
        assert!(
            Instant::now() < deadline,
            "the loop did not take the request"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    arm("answering", COMPLETED, true);
    gate.send(()).unwrap();
    until_ended(&b);
    arm("answering", COMPLETED, false);
    let lost = futures::executor::block_on(lost);
    assert!(matches!(lost, Err(Error::Shutdown)), "{lost:?}");
    dead_and_refusing(&b, &gate);
}

#[test]
fn a_loop_that_dies_starting_a_batch_is_noticed_and_infer_refuses() {
    let (b, gate) = gated("starting");
    gate.send(()).unwrap();
    let ok = futures::executor::block_on(b.infer(Rows(vec![1])));
    assert_eq!(ok.unwrap(), Rows(vec![1]));

    // Armed before the request is queued: the loop panics opening its batch, before any
    // model call; the request it had taken is failed, not lost.
    arm("starting", BATCHES, true);
    let lost = b.infer(Rows(vec![2]));
    until_ended(&b);
    arm("starting", BATCHES, false);
    let lost = futures::executor::block_on(lost);
    assert!(matches!(lost, Err(Error::Shutdown)), "{lost:?}");
    dead_and_refusing(&b, &gate);
}
