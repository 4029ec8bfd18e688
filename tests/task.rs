//! Task and TaskFuture: submission, results, failure semantics, shutdown, runtimes, pinning and
//! intra-op threads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use corestream::{module_fn, BoxError, CpuPool, Error, Infer, Module, Task, TaskFuture};

fn all() -> CpuPool {
    CpuPool::all().expect("pool of all cpus")
}

fn first_cpu() -> CpuPool {
    CpuPool::new([all().cpus()[0]]).expect("one-cpu pool")
}

/// A model that blocks until the test opens a gate, so that jobs queue up behind it.
struct Gated {
    gate: Mutex<mpsc::Receiver<()>>,
    calls: AtomicUsize,
}

impl Module for Gated {
    type Input = u32;
    type Output = u32;
    fn forward(&self, x: u32) -> Result<u32, BoxError> {
        if x == 0 {
            self.gate.lock().unwrap().recv()?;
        }
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(x)
    }
}

fn gated() -> (Arc<Gated>, mpsc::Sender<()>) {
    let (tx, rx) = mpsc::channel();
    let model = Arc::new(Gated {
        gate: Mutex::new(rx),
        calls: AtomicUsize::new(0),
    });
    (model, tx)
}

#[test]
fn submit_returns_at_once_and_results_match_direct_calls() {
    let model = module_fn(|x: Vec<f64>| Ok(x.iter().map(|v| v.exp()).collect::<Vec<_>>()));
    let task = Task::new(model, first_cpu()).unwrap();
    let x: Vec<f64> = (0..100).map(f64::from).map(|v| v / 100.0).collect();
    let expected: Vec<f64> = x.iter().map(|v| v.exp()).collect();
    assert_eq!(task.submit(x.clone()).wait().unwrap(), expected);
    assert_eq!(task.run_sync(x).unwrap(), expected);
}

#[test]
fn queued_submissions_complete_in_order_each_to_its_own_future() {
    let (model, gate) = gated();
    let task = Task::new(Arc::clone(&model), first_cpu()).unwrap();
    let blocker = task.submit(0);
    let futures: Vec<TaskFuture<u32>> = (1..=50).map(|i| task.submit(i)).collect();
    assert_eq!(task.stats().in_flight(), 51);
    gate.send(()).unwrap();
    assert_eq!(blocker.wait().unwrap(), 0);
    for (i, f) in (1..=50).zip(futures) {
        assert_eq!(f.wait().unwrap(), i);
    }
    assert_eq!(model.calls.load(Ordering::SeqCst), 51);
}

#[test]
fn model_error_reaches_that_caller_only() {
    let task = Task::new(
        module_fn(|x: i32| {
            if x < 0 {
                Err(format!("negative input {x}").into())
            } else {
                Ok(x)
            }
        }),
        first_cpu(),
    )
    .unwrap();
    let bad = task.submit(-3);
    let good = task.submit(4);
    match bad.wait() {
        Err(Error::Module(e)) => assert_eq!(e.to_string(), "negative input -3"),
        other => panic!("expected Error::Module, got {other:?}"),
    }
    assert_eq!(good.wait().unwrap(), 4);
    assert_eq!(task.stats().failed, 1);
}

#[test]
fn panic_reaches_that_caller_and_the_stream_keeps_serving() {
    let task = Task::new(
        module_fn(|x: i32| {
            if x == 13 {
                panic!("unlucky {x}");
            }
            Ok(x * 2)
        }),
        first_cpu(),
    )
    .unwrap();
    for round in 0..3 {
        match task.run_sync(13) {
            Err(Error::Panicked(msg)) => assert_eq!(msg, "unlucky 13"),
            other => panic!("round {round}: expected Error::Panicked, got {other:?}"),
        }
        assert_eq!(task.run_sync(round).unwrap(), round * 2);
    }
}

#[test]
fn panic_inside_intra_op_rayon_code_is_caught() {
    let pool = all();
    let task = Task::new(
        module_fn(|n: usize| {
            use rayon::prelude::*;
            let s: usize = (0..n)
                .into_par_iter()
                .map(|i| if i == 7 { panic!("row {i} is bad") } else { i })
                .sum();
            Ok(s)
        }),
        pool,
    )
    .unwrap();
    assert!(matches!(task.run_sync(100), Err(Error::Panicked(m)) if m == "row 7 is bad"));
    assert_eq!(task.run_sync(5).unwrap(), 10);
}

#[test]
fn dropped_future_skips_the_job() {
    let (model, gate) = gated();
    let task = Task::new(Arc::clone(&model), first_cpu()).unwrap();
    let blocker = task.submit(0);
    let kept = task.submit(1);
    for i in 2..12 {
        drop(task.submit(i));
    }
    let last = task.submit(99);
    gate.send(()).unwrap();
    assert_eq!(blocker.wait().unwrap(), 0);
    assert_eq!(kept.wait().unwrap(), 1);
    assert_eq!(last.wait().unwrap(), 99);
    // blocker, kept and last ran; the ten dropped jobs never reached the model.
    assert_eq!(model.calls.load(Ordering::SeqCst), 3);
    assert_eq!(task.stats().skipped, 10);
}

