//! The routes, independent of the HTTP framework: each takes the raw body and answers a
//! [`Reply`] (status, content type, bytes). [`handle`] wraps every route in a tracing span and
//! counts it in the HTTP metrics; the axum and actix-web adapters only move bytes. The
//! `#[utoipa::path]` attributes are the OpenAPI document's source (see `openapi.rs`).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::Instrument;

use crate::http::api::{
    EmbedAnswer, EmbedBody, EmbedRequest, EmbedResponse, EmbeddingValue, EncodingFormat,
    HealthBody, Info, OpenAiEmbedding, OpenAiError, OpenAiErrorDetail, OpenAiInput, OpenAiRequest,
    OpenAiResponse, TeiError, TeiInput, TruncationDirection, Usage,
};
use crate::http::bounded::{self, ParseError};
use crate::http::openapi::ApiDoc;
use crate::model::tokenizer::Keep;
use crate::service::health::State;
use crate::service::{Failure, FailureKind, Loaded, Service};

/// The largest request body accepted (larger: 413 from the framework).
pub const BODY_LIMIT: usize = 2 << 20;

/// An HTTP answer, framework-neutral.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The `Content-Type` header.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    fn json(status: u16, value: &impl Serialize) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: serde_json::to_vec(value).expect("response bodies serialise"),
        }
    }
}

/// HTTP methods the routes use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
}

/// Every route of the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /v1/embeddings`.
    OpenAiEmbeddings,
    /// `POST /embed`.
    Embed,
    /// `GET /info`.
    Info,
    /// `GET /health`.
    Health,
    /// `GET /health/live`.
    Live,
    /// `GET /health/ready`.
    Ready,
    /// `GET /metrics`.
    Metrics,
    /// `GET /openapi.json`.
    OpenApi,
}

impl Route {
    /// All routes, for the adapters to register.
    pub const ALL: [Route; 8] = [
        Route::OpenAiEmbeddings,
        Route::Embed,
        Route::Info,
        Route::Health,
        Route::Live,
        Route::Ready,
        Route::Metrics,
        Route::OpenApi,
    ];

    /// The path.
    pub fn path(self) -> &'static str {
        match self {
            Route::OpenAiEmbeddings => "/v1/embeddings",
            Route::Embed => "/embed",
            Route::Info => "/info",
            Route::Health => "/health",
            Route::Live => "/health/live",
            Route::Ready => "/health/ready",
            Route::Metrics => "/metrics",
            Route::OpenApi => "/openapi.json",
        }
    }

    /// The method.
    pub fn method(self) -> Method {
        match self {
            Route::OpenAiEmbeddings | Route::Embed => Method::Post,
            _ => Method::Get,
        }
    }
}

/// What an adapter knows of a request's body before reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodySize {
    /// Its length: the `Content-Length`, or 0 for a request without a body.
    Exact(u64),
    /// Not known ahead (a chunked body).
    Unknown,
}

impl BodySize {
    /// From the request's headers: its `Content-Length` (raw value), and whether it has a
    /// `Transfer-Encoding` (HTTP/1.1: without either, a request has no body). An unreadable
    /// length is `Unknown`: the framework refuses such a request anyway.
    pub fn from_headers(content_length: Option<&[u8]>, transfer_encoding: bool) -> BodySize {
        match content_length {
            Some(v) => std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map_or(BodySize::Unknown, BodySize::Exact),
            None if transfer_encoding => BodySize::Unknown,
            None => BodySize::Exact(0),
        }
    }

    /// The bytes to reserve for it: a body of unknown length may reach [`BODY_LIMIT`].
    fn reserve(self) -> usize {
        match self {
            BodySize::Exact(n) => usize::try_from(n).unwrap_or(usize::MAX).min(BODY_LIMIT),
            BodySize::Unknown => BODY_LIMIT,
        }
    }
}

/// Why a request body could not be read (the adapters' body readers say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Longer than [`BODY_LIMIT`] (declared or sent): 413.
    TooLarge,
    /// The connection failed or the framework refused the body: 400.
    Failed(String),
}

