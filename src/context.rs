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
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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
#[derive(Debug, Clone)]
pub struct StreamInfo {
    index: usize,
    id: u64,
    pool: CpuPool,
    wide: bool,
    /// Shared by every clone: what runs when the stream stops (see [`StreamInfo::on_end`]).
    life: Arc<Life>,
}

/// Equal when they describe the same stream (the id is unique; the other fields follow).
impl PartialEq for StreamInfo {
    fn eq(&self, other: &Self) -> bool {
        (self.index, self.id, &self.pool) == (other.index, other.id, &other.pool)
    }
}

impl Eq for StreamInfo {}

impl Hash for StreamInfo {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.index, self.id, &self.pool).hash(state);
    }
}

/// A callback run once when its stream stops.
type EndHook = Box<dyn FnOnce() + Send>;

/// Whether a stream has stopped, and what runs when it does.
#[derive(Default)]
struct Life {
    state: Mutex<LifeState>,
}

#[derive(Default)]
struct LifeState {
    ended: bool,
    hooks: Vec<EndHook>,
}

impl fmt::Debug for Life {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("Life")
            .field("ended", &state.ended)
            .field("hooks", &state.hooks.len())
            .finish()
    }
}

impl StreamInfo {
    /// A new stream's info, with a fresh id.
    pub(crate) fn new(index: usize, pool: CpuPool) -> StreamInfo {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        StreamInfo {
            index,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            pool,
            wide: false,
            life: Arc::default(),
        }
    }

    /// The wide stream of a [`Batcher`](crate::Batcher) with an adaptive or wide
    /// [`Width`](crate::Width): every CPU of its module, seen by a batch that runs across them
    /// all (see [`is_wide`](Self::is_wide)).
    pub(crate) fn wide(pool: CpuPool) -> StreamInfo {
        StreamInfo {
            wide: true,
            ..StreamInfo::new(0, pool)
        }
    }

    /// Runs `hook` once when the stream stops (its thread has exited and will run nothing
    /// more), on the thread that stops it; returns `false`, and drops `hook` unrun, when the
    /// stream has stopped already. For per-stream state that a shared model keeps by
    /// [`id`](Self::id): without it, that state would outlive the stream.
    ///
    /// A hook must not block on its stream, and must not take a lock that is held while
    /// calling `on_end` (hooks run after the stream's own lock is released, so taking such a
    /// lock only orders the two).
    #[cfg_attr(not(feature = "ort"), allow(dead_code))]
    pub(crate) fn on_end(&self, hook: impl FnOnce() + Send + 'static) -> bool {
        let mut state = self.life.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.ended {
            return false;
        }
        state.hooks.push(Box::new(hook));
        true
    }

    /// Marks the stream stopped and runs its [`on_end`](Self::on_end) hooks (once: later calls
    /// do nothing). Called by the stream's owner once the stream thread has exited.
    pub(crate) fn end(&self) {
        let hooks = {
            let mut state = self.life.state.lock().unwrap_or_else(|e| e.into_inner());
            state.ended = true;
            std::mem::take(&mut state.hooks)
        };
        for hook in hooks {
            // A failing hook must not take the stream's owner (often inside a drop) with it,
            // nor keep the other hooks from running.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(hook));
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

    /// Whether this is a batcher's wide stream: a batch running across every CPU of the
    /// batcher's module while its streams wait (see [`Width`](crate::Width)). The thread
    /// running it is one of the module's stream threads, pinned to `pool().cpus()[0]` for the
    /// call; a backend runs it as it runs a stream of `pool().len()` CPUs (ONNX Runtime: one
    /// session of that many intra-op threads, whose workers stop spinning when the call ends,
    /// since the narrow streams run next on the same CPUs).
    pub fn is_wide(&self) -> bool {
        self.wide
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn end_hooks_run_once_and_not_after_the_end() {
        let info = StreamInfo::new(0, CpuPool::all().unwrap());
        let runs = Arc::new(AtomicUsize::new(0));
        let count = || {
            let runs = Arc::clone(&runs);
            move || {
                runs.fetch_add(1, Ordering::Relaxed);
            }
        };
        assert!(info.on_end(count()));
        // Clones share the stream's life; a panicking hook does not stop the others.
        assert!(info.clone().on_end(|| panic!("a failing hook")));
        assert!(info.on_end(count()));
        info.clone().end();
        assert_eq!(runs.load(Ordering::Relaxed), 2);
        info.end();
        assert_eq!(runs.load(Ordering::Relaxed), 2);
        assert!(!info.on_end(count()));
        assert_eq!(runs.load(Ordering::Relaxed), 2);
    }
}
