//! `BatcherService` (feature `tower`) under tower's layers: timeout, load shedding when the
//! batcher's queue is full, concurrency limit, readiness woken when a place frees, errors that
//! downcast to `corestream::Error`, reservations released.
#![cfg(feature = "tower")]

use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use corestream::ndarray::{array, Array2};
use corestream::{Batcher, BatcherService, BoxError, CpuPool, Error, Module, MultiStreamModule};
use tower::{Service, ServiceBuilder, ServiceExt};

/// x * 10; a negative first value is a model error; waits on the gate when there is one.
struct Gated {
    gate: Mutex<Option<mpsc::Receiver<()>>>,
}

impl Module for Gated {
    type Input = Array2<f32>;
    type Output = Array2<f32>;
    fn forward(&self, x: Array2<f32>) -> Result<Array2<f32>, BoxError> {
        if let Some(gate) = self.gate.lock().unwrap().as_ref() {
            gate.recv()?;
        }
        if x[[0, 0]] < 0.0 {
            return Err("negative input".into());
        }
        Ok(x * 10.0)
    }
}

/// A one-stream batcher of `capacity` places over the gated model (when `gated`).
fn batcher(gated: bool, capacity: usize) -> (Arc<Batcher<Gated>>, Option<mpsc::Sender<()>>) {
    let (tx, rx) = mpsc::channel();
    let model = Gated {
        gate: Mutex::new(gated.then_some(rx)),
    };
    let pool = CpuPool::new([CpuPool::all().unwrap().cpus()[0]]).unwrap();
    let msm = MultiStreamModule::builder(model)
        .pool(pool)
        .build()
        .unwrap();
    let b = Batcher::builder(msm)
        .max_batch(4)
        .queue_capacity(capacity)
        .build()
        .unwrap();
    (Arc::new(b), gated.then_some(tx))
}

/// Waits (up to 5 s) until the queue holds `depth` requests.
fn wait_for_depth(b: &Batcher<Gated>, depth: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.stats().queue_depth != depth && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(b.stats().queue_depth, depth);
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

#[test]
fn answers_and_model_errors_come_through_the_layers_as_corestream_errors() {
    let (b, _) = batcher(false, 16);
    rt().block_on(async {
        let mut svc = ServiceBuilder::new()
            .timeout(Duration::from_secs(10))
            .service(BatcherService::new(Arc::clone(&b)));
        let y = svc.ready().await.unwrap().call(array![[1.0f32]]).await;
        assert_eq!(y.unwrap(), array![[10.0f32]]);
        let err: BoxError = svc
            .ready()
            .await
            .unwrap()
            .call(array![[-1.0f32]])
            .await
            .unwrap_err();
        let err = err.downcast::<Error>().expect("a corestream::Error");
        assert!(matches!(*err, Error::Module(_)), "{err}");
        // The service itself speaks corestream::Error.
        let mut plain = BatcherService::new(Arc::clone(&b));
        let e: Error = plain
            .ready()
            .await
            .unwrap()
            .call(array![[-2.0f32]])
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Module(_)), "{e}");
    });
    assert_eq!((b.stats().completed, b.stats().failed), (1, 2));
}

