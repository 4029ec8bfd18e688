//! The actix-web embedding service (`examples/actix_embed`) end to end on 127.0.0.1, with the
//! same scenarios as the axum service (`tests/embed_service/mod.rs`, see
//! `tests/embed_server.rs`): 64 concurrent requests equal to the unbatched result, base64,
//! limits and validation, 503 on a full queue, `/info`, `/openapi.json`, health, metrics,
//! spans and the official `openai` Python client. The server runs as `examples/actix_embed`
//! runs it: one service (one `Batcher`) built outside `HttpServer::new`'s factory and shared
//! through `web::Data`, one HTTP worker, on its own actix system thread.
#![cfg(all(feature = "tract", feature = "metrics", feature = "tracing"))]

#[path = "../examples/actix_embed/app.rs"]
mod actix_app;
#[allow(dead_code)]
#[macro_use]
mod embed_service;
include!("embed_service/modules.rs");
#[path = "embed_service/actix_server.rs"]
mod actix_server;

use embed_service::Kind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn textnet_end_to_end() {
    for backend in embed_service::backends("textnet_end_to_end") {
        eprintln!("textnet on {backend}");
        embed_service::end_to_end(
            actix_server::launch,
            Kind::TextNet,
            backend,
            &format!("actix-textnet-{backend}"),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minilm_end_to_end() {
    if embed_service::minilm_dir().is_none() {
        return;
    }
    for backend in embed_service::backends("minilm_end_to_end") {
        eprintln!("MiniLM-L3 on {backend}");
        embed_service::end_to_end(
            actix_server::launch,
            Kind::MiniLm,
            backend,
            &format!("actix-minilm-{backend}"),
        )
        .await;
    }
}

server_scenarios!(actix_server::launch, "actix");
