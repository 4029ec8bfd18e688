//! Batcher liveness ([`Batcher::health`]): a model call that does not return shows as a long
//! run and then as a long queue wait; a panic in the input's `Clone` (user code outside the
//! model call) fails that batch's requests and leaves the serve loop alive.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use corestream::batch::Rows;
use corestream::{
    module_fn, Batcher, BatcherProblem, BoxError, CpuPool, Error, Module, MultiStreamModule,
    Streams,
};

/// Doubles each row after the gate lets the call through.
struct Gated(Mutex<mpsc::Receiver<()>>);

impl Module for Gated {
    type Input = Rows<u32>;
    type Output = Rows<u32>;
    fn forward(&self, x: Rows<u32>) -> Result<Rows<u32>, BoxError> {
        self.0.lock().unwrap().recv()?;
        Ok(Rows(x.0.into_iter().map(|v| v * 2).collect()))
    }
}

fn one_stream<M: Module>(model: M) -> MultiStreamModule<M> {
    let cpu = CpuPool::all().unwrap().cpus()[0];
    MultiStreamModule::builder(model)
        .pool(CpuPool::new([cpu]).unwrap())
        .num_streams(Streams::Count(1))
        .build()
        .unwrap()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_model_call_that_does_not_return_shows_as_a_run_then_a_wait() {
    let (gate, rx) = mpsc::channel();
    let b = Batcher::builder(one_stream(Gated(Mutex::new(rx))))
        .max_batch(1)
        .build()
        .unwrap();
    let idle = b.health();
    assert_eq!((idle.streams, idle.serving, idle.ended), (1, 1, 0));
    assert_eq!(
        (idle.queued, idle.oldest_wait, idle.longest_run),
        (0, None, None)
    );

    let stuck = b.infer(Rows(vec![1]));
    wait_for("the stream to take the request", || {
        b.health().longest_run.is_some()
    });
    let behind = b.infer(Rows(vec![2]));
    std::thread::sleep(Duration::from_millis(150));
    let h = b.health();
    assert_eq!(h.queued, 1, "{h:?}");
    let ran = h.longest_run.expect("a stream is in a batch");
    let waited = h.oldest_wait.expect("a request waits");
    assert!(ran >= Duration::from_millis(150), "{h:?}");
    assert!(waited >= Duration::from_millis(150), "{h:?}");
    assert!(
        matches!(h.problem(Duration::from_millis(100)), Some(BatcherProblem::BatchStuck { ran: r }) if r == ran),
        "{h:?}"
    );
    assert_eq!(h.problem(Duration::from_secs(60)), None);
    let said = h.problem(Duration::from_millis(100)).unwrap().to_string();
    assert!(said.contains("has run for"), "{said}");

    // The model returns: both are answered and the batcher is healthy again.
    gate.send(()).unwrap();
    gate.send(()).unwrap();
    let (a, c) = futures::executor::block_on(futures::future::join(stuck, behind));
    assert_eq!((a.unwrap(), c.unwrap()), (Rows(vec![2]), Rows(vec![4])));
    wait_for("the stream to be idle", || b.health().longest_run.is_none());
    let h = b.health();
    assert_eq!((h.queued, h.oldest_wait), (0, None));
    assert_eq!(h.problem(Duration::ZERO), None);
}

#[test]
fn waiting_requests_whose_callers_left_do_not_count() {
    let (gate, rx) = mpsc::channel();
    let b = Batcher::builder(one_stream(Gated(Mutex::new(rx))))
        .max_batch(1)
        .build()
        .unwrap();
    let first = b.infer(Rows(vec![1]));
    wait_for("the stream to take the request", || {
        b.health().longest_run.is_some()
    });
    drop(b.infer(Rows(vec![2])));
    let h = b.health();
    assert_eq!((h.queued, h.oldest_wait), (0, None), "{h:?}");
    gate.send(()).unwrap();
    assert_eq!(futures::executor::block_on(first).unwrap(), Rows(vec![2]));
}

/// A row whose `Clone` panics once `FRAGILE` is set: user code the serve loop runs outside
/// the model call (it keeps copies of a batch's inputs to rerun them one by one).
#[derive(Debug, PartialEq)]
struct Fragile(u32);

static FRAGILE: AtomicBool = AtomicBool::new(false);

impl Clone for Fragile {
    fn clone(&self) -> Self {
        assert!(!FRAGILE.load(Ordering::SeqCst), "Fragile::clone");
        Fragile(self.0)
    }
}

#[test]
fn a_panicking_clone_fails_its_batch_and_the_serve_loop_lives() {
    let model =
        module_fn(|x: Rows<Fragile>| Ok(Rows(x.0.into_iter().map(|f| Fragile(f.0 + 1)).collect())));
    // A long max_wait: the two requests are batched together (and cloned).
    let b = Batcher::builder(one_stream(model))
        .max_batch(2)
        .max_wait(Duration::from_secs(10))
        .build()
        .unwrap();
    FRAGILE.store(true, Ordering::SeqCst);
    let (x, y) = futures::executor::block_on(futures::future::join(
        b.infer(Rows(vec![Fragile(1)])),
        b.infer(Rows(vec![Fragile(2)])),
    ));
    FRAGILE.store(false, Ordering::SeqCst);
    for r in [x, y] {
        match r {
            Err(Error::Panicked(m)) => assert!(m.contains("Fragile::clone"), "{m}"),
            other => panic!("expected Panicked, got {other:?}"),
        }
    }
    let h = b.health();
    assert_eq!((h.serving, h.ended), (1, 0), "{h:?}");
    let (x, y) = futures::executor::block_on(futures::future::join(
        b.infer(Rows(vec![Fragile(1)])),
        b.infer(Rows(vec![Fragile(2)])),
    ));
    assert_eq!(x.unwrap(), Rows(vec![Fragile(2)]));
    assert_eq!(y.unwrap(), Rows(vec![Fragile(3)]));
}

#[test]
fn problems_read_as_sentences() {
    let ended = BatcherProblem::LoopsEnded {
        ended: 1,
        streams: 4,
    };
    assert_eq!(
        ended.to_string(),
        "1 of 4 serve loops ended on a panic outside any model call"
    );
    let waited = BatcherProblem::RequestStuck {
        waited: Duration::from_millis(61_300),
    };
    assert_eq!(
        waited.to_string(),
        "the oldest queued request has waited 61.3 s for a stream"
    );
}
