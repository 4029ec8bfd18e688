//! The crate's one error type.

use std::io;

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// corestream refused the configuration or the model (bad stream count, model load
    /// failure, missing ONNX Runtime library, ...).
    #[error(transparent)]
    Corestream(#[from] corestream::Error),
    /// A flag or environment variable has a value the service cannot use.
    #[error("{0}")]
    Config(String),
    /// The listening address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address asked for (`--bind`).
        address: String,
        /// Why.
        source: io::Error,
    },
    /// Logs or metrics could not be set up (a global subscriber or recorder already set).
    #[error("telemetry: {0}")]
    Telemetry(String),
    /// The runtime or the server failed.
    #[error("server: {0}")]
    Io(#[from] io::Error),
}
