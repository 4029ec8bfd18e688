//! The synchronisation primitives of corestream's own protocols (stream queue, replies,
//! batcher queue), switched to [loom](https://docs.rs/loom)'s model-checked ones under
//! `RUSTFLAGS="--cfg corestream_loom"`, as tokio (`--cfg loom`) and crossbeam
//! (`--cfg crossbeam_loom`) do. The name is corestream's own for crossbeam's reason: the plain
//! `loom` cfg is read by dependencies of the dev-dependencies too (smol's
//! event-listener, concurrent-queue and async-io), which then do not build.
//!
//! Normal builds use the standard library's types, `std::sync::mpsc` and `futures`' oneshot:
//! nothing here costs anything. Under `cfg(corestream_loom)` every lock, condition variable,
//! atomic, thread, channel and oneshot that the stream, its futures and the batcher use is
//! loom's, or built only on loom's ([`mpsc`] and [`oneshot`]: loom's own channel does not
//! model a disconnect, and `futures`' oneshot synchronises with atomics loom cannot see), so
//! the model checks in `tests/loom_*.rs` explore every interleaving of those protocols.
//!
//! Invariant: the loom versions keep the standard ones' semantics that corestream relies on
//! (FIFO order, `recv` failing once every sender is gone and the queue is empty, `send` failing
//! once the receiver is gone, a oneshot receiver resolving to `Canceled` when its sender is
//! dropped unused).

#[cfg(not(corestream_loom))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};

#[cfg(corestream_loom)]
pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};

/// Atomics and fences.
pub(crate) mod atomic {
    #[cfg(corestream_loom)]
    pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
    #[cfg(not(corestream_loom))]
    pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
}

/// Threads: the stream threads and their handles.
pub(crate) mod thread {
    #[cfg(corestream_loom)]
    pub(crate) use loom::thread::{current, Builder, JoinHandle};
    #[cfg(not(corestream_loom))]
    pub(crate) use std::thread::{current, Builder, JoinHandle};
}

/// Multi-producer, single-consumer channels (`std::sync::mpsc`'s API).
#[cfg(not(corestream_loom))]
pub(crate) mod mpsc {
    pub(crate) use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
}

#[cfg(corestream_loom)]
pub(crate) mod mpsc;

/// One-shot reply channels (`futures::channel::oneshot`'s API).
#[cfg(not(corestream_loom))]
pub(crate) mod oneshot {
    pub(crate) use futures::channel::oneshot::{channel, Canceled, Receiver, Sender};
}

#[cfg(corestream_loom)]
pub(crate) mod oneshot;

/// Blocks the calling thread until `future` is ready (parking it between polls).
pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    #[cfg(corestream_loom)]
    {
        loom::future::block_on(future)
    }
    #[cfg(not(corestream_loom))]
    {
        futures_lite::future::block_on(future)
    }
}
