//! The actix-web adapter: every route of [`crate::handlers`] on an actix `ServiceConfig`, the
//! body read as bytes (at most [`BODY_LIMIT`], within the service's body timeout) and the framework-neutral [`Reply`] turned into
//! an `HttpResponse`. The service itself comes from `web::Data`, built once outside the
//! per-worker factory.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};

use crate::handlers::{declared_over_limit, handle, BodyError, Method, Reply, Route, BODY_LIMIT};
use crate::service::Service;

fn response(reply: Reply) -> HttpResponse {
    HttpResponse::build(
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    )
    .content_type(reply.content_type)
    .body(reply.body)
}

/// The body of a request, at most [`BODY_LIMIT`] bytes: a declared length over it is refused
/// before reading, a chunked body as soon as it passes the limit.
async fn read_body(request: HttpRequest, payload: web::Payload) -> Result<web::Bytes, BodyError> {
    let declared = request.headers().get(header::CONTENT_LENGTH);
    if declared_over_limit(declared.map(|v| v.as_bytes())) {
        return Err(BodyError::TooLarge);
    }
    match payload.to_bytes_limited(BODY_LIMIT).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => Err(BodyError::Failed(e.to_string())),
        Err(_) => Err(BodyError::TooLarge),
    }
}

/// Registers the service's routes (the same as the axum router's) on an `App`:
/// `App::new().app_data(data.clone()).configure(routes)`, with `data: web::Data<Service>`.
pub fn routes(config: &mut web::ServiceConfig) {
    for route in Route::ALL {
        let handler = move |service: web::Data<Service>,
                            request: HttpRequest,
                            payload: web::Payload| async move {
            response(handle(&service, route, read_body(request, payload)).await)
        };
        let (method, allow) = match route.method() {
            Method::Get => (web::get(), "GET"),
            Method::Post => (web::post(), "POST"),
        };
        // Another method on a known path: 405 with `Allow`, as axum answers.
        let other = move || async move {
            HttpResponse::MethodNotAllowed()
                .insert_header(("allow", allow))
                .finish()
        };
        config.service(
            web::resource(route.path())
                .route(method.to(handler))
                .default_service(web::to(other)),
        );
    }
}
