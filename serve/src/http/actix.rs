//! The actix-web adapter: every route of [`crate::http::handlers`] on an actix `ServiceConfig`, the
//! body read as bytes (at most [`BODY_LIMIT`], within the service's body timeout) and the
//! framework-neutral [`Reply`] turned into an `HttpResponse`. The service itself comes from
//! `web::Data`, built once outside the per-worker factory.
//!
//! actix-web keeps running a handler whose client has disconnected (actix/actix-web#3462),
//! where hyper (axum) drops it. So that a client that gives up does not still cost a model run
//! here, [`on_connect`] keeps a duplicate of each connection's socket and the handler stops
//! (the request is cancelled, as on axum) once a peek at it reads end of stream.

use std::any::Any;
use std::future::Future;
use std::mem::MaybeUninit;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Extensions;
use actix_web::http::StatusCode;
use actix_web::rt::net::TcpStream;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::http::handlers::{
    handle, handle_model_path, BodyError, Method, Reply, RequestHead, Route, BODY_LIMIT,
    MODEL_PREFIX,
};
use crate::service::state::Service;

fn response(reply: Reply) -> HttpResponse {
    let mut builder = HttpResponse::build(
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    );
    builder.content_type(reply.content_type);
    for (name, value) in reply.headers {
        builder.insert_header((name, value));
    }
    builder.body(reply.body)
}

/// The body of a request, at most [`BODY_LIMIT`] bytes (a chunked body is refused as soon as it
/// passes the limit; [`handle`] refuses a declared length over it before reading).
async fn read_body(payload: web::Payload) -> Result<web::Bytes, BodyError> {
    match payload.to_bytes_limited(BODY_LIMIT).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => Err(BodyError::Failed(e.to_string())),
        Err(_) => Err(BodyError::TooLarge),
    }
}

/// How often a running request checks that its client is still connected.
const PEER_CHECK: Duration = Duration::from_millis(20);

/// A duplicate of a connection's socket, to notice that the client left.
#[derive(Clone)]
struct Peer(Arc<socket2::Socket>);

impl Peer {
    /// Resolves once the client has closed the connection (or it failed): a peek, which leaves
    /// the bytes for actix-web to read, finds end of stream. Unread request bytes (a body still
    /// coming, a pipelined request) are not an end.
    async fn gone(&self) {
        let mut byte = [MaybeUninit::uninit()];
        loop {
            actix_web::rt::time::sleep(PEER_CHECK).await;
            // The socket is non-blocking (the duplicate shares the original's flags): no data
            // yet is `WouldBlock`.
            match self.0.peek(&mut byte) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
}

/// The `HttpServer::on_connect` hook: keeps a duplicate of each TCP connection's socket for
/// its requests' handlers (`HttpServer::new(..).on_connect(app::on_connect)`).
pub fn on_connect(connection: &dyn Any, data: &mut Extensions) {
    if let Some(stream) = connection.downcast_ref::<TcpStream>() {
        if let Ok(socket) = socket2::SockRef::from(stream).try_clone() {
            data.insert(Peer(Arc::new(socket)));
        }
    }
}

/// `reply`, or a 499 once the client of `request` has left (then `reply` is dropped, which
/// cancels the request, counted as such).
async fn unless_gone(request: &HttpRequest, reply: impl Future<Output = Reply>) -> HttpResponse {
    match request.conn_data::<Peer>().cloned() {
        Some(peer) => tokio::select! {
            biased;
            reply = reply => response(reply),
            // Nobody reads this: 499, nginx's "client closed request", for the logs.
            () = peer.gone() => HttpResponse::new(
                StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            ),
        },
        None => response(reply.await),
    }
}

fn head(request: &HttpRequest) -> RequestHead {
    let headers = request.headers();
    RequestHead::read(|name| headers.get(name).map(|v| v.as_bytes()))
}

/// A path under [`MODEL_PREFIX`]: one model's route (see [`handle_model_path`]).
async fn model_path(
    service: web::Data<Service>,
    request: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let method = if request.method() == actix_web::http::Method::GET {
        Method::Get
    } else {
        Method::Post
    };
    let path = request.path().to_owned();
    let reply = handle_model_path(&service, method, &path, head(&request), read_body(payload));
    unless_gone(&request, reply).await
}

/// Registers the service's routes (the same as the axum router's) on an `App`:
/// `App::new().app_data(data.clone()).configure(routes)`, with `data: web::Data<Service>`.
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(
        web::resource(format!("{MODEL_PREFIX}{{rest:.*}}"))
            .route(web::get().to(model_path))
            .route(web::post().to(model_path)),
    );
    for route in Route::ALL {
        let handler = move |service: web::Data<Service>,
                            request: HttpRequest,
                            payload: web::Payload| async move {
            let reply = handle(&service, route, head(&request), read_body(payload));
            unless_gone(&request, reply).await
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
