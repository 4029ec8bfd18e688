//! The futures of [`MultiStreamModule::forward_parts`](super::MultiStreamModule::forward_parts)
//! and [`MultiStreamModule::forward`](super::MultiStreamModule::forward).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::TryJoinAll;

#[cfg(doc)]
use super::{MultiStreamModule, MultiStreamModuleBuilder};
use crate::batch::{Batch, Hint};
use crate::error::{Error, Result};
use crate::future::TaskFuture;
use crate::idle;
use crate::pool::CpuPool;

/// The per-stream outputs of [`MultiStreamModule::forward_parts`].
#[must_use = "dropping the future cancels the parts that have not started"]
pub struct PartsFuture<T> {
    state: PartsState<T>,
    /// How long [`wait`](Self::wait) polls before parking: the streams' idle window.
    spin: Duration,
    /// The streams that got a part are `pools[..used]`: `wait` does not poll on their CPUs.
    pools: Arc<[CpuPool]>,
    used: usize,
}

enum PartsState<T> {
    Running(TryJoinAll<TaskFuture<T>>),
    Failed(Option<Error>),
}

impl<T> fmt::Debug for PartsFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartsFuture").finish_non_exhaustive()
    }
}

impl<T> PartsFuture<T> {
    /// The future of `futures`, the parts queued on the first `futures.len()` of `pools`.
    pub(super) fn running(futures: Vec<TaskFuture<T>>, pools: Arc<[CpuPool]>) -> Self {
        PartsFuture {
            spin: futures.first().map_or(Duration::ZERO, TaskFuture::spin),
            used: futures.len(),
            pools,
            state: PartsState::Running(futures::future::try_join_all(futures)),
        }
    }

    /// A future that fails with `error` at once.
    pub(super) fn failed(error: Error, pools: Arc<[CpuPool]>) -> Self {
        PartsFuture {
            spin: Duration::ZERO,
            used: 0,
            pools,
            state: PartsState::Failed(Some(error)),
        }
    }

    /// Blocks the calling thread until every part is there, polling for the streams'
    /// [`spin`](MultiStreamModuleBuilder::spin) window before parking; it parks at once when it
    /// runs on a CPU of a stream that got a part (that stream needs the CPU), or while it sees
    /// another taker of its CPU (see [`TaskFuture::wait`]).
    ///
    /// # Errors
    ///
    /// As [`MultiStreamModule::forward`].
    pub fn wait(self) -> Result<Vec<T>> {
        let window = self.window();
        idle::block_on(self, window)
    }

    fn window(&self) -> Duration {
        idle::caller_window(
            self.spin,
            self.pools.iter().take(self.used).map(CpuPool::cpus),
        )
    }
}

impl<T> Future for PartsFuture<T> {
    type Output = Result<Vec<T>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every field is Unpin (TaskFuture holds an Unpin receiver), so no projection is needed.
        match &mut self.get_mut().state {
            PartsState::Running(join) => Pin::new(join).poll(cx),
            PartsState::Failed(err) => Poll::Ready(Err(err.take().unwrap_or(Error::Shutdown))),
        }
    }
}

/// The concatenated output of [`MultiStreamModule::forward`].
#[must_use = "dropping the future cancels the parts that have not started"]
pub struct ForwardFuture<T> {
    parts: PartsFuture<T>,
    hint: Hint,
}

impl<T> fmt::Debug for ForwardFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForwardFuture")
            .field("output_hint", &self.hint)
            .finish_non_exhaustive()
    }
}

impl<T: Batch> ForwardFuture<T> {
    /// The parts of `parts`, joined by `hint`.
    pub(super) fn new(parts: PartsFuture<T>, hint: Hint) -> Self {
        ForwardFuture { parts, hint }
    }

    /// Blocks the calling thread until the output is there, polling as
    /// [`PartsFuture::wait`] does.
    ///
    /// # Errors
    ///
    /// As [`MultiStreamModule::forward`].
    pub fn wait(self) -> Result<T> {
        let window = self.parts.window();
        idle::block_on(self, window)
    }
}

impl<T: Batch> Future for ForwardFuture<T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match Pin::new(&mut this.parts).poll(cx) {
            Poll::Ready(Ok(parts)) => Poll::Ready(T::concat(parts, &this.hint)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}
