//! What operators and tools ask: `GET /info`, `GET /v1/models`, the health probes, Prometheus
//! metrics and the OpenAPI document.

use crate::http::api::{HealthBody, Info, ModelCard, ModelList, OpenAiError, TeiError};
use crate::http::handlers::errors::{openai_failure, tei_failure};
use crate::http::handlers::Reply;
use crate::http::openapi;
use crate::service::health::State;
use crate::service::Service;

/// A served model and the service's limits: the model the path names
/// (`/models/{name}/info`), else the first, with the names of all.
#[utoipa::path(
    get,
    path = "/info",
    tag = "text-embeddings-inference",
    responses(
        (status = 200, description = "Model, dimension, limits, backend, streams", body = Info),
        (status = 401, description = "The server has an --api-key and the request did not present it", body = TeiError),
        (status = 503, description = "The model is not loaded", body = TeiError),
    )
)]
pub fn info(service: &Service, model: Option<&str>) -> Reply {
    match service.model(model, None, None) {
        Ok(loaded) => Reply::json(200, &loaded.info),
        Err(f) => tei_failure(f),
    }
}

/// The served models, as OpenAI lists models (the official clients' `models.list()`).
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "openai",
    responses(
        (status = 200, description = "The served models, in --model order", body = ModelList),
        (status = 401, description = "The server has an --api-key and the request did not present it", body = OpenAiError),
        (status = 503, description = "The model is not loaded", body = OpenAiError),
    )
)]
pub fn models(service: &Service) -> Reply {
    match service.models() {
        Ok(models) => Reply::json(
            200,
            &ModelList {
                object: "list".to_owned(),
                data: models
                    .iter()
                    .map(|loaded| ModelCard {
                        id: loaded.info.model_id.clone(),
                        object: "model".to_owned(),
                        created: 0,
                        owned_by: "corestream".to_owned(),
                        model_type: loaded.info.model_type.clone(),
                    })
                    .collect(),
            },
        ),
        Err(f) => openai_failure(f),
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
        headers: Vec::new(),
    }
}

/// This document, stating the limits of the models that requests without a model's name
/// reach (see [`openapi::document`] and [`openapi::Limits::of`]).
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "observability",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json"))
)]
pub fn openapi_json(service: &Service) -> Reply {
    let limits = service.models().ok().map(openapi::Limits::of);
    Reply::json(200, &openapi::document(limits))
}