#[test]
fn dropping_the_task_finishes_queued_jobs_then_joins() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let task = Task::new(
        module_fn(move |x: u32| {
            std::thread::sleep(Duration::from_millis(2));
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(x)
        }),
        first_cpu(),
    )
    .unwrap();
    let name = task.name().to_owned();
    let futures: Vec<_> = (0..20).map(|i| task.submit(i)).collect();
    drop(task);
    // The drop joined the thread after draining: every job ran and every future is resolved.
    assert_eq!(calls.load(Ordering::SeqCst), 20);
    for (i, f) in (0..20).zip(futures) {
        assert_eq!(f.wait().unwrap(), i);
    }
    assert!(!thread_names().contains(&name), "{name} still alive");
}

#[test]
fn clones_share_one_stream_and_the_last_drop_stops_it() {
    let task = Task::new(module_fn(|x: u8| Ok(x)), first_cpu()).unwrap();
    let clone = task.clone();
    let name = task.name().to_owned();
    drop(task);
    assert_eq!(clone.run_sync(7).unwrap(), 7);
    assert_eq!(clone.stats().completed, 1);
    drop(clone);
    assert!(!thread_names().contains(&name));
}

#[test]
fn awaiting_never_blocks_the_reactor() {
    let task = Task::new(
        module_fn(|x: u32| {
            std::thread::sleep(Duration::from_millis(300));
            Ok(x)
        }),
        first_cpu(),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let ticks = rt.block_on(async {
        let ticks = Arc::new(AtomicUsize::new(0));
        let t = Arc::clone(&ticks);
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                t.fetch_add(1, Ordering::SeqCst);
            }
        });
        let start = Instant::now();
        assert_eq!(task.submit(5).await.unwrap(), 5);
        assert!(start.elapsed() >= Duration::from_millis(300));
        ticker.abort();
        ticks.load(Ordering::SeqCst)
    });
    // The single reactor thread kept ticking while the job ran (30 ticks if perfectly timely).
    assert!(ticks >= 10, "reactor ticked only {ticks} times in 300 ms");
}

#[test]
fn works_under_every_executor() {
    let task = Task::new(module_fn(|x: u64| Ok(x + 1)), first_cpu()).unwrap();
    assert_eq!(futures::executor::block_on(task.submit(1)).unwrap(), 2);
    assert_eq!(smol::block_on(task.submit(2)).unwrap(), 3);
    assert_eq!(futures_lite::future::block_on(task.submit(3)).unwrap(), 4);
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(rt.block_on(task.submit(4)).unwrap(), 5);
    // A TaskFuture is 'static + Send: it can be spawned.
    let fut = task.submit(5);
    assert_eq!(rt.block_on(rt.spawn(fut)).unwrap().unwrap(), 6);
}

