//! Under `cfg(corestream_loom)`: an unbounded multi-producer, single-consumer channel on loom's
//! [`Mutex`] and [`Condvar`], with `std::sync::mpsc`'s API and disconnect semantics (loom's own
//! channel blocks forever in `recv` once the senders are gone, which is how a stream learns to
//! stop).

use std::collections::VecDeque;
use std::fmt;
use std::sync::mpsc::{RecvError, SendError};
use std::sync::Arc;

pub(crate) use std::sync::mpsc::TryRecvError;

use super::{Condvar, Mutex};

struct State<T> {
    queue: VecDeque<T>,
    senders: usize,
    receiver: bool,
}

struct Chan<T> {
    state: Mutex<State<T>>,
    /// Signalled when a message arrives or the last sender leaves.
    changed: Condvar,
}

impl<T> Chan<T> {
    fn lock(&self) -> super::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A new channel.
pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let chan = Arc::new(Chan {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            senders: 1,
            receiver: true,
        }),
        changed: Condvar::new(),
    });
    (Sender(Arc::clone(&chan)), Receiver(chan))
}

/// The sending half; clone it for more producers.
pub(crate) struct Sender<T>(Arc<Chan<T>>);

impl<T> Sender<T> {
    /// Queues `value`; gives it back when the receiver is gone.
    pub(crate) fn send(&self, value: T) -> Result<(), SendError<T>> {
        let mut state = self.0.lock();
        if !state.receiver {
            return Err(SendError(value));
        }
        state.queue.push_back(value);
        drop(state);
        self.0.changed.notify_one();
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.0.lock().senders += 1;
        Sender(Arc::clone(&self.0))
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.senders -= 1;
        let last = state.senders == 0;
        drop(state);
        if last {
            self.0.changed.notify_all();
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

/// The receiving half.
pub(crate) struct Receiver<T>(Arc<Chan<T>>);

impl<T> Receiver<T> {
    /// The next message, blocking while the queue is empty; an error once it is empty and
    /// every sender is gone.
    pub(crate) fn recv(&self) -> Result<T, RecvError> {
        let mut state = self.0.lock();
        loop {
            if let Some(value) = state.queue.pop_front() {
                return Ok(value);
            }
            if state.senders == 0 {
                return Err(RecvError);
            }
            state = self
                .0
                .changed
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The next message if one is queued, never blocking.
    pub(crate) fn try_recv(&self) -> Result<T, TryRecvError> {
        let mut state = self.0.lock();
        match state.queue.pop_front() {
            Some(value) => Ok(value),
            None if state.senders == 0 => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.receiver = false;
        let left = std::mem::take(&mut state.queue);
        drop(state);
        // Dropped outside the lock: a message's drop may take other locks.
        drop(left);
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}
