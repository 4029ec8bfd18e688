//! Under `cfg(corestream_loom)`: a one-shot channel on loom's [`Mutex`] with `futures::channel::oneshot`'s
//! API and semantics: the receiver is a future that resolves to the value, or to [`Canceled`]
//! when the sender is dropped unused; [`Sender::is_canceled`] tells whether the receiver is
//! gone.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

pub(crate) use futures::channel::oneshot::Canceled;

use super::Mutex;

struct State<T> {
    value: Option<T>,
    waker: Option<Waker>,
    sender: bool,
    receiver: bool,
}

struct Inner<T> {
    state: Mutex<State<T>>,
}

impl<T> Inner<T> {
    fn lock(&self) -> super::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A new one-shot channel.
pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let inner = Arc::new(Inner {
        state: Mutex::new(State {
            value: None,
            waker: None,
            sender: true,
            receiver: true,
        }),
    });
    (Sender(Arc::clone(&inner)), Receiver(inner))
}

/// The sending half.
pub(crate) struct Sender<T>(Arc<Inner<T>>);

impl<T> Sender<T> {
    /// Completes the channel with `value`; gives it back when the receiver is gone.
    pub(crate) fn send(self, value: T) -> Result<(), T> {
        let mut state = self.0.lock();
        if !state.receiver {
            return Err(value);
        }
        state.value = Some(value);
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Whether the receiver is gone.
    pub(crate) fn is_canceled(&self) -> bool {
        !self.0.lock().receiver
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.sender = false;
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

/// The receiving half: a future of the value.
pub(crate) struct Receiver<T>(Arc<Inner<T>>);

impl<T> Receiver<T> {
    /// The value if it is there, without registering a waker; [`Canceled`] when the sender
    /// is gone without sending.
    pub(crate) fn try_recv(&mut self) -> Result<Option<T>, Canceled> {
        let mut state = self.0.lock();
        match state.value.take() {
            Some(value) => Ok(Some(value)),
            None if !state.sender => Err(Canceled),
            None => Ok(None),
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Result<T, Canceled>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.0.lock();
        if let Some(value) = state.value.take() {
            return Poll::Ready(Ok(value));
        }
        if !state.sender {
            return Poll::Ready(Err(Canceled));
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.receiver = false;
        let value = state.value.take();
        drop(state);
        drop(value);
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}