#[test]
fn a_timeout_fails_the_request_and_removes_it_from_the_queue() {
    let (b, gate) = batcher(true, 16);
    let gate = gate.unwrap();
    // Occupies the stream.
    let first = b.infer(array![[1.0f32]]);
    wait_for_depth(&b, 0);
    rt().block_on(async {
        let mut svc = ServiceBuilder::new()
            .timeout(Duration::from_millis(50))
            .service(BatcherService::new(Arc::clone(&b)));
        let started = Instant::now();
        let err = svc
            .ready()
            .await
            .unwrap()
            .call(array![[2.0f32]])
            .await
            .unwrap_err();
        assert!(err.is::<tower::timeout::error::Elapsed>(), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
    });
    gate.send(()).unwrap();
    assert_eq!(first.wait().unwrap(), array![[10.0f32]]);
    // The timed-out request was dropped before its batch formed: removed, never run.
    let next = b.infer(array![[3.0f32]]);
    gate.send(()).unwrap();
    assert_eq!(next.wait().unwrap(), array![[30.0f32]]);
    let stats = b.stats();
    assert_eq!((stats.cancelled, stats.completed), (1, 2), "{stats:?}");
}

#[test]
fn load_shed_refuses_at_once_while_the_queue_is_full() {
    let (b, gate) = batcher(true, 2);
    let gate = gate.unwrap();
    let running = b.infer(array![[1.0f32]]);
    wait_for_depth(&b, 0);
    let queued = [b.infer(array![[2.0f32]]), b.infer(array![[3.0f32]])];
    wait_for_depth(&b, 2);
    rt().block_on(async {
        let mut svc = ServiceBuilder::new()
            .load_shed()
            .service(BatcherService::new(Arc::clone(&b)));
        let err = svc
            .ready()
            .await
            .unwrap()
            .call(array![[4.0f32]])
            .await
            .unwrap_err();
        assert!(err.is::<tower::load_shed::error::Overloaded>(), "{err}");
    });
    for _ in 0..3 {
        gate.send(()).unwrap();
    }
    assert_eq!(running.wait().unwrap(), array![[10.0f32]]);
    for (f, v) in queued.into_iter().zip([20.0f32, 30.0]) {
        assert_eq!(f.wait().unwrap(), array![[v]]);
    }
    // With room again the same stack serves.
    let (b2, _) = batcher(false, 2);
    rt().block_on(async {
        let mut svc = ServiceBuilder::new()
            .load_shed()
            .service(BatcherService::new(b2));
        let y = svc.ready().await.unwrap().call(array![[5.0f32]]).await;
        assert_eq!(y.unwrap(), array![[50.0f32]]);
    });
}

#[test]
fn readiness_waits_for_a_free_place_and_is_woken_when_one_frees() {
    let (b, gate) = batcher(true, 1);
    let gate = gate.unwrap();
    let running = b.infer(array![[1.0f32]]);
    wait_for_depth(&b, 0);
    let queued = b.infer(array![[2.0f32]]);
    wait_for_depth(&b, 1);
    let opener = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        gate.send(()).unwrap();
        gate.send(()).unwrap();
        gate.send(()).unwrap();
    });
    rt().block_on(async {
        let mut svc = BatcherService::new(Arc::clone(&b));
        let started = Instant::now();
        // Full: not ready until the stream takes the queued request.
        let ready = tokio::time::timeout(Duration::from_secs(5), svc.ready()).await;
        assert!(ready.expect("woken").is_ok());
        assert!(started.elapsed() >= Duration::from_millis(50));
        // The place is reserved: the queue counts it.
        assert_eq!(b.stats().queue_depth, 1);
        let y = svc.call(array![[3.0f32]]).await.unwrap();
        assert_eq!(y, array![[30.0f32]]);
    });
    opener.join().unwrap();
    assert_eq!(running.wait().unwrap(), array![[10.0f32]]);
    assert_eq!(queued.wait().unwrap(), array![[20.0f32]]);
}

#[test]
fn a_reservation_not_used_is_released_with_its_handle() {
    let (b, _) = batcher(false, 1);
    rt().block_on(async {
        let mut svc = BatcherService::new(Arc::clone(&b));
        svc.ready().await.unwrap();
        assert_eq!(b.stats().queue_depth, 1);
        // A clone does not share the reservation.
        let mut other = svc.clone();
        let err = other.call(array![[1.0f32]]).await.unwrap_err();
        assert!(matches!(err, Error::Overloaded { capacity: 1 }), "{err}");
        drop(svc);
        assert_eq!(b.stats().queue_depth, 0);
        let y = other.ready().await.unwrap().call(array![[1.0f32]]).await;
        assert_eq!(y.unwrap(), array![[10.0f32]]);
        // An invalid input after a reservation gives the place back too.
        let empty = Array2::<f32>::zeros((0, 1));
        let err = other.ready().await.unwrap().call(empty).await.unwrap_err();
        assert!(matches!(err, Error::EmptyBatch), "{err}");
        assert_eq!(b.stats().queue_depth, 0);
    });
}

#[test]
fn concurrency_limit_holds_callers_back_before_the_queue() {
    let (b, gate) = batcher(true, 16);
    let gate = gate.unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let svc = ServiceBuilder::new()
            .concurrency_limit(1)
            .service(BatcherService::new(Arc::clone(&b)));
        let calls: Vec<_> = (0..3)
            .map(|i| {
                let svc = svc.clone();
                tokio::spawn(async move { svc.oneshot(array![[i as f32]]).await })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        while b.stats().accepted == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        // One request in the batcher (running, gated); the others wait for a permit.
        assert_eq!(b.stats().accepted, 1);
        for _ in 0..3 {
            gate.send(()).unwrap();
        }
        for (i, call) in calls.into_iter().enumerate() {
            let y = call.await.unwrap().unwrap();
            assert_eq!(y, array![[i as f32 * 10.0]]);
        }
    });
    assert_eq!(b.stats().accepted, 3);
}