/// Answers `route` for the body `read_body` yields (of `size`), inside a span `http_request`
/// (route, status), counted in [`Service::requests`] (cancelled if this future is dropped
/// before it answers), in `corestream_http_requests_total{route,status}` and
/// `corestream_http_request_duration_seconds{route}`. In the route's error shape: a body
/// declared over [`BODY_LIMIT`] is a 413 before any of it is read; one that cannot have its
/// size reserved from the service's [`BodyBudget`](crate::service::BodyBudget) within
/// [`Service::body_timeout`] a 503 before it is read; one that takes longer than that to
/// arrive a 408, one over the limit a 413; a request not answered within
/// [`Service::request_timeout`] a 504.
pub async fn handle<B: AsRef<[u8]>>(
    service: &Service,
    route: Route,
    size: BodySize,
    read_body: impl Future<Output = Result<B, BodyError>>,
) -> Reply {
    let ticket = service.requests.start(route.path());
    let span = tracing::info_span!(
        "http_request",
        route = route.path(),
        status = tracing::field::Empty
    );
    let start = Instant::now();
    let reply = async {
        if matches!(size, BodySize::Exact(n) if n > BODY_LIMIT as u64) {
            return body_failure(route, BodyError::TooLarge);
        }
        let timeout = service.body_timeout();
        let deadline = Instant::now() + timeout;
        // Held until the request is answered: its body and what is parsed from it.
        let Some(_reserved) = service.bodies.reserve(size.reserve(), deadline).await else {
            return route_failure(
                route,
                Failure::unavailable(
                    "overloaded",
                    format!(
                        "the server holds as many request bytes as it may ({} MiB, \
                         --body-budget-mib); retry later",
                        service.bodies.bytes() >> 20
                    ),
                ),
            );
        };
        let body = match tokio::time::timeout_at(deadline.into(), read_body).await {
            Ok(Ok(body)) => body,
            Ok(Err(e)) => return body_failure(route, e),
            Err(_) => {
                return route_failure(
                    route,
                    Failure::new(
                        FailureKind::Timeout,
                        "request_timeout",
                        format!(
                            "the request body did not arrive within {} ms (--body-timeout-ms)",
                            timeout.as_millis()
                        ),
                    ),
                )
            }
        };
        let body = body.as_ref();
        match route {
            Route::OpenAiEmbeddings => {
                within(service, route, openai_embeddings(service, body)).await
            }
            Route::Embed => within(service, route, embed(service, body)).await,
            Route::Info => info(service),
            Route::Health => health(service),
            Route::Ready => ready(service),
            Route::Live => live(service),
            Route::Metrics => metrics(service),
            Route::OpenApi => openapi_json(),
        }
    }
    .instrument(span.clone())
    .await;
    ticket.answered();
    span.record("status", reply.status);
    if reply.status >= 500 {
        tracing::warn!(parent: &span, status = reply.status, "request failed");
    }
    metrics::counter!(
        "corestream_http_requests_total",
        "route" => route.path(),
        "status" => reply.status.to_string()
    )
    .increment(1);
    metrics::histogram!("corestream_http_request_duration_seconds", "route" => route.path())
        .record(start.elapsed().as_secs_f64());
    reply
}

/// `answer`, or a 504 if it is not ready within [`Service::request_timeout`] (then dropped:
/// a request still queued is cancelled, one running is not waited for).
async fn within(service: &Service, route: Route, answer: impl Future<Output = Reply>) -> Reply {
    let Some(limit) = service.request_timeout() else {
        return answer.await;
    };
    match tokio::time::timeout(limit, answer).await {
        Ok(reply) => reply,
        Err(_) => {
            metrics::counter!("corestream_request_timeouts_total", "route" => route.path())
                .increment(1);
            route_failure(
                route,
                Failure::new(
                    FailureKind::Deadline,
                    "request_timeout",
                    format!(
                        "the request was not answered within {} ms (--request-timeout)",
                        limit.as_millis()
                    ),
                ),
            )
        }
    }
}

