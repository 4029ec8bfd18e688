//! The axum adapter: every route of [`crate::handlers`] on an axum `Router`, the body read as
//! bytes (at most [`BODY_LIMIT`]) and the framework-neutral [`Reply`] turned into a response.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use crate::handlers::{handle, Method, Reply, Route, BODY_LIMIT};
use crate::service::Service;

fn response(reply: Reply) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, reply.content_type)
        .body(Body::from(reply.body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// The service's routes: `POST /v1/embeddings`, `POST /embed`, `GET /info`, `GET /health`,
/// `GET /health/live`, `GET /health/ready`, `GET /metrics`, `GET /openapi.json`.
pub fn router(service: Arc<Service>) -> Router {
    let mut router = Router::new();
    for route in Route::ALL {
        let handler = move |State(service): State<Arc<Service>>, body: Bytes| async move {
            response(handle(&service, route, &body).await)
        };
        router = router.route(
            route.path(),
            match route.method() {
                Method::Get => get(handler),
                Method::Post => post(handler),
            },
        );
    }
    router
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(service)
}
