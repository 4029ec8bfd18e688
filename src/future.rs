//! [`TaskFuture`]: the answer to one submission.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project::pin_project;

use crate::error::{Error, Result};
use crate::idle;
use crate::pool::CpuPool;
use crate::sync::oneshot;

/// The pending result of one submission: a `Future` for async code and [`wait`](Self::wait)
/// for sync code (IPEX's `FutureTensor.get()`).
///
/// The job is already queued when the future is created; polling only waits for it. Dropping
/// the future before the job starts makes the stream skip the job; dropping it later discards
/// the result. It works under any executor (tokio, smol, async-std, `futures::executor`), never
/// blocks the thread that polls it, and always resolves: a stream that stops without answering
/// yields [`Error::Shutdown`].
///
/// ```
/// use corestream::{module_fn, CpuPool, Task};
///
/// let task = Task::new(module_fn(|x: i32| Ok(x * 10)), CpuPool::all()?)?;
/// let a = task.submit(1);                 // both run in the background...
/// let b = task.submit(2);
/// assert_eq!(a.wait()? + b.wait()?, 30); // ...until waited for
/// # Ok::<(), corestream::Error>(())
/// ```
#[pin_project]
#[must_use = "dropping a TaskFuture cancels its job if it has not started"]
#[derive(Debug)]
pub struct TaskFuture<T> {
    #[pin]
    state: State<T>,
    /// Set when the stream spins: `wait` then polls this long before parking, unless the
    /// caller runs on one of the stream's CPUs (spinning there would starve the stream).
    spin: Option<(Duration, CpuPool)>,
}

#[pin_project(project = InnerProj)]
#[derive(Debug)]
enum State<T> {
    Pending(#[pin] oneshot::Receiver<Result<T>>),
    Ready(Option<Error>),
}

impl<T> TaskFuture<T> {
    pub(crate) fn pending(
        rx: oneshot::Receiver<Result<T>>,
        spin: Option<(Duration, CpuPool)>,
    ) -> Self {
        TaskFuture {
            state: State::Pending(rx),
            spin,
        }
    }

    pub(crate) fn failed(err: Error) -> Self {
        TaskFuture {
            state: State::Ready(Some(err)),
            spin: None,
        }
    }

    /// Blocks the calling thread until the result is there: it first polls for the stream's
    /// [`spin`](crate::TaskBuilder::spin) window (default
    /// [`DEFAULT_SPIN`](crate::DEFAULT_SPIN)), unless it runs on one of the stream's own CPUs
    /// or has recently seen another taker of its CPU, then parks (it also works inside another
    /// executor's `block_on`). It never yields its CPU to other threads.
    ///
    /// Do not call it on an async runtime's worker thread, which it would stall: `.await` the
    /// future there instead.
    ///
    /// # Errors
    ///
    /// The job's error: [`Error::Module`], [`Error::Panicked`], or [`Error::Shutdown`].
    pub fn wait(mut self) -> Result<T> {
        let window = match &self.spin {
            Some((spin, pool)) => idle::caller_window(*spin, std::iter::once(pool.cpus())),
            None => Duration::ZERO,
        };
        // Polling only reads: no waker is registered until the thread parks.
        match idle::poll_as_caller(window, || self.try_take()) {
            Some(out) => out,
            None => idle::block_on(self, Duration::ZERO),
        }
    }

    /// The result if it is there, without registering a waker (polling the future would
    /// store one each time, writing to the cache line the stream is about to write).
    pub(crate) fn try_take(&mut self) -> Option<Result<T>> {
        match &mut self.state {
            State::Pending(rx) => match rx.try_recv() {
                Ok(Some(result)) => {
                    self.state = State::Ready(None);
                    Some(result)
                }
                Ok(None) => None,
                Err(oneshot::Canceled) => Some(Err(Error::Shutdown)),
            },
            State::Ready(err) => Some(Err(err.take().unwrap_or(Error::Shutdown))),
        }
    }

    /// The polling window of [`wait`](Self::wait) (zero when the stream does not poll).
    pub(crate) fn spin(&self) -> Duration {
        self.spin.as_ref().map_or(Duration::ZERO, |(spin, _)| *spin)
    }
}

impl<T> Future for TaskFuture<T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            InnerProj::Pending(rx) => match rx.poll(cx) {
                Poll::Ready(Ok(result)) => Poll::Ready(result),
                Poll::Ready(Err(oneshot::Canceled)) => Poll::Ready(Err(Error::Shutdown)),
                Poll::Pending => Poll::Pending,
            },
            InnerProj::Ready(err) => Poll::Ready(Err(err.take().unwrap_or(Error::Shutdown))),
        }
    }
}
