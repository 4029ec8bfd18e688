//! The actix-web adapter: every route of [`crate::handlers`] on an actix `ServiceConfig`, the
//! body read as bytes (at most [`BODY_LIMIT`]) and the framework-neutral [`Reply`] turned into
//! an `HttpResponse`. The service itself comes from `web::Data`, built once outside the
//! per-worker factory.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

use crate::handlers::{handle, Method, Reply, Route, BODY_LIMIT};
use crate::service::Service;

fn response(reply: Reply) -> HttpResponse {
    HttpResponse::build(
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    )
    .content_type(reply.content_type)
    .body(reply.body)
}

/// Registers the service's routes (the same as the axum router's) on an `App`:
/// `App::new().app_data(data.clone()).configure(routes)`, with `data: web::Data<Service>`.
pub fn routes(config: &mut web::ServiceConfig) {
    config.app_data(web::PayloadConfig::new(BODY_LIMIT));
    for route in Route::ALL {
        let handler = move |service: web::Data<Service>, body: web::Bytes| async move {
            response(handle(&service, route, &body).await)
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
