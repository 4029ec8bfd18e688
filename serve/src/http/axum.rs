//! The axum adapter: every route of [`crate::http::handlers`] on an axum `Router`, the body read as
//! bytes (at most [`BODY_LIMIT`], within the service's body timeout) and the
//! framework-neutral [`Reply`] turned into a response; and [`serve`], the connection loop
//! with the timeouts `axum::serve` does not set.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

use crate::http::handlers::{
    handle, handle_model_path, BodyError, Method, Reply, RequestHead, Route, BODY_LIMIT,
    MODEL_PREFIX,
};
use crate::service::state::Service;

fn response(reply: Reply) -> Response {
    let mut builder = Response::builder()
        .status(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, reply.content_type);
    for (name, value) in reply.headers {
        builder = builder.header(name, value);
    }
    builder
        .body(Body::from(reply.body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// The body of `request`, at most [`BODY_LIMIT`] bytes (`DefaultBodyLimit`: a chunked body is
/// refused as soon as it passes the limit; [`handle`] refuses a declared length over it before
/// reading).
async fn read_body(request: Request) -> Result<Bytes, BodyError> {
    Bytes::from_request(request, &())
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                BodyError::TooLarge
            } else {
                BodyError::Failed(rejection.body_text())
            }
        })
}

fn head(request: &Request) -> RequestHead {
    let headers = request.headers();
    RequestHead::read(|name| headers.get(name).map(|v| v.as_bytes()))
}

/// A path under [`MODEL_PREFIX`]: one model's route (see [`handle_model_path`]).
async fn model_path(State(service): State<Arc<Service>>, request: Request) -> Response {
    let method = if request.method() == axum::http::Method::GET {
        Method::Get
    } else {
        Method::Post
    };
    let path = request.uri().path().to_owned();
    let head = head(&request);
    response(handle_model_path(&service, method, &path, head, read_body(request)).await)
}

/// The service's routes ([`Route::ALL`]), and each model's under [`MODEL_PREFIX`].
pub fn router(service: Arc<Service>) -> Router {
    let mut router = Router::new().route(
        &format!("{MODEL_PREFIX}{{*rest}}"),
        get(model_path).post(model_path),
    );
    for route in Route::ALL {
        let handler = move |State(service): State<Arc<Service>>, request: Request| async move {
            let head = head(&request);
            response(handle(&service, route, head, read_body(request)).await)
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

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting, lets every
/// connection finish the request it is on, and returns when all are closed.
///
/// What `axum::serve` does, plus a header read timeout (`header_timeout`: a client that
/// connects and never finishes its headers, slowloris, or sends nothing at all, is
/// disconnected after it; `axum::serve` sets no timer, so such a client holds its connection
/// for ever). HTTP/1.1 only: an HTTP/2 prior-knowledge (h2c) preface is refused, since hyper
/// bounds no HTTP/2 connection's idle time. Accept
/// errors (out of file descriptors under a connection flood) pause accepting for 50 ms
/// instead of ending the server.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    // HTTP/1 only: hyper-util's version detection reads the first bytes with no timer, and
    // HTTP/2 (h2c) has no header or idle timeout, so either would let a client hold a
    // connection (a descriptor) for ever by sending nothing (hyperium/hyper#3756). With
    // HTTP/1 alone the header read timeout runs from the connection's start.
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; pausing 50 ms");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
