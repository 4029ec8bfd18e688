//! A [`Failure`] in the error shape of its route: OpenAI's on `/v1/*`, text-embeddings-
//! inference's elsewhere; internal failures logged with a request id and told to the client
//! only by code and id.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::http::api::{OpenAiError, OpenAiErrorDetail, TeiError};
use crate::http::handlers::{BodyError, Reply, Route, BODY_LIMIT};
use crate::service::{Failure, FailureKind};

pub(super) fn body_failure(route: Route, e: BodyError) -> Reply {
    route_failure(
        route,
        match e {
            BodyError::TooLarge => Failure::too_large(
                "body_too_large",
                format!("the request body is over the {BODY_LIMIT}-byte limit"),
            ),
            BodyError::Failed(why) => Failure::bad_request(
                "invalid_body",
                format!("the request body could not be read: {why}"),
            ),
        },
    )
}

/// A new request id: unique in this process, not guessable from the last one alone.
fn request_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static SEED: OnceLock<u64> = OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        u64::from(std::process::id()) << 32 | u64::from(nanos)
    });
    // A bijective mix of a counter: distinct for 2^64 requests.
    let mut x = NEXT.fetch_add(1, Ordering::Relaxed) ^ seed;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    format!("{:016x}", x ^ (x >> 31))
}

/// `f` in the error shape of `route`: OpenAI's for `/v1/embeddings`, text-embeddings-
/// inference's for the others.
pub(super) fn route_failure(route: Route, f: Failure) -> Reply {
    match route {
        Route::OpenAiEmbeddings | Route::CohereRerank | Route::Models => openai_failure(f),
        _ => tei_failure(f),
    }
}

/// The HTTP status of a failure of `kind`.
pub fn status(kind: FailureKind) -> u16 {
    match kind {
        FailureKind::Invalid => 400,
        FailureKind::Timeout => 408,
        FailureKind::TooLarge => 413,
        FailureKind::Internal => 500,
        FailureKind::Unauthorized => 401,
        FailureKind::NotFound => 404,
        FailureKind::MethodNotAllowed => 405,
        FailureKind::UnsupportedMediaType => 415,
        FailureKind::Overloaded => 429,
        FailureKind::Unavailable => 503,
        FailureKind::Deadline => 504,
    }
}

/// OpenAI's error `type` for `kind`.
fn openai_type(kind: FailureKind) -> &'static str {
    match kind {
        FailureKind::Unavailable | FailureKind::Overloaded => "overloaded_error",
        FailureKind::Internal => "server_error",
        FailureKind::Deadline => "timeout_error",
        FailureKind::Invalid
        | FailureKind::Timeout
        | FailureKind::TooLarge
        | FailureKind::Unauthorized
        | FailureKind::NotFound
        | FailureKind::MethodNotAllowed
        | FailureKind::UnsupportedMediaType => "invalid_request_error",
    }
}

/// text-embeddings-inference's `error_type` for `f`.
fn tei_type(f: &Failure) -> &'static str {
    match f.kind {
        FailureKind::Overloaded => "Overloaded",
        FailureKind::Unavailable => "Unhealthy",
        FailureKind::Internal | FailureKind::Deadline => "Backend",
        _ => "Validation",
    }
}

/// What a client is told of `f`: an internal failure (the model's or the tokenizer's own
/// error, which may name files or libraries) is logged with a request id, and the client gets
/// only its code and that id; other failures are the client's own doing and say so.
fn told(mut f: Failure) -> Failure {
    if f.kind == FailureKind::Internal {
        let id = request_id();
        tracing::error!(request_id = %id, code = f.code, error = %f.message, "request failed");
        f.message = format!(
            "internal error ({}); request id {id}: the server's log has the details",
            f.code
        );
    }
    f
}

/// The headers that go with `f`: `Retry-After` (seconds) on a 429, `WWW-Authenticate` on a
/// 401.
fn with_headers(mut reply: Reply, f: &Failure) -> Reply {
    if let Some(after) = f.retry_after {
        reply
            .headers
            .push(("retry-after", after.as_secs().max(1).to_string()));
    }
    if f.kind == FailureKind::Unauthorized {
        reply
            .headers
            .push(("www-authenticate", "Bearer".to_owned()));
    }
    reply
}

pub(super) fn openai_failure(f: Failure) -> Reply {
    let f = told(f);
    let reply = Reply::json(
        status(f.kind),
        &OpenAiError {
            error: OpenAiErrorDetail {
                kind: openai_type(f.kind).to_owned(),
                code: Some(f.code.to_owned()),
                message: f.message.clone(),
            },
        },
    );
    with_headers(reply, &f)
}

pub(super) fn tei_failure(f: Failure) -> Reply {
    let f = told(f);
    let reply = Reply::json(
        status(f.kind),
        &TeiError {
            error_type: tei_type(&f).to_owned(),
            error: f.message.clone(),
        },
    );
    with_headers(reply, &f)
}