#[test]
fn tasks_on_two_pools_run_concurrently_and_join() {
    let pools = all();
    let (a, b) = if pools.len() >= 2 {
        let parts = pools.split(2).unwrap();
        (parts[0].clone(), parts[1].clone())
    } else {
        (pools.clone(), pools)
    };
    let slow = |x: u32| {
        std::thread::sleep(Duration::from_millis(100));
        Ok(x)
    };
    let t1 = Task::new(module_fn(slow), a).unwrap();
    let t2 = Task::new(module_fn(slow), b).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let start = Instant::now();
    let (x, y) = rt.block_on(async { tokio::join!(t1.submit(1), t2.submit(2)) });
    assert_eq!((x.unwrap(), y.unwrap()), (1, 2));
    // Sleeps overlap even on one CPU: two tasks are two threads.
    assert!(
        start.elapsed() < Duration::from_millis(190),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn the_stream_thread_is_named_and_pinned_to_its_pool() {
    for pool in [first_cpu(), all()] {
        let task = Task::builder(module_fn(|_: ()| {
            Ok((
                corestream::affinity::current_cpus()?,
                std::thread::current().name().map(str::to_owned),
            ))
        }))
        .pool(pool.clone())
        .name("cs-test-pin")
        .build()
        .unwrap();
        let (mask, name) = task.run_sync(()).unwrap();
        let mut expected = pool.cpus().to_vec();
        expected.sort_unstable();
        assert_eq!(mask, expected);
        assert_eq!(name.as_deref(), Some("cs-test-pin"));
    }
}

#[test]
fn intra_op_pool_has_one_worker_per_cpu_each_pinned_inside_the_stream() {
    let pool = all();
    let k = pool.len();
    let task = Task::new(
        module_fn(|_: ()| {
            use rayon::prelude::*;
            let n = rayon::current_num_threads();
            // One rayon "broadcast" runs a closure on every worker: report each one's mask.
            let masks: Vec<(usize, Vec<usize>)> = rayon::broadcast(|ctx| {
                (ctx.index(), corestream::affinity::current_cpus().unwrap())
            });
            let sum: u64 = (0..1000u64).into_par_iter().sum();
            Ok((n, masks, sum))
        }),
        pool.clone(),
    )
    .unwrap();
    let (n, masks, sum) = task.run_sync(()).unwrap();
    assert_eq!(n, k);
    assert_eq!(sum, 499_500);
    assert_eq!(masks.len(), k);
    for (index, mask) in masks {
        assert!(
            mask.iter().all(|c| pool.cpus().contains(c)),
            "worker {index} mask {mask:?} leaves {pool}"
        );
        if index > 0 {
            assert_eq!(mask, [pool.cpus()[index]], "worker {index}");
        }
    }
}

#[test]
fn single_cpu_streams_run_rayon_code_on_the_global_pool_free_path() {
    // intra_op(false): the model's rayon calls use rayon's global pool, not a stream pool.
    let task = Task::builder(module_fn(|_: ()| Ok(rayon::current_num_threads())))
        .pool(all())
        .intra_op(false)
        .build()
        .unwrap();
    assert_eq!(task.run_sync(()).unwrap(), rayon::current_num_threads());
}

#[test]
fn infer_is_object_safe() {
    let task = Task::new(module_fn(|s: String| Ok(s.len())), first_cpu()).unwrap();
    let service: Arc<dyn Infer<String, usize>> = Arc::new(task);
    let n = futures::executor::block_on(service.infer("four".into())).unwrap();
    assert_eq!(n, 4);
}

#[test]
fn one_model_is_shared_not_copied_between_tasks() {
    let (model, gate) = gated();
    drop(gate);
    let t1 = Task::new(Arc::clone(&model), first_cpu()).unwrap();
    let t2 = Task::new(Arc::clone(&model), first_cpu()).unwrap();
    t1.run_sync(1).unwrap();
    t2.run_sync(2).unwrap();
    assert_eq!(model.calls.load(Ordering::SeqCst), 2);
    assert_eq!(Arc::strong_count(&model), 3);
}

#[test]
fn many_tasks_created_and_dropped_leave_no_threads_behind() {
    // Counts only this test's threads (its own name prefix: stream threads and their intra-op
    // workers, `{name}w{i}`), so tests running beside it cannot move the count.
    let ours = || {
        thread_names()
            .iter()
            .filter(|n| n.starts_with("leakchk"))
            .count()
    };
    for i in 0..20 {
        let task = Task::builder(module_fn(|x: u8| Ok(x)))
            .pool(all())
            .name(format!("leakchk{i}"))
            .build()
            .unwrap();
        task.run_sync(1).unwrap();
    }
    // Intra-op helper threads exit asynchronously after their pool is dropped.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ours() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(ours(), 0, "threads left: {:?}", thread_names());
}

fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .map(|s| s.trim().to_owned())
        .collect()
}

#[test]
fn futures_are_send_and_static() {
    fn assert_send_static<T: Send + 'static>(_: &T) {}
    let task = Task::new(module_fn(|x: u8| Ok(x)), first_cpu()).unwrap();
    let fut = task.submit(1);
    assert_send_static(&fut);
    assert_send_static(&task);
    assert_eq!(fut.wait().unwrap(), 1);
}

#[test]
fn rayon_code_in_a_one_cpu_stream_stays_on_the_stream_cpu() {
    // Without its own one-thread pool, par_iter inside a one-CPU stream would run on rayon's
    // global pool, on any CPU.
    let pool = CpuPool::new([*all().cpus().last().unwrap()]).unwrap();
    let task = Task::new(
        module_fn(|n: usize| {
            use rayon::prelude::*;
            let stream = std::thread::current().id();
            let off: usize = (0..n)
                .into_par_iter()
                .map(|_| usize::from(std::thread::current().id() != stream))
                .sum();
            Ok((rayon::current_num_threads(), off))
        }),
        pool,
    )
    .unwrap();
    assert_eq!(task.run_sync(64).unwrap(), (1, 0));
}

#[test]
fn spinning_tasks_answer_await_and_wait_alike() {
    let task = Task::builder(module_fn(|x: u64| Ok(x * 3)))
        .pool(all())
        .spin(Duration::from_micros(200))
        .build()
        .unwrap();
    for i in 0..200 {
        assert_eq!(task.submit(i).wait().unwrap(), i * 3);
    }
    assert_eq!(futures::executor::block_on(task.submit(7)).unwrap(), 21);
    // A dropped future is still skipped, and shutdown still drains.
    let futures: Vec<_> = (0..50).map(|i| task.submit(i)).collect();
    drop(task);
    for (i, f) in (0..50).zip(futures) {
        assert_eq!(f.wait().unwrap(), i * 3);
    }
}

#[test]
fn wait_works_inside_another_executor() {
    let task = Task::new(module_fn(|x: u8| Ok(x + 1)), first_cpu()).unwrap();
    let y = futures::executor::block_on(async { task.submit(1).wait() }).unwrap();
    assert_eq!(y, 2);
}
