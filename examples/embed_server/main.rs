//! An embedding service: axum in front of a corestream `Batcher` over a `MultiStreamModule`
//! running paraphrase-MiniLM-L3-v2 on ONNX Runtime or tract. It speaks OpenAI's
//! `POST /v1/embeddings` and text-embeddings-inference's `POST /embed` and `GET /info` (and the
//! original `POST /embed {"texts"}`), documents itself at `GET /openapi.json`, and reports
//! `GET /health` (readiness; `/health/ready`, `/health/live`) and `GET /metrics` (Prometheus).
//!
//! ```text
//! bash scripts/fetch-models.sh
//! bash scripts/fetch-onnxruntime.sh   # optional: without it the server runs on tract
//! cargo run --release --features tract,ort,metrics,tracing --example embed_server -- --bind 127.0.0.1:8080
//! curl -s localhost:8080/v1/embeddings -d '{"input": ["a cat sits", "a dog runs"], "model": "m"}'
//! curl -s localhost:8080/embed -d '{"inputs": "a cat sits"}'
//! curl -s localhost:8080/info
//! ```
//!
//! The listener opens at once and the model loads in the background: `/health` answers 503
//! until it is ready (and for good, with the error, if it fails to load). Ctrl-C or SIGTERM
//! marks the service draining (`/health` 503), keeps serving for `--drain-delay-ms`, then stops
//! accepting connections and finishes the requests in flight; the request totals logged at
//! exit show none was lost. A client gets `--header-timeout-ms` for its headers (then the
//! connection is closed) and `--body-timeout-ms` for its body (408), 2 MiB at most (413).
//! Every flag also reads an environment variable (see `setup.rs`); logs: `RUST_LOG`,
//! `CORESTREAM_LOG_FORMAT=text|json`.
//! The modules other than `app.rs` are framework-neutral and shared with
//! `examples/actix_embed`.

mod api;
mod app;
mod embedder;
mod handlers;
mod health;
mod openapi;
mod requests;
mod service;
mod setup;
mod telemetry;
mod tokenizer;

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use crate::service::Service;

#[derive(Debug, Parser)]
#[command(about = "corestream embedding service (axum + Batcher + MiniLM-L3)")]
struct Args {
    #[command(flatten)]
    serve: setup::ServeArgs,
    /// Threads of the HTTP runtime (tokio workers). Default: one per CPU.
    #[arg(long, env = "CORESTREAM_HTTP_WORKERS")]
    http_workers: Option<usize>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.http_workers {
        runtime.worker_threads(n.max(1));
    }
    runtime.enable_all().build()?.block_on(serve(args))
}

async fn serve(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    telemetry::init_tracing()?;
    // Before any batcher is built: batchers register their metrics when built.
    let prometheus = telemetry::install_prometheus()?;
    let service = Arc::new(
        Service::new(telemetry::renderer(prometheus))
            .with_body_timeout(Duration::from_millis(args.serve.body_timeout_ms)),
    );
    let listener = tokio::net::TcpListener::bind(&args.serve.bind).await?;
    tracing::info!(address = %listener.local_addr()?, "listening");

    let (loading, serve_args) = (Arc::clone(&service), args.serve.clone());
    tokio::task::spawn_blocking(move || match setup::load(&serve_args) {
        Ok(loaded) => {
            tracing::info!(info = ?loaded.info, "model loaded: ready");
            loading.set_loaded(loaded);
        }
        Err(e) => {
            tracing::error!(error = %e, "model load failed: /health answers 503");
            loading.set_failed(e.to_string());
        }
    });

    let drain = setup::drain_on_signal(
        Arc::clone(&service),
        Duration::from_millis(args.serve.drain_delay_ms),
    );
    app::serve(
        listener,
        app::router(Arc::clone(&service)),
        Duration::from_millis(args.serve.header_timeout_ms),
        drain,
    )
    .await;
    service.log_final_stats();
    Ok(())
}
