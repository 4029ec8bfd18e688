//! The routes, independent of the HTTP framework: each takes the raw body and answers a
//! [`Reply`] (status, content type, bytes). [`handle`] wraps every route in a tracing span and
//! counts it in the HTTP metrics; the axum and actix-web adapters only move bytes. The
//! `#[utoipa::path]` attributes are the OpenAPI document's source (see `openapi.rs`).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use base64::Engine as _;
use serde::Serialize;
use tracing::Instrument;

use crate::http::api::{
    EmbedAnswer, EmbedRequest, EmbedResponse, EmbeddingValue, EncodingFormat, HealthBody, Info,
    OpenAiEmbedding, OpenAiError, OpenAiErrorDetail, OpenAiInput, OpenAiRequest, OpenAiResponse,
    TeiError, TeiInput, TeiRequest, TextsRequest, TruncationDirection, Usage,
};
use crate::http::openapi::ApiDoc;
use crate::model::tokenizer::Keep;
use crate::service::health::State;
use crate::service::{Failure, FailureKind, Service};

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

/// Whether a request's declared `Content-Length` is over [`BODY_LIMIT`]: such a body is
/// refused (413) before any of it is read, instead of waiting for bytes that will be refused.
pub fn declared_over_limit(content_length: Option<&[u8]>) -> bool {
    content_length
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n > BODY_LIMIT as u64)
}

/// Why a request body could not be read (the adapters' body readers say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Longer than [`BODY_LIMIT`] (declared or sent): 413.
    TooLarge,
    /// The connection failed or the framework refused the body: 400.
    Failed(String),
}

/// Answers `route` for the body `read_body` yields, inside a span `http_request` (route,
/// status), counted in [`Service::requests`] (cancelled if this future is dropped before it
/// answers), in `corestream_http_requests_total{route,status}` and
/// `corestream_http_request_duration_seconds{route}`. A body that takes longer than
/// [`Service::body_timeout`] to arrive is a 408, one over [`BODY_LIMIT`] a 413, in the route's
/// error shape.
pub async fn handle<B: AsRef<[u8]>>(
    service: &Service,
    route: Route,
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
        let timeout = service.body_timeout();
        let body = match tokio::time::timeout(timeout, read_body).await {
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
            Route::OpenAiEmbeddings => openai_embeddings(service, body).await,
            Route::Embed => embed(service, body).await,
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
    }
}

/// OpenAI's error `type` for `kind`.
fn openai_type(kind: FailureKind) -> &'static str {
    match kind {
        FailureKind::Unavailable => "overloaded_error",
        FailureKind::Internal => "server_error",
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
        (FailureKind::Internal, _) => "Backend",
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

async fn openai(service: &Service, body: &[u8]) -> Result<Reply, Failure> {
    let request: OpenAiRequest = serde_json::from_str(json_object(body)?).map_err(|e| {
        Failure::bad_request(
            "invalid_json",
            format!(
                "invalid JSON body: {e}; expected {{\"input\": \"text\" | [\"text\", ...] | \
                 [token ids] | [[token ids], ...], \"model\": \"...\", \"encoding_format\": \
                 \"float\" | \"base64\"}}"
            ),
        )
    })?;
    let loaded = service.loaded()?;
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
    let value: serde_json::Value =
        serde_json::from_str(json_object(body)?).map_err(invalid_embed_body)?;
    let texts_form = value.get("texts").is_some() && value.get("inputs").is_none();
    if texts_form {
        let request: TextsRequest = serde_json::from_value(value).map_err(invalid_embed_body)?;
        let loaded = service.loaded()?;
        let input = service
            .tokenize(loaded, request.texts, None, Keep::Start)
            .await?;
        let embeddings = service.embed(loaded, input, true).await?;
        return Ok(Reply::json(
            200,
            &EmbedResponse {
                model: loaded.info.model_id.clone(),
                dim: loaded.info.dimension,
                embeddings,
            },
        ));
    }
    let request: TeiRequest = serde_json::from_value(value).map_err(invalid_embed_body)?;
    let loaded = service.loaded()?;
    let texts = match request.inputs {
        TeiInput::Text(t) => vec![t],
        TeiInput::Texts(t) => t,
    };
    let keep = match request.truncation_direction {
        Some(TruncationDirection::Left) => Keep::End,
        _ => Keep::Start,
    };
    let input = service
        .tokenize(loaded, texts, request.truncate, keep)
        .await?;
    let vectors = service.embed(loaded, input, request.normalize).await?;
    Ok(Reply::json(200, &vectors))
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

fn health_body(service: &Service) -> HealthBody {
    let state = service.health.state();
    HealthBody {
        status: state.name().to_owned(),
        message: match state {
            State::Ready => None,
            State::Draining => Some("shutting down: finishing requests in flight".into()),
            State::Loading => Some("loading the model".into()),
            State::Failed => service.health.message(),
        },
    }
}

/// Readiness: 200 when the streams serve, 503 while loading, after a failed load, or while
/// draining. (`/health/ready` answers the same.)
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    responses(
        (status = 200, description = "Ready", body = HealthBody),
        (status = 503, description = "Loading, failed to load, or draining", body = HealthBody),
    )
)]
pub fn health(service: &Service) -> Reply {
    let status = if service.health.ready() { 200 } else { 503 };
    Reply::json(status, &health_body(service))
}

/// Readiness, for Kubernetes' `readinessProbe`: the same as `/health`.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "health",
    responses(
        (status = 200, description = "Ready", body = HealthBody),
        (status = 503, description = "Loading, failed to load, or draining", body = HealthBody),
    )
)]
pub fn ready(service: &Service) -> Reply {
    health(service)
}

/// Liveness, for Kubernetes' `livenessProbe`: 503 only after a failed model load.
#[utoipa::path(
    get,
    path = "/health/live",
    tag = "health",
    responses(
        (status = 200, description = "Alive (ready, loading or draining)", body = HealthBody),
        (status = 503, description = "The model failed to load: restart", body = HealthBody),
    )
)]
pub fn live(service: &Service) -> Reply {
    let status = if service.health.live() { 200 } else { 503 };
    Reply::json(status, &health_body(service))
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