fn body_failure(route: Route, e: BodyError) -> Reply {
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
fn route_failure(route: Route, f: Failure) -> Reply {
    match route {
        Route::OpenAiEmbeddings => openai_failure(f),
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
        FailureKind::Unavailable => 503,
        FailureKind::Deadline => 504,
    }
}

/// OpenAI's error `type` for `kind`.
fn openai_type(kind: FailureKind) -> &'static str {
    match kind {
        FailureKind::Unavailable => "overloaded_error",
        FailureKind::Internal => "server_error",
        FailureKind::Deadline => "timeout_error",
        FailureKind::Invalid | FailureKind::Timeout | FailureKind::TooLarge => {
            "invalid_request_error"
        }
    }
}

/// text-embeddings-inference's `error_type` for `f`.
fn tei_type(f: &Failure) -> &'static str {
    match (f.kind, f.code) {
        (FailureKind::Unavailable, "overloaded") => "Overloaded",
        (FailureKind::Unavailable, _) => "Unhealthy",
        (FailureKind::Internal | FailureKind::Deadline, _) => "Backend",
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

fn openai_failure(f: Failure) -> Reply {
    let f = told(f);
    Reply::json(
        status(f.kind),
        &OpenAiError {
            error: OpenAiErrorDetail {
                kind: openai_type(f.kind).to_owned(),
                code: Some(f.code.to_owned()),
                message: f.message,
            },
        },
    )
}

fn tei_failure(f: Failure) -> Reply {
    let f = told(f);
    Reply::json(
        status(f.kind),
        &TeiError {
            error_type: tei_type(&f).to_owned(),
            error: f.message,
        },
    )
}

/// Little-endian f32 bytes in base64, as OpenAI sends `encoding_format: base64`.
pub fn to_base64(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// OpenAI embeddings.
#[utoipa::path(
    post,
    path = "/v1/embeddings",
    tag = "OpenAI",
    request_body(content = OpenAiRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "One unit vector per input", body = OpenAiResponse),
        (status = 400, description = "Bad JSON, an empty input, an unknown token id, or `dimensions` other than the model's", body = OpenAiError),
        (status = 408, description = "The body did not arrive within --body-timeout-ms", body = OpenAiError),
        (status = 413, description = "A body over 2 MiB, more inputs than --max-client-batch, or an input over the maximum length without truncation", body = OpenAiError),
        (status = 503, description = "Queue full, model not loaded, or shutting down", body = OpenAiError),
    )
)]
pub async fn openai_embeddings(service: &Service, body: &[u8]) -> Reply {
    openai(service, body).await.unwrap_or_else(openai_failure)
}

/// The body as text, if it is UTF-8 (RFC 8259; checked whole, because serde_json does not
/// check the strings of fields a request type ignores) and a JSON object (serde's derived
/// structs also take an array, its items as the fields in order: `[["a"]]` would be read as
/// `{"input": ["a"]}`).
fn json_object(body: &[u8]) -> Result<&str, Failure> {
    let text = std::str::from_utf8(body).map_err(|e| {
        Failure::bad_request("invalid_json", format!("the body is not UTF-8 JSON: {e}"))
    })?;
    if !text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
    {
        return Err(Failure::bad_request(
            "invalid_json",
            "the body must be a JSON object",
        ));
    }
    Ok(text)
}

/// Parses a body for `loaded`'s limits: a list of inputs stops being read past
/// `--max-client-batch` (413), other failures are `invalid` (400).
fn parse_body<T: DeserializeOwned>(
    text: &str,
    loaded: &Loaded,
    invalid: impl FnOnce(serde_json::Error) -> Failure,
) -> Result<T, Failure> {
    bounded::parse(text, loaded.info.max_client_batch_size).map_err(|e| match e {
        ParseError::TooManyInputs { max } => Failure::too_large(
            "too_many_inputs",
            format!("more than {max} inputs in one request; at most {max} are allowed (--max-client-batch)"),
        ),
        ParseError::Json(e) => invalid(e),
    })
}

