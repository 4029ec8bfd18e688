//! The routes, independent of the HTTP framework: each takes the raw body and answers a
//! [`Reply`] (status, content type, bytes). [`handle`] wraps every route in a tracing span and
//! counts it in the HTTP metrics; the axum and actix-web adapters only move bytes. The
//! `#[utoipa::path]` attributes are the OpenAPI document's source (see `openapi.rs`).
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`Route`], [`Reply`], the request's head and body, [`handle`]: the path every request takes |
//! | `errors.rs` | a [`Failure`] in each API's error shape, and its [`status`] |
//! | `embeddings.rs` | `POST /v1/embeddings`, `POST /embed` |
//! | `tokens.rs` | `POST /tokenize`, `POST /decode` |
//! | `scores.rs` | `POST /rerank`, `POST /v1/rerank`, `POST /predict` |
//! | `probes.rs` | `GET /info`, `GET /v1/models`, health, metrics, the OpenAPI document |

use std::future::Future;
use std::time::Instant;

use serde::Serialize;
use tracing::Instrument;

use crate::service::{Failure, FailureKind, Service};

pub(crate) mod embeddings;
mod errors;
pub(crate) mod probes;
pub(crate) mod scores;
pub(crate) mod tokens;

pub use embeddings::{embed, openai_embeddings, to_base64};
pub use errors::status;
use errors::{body_failure, route_failure};
pub use probes::{health, info, live, metrics, models, openapi_json, ready};
pub use scores::{cohere_rerank, predict, rerank};
pub use tokens::{decode, tokenize};

/// The largest request body accepted (larger: 413 from the framework).
pub const BODY_LIMIT: usize = 2 << 20;

/// Where the routes of one model of several are served: `/models/{name}/v1/embeddings`,
/// `/models/{name}/rerank`, ... (see [`Route::per_model`]).
pub const MODEL_PREFIX: &str = "/models/";

/// An HTTP answer, framework-neutral.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The `Content-Type` header.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
    /// Other headers (`Retry-After` on a 429, `WWW-Authenticate` on a 401), lowercase names.
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub(crate) fn json(status: u16, value: &impl Serialize) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: serde_json::to_vec(value).expect("response bodies serialise"),
            headers: Vec::new(),
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
    /// `POST /tokenize`.
    Tokenize,
    /// `POST /decode`.
    Decode,
    /// `POST /rerank`.
    Rerank,
    /// `POST /v1/rerank`.
    CohereRerank,
    /// `POST /predict`.
    Predict,
    /// `GET /info`.
    Info,
    /// `GET /v1/models`.
    Models,
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
    pub const ALL: [Route; 14] = [
        Route::OpenAiEmbeddings,
        Route::Embed,
        Route::Tokenize,
        Route::Decode,
        Route::Rerank,
        Route::CohereRerank,
        Route::Predict,
        Route::Info,
        Route::Models,
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
            Route::Tokenize => "/tokenize",
            Route::Decode => "/decode",
            Route::Rerank => "/rerank",
            Route::CohereRerank => "/v1/rerank",
            Route::Predict => "/predict",
            Route::Info => "/info",
            Route::Models => "/v1/models",
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
            Route::OpenAiEmbeddings
            | Route::Embed
            | Route::Tokenize
            | Route::Decode
            | Route::Rerank
            | Route::CohereRerank
            | Route::Predict => Method::Post,
            _ => Method::Get,
        }
    }

    /// Whether the route's answers come from the model (not the tokenizer's, nor the probes):
    /// their rate is the drain rate `Retry-After` is computed from.
    pub fn runs_the_model(self) -> bool {
        matches!(
            self,
            Route::OpenAiEmbeddings
                | Route::Embed
                | Route::Rerank
                | Route::CohereRerank
                | Route::Predict
        )
    }

    /// Whether the route answers for one model, and so is also served under
    /// [`MODEL_PREFIX`]`{name}` for each model of a server of several: the model routes,
    /// the tokenizer's, `/info`.
    pub fn per_model(self) -> bool {
        !matches!(
            self,
            Route::Models
                | Route::Health
                | Route::Live
                | Route::Ready
                | Route::Metrics
                | Route::OpenApi
        )
    }

    /// The route and the model's name of a path under [`MODEL_PREFIX`]: `rest` is the path
    /// after the prefix, `{name}{route}` (names may hold `/`: `org/model/v1/embeddings`).
    /// When more than one split fits (`x/v1/rerank`: model `x` and `/v1/rerank`, or model
    /// `x/v1` and `/rerank`), the one whose name `is_model` accepts wins, else the longer
    /// route.
    ///
    /// ```
    /// use corestream_serve::http::Route;
    ///
    /// let served = |name: &str| name == "org/reranker";
    /// assert_eq!(
    ///     Route::under_model("org/reranker/v1/rerank", served),
    ///     Some((Route::CohereRerank, "org/reranker"))
    /// );
    /// assert_eq!(Route::under_model("a/info", served), Some((Route::Info, "a")));
    /// assert_eq!(Route::under_model("a/health", served), None);
    /// assert_eq!(Route::under_model("/embed", served), None); // no name
    /// ```
    pub fn under_model(rest: &str, is_model: impl Fn(&str) -> bool) -> Option<(Route, &str)> {
        let mut fits: Vec<(Route, &str)> = Route::ALL
            .into_iter()
            .filter(|r| r.per_model())
            .filter_map(|r| Some((r, rest.strip_suffix(r.path())?)))
            .filter(|(_, name)| !name.is_empty())
            .collect();
        fits.sort_by_key(|(r, _)| std::cmp::Reverse(r.path().len()));
        fits.iter()
            .find(|(_, name)| is_model(name))
            .or(fits.first())
            .copied()
    }

    /// Whether `--api-key` guards the route: all but the health probes, `/metrics` and
    /// `/openapi.json` (see [`ApiKey`](crate::service::ApiKey)).
    pub fn guarded(self) -> bool {
        !matches!(
            self,
            Route::Health | Route::Live | Route::Ready | Route::Metrics | Route::OpenApi
        )
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

/// What an adapter knows of a request before its body: the body's size and the headers the
/// routes read. Built by [`RequestHead::read`] from a header lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The body's size.
    pub size: BodySize,
    /// The `Content-Type` header's raw value, if sent.
    pub content_type: Option<Vec<u8>>,
    /// The `Authorization` header's raw value, if sent.
    pub authorization: Option<Vec<u8>>,
    /// The model the request's path names (`/models/{name}/...`), if it does.
    pub model: Option<String>,
}

