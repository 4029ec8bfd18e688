//! The embedding service on actix-web: the same routes, bodies and behaviour as
//! `examples/embed_server` (axum), sharing its framework-neutral modules. Only the HTTP adapter
//! (`app.rs`) differs.
//!
//! ```text
//! cargo run --release --features tract,ort,metrics,tracing --example actix_embed -- --bind 127.0.0.1:8080
//! curl -s localhost:8080/v1/embeddings -d '{"input": "a cat sits", "model": "m"}'
//! ```
//!
//! Two things matter with actix-web and pinned streams:
//! - `HttpServer::new` calls its factory once per HTTP worker. The `Batcher` (and with it the
//!   pinned stream threads and the one copy of the model) is built once, here, outside the
//!   factory, and every worker's `App` shares it through `web::Data` (an `Arc`). Building it
//!   inside the factory would start one set of pinned streams per worker.
//! - Each HTTP worker is a thread with its own event loop; the default is one per CPU, and
//!   they would compete with the pinned streams for the same cores. `--http-workers`
//!   (`CORESTREAM_HTTP_WORKERS`, default 1) caps them: parsing JSON and tokenising is a small
//!   part of a request next to the model.

#[path = "../embed_server/api.rs"]
mod api;
mod app;
#[path = "../embed_server/embedder.rs"]
mod embedder;
#[path = "../embed_server/handlers.rs"]
mod handlers;
#[path = "../embed_server/health.rs"]
mod health;
#[path = "../embed_server/openapi.rs"]
mod openapi;
#[path = "../embed_server/requests.rs"]
mod requests;
#[path = "../embed_server/service.rs"]
mod service;
#[path = "../embed_server/setup.rs"]
mod setup;
#[path = "../embed_server/telemetry.rs"]
mod telemetry;
#[path = "../embed_server/tokenizer.rs"]
mod tokenizer;

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use clap::Parser;

use crate::service::Service;

#[derive(Debug, Parser)]
#[command(about = "corestream embedding service (actix-web + Batcher + MiniLM-L3)")]
struct Args {
    #[command(flatten)]
    serve: setup::ServeArgs,
    /// HTTP worker threads (each an event loop); few, so they leave the cores to the streams.
    #[arg(long, env = "CORESTREAM_HTTP_WORKERS", default_value_t = 1)]
    http_workers: usize,
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    telemetry::init_tracing()?;
    // Before any batcher is built: batchers register their metrics when built.
    let prometheus = telemetry::install_prometheus()?;
    let service = Arc::new(
        Service::new(telemetry::renderer(prometheus))
            .with_body_timeout(Duration::from_millis(args.serve.body_timeout_ms)),
    );

    // The model, its streams and the Batcher: once per process, outside the worker factory.
    let (loading, serve_args) = (Arc::clone(&service), args.serve.clone());
    std::thread::spawn(move || match setup::load(&serve_args) {
        Ok(loaded) => {
            tracing::info!(info = ?loaded.info, "model loaded: ready");
            loading.set_loaded(loaded);
        }
        Err(e) => {
            tracing::error!(error = %e, "model load failed: /health answers 503");
            loading.set_failed(e.to_string());
        }
    });

    let data = web::Data::from(Arc::clone(&service));
    let server = HttpServer::new(move || App::new().app_data(data.clone()).configure(app::routes))
        .workers(args.http_workers.max(1))
        // Each connection's socket, so handlers notice a client that left (see app.rs).
        .on_connect(app::on_connect)
        .client_request_timeout(Duration::from_millis(args.serve.header_timeout_ms))
        // Our own signal handling: mark draining first, then stop gracefully.
        .disable_signals()
        .bind(&args.serve.bind)?;
    for address in server.addrs() {
        tracing::info!(%address, workers = args.http_workers.max(1), "listening");
    }
    let server = server.run();
    let handle = server.handle();
    let delay = Duration::from_millis(args.serve.drain_delay_ms);
    let draining = Arc::clone(&service);
    actix_web::rt::spawn(async move {
        setup::drain_on_signal(draining, delay).await;
        handle.stop(true).await;
    });
    server.await?;
    service.log_final_stats();
    Ok(())
}
