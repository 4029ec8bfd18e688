//! Why a request failed, in the service's terms: a [`FailureKind`], a stable code and a message.
//! The HTTP layer (`crate::http`) maps the kind to a status and each API's error shape; nothing
//! here knows about HTTP.

use std::time::Duration;

/// What kind of failure, from the client's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The request is malformed or asks for something the model cannot do (HTTP 400).
    Invalid,
    /// The request is over a size limit: body, inputs or input length (HTTP 413).
    TooLarge,
    /// The client did not send its body in time (HTTP 408).
    Timeout,
    /// The service cannot take the request now: loading, failed or draining (HTTP 503).
    Unavailable,
    /// The service is busy: its queue, body budget or requests in flight are full (HTTP 429,
    /// with [`Failure::retry_after`]).
    Overloaded,
    /// `--api-key` is set and the request did not present it (HTTP 401).
    Unauthorized,
    /// A request body that is not `application/json` (HTTP 415).
    UnsupportedMediaType,
    /// The request names a model this server does not serve, or no route (HTTP 404).
    NotFound,
    /// A route asked with a method it does not answer (HTTP 405).
    MethodNotAllowed,
    /// The model or the tokenizer failed (HTTP 500).
    Internal,
    /// The request was not answered within `--request-timeout` (HTTP 504).
    Deadline,
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// `invalid_json`, `invalid_request`, `too_many_inputs`, `input_too_long`,
    /// `invalid_dimensions`, `request_timeout`, `overloaded`, `unavailable`, `unauthorized`,
    /// `unsupported_media_type`, `model_not_found`, `tokenizer_error` or `model_error`.
    pub code: &'static str,
    /// What was wrong and what is allowed.
    pub message: String,
    /// For [`FailureKind::Overloaded`]: when to retry (HTTP `Retry-After`).
    pub retry_after: Option<Duration>,
}

impl Failure {
    /// A failure of `kind`.
    pub fn new(kind: FailureKind, code: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// [`FailureKind::Overloaded`], to be retried after `retry_after`.
    pub fn overloaded(message: impl Into<String>, retry_after: Duration) -> Failure {
        Failure {
            retry_after: Some(retry_after),
            ..Failure::new(FailureKind::Overloaded, "overloaded", message)
        }
    }

    /// [`FailureKind::Invalid`].
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Failure {
        Failure::new(FailureKind::Invalid, code, message)
    }

    /// [`FailureKind::TooLarge`].
    pub fn too_large(code: &'static str, message: impl Into<String>) -> Failure {
        Failure::new(FailureKind::TooLarge, code, message)
    }

    /// [`FailureKind::Unavailable`].
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Failure {
        Failure::new(FailureKind::Unavailable, code, message)
    }

    /// [`FailureKind::Internal`].
    pub fn internal(code: &'static str, message: impl Into<String>) -> Failure {
        Failure::new(FailureKind::Internal, code, message)
    }
}
