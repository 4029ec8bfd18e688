//! [`BatcherService`]: a [`Batcher`] as a [`tower::Service`](tower_service::Service) (feature
//! `tower`), for tower's timeout, concurrency-limit and load-shedding layers.

use std::fmt;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use super::Batcher;
use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::future::TaskFuture;
use crate::module::Module;

/// A cheap, cloneable handle on a shared [`Batcher`] that implements
/// [`tower::Service<M::Input>`](tower_service::Service): `call(x)` is
/// [`batcher.infer(x)`](Batcher::infer).
///
/// `poll_ready` reserves a place in the batcher's queue for the next `call`, and is
/// `Pending` while the queue is full (woken when a place frees), so tower's layers see the
/// batcher's capacity: `load_shed` refuses at once when the queue is full, `concurrency_limit`
/// and `buffer` wait for room. A reservation not used by a `call` is released when the handle
/// is dropped; a `call` without a ready `poll_ready` behaves as [`Batcher::infer`] (answering
/// [`Error::Overloaded`] when the queue is full).
///
/// Errors: the service's own error type is [`corestream::Error`](Error). Through tower's
/// layers errors become `tower::BoxError`: the batcher's errors downcast to
/// `corestream::Error`, the layers' own to theirs (`tower::timeout::error::Elapsed`,
/// `tower::load_shed::error::Overloaded`). A timed-out request's future is dropped: a request
/// not yet in a batch is removed from the queue, one running has its answer discarded.
///
/// ```
/// use std::time::Duration;
///
/// use corestream::ndarray::{array, Array2};
/// use corestream::{module_fn, Batcher, BatcherService, CpuPool, MultiStreamModule};
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # futures::executor::block_on(async {
/// let model = module_fn(|x: Array2<f32>| Ok(x * 2.0));
/// let msm = MultiStreamModule::builder(model).pool(CpuPool::all()?).build()?;
/// let batcher = Batcher::builder(msm).max_batch(16).queue_capacity(256).build()?;
/// let mut service = ServiceBuilder::new()
///     .load_shed()
///     .concurrency_limit(64)
///     .service(BatcherService::new(batcher));
/// let y = service.ready().await?.call(array![[1.0f32, 2.0]]).await?;
/// assert_eq!(y, array![[2.0f32, 4.0]]);
/// # Ok::<(), tower::BoxError>(())
/// # }).unwrap();
/// ```
pub struct BatcherService<M>
where
    M: Module,
    M::Input: Batch + Clone,
    M::Output: Batch,
{
    batcher: Arc<Batcher<M>>,
    /// Whether this handle holds a place in the queue for its next `call`.
    reserved: bool,
}

impl<M> BatcherService<M>
where
    M: Module,
    M::Input: Batch + Clone,
    M::Output: Batch,
{
    /// A service over `batcher` (a [`Batcher`] or an `Arc` of one, to keep other handles;
    /// see [`batcher`](Self::batcher) for an example).
    pub fn new(batcher: impl Into<Arc<Batcher<M>>>) -> Self {
        BatcherService {
            batcher: batcher.into(),
            reserved: false,
        }
    }

    /// The batcher served.
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// use corestream::{module_fn, Batcher, BatcherService, CpuPool, MultiStreamModule};
    ///
    /// let model = module_fn(|x: corestream::ndarray::Array2<f32>| Ok(x));
    /// let msm = MultiStreamModule::builder(model).pool(CpuPool::all()?).build()?;
    /// let batcher = Arc::new(Batcher::builder(msm).name("echo").build()?);
    /// // Keep a handle for stats; the service shares the same batcher.
    /// let service = BatcherService::new(Arc::clone(&batcher));
    /// assert!(Arc::ptr_eq(service.batcher(), &batcher));
    /// assert_eq!(service.clone().batcher().name(), "echo");
    /// # Ok::<(), corestream::Error>(())
    /// ```
    pub fn batcher(&self) -> &Arc<Batcher<M>> {
        &self.batcher
    }
}

impl<M> Clone for BatcherService<M>
where
    M: Module,
    M::Input: Batch + Clone,
    M::Output: Batch,
{
    /// Another handle on the same batcher, without a reservation.
    fn clone(&self) -> Self {
        BatcherService {
            batcher: Arc::clone(&self.batcher),
            reserved: false,
        }
    }
}

impl<M> fmt::Debug for BatcherService<M>
where
    M: Module,
    M::Input: Batch + Clone,
    M::Output: Batch,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatcherService")
            .field("batcher", &self.batcher)
            .field("reserved", &self.reserved)
            .finish()
    }
}

impl<M> Drop for BatcherService<M>
where
    M: Module,
    M::Input: Batch + Clone,
    M::Output: Batch,
{
    fn drop(&mut self) {
        if self.reserved {
            self.batcher.shared.release(1);
        }
    }
}

impl<M> tower_service::Service<M::Input> for BatcherService<M>
where
    M: Module,
    M::Input: Batch + Clone,
    M::Output: Batch,
{
    type Response = M::Output;
    type Error = Error;
    type Future = TaskFuture<M::Output>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.reserved {
            return Poll::Ready(Ok(()));
        }
        let shared = &*self.batcher.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Poll::Ready(Err(Error::Shutdown));
        }
        if !shared.reserve() {
            // Requests whose callers left do not hold places.
            shared.purge();
            if !shared.reserve() {
                shared.ready.register(cx.waker());
                // Against `ReadyWaiters::released`: either it sees this waker, or this sees
                // the place it freed.
                fence(Ordering::SeqCst);
                if !shared.reserve() {
                    return Poll::Pending;
                }
            }
        }
        self.reserved = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, input: M::Input) -> Self::Future {
        if std::mem::take(&mut self.reserved) {
            self.batcher.infer_reserved(input)
        } else {
            self.batcher.infer(input)
        }
    }
}

/// Tasks whose `poll_ready` found the queue full, woken when places free.
#[derive(Default)]
pub(super) struct ReadyWaiters {
    waiting: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

impl ReadyWaiters {
    fn register(&self, waker: &Waker) {
        let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
        self.waiting.store(true, Ordering::SeqCst);
    }

    /// Places were freed: wakes the waiting tasks, if any (one atomic load when none waits).
    pub(super) fn released(&self) {
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) {
            self.wake_all();
        }
    }

    /// Wakes every waiting task.
    pub(super) fn wake_all(&self) {
        let wakers = {
            let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
            self.waiting.store(false, Ordering::SeqCst);
            std::mem::take(&mut *wakers)
        };
        for waker in wakers {
            waker.wake();
        }
    }
}
