//! Whether the service can serve: loading the model, ready, failed to load, or draining after
//! SIGTERM. Readiness (`/health`, `/health/ready`) is true only when ready; liveness
//! (`/health/live`) is false only after a failed load (a restart may cure it; a loading or
//! draining process must not be killed).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

/// The service's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The model is being loaded.
    Loading,
    /// The streams serve.
    Ready,
    /// The model could not be loaded: no stream can serve.
    Failed,
    /// SIGTERM received: finishing what is in flight, refusing to be routed new work.
    Draining,
}

impl State {
    /// `ok`, `loading`, `failed` or `draining`.
    pub fn name(self) -> &'static str {
        match self {
            State::Loading => "loading",
            State::Ready => "ok",
            State::Failed => "failed",
            State::Draining => "draining",
        }
    }
}

/// The state, shared by the handlers, the loader and the signal handler.
#[derive(Debug)]
pub struct Health {
    state: AtomicU8,
    message: Mutex<Option<String>>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            state: AtomicU8::new(State::Loading as u8),
            message: Mutex::new(None),
        }
    }
}

impl Health {
    /// The current state.
    pub fn state(&self) -> State {
        match self.state.load(Ordering::Acquire) {
            0 => State::Loading,
            1 => State::Ready,
            2 => State::Failed,
            _ => State::Draining,
        }
    }

    /// Why the state is not `Ready` (the load error, "draining", ...).
    pub fn message(&self) -> Option<String> {
        self.message
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Moves to `state` with `message`; draining is final.
    pub fn set(&self, state: State, message: Option<String>) {
        let mut slot = self.message.lock().unwrap_or_else(|e| e.into_inner());
        if self.state() != State::Draining {
            self.state.store(state as u8, Ordering::Release);
            *slot = message;
        }
    }

    /// Readiness: whether new work should be routed here.
    pub fn ready(&self) -> bool {
        self.state() == State::Ready
    }

    /// Liveness: false only after a failed load.
    pub fn live(&self) -> bool {
        self.state() != State::Failed
    }
}