impl RequestHead {
    /// From the request's headers: `header(name)` gives a header's raw value (names asked in
    /// lowercase).
    ///
    /// ```
    /// use corestream_serve::http::{BodySize, RequestHead};
    ///
    /// let head = RequestHead::read(|name| match name {
    ///     "content-length" => Some(&b"12"[..]),
    ///     "content-type" => Some(&b"application/json; charset=utf-8"[..]),
    ///     _ => None,
    /// });
    /// assert_eq!(head.size, BodySize::Exact(12));
    /// assert!(head.is_json());
    /// ```
    pub fn read<'a>(header: impl Fn(&str) -> Option<&'a [u8]>) -> RequestHead {
        RequestHead {
            size: BodySize::from_headers(
                header("content-length"),
                header("transfer-encoding").is_some(),
            ),
            content_type: header("content-type").map(<[u8]>::to_vec),
            authorization: header("authorization").map(<[u8]>::to_vec),
            model: None,
        }
    }

    /// A JSON request of `size` without credentials (what tests hand to [`handle`]).
    pub fn json(size: BodySize) -> RequestHead {
        RequestHead {
            size,
            content_type: Some(b"application/json".to_vec()),
            authorization: None,
            model: None,
        }
    }

    /// Whether the body is declared JSON: `Content-Type: application/json`, any case,
    /// parameters (`charset=utf-8`) allowed.
    pub fn is_json(&self) -> bool {
        self.content_type.as_deref().is_some_and(|v| {
            let essence = v.split(|&b| b == b';').next().unwrap_or_default();
            essence
                .trim_ascii()
                .eq_ignore_ascii_case(b"application/json")
        })
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

/// Answers `route` for the request `head` and the body `read_body` yields, inside a span
/// `http_request` (route, status), counted in [`Service::requests`] (cancelled if this future
/// is dropped before it answers), in `corestream_http_requests_total{route,status}` and
/// `corestream_http_request_duration_seconds{route}`. In the route's error shape, in this
/// order, each before the body is read: a guarded route without the service's `--api-key` is
/// a 401; a POST whose body is not declared `application/json` a 415; a POST while
/// `--max-concurrent-requests` are in flight a 429 with `Retry-After`; a body declared over
/// [`BODY_LIMIT`] a 413; one that cannot have its size reserved from the service's
/// [`BodyBudget`](crate::service::BodyBudget) within [`Service::body_timeout`] a 429. Then a
/// body that takes longer than that to arrive is a 408, one over the limit a 413, and a
/// request not answered within [`Service::request_timeout`] a 504.
pub async fn handle<B: AsRef<[u8]>>(
    service: &Service,
    route: Route,
    head: RequestHead,
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
        if route.guarded() {
            if let Some(key) = service.api_key() {
                if !key.accepts(head.authorization.as_deref()) {
                    return route_failure(
                        route,
                        Failure::new(
                            FailureKind::Unauthorized,
                            "unauthorized",
                            "this server needs an API key: send `Authorization: Bearer <key>`",
                        ),
                    );
                }
            }
        }
        let post = route.method() == Method::Post;
        if post && !head.is_json() {
            return route_failure(
                route,
                Failure::new(
                    FailureKind::UnsupportedMediaType,
                    "unsupported_media_type",
                    "send the body as JSON, with `Content-Type: application/json`",
                ),
            );
        }
        let _admitted = if post {
            match service.admission.admit(Instant::now()) {
                Ok(admitted) => Some(admitted),
                Err(retry_after) => {
                    count_overload(route, "in_flight");
                    return route_failure(
                        route,
                        Failure::overloaded(
                            format!(
                                "{} requests are in flight, the most this server takes \
                                 (--max-concurrent-requests); retry after {} s",
                                service.admission.limit(),
                                retry_after.as_secs()
                            ),
                            retry_after,
                        ),
                    );
                }
            }
        } else {
            None
        };
        let size = head.size;
        if matches!(size, BodySize::Exact(n) if n > BODY_LIMIT as u64) {
            return body_failure(route, BodyError::TooLarge);
        }
        let timeout = service.body_timeout();
        let deadline = Instant::now() + timeout;
        // Held until the request is answered: its body and what is parsed from it.
        let Some(_reserved) = service.bodies.reserve(size.reserve(), deadline).await else {
            count_overload(route, "body_budget");
            let retry_after = service
                .admission
                .drain
                .retry_after(service.admission.in_flight() as u64, Instant::now());
            return route_failure(
                route,
                Failure::overloaded(
                    format!(
                        "the server holds as many request bytes as it may ({} MiB, \
                         --body-budget-mib); retry after {} s",
                        service.bodies.bytes() >> 20,
                        retry_after.as_secs()
                    ),
                    retry_after,
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
        let model = head.model.as_deref();
        let reply = match route {
            Route::OpenAiEmbeddings => {
                within(service, route, openai_embeddings(service, model, body)).await
            }
            Route::Embed => within(service, route, embed(service, model, body)).await,
            Route::Tokenize => within(service, route, tokenize(service, model, body)).await,
            Route::Decode => decode(service, model, body),
            Route::Rerank => within(service, route, rerank(service, model, body)).await,
            Route::CohereRerank => {
                within(service, route, cohere_rerank(service, model, body)).await
            }
            Route::Predict => within(service, route, predict(service, model, body)).await,
            Route::Info => info(service, model),
            Route::Models => models(service),
            Route::Health => health(service),
            Route::Ready => ready(service),
            Route::Live => live(service),
            Route::Metrics => metrics(service),
            Route::OpenApi => openapi_json(service),
        };
        if reply.status == 429 {
            // Refused by the batcher: its queue is full.
            count_overload(route, "queue");
        }
        reply
    }
    .instrument(span.clone())
    .await;
    ticket.answered();
    if route.runs_the_model() && reply.status == 200 {
        // The answer rate that `Retry-After` is computed from: the model's work done (not
        // refusals, nor the tokenizer's quick routes).
        service.admission.drain.answered(Instant::now());
    }
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

/// Answers a request whose path is under [`MODEL_PREFIX`] (the adapters route every such path
/// here): the route and model it names (see [`Route::under_model`]) answered by [`handle`]
/// with [`RequestHead::model`] set, or a 404 for a path that names no route, a 405 (with
/// `Allow`) for a route asked with the wrong method.
pub async fn handle_model_path<B: AsRef<[u8]>>(
    service: &Service,
    method: Method,
    path: &str,
    mut head: RequestHead,
    read_body: impl Future<Output = Result<B, BodyError>>,
) -> Reply {
    let rest = path.strip_prefix(MODEL_PREFIX).unwrap_or_default();
    let served = |name: &str| {
        service
            .models()
            .is_ok_and(|models| models.get(name).is_some())
    };
    let Some((route, name)) = Route::under_model(rest, served) else {
        return errors::tei_failure(Failure::new(
            FailureKind::NotFound,
            "not_found",
            format!(
                "no route here: under {MODEL_PREFIX}{{name}} a model answers {}",
                Route::ALL
                    .into_iter()
                    .filter(|r| r.per_model())
                    .map(Route::path)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    };
    if route.method() != method {
        let mut reply = route_failure(
            route,
            Failure::new(
                FailureKind::MethodNotAllowed,
                "method_not_allowed",
                format!("{} answers {:?} only", route.path(), route.method()),
            ),
        );
        let allow = match route.method() {
            Method::Get => "GET",
            Method::Post => "POST",
        };
        reply.headers.push(("allow", allow.to_owned()));
        return reply;
    }
    head.model = Some(name.to_owned());
    handle(service, route, head, read_body).await
}

/// Counts a 429 of `route` in `corestream_http_overloaded_total{route,why}`: `why` is
/// `in_flight`, `body_budget` or `queue`.
fn count_overload(route: Route, why: &'static str) {
    metrics::counter!("corestream_http_overloaded_total", "route" => route.path(), "why" => why)
        .increment(1);
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