async fn openai(service: &Service, body: &[u8]) -> Result<Reply, Failure> {
    let text = json_object(body)?;
    let loaded = service.loaded()?;
    let request: OpenAiRequest = parse_body(text, loaded, |e| {
        Failure::bad_request(
            "invalid_json",
            format!(
                "invalid JSON body: {e}; expected {{\"input\": \"text\" | [\"text\", ...] | \
                 [token ids] | [[token ids], ...], \"model\": \"...\", \"encoding_format\": \
                 \"float\" | \"base64\"}}"
            ),
        )
    })?;
    let dim = loaded.info.dimension;
    if let Some(d) = request.dimensions.filter(|&d| d != dim as u64) {
        return Err(Failure::bad_request(
            "invalid_dimensions",
            format!("dimensions {d} is not available: this model answers {dim} dimensions only"),
        ));
    }
    let input = match request.input {
        OpenAiInput::Text(t) => {
            service
                .tokenize(loaded, vec![t], request.truncate, Keep::Start)
                .await
        }
        OpenAiInput::Texts(t) => {
            service
                .tokenize(loaded, t, request.truncate, Keep::Start)
                .await
        }
        OpenAiInput::Tokens(ids) => service.token_ids(loaded, vec![ids], request.truncate),
        OpenAiInput::TokenLists(ids) => service.token_ids(loaded, ids, request.truncate),
    }?;
    let tokens = input.tokens;
    let vectors = service.embed(loaded, input, true).await?;
    let base64 = request.encoding_format == Some(EncodingFormat::Base64);
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| OpenAiEmbedding {
            object: "embedding".into(),
            embedding: if base64 {
                EmbeddingValue::Base64(to_base64(&v))
            } else {
                EmbeddingValue::Float(v)
            },
            index,
        })
        .collect();
    Ok(Reply::json(
        200,
        &OpenAiResponse {
            object: "list".into(),
            data,
            model: loaded.info.model_id.clone(),
            usage: Usage {
                prompt_tokens: tokens,
                total_tokens: tokens,
            },
        },
    ))
}

/// text-embeddings-inference's `/embed` (`{"inputs"}`: a bare list of vectors), or the original
/// `{"texts"}` (an object with unit vectors).
#[utoipa::path(
    post,
    path = "/embed",
    tag = "text-embeddings-inference",
    request_body(content = EmbedRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "`{\"inputs\"}`: one vector per input; `{\"texts\"}`: `{model, dim, embeddings}`", body = EmbedAnswer),
        (status = 400, description = "Bad JSON or an empty input list", body = TeiError),
        (status = 408, description = "The body did not arrive within --body-timeout-ms", body = TeiError),
        (status = 413, description = "A body over 2 MiB, more inputs than --max-client-batch, or an input over the maximum length without truncation", body = TeiError),
        (status = 503, description = "Queue full, model not loaded, or shutting down", body = TeiError),
    )
)]
pub async fn embed(service: &Service, body: &[u8]) -> Reply {
    embed_any(service, body).await.unwrap_or_else(tei_failure)
}

fn invalid_embed_body(e: impl std::fmt::Display) -> Failure {
    Failure::bad_request(
        "invalid_json",
        format!(
            "invalid JSON body: {e}; expected {{\"inputs\": \"text\" | [\"text\", ...], \
             \"normalize\": true, \"truncate\": false}} or {{\"texts\": [\"...\", ...]}}"
        ),
    )
}

