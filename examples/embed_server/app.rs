//! The HTTP service: routes, JSON bodies, status codes. Generic over the embedder
//! (`Arc<dyn Infer<..>>`), so the same router serves the batcher and the naive baseline.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use corestream::batch::Rows;
use corestream::{Error, Infer};
use serde::{Deserialize, Serialize};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Texts in, one unit vector per text out.
    pub embedder: Arc<dyn Infer<Rows<String>, Rows<Vec<f32>>>>,
    /// Prometheus text for `GET /metrics`.
    pub metrics: Arc<dyn Fn() -> String + Send + Sync>,
    /// The model's name, echoed in responses.
    pub model: String,
    /// Most texts accepted in one request.
    pub max_texts: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedRequest {
    pub texts: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EmbedResponse {
    pub model: String,
    pub dim: usize,
    pub embeddings: Vec<Vec<f32>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(ErrorBody {
            error: message.into(),
        }),
    )
        .into_response()
}

/// The service's routes: `POST /embed`, `GET /health`, `GET /metrics`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/embed", post(embed))
        .route(
            "/health",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn embed(State(state): State<AppState>, body: Bytes) -> Response {
    let request: EmbedRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid JSON body: {e}; expected {{\"texts\": [\"...\", ...]}}"),
            )
        }
    };
    if request.texts.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "texts is empty; send at least one string",
        );
    }
    if request.texts.len() > state.max_texts {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "{} texts in one request; at most {} are allowed",
                request.texts.len(),
                state.max_texts
            ),
        );
    }
    match state.embedder.infer(Rows(request.texts)).await {
        Ok(Rows(embeddings)) => Json(EmbedResponse {
            model: state.model.clone(),
            dim: embeddings.first().map_or(0, Vec::len),
            embeddings,
        })
        .into_response(),
        Err(e @ Error::Overloaded { .. }) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e @ Error::Shutdown) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        (state.metrics)(),
    )
        .into_response()
}
