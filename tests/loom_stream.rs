//! loom model checks of the stream protocol: submit, reply, skip-if-dropped and
//! drain-on-drop, through the public `Task` API running on loom's threads, locks and atomics
//! (see `src/sync.rs`). Every interleaving of the caller threads and the stream thread, up to
//! `LOOM_MAX_PREEMPTIONS` preemptions (default here: 3), is explored.
//!
//! ```text
//! RUSTFLAGS="--cfg corestream_loom" cargo test --release --test loom_stream -- --nocapture
//! ```
//!
//! Each model prints the number of interleavings it explored.
#![cfg(corestream_loom)]

use std::sync::Arc;
use std::time::Duration;

use corestream::{module_fn, BoxError, Error, Module, StreamStats, Task};
use futures::FutureExt;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Condvar, Mutex};

mod loom_support;
use loom_support::{check, pool};

/// A task for a model: no idle polling (loom has no clock) and no intra-op pool (rayon's
/// threads are not loom's).
fn task<M: Module>(model: M) -> Task<M> {
    Task::builder(model)
        .pool(pool())
        .spin(Duration::ZERO)
        .intra_op(false)
        .build()
        .expect("task starts")
}

fn stats(submitted: u64, completed: u64, failed: u64, skipped: u64) -> StreamStats {
    let mut s = StreamStats::default();
    s.submitted = submitted;
    s.completed = completed;
    s.failed = failed;
    s.skipped = skipped;
    s
}

/// A model whose input 0 blocks until the test opens the gate; it counts its calls by input.
struct Gated {
    open: Mutex<bool>,
    opened: Condvar,
    calls: [AtomicUsize; 4],
}

impl Gated {
    fn new() -> Arc<Gated> {
        Arc::new(Gated {
            open: Mutex::new(false),
            opened: Condvar::new(),
            calls: Default::default(),
        })
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }

    fn calls(&self, input: usize) -> usize {
        self.calls[input].load(Ordering::SeqCst)
    }
}

impl Module for Gated {
    type Input = usize;
    type Output = usize;
    fn forward(&self, x: usize) -> Result<usize, BoxError> {
        if x == 0 {
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.opened.wait(open).unwrap();
            }
        }
        self.calls[x].fetch_add(1, Ordering::SeqCst);
        Ok(x * 10)
    }
}

#[test]
fn submit_and_reply_from_two_callers() {
    check("submit/reply, 2 callers", 3, || {
        let task = task(module_fn(|x: u32| Ok(x + 100)));
        let other = task.clone();
        let caller = loom::thread::spawn(move || other.submit(3).wait());
        let a = task.submit(1);
        let b = task.submit(2);
        // One through the blocking wait, one as a future.
        assert_eq!(a.wait().unwrap(), 101);
        assert_eq!(loom::future::block_on(b).unwrap(), 102);
        assert_eq!(caller.join().unwrap().unwrap(), 103);
        // Every answer was counted before it was sent.
        assert_eq!(task.stats(), stats(3, 3, 0, 0));
    });
}

#[test]
fn model_error_reaches_its_caller_and_is_counted() {
    check("reply with a model error", 3, || {
        let task = task(module_fn(|x: i32| {
            if x < 0 {
                Err(format!("negative {x}").into())
            } else {
                Ok(x)
            }
        }));
        let bad = task.submit(-1);
        let good = task.submit(1);
        assert!(matches!(bad.wait(), Err(Error::Module(e)) if e.to_string() == "negative -1"));
        assert_eq!(good.wait().unwrap(), 1);
        assert_eq!(task.stats(), stats(2, 1, 1, 0));
    });
}

#[test]
fn future_dropped_before_its_job_starts_is_skipped() {
    check("skip-if-dropped (dropped before start)", 3, || {
        let gated = Gated::new();
        let task = task(Arc::clone(&gated));
        let blocker = task.submit(0);
        // Queued behind the blocked job, dropped before the stream can reach it.
        drop(task.submit(1));
        gated.open();
        assert_eq!(blocker.wait().unwrap(), 0);
        // FIFO: once job 2 is answered, job 1 has been dealt with.
        assert_eq!(task.submit(2).wait().unwrap(), 20);
        assert_eq!(gated.calls(1), 0, "a job whose future was dropped ran");
        assert_eq!(task.stats(), stats(3, 2, 0, 1));
    });
}

#[test]
fn future_dropped_while_its_job_may_start_runs_once_or_is_skipped() {
    check("skip-if-dropped (racing the start)", 3, || {
        let gated = Gated::new();
        gated.open();
        let task = task(Arc::clone(&gated));
        let racing = task.submit(1);
        let dropper = loom::thread::spawn(move || drop(racing));
        assert_eq!(task.submit(2).wait().unwrap(), 20);
        dropper.join().unwrap();
        let s = task.stats();
        // Either it ran (its result discarded) or it was skipped: never both, never neither.
        assert_eq!(gated.calls(1) as u64, s.completed - 1);
        assert_eq!(s.completed + s.skipped, 2, "{s:?}");
        assert_eq!((s.submitted, s.failed), (2, 0));
    });
}

#[test]
fn dropping_the_last_handle_answers_every_queued_job() {
    check("drain-on-drop (last of two handles)", 3, || {
        let gated = Gated::new();
        gated.open();
        let task = task(Arc::clone(&gated));
        let other = task.clone();
        let dropper = loom::thread::spawn(move || {
            let fut = other.submit(3);
            drop(other);
            fut
        });
        let a = task.submit(1);
        let b = task.submit(2);
        drop(task);
        let c = dropper.join().unwrap();
        // Whichever handle went last joined the stream after it drained the queue, so every
        // future must hold its answer by now: none is lost, none is Shutdown.
        match (a.now_or_never(), b.now_or_never(), c.now_or_never()) {
            (Some(Ok(10)), Some(Ok(20)), Some(Ok(30))) => {}
            other => panic!("queued jobs not answered by the drop: {other:?}"),
        }
        assert_eq!((gated.calls(1), gated.calls(2), gated.calls(3)), (1, 1, 1));
    });
}