async fn embed_any(service: &Service, body: &[u8]) -> Result<Reply, Failure> {
    let text = json_object(body)?;
    let loaded = service.loaded()?;
    let body: EmbedBody = parse_body(text, loaded, invalid_embed_body)?;
    match body {
        EmbedBody {
            inputs: None,
            texts: Some(texts),
            normalize: None,
            truncate: None,
            truncation_direction: None,
        } => {
            let input = service.tokenize(loaded, texts, None, Keep::Start).await?;
            let embeddings = service.embed(loaded, input, true).await?;
            Ok(Reply::json(
                200,
                &EmbedResponse {
                    model: loaded.info.model_id.clone(),
                    dim: loaded.info.dimension,
                    embeddings,
                },
            ))
        }
        EmbedBody {
            inputs: Some(inputs),
            texts: None,
            normalize,
            truncate,
            truncation_direction,
        } => {
            let texts = match inputs {
                TeiInput::Text(t) => vec![t],
                TeiInput::Texts(t) => t,
            };
            let keep = match truncation_direction {
                Some(TruncationDirection::Left) => Keep::End,
                _ => Keep::Start,
            };
            let input = service.tokenize(loaded, texts, truncate, keep).await?;
            let vectors = service
                .embed(loaded, input, normalize.unwrap_or(true))
                .await?;
            Ok(Reply::json(200, &vectors))
        }
        EmbedBody {
            inputs: Some(_),
            texts: Some(_),
            ..
        } => Err(invalid_embed_body(
            "`texts` and `inputs` are two forms; send one",
        )),
        EmbedBody { texts: Some(_), .. } => Err(invalid_embed_body(
            "`normalize`, `truncate` and `truncation_direction` go with `inputs`, not `texts`",
        )),
        EmbedBody { .. } => Err(invalid_embed_body("missing field `inputs`")),
    }
}

/// The served model and the service's limits.
#[utoipa::path(
    get,
    path = "/info",
    tag = "text-embeddings-inference",
    responses(
        (status = 200, description = "Model, dimension, limits, backend, streams", body = Info),
        (status = 503, description = "The model is not loaded", body = TeiError),
    )
)]
pub fn info(service: &Service) -> Reply {
    match service.loaded() {
        Ok(loaded) => Reply::json(200, &loaded.info),
        Err(f) => tei_failure(f),
    }
}

fn health_body(service: &Service, verdict: Result<(), String>) -> Reply {
    let state = service.health.state();
    let (status, body) = match verdict {
        Ok(()) => (
            200,
            HealthBody {
                status: state.name().to_owned(),
                message: None,
            },
        ),
        Err(why) => (
            503,
            HealthBody {
                // A stuck batcher in a ready service: its own status word.
                status: if state == State::Ready {
                    "stuck"
                } else {
                    state.name()
                }
                .to_owned(),
                message: Some(why),
            },
        ),
    };
    Reply::json(status, &body)
}

/// Readiness: 200 when the streams serve; 503 while loading, after a failed load, while
/// draining, or while stuck (a serve loop ended, a model call or a queued request older than
/// `--stuck-after`). (`/health/ready` answers the same.)
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    responses(
        (status = 200, description = "Ready", body = HealthBody),
        (status = 503, description = "Loading, failed to load, draining, or stuck", body = HealthBody),
    )
)]
pub fn health(service: &Service) -> Reply {
    health_body(service, service.readiness())
}

/// Readiness, for Kubernetes' `readinessProbe`: the same as `/health`.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "health",
    responses(
        (status = 200, description = "Ready", body = HealthBody),
        (status = 503, description = "Loading, failed to load, draining, or stuck", body = HealthBody),
    )
)]
pub fn ready(service: &Service) -> Reply {
    health(service)
}

/// Liveness, for Kubernetes' `livenessProbe`: 503 after a failed model load, or while stuck
/// (a serve loop ended, a model call or a queued request older than `--stuck-after`: a
/// restart cures both); 200 while loading, ready or draining.
#[utoipa::path(
    get,
    path = "/health/live",
    tag = "health",
    responses(
        (status = 200, description = "Alive (ready, loading or draining)", body = HealthBody),
        (status = 503, description = "The model failed to load, or its streams are stuck: restart", body = HealthBody),
    )
)]
pub fn live(service: &Service) -> Reply {
    health_body(service, service.liveness())
}

/// Prometheus metrics: the batchers' (per model and stream) and the HTTP requests'.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "observability",
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain"))
)]
pub fn metrics(service: &Service) -> Reply {
    Reply {
        status: 200,
        content_type: "text/plain; version=0.0.4",
        body: service.render_metrics().into_bytes(),
    }
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "observability",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json"))
)]
pub fn openapi_json() -> Reply {
    use utoipa::OpenApi as _;
    Reply {
        status: 200,
        content_type: "application/json",
        body: ApiDoc::openapi()
            .to_json()
            .expect("the OpenAPI document serialises")
            .into_bytes(),
    }
}
