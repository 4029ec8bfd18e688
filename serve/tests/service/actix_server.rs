//! The actix-web server (`corestream_serve::http::actix`) end to end on 127.0.0.1, with the
//! same scenarios as the axum server (`support.rs`, see `axum_server.rs`): 64 concurrent
//! requests equal to the unbatched result, base64, limits and validation, 503 on a full queue,
//! `/info`, `/openapi.json`, health, metrics, spans and the official `openai` Python client.
//! The server runs as `corestream serve --server actix` runs it: one service (one `Batcher`)
//! built outside `HttpServer::new`'s factory and shared through `web::Data`, one HTTP worker,
//! on its own actix system thread.

use corestream_serve::Server;

use crate::scenarios;
use crate::support::{self, Kind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn textnet_end_to_end() {
    let _shared = support::shared().await;
    for backend in support::backends("textnet_end_to_end") {
        eprintln!("textnet on {backend}");
        scenarios::end_to_end(
            support::launcher(Server::Actix),
            Kind::TextNet,
            backend,
            &format!("actix-textnet-{backend}"),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minilm_end_to_end() {
    let _shared = support::shared().await;
    if support::minilm_dir().is_none() {
        return;
    }
    for backend in support::backends("minilm_end_to_end") {
        eprintln!("MiniLM-L3 on {backend}");
        scenarios::end_to_end(
            support::launcher(Server::Actix),
            Kind::MiniLm,
            backend,
            &format!("actix-minilm-{backend}"),
        )
        .await;
    }
}

server_scenarios!(Server::Actix, "actix");
