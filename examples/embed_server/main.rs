//! An embedding service: axum in front of a corestream `Batcher` over a `MultiStreamModule`
//! running paraphrase-MiniLM-L3-v2 on ONNX Runtime or tract.
//!
//! ```text
//! bash scripts/fetch-models.sh
//! bash scripts/fetch-onnxruntime.sh   # optional: without it the server runs on tract
//! cargo run --release --features tract,ort --example embed_server -- --bind 127.0.0.1:8080
//! curl -s localhost:8080/embed -d '{"texts": ["a cat sits", "a dog runs"]}'
//! curl -s localhost:8080/metrics
//! ```
//!
//! `POST /embed {"texts": [...]}` returns one L2-normalised vector per text; `GET /health`;
//! `GET /metrics` (Prometheus text). A full queue answers 503 with a JSON error, bad JSON or an
//! empty list 400. Ctrl-C or SIGTERM stops accepting connections and finishes the requests in
//! flight.
//! Every flag also reads an environment variable (`CORESTREAM_BIND`, ...).
//!
//! `--backend ort|tract` (`CORESTREAM_BACKEND`) picks the inference backend; the default is
//! `ort` when the ONNX Runtime library is found (`ORT_DYLIB_PATH`, then `target/onnxruntime/`
//! filled by `scripts/fetch-onnxruntime.sh`), else `tract`, with one note on stderr.

mod app;
mod embedder;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use corestream::{Batcher, CpuPool, Module, MultiStreamModule, Streams};

#[derive(Debug, Parser)]
#[command(about = "corestream embedding service (axum + Batcher + MiniLM-L3)")]
struct Args {
    /// Inference backend: ort (ONNX Runtime) or tract. Default (also when empty or `auto`):
    /// ort when the ONNX Runtime library is found, else tract.
    #[arg(long, env = "CORESTREAM_BACKEND", value_name = "ort|tract")]
    backend: Option<String>,
    /// Address to listen on.
    #[arg(long, env = "CORESTREAM_BIND", default_value = "127.0.0.1:8080")]
    bind: String,
    /// Streams: "auto" (one per core) or a number.
    #[arg(long, env = "CORESTREAM_STREAMS", default_value = "auto")]
    streams: String,
    /// Most texts per model call.
    #[arg(long, env = "CORESTREAM_MAX_BATCH", default_value_t = 16)]
    max_batch: usize,
    /// How long an idle stream may wait for a fuller batch, in milliseconds.
    #[arg(long, env = "CORESTREAM_MAX_WAIT_MS", default_value_t = 0)]
    max_wait_ms: u64,
    /// Most requests waiting; more get 503.
    #[arg(long, env = "CORESTREAM_QUEUE", default_value_t = 256)]
    queue: usize,
    /// Folder with paraphrase-MiniLM-L3-v2.onnx and tokenizer.json.
    #[arg(long, env = "CORESTREAM_MODELS", default_value = "models")]
    models: PathBuf,
    /// Serve the bundled ExampleNet1 stand-in instead of MiniLM (no download needed).
    #[arg(long)]
    textnet: bool,
}

fn streams(text: &str) -> corestream::Result<Streams> {
    match text {
        "auto" => Ok(Streams::Auto),
        n => n.parse().map(Streams::Count).map_err(|_| {
            corestream::Error::InvalidConfig(format!("--streams {n:?}: expected auto or a number"))
        }),
    }
}

/// A batcher-backed service state for any text embedder.
fn serve_state<M>(
    model: M,
    name: &str,
    backend: embedder::Backend,
    args: &Args,
) -> corestream::Result<app::AppState>
where
    M: Module<Input = corestream::batch::Rows<String>, Output = corestream::batch::Rows<Vec<f32>>>,
{
    let msm = MultiStreamModule::builder(model)
        .pool(CpuPool::all()?)
        .num_streams(streams(&args.streams)?)
        .build()?;
    eprintln!(
        "{name} on backend {}: {} streams on {:?}",
        backend.describe(),
        msm.num_streams(),
        msm.pools()
    );
    let batcher = Arc::new(
        Batcher::builder(msm)
            .max_batch(args.max_batch)
            .max_wait(Duration::from_millis(args.max_wait_ms))
            .queue_capacity(args.queue)
            .build()?,
    );
    let stats = Arc::clone(&batcher);
    Ok(app::AppState {
        embedder: batcher,
        metrics: Arc::new(move || stats.stats().prometheus("corestream")),
        model: name.to_owned(),
        max_texts: args.max_batch,
    })
}

/// Ctrl-C, or SIGTERM (what Kubernetes sends), starts the graceful shutdown: no new
/// connections, requests in flight finish.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    eprintln!("shutting down: finishing requests in flight");
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let explicit = match args.backend.as_deref() {
        None | Some("" | "auto") => None,
        Some(name) => Some(
            name.parse::<embedder::Backend>()
                .map_err(|e| format!("--backend: {e}"))?,
        ),
    };
    let backend = embedder::backend_or_default(explicit);
    let state = if args.textnet {
        serve_state(embedder::TextNet::load(backend)?, "textnet", backend, &args)?
    } else {
        let model = embedder::MiniLm::load(&args.models, 128, backend).map_err(|e| match e {
            corestream::Error::ModelLoad { .. } => format!(
                "{e}\n(run scripts/fetch-models.sh, or pass --textnet for the bundled stand-in)"
            ),
            e => e.to_string(),
        })?;
        serve_state(model, "paraphrase-MiniLM-L3-v2", backend, &args)?
    };
    let listener = tokio::net::TcpListener::bind(&args.bind).await?;
    eprintln!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app::router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
}
