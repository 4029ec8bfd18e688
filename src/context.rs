//! Which stream the current thread serves: [`current_stream`] and [`StreamInfo`].
//!
//! A stream thread records its [`StreamInfo`] when it starts, and so do the workers of its
//! intra-op rayon pool; code running there (a [`Module::forward`](crate::Module::forward), a
//! rayon task it spawns) can read it to set up per-stream state, such as a backend session
//! whose threads run on the stream's CPUs. A caller that runs one part of a blocking
//! multi-stream call itself (see
//! [`MultiStreamModuleBuilder::caller_runs`](crate::MultiStreamModuleBuilder::caller_runs)) sees
//! that part's stream for the length of the call. Everywhere else (the caller's thread, rayon's
//! global pool, threads a model starts itself) there is none.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::pool::CpuPool;

/// The stream a thread serves: its index among its siblings, its CPUs, and an id unique in
/// the process.
///
/// ```
/// use corestream::{current_stream, module_fn, CpuPool, Task};
///
/// assert!(current_stream().is_none()); // not on a stream thread
/// let model = module_fn(|()| {
///     let s = current_stream().expect("forward runs on a stream thread");
///     Ok((s.index(), s.pool().cpus().to_vec()))
/// });
/// let pool = CpuPool::new([0])?;
/// let task = Task::new(model, pool)?;
/// assert_eq!(task.run_sync(())?, (0, vec![0]));
/// # Ok::<(), corestream::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamInfo {
    index: usize,
    id: u64,
    pool: CpuPool,
}

impl StreamInfo {
    /// A new stream's info, with a fresh id.
    pub(crate) fn new(index: usize, pool: CpuPool) -> StreamInfo {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        StreamInfo {
            index,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            pool,
        }
    }

    /// The stream's index within its [`MultiStreamModule`](crate::MultiStreamModule) (`0` to
    /// `num_streams() - 1`, in the order the pool was split); `0` for a [`Task`](crate::Task).
    pub fn index(&self) -> usize {
        self.index
    }

    /// A process-unique id of the stream (never reused, also across modules), e.g. to key
    /// per-stream state in a shared model.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The stream's CPUs. The stream thread is pinned to all of them; intra-op worker `t` to
    /// `pool().cpus()[t]` (worker 0 is the stream thread).
    pub fn pool(&self) -> &CpuPool {
        &self.pool
    }
}

thread_local! {
    static CURRENT: RefCell<Option<StreamInfo>> = const { RefCell::new(None) };
}

/// The stream this thread serves: `Some` on a stream thread and on its intra-op pool's
/// workers, `None` elsewhere. See [`StreamInfo`].
pub fn current_stream() -> Option<StreamInfo> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Records the stream this thread serves (for the rest of the thread's life).
pub(crate) fn set_current_stream(info: StreamInfo) {
    CURRENT.with(|c| *c.borrow_mut() = Some(info));
}

/// Sets the stream this thread serves for a while (a caller running one part of a multi-stream
/// call itself) and returns the previous value, to be put back.
pub(crate) fn replace_current_stream(info: Option<StreamInfo>) -> Option<StreamInfo> {
    CURRENT.with(|c| std::mem::replace(&mut *c.borrow_mut(), info))
}
