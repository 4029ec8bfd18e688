//! loom model checks of the `Batcher`'s queue protocol: take (callers send, a serve loop
//! sleeping on the queue is woken and takes the batch), cancel (a request whose caller left is
//! removed or its answer discarded, and counted once), overload (a full queue answers
//! `Overloaded` at once) and drain (dropping the batcher answers every accepted request first),
//! plus a job submitted to the module directly while its stream serves the batcher (the wake
//! hook). Everything runs on loom's threads, locks and atomics (see `src/sync.rs`); every
//! interleaving of the callers and the stream thread, up to `LOOM_MAX_PREEMPTIONS` preemptions
//! (default here: 2), is explored.
//!
//! ```text
//! RUSTFLAGS="--cfg corestream_loom" cargo test --release --test loom_batcher -- --nocapture
//! ```
//!
//! The stream does not poll (`spin(Duration::ZERO)`: loom has no clock), so the serve loop
//! always goes to sleep on the queue's condition variable when it finds nothing: the path
//! where a lost wake-up would hang a caller. The polling path (`pending` flag, claims) is not
//! modelled.
#![cfg(corestream_loom)]

use std::time::Duration;

use corestream::ndarray::{array, Array2};
use corestream::{module_fn, Batcher, BatcherStats, Error, Module, MultiStreamModule, Streams};
use futures::FutureExt;

mod loom_support;
use loom_support::{check, pool};

/// A batcher over one stream that doubles its input.
fn batcher(capacity: usize) -> Batcher<impl Module<Input = Array2<f32>, Output = Array2<f32>>> {
    let msm = MultiStreamModule::builder(module_fn(|x: Array2<f32>| Ok(x * 2.0)))
        .pool(pool())
        .num_streams(Streams::Count(1))
        .spin(Duration::ZERO)
        .intra_op(false)
        .build()
        .expect("module starts");
    Batcher::builder(msm)
        .max_batch(4)
        .queue_capacity(capacity)
        .build()
        .expect("batcher starts")
}

/// The counters every model ends with: each accepted request answered or cancelled, nothing
/// queued.
fn assert_settled(s: &BatcherStats) {
    assert_eq!(s.queue_depth, 0, "{s:?}");
    assert_eq!(s.accepted, s.completed + s.failed + s.cancelled, "{s:?}");
}

#[test]
fn two_callers_each_get_their_own_rows() {
    check("take, 2 callers", 2, || {
        let batcher = std::sync::Arc::new(batcher(4));
        let other = std::sync::Arc::clone(&batcher);
        let caller = loom::thread::spawn(move || other.infer(array![[3.0f32]]).wait());
        let mine = batcher.infer(array![[1.0f32], [2.0]]).wait();
        assert_eq!(mine.unwrap(), array![[2.0f32], [4.0]]);
        assert_eq!(caller.join().unwrap().unwrap(), array![[6.0f32]]);
        let s = batcher.stats();
        assert_settled(&s);
        assert_eq!((s.accepted, s.completed, s.rejected), (2, 2, 0));
    });
}

#[test]
fn a_dropped_request_is_cancelled_or_its_answer_discarded_once() {
    check("cancel", 2, || {
        let batcher = batcher(4);
        let left = batcher.infer(array![[1.0f32]]);
        let dropper = loom::thread::spawn(move || drop(left));
        let kept = batcher.infer(array![[2.0f32]]);
        assert_eq!(kept.wait().unwrap(), array![[4.0f32]]);
        dropper.join().unwrap();
        // The dropped request came first: once the later one is answered it has been either
        // removed (cancelled) or run (completed, its answer discarded), never both.
        let s = batcher.stats();
        assert_settled(&s);
        assert_eq!((s.accepted, s.failed), (2, 0), "{s:?}");
        assert_eq!(s.completed + s.cancelled, 2, "{s:?}");
    });
}

#[test]
fn a_full_queue_answers_overloaded_at_once() {
    check("overload, capacity 1", 2, || {
        let batcher = std::sync::Arc::new(batcher(1));
        let other = std::sync::Arc::clone(&batcher);
        let caller = loom::thread::spawn(move || other.infer(array![[3.0f32]]).wait());
        let mine = batcher.infer(array![[1.0f32]]).wait();
        let theirs = caller.join().unwrap();
        let mut overloaded = 0;
        for (answer, want) in [(mine, array![[2.0f32]]), (theirs, array![[6.0f32]])] {
            match answer {
                Ok(rows) => assert_eq!(rows, want),
                Err(Error::Overloaded { capacity: 1 }) => overloaded += 1,
                Err(e) => panic!("unexpected {e}"),
            }
        }
        // Only one place: both may fit one after the other, never both refused.
        assert!(overloaded <= 1);
        let s = batcher.stats();
        assert_settled(&s);
        assert_eq!(
            (s.rejected, s.accepted),
            (overloaded, 2 - overloaded),
            "{s:?}"
        );
    });
}

#[test]
fn dropping_the_batcher_answers_every_accepted_request() {
    check("drain on drop", 2, || {
        let batcher = batcher(4);
        let a = batcher.infer(array![[1.0f32]]);
        let b = batcher.infer(array![[2.0f32], [3.0]]);
        drop(batcher);
        // The drop returned after the serve loop drained the queue: both answers are there.
        match (a.now_or_never(), b.now_or_never()) {
            (Some(Ok(a)), Some(Ok(b))) => {
                assert_eq!(a, array![[2.0f32]]);
                assert_eq!(b, array![[4.0f32], [6.0]]);
            }
            other => panic!("accepted requests not answered by the drop: {other:?}"),
        }
    });
}

#[test]
fn a_direct_call_on_a_serving_stream_is_taken_between_batches() {
    check("direct job while serving", 2, || {
        let batcher = std::sync::Arc::new(batcher(4));
        let other = std::sync::Arc::clone(&batcher);
        let caller = loom::thread::spawn(move || other.infer(array![[3.0f32]]).wait());
        // The serve loop occupies the stream: this job waits in the stream's channel and is
        // taken by the loop (woken by the wake hook when it sleeps).
        let direct = batcher.module().forward(array![[1.0f32]]).wait();
        assert_eq!(direct.unwrap(), array![[2.0f32]]);
        assert_eq!(caller.join().unwrap().unwrap(), array![[6.0f32]]);
        assert_settled(&batcher.stats());
    });
}
