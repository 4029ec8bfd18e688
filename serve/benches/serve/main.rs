//! Load generator for the embedding service: C concurrent clients for T seconds against
//! 127.0.0.1 only, all parts in the same run.
//!
//! Part 1, short sentences (`POST /embed {"inputs": "..."}`, one text per request):
//! - (a) the service: axum + `Batcher` over pinned streams (the served batch size is measured);
//! - (b) the ceiling: the backend's own offline throughput at that batch size on all streams
//!   (pre-tokenised batches straight into the same `MultiStreamModule`, two calls in flight so
//!   no stream waits; no HTTP, no JSON, no tokenisation, no batching): the physical limit of
//!   batching;
//! - (c) the naive server: the same HTTP front, the model called once per request through
//!   `tokio::task::spawn_blocking` (no batching, no pinning).
//!
//! It prints requests/s and p50/p99 for (a) and (c), rows/s of (b), and the ratios
//! (a)/(b) and (a)/(c).
//!
//! Part 2, mixed lengths (`POST /v1/embeddings` with token-id inputs of 1 to 128 tokens, uniform):
//! token-budget batching (`max_batch_tokens` + the `tokens` cost function: length grouping)
//! against count-only batching, each over a small sweep of its limit; the comparison takes,
//! for each strategy, the best rows/s whose p99 is within 10% of count-only batching at
//! `max_batch` 16 (equal p99). On MiniLM the cost of a batch is rows x padded length; TextNet's
//! cost does not depend on length, so part 2 says little without `models/`.
//!
//! Part 3, reranking (MiniLM only: a cross-encoder made from it by corestream-testkit):
//! `POST /rerank` of one query with 64 documents of 3 to 62 words, C_r concurrent clients
//! (`CORESTREAM_RERANK_CLIENTS`, default 2), pairs/s of the service against the backend's
//! offline ceiling for the same 64 pairs on all streams (the better of: all 64 in one
//! multi-stream call, or sorted by length in calls of `max_batch` rows, two in flight).
//!
//! Part 4, two models in one process (`models.rs`): two copies of the model, each loaded by
//! half the clients, together on their own CPUs and on shared CPUs, against each alone on its
//! share (`CORESTREAM_MODELS_ROUNDS` alternating rounds, default 3).
//!
//! Run: `cargo bench --features tract,ort,metrics,tracing --bench serve` (MiniLM-L3 when
//! `models/` has been fetched, else the bundled TextNet). Environment:
//! `CORESTREAM_LOAD_CLIENTS` (default 64), `CORESTREAM_LOAD_SECS` (per measurement, default
//! 10), `CORESTREAM_LOAD_MAX_REQUESTS` (default 200000), `CORESTREAM_LOAD_MAX_BATCH` (part 1,
//! default 16), `CORESTREAM_LOAD_STREAMS` (default: one per CPU), `CORESTREAM_SERVE_BUDGETS`
//! (part 2's token budgets, comma-separated, default 256,512,1024,2048,4096),
//! `CORESTREAM_SERVE_PARTS` (`throughput`, `mixed`, `rerank`, `models`, comma-separated,
//! default all),
//! `CORESTREAM_BACKEND` (`ort`, `tract` or `auto`: ONNX Runtime when found, else tract),
//! `CORESTREAM_LOAD_WIDTH` (`adaptive`, the default, `narrow` or `wide`) and
//! `CORESTREAM_LOAD_WIDE_ROWS` (see `setup::width`).

mod load;
mod mixed;
mod models;
mod rerank;
mod setup;
mod throughput;

use std::path::Path;
use std::sync::Arc;

use corestream::{CpuPool, Streams};
use corestream_serve::model::{embedder, Backend, ModelKind};

use load::{env_or, Load};
use setup::{Model, Setup};

pub const SENTENCES: [&str; 8] = [
    "A man is playing a guitar on the street.",
    "The new movie is awesome and everyone should see it.",
    "The stock market fell sharply today after the announcement.",
    "A woman is slicing an onion in the kitchen.",
    "Two dogs are running through a field of tall grass.",
    "The committee will publish its report next week.",
    "He forgot his umbrella and got soaked on the way home.",
    "Researchers found a faster way to train small language models.",
];

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let load = Load {
        clients: env_or("CORESTREAM_LOAD_CLIENTS", 64),
        secs: env_or("CORESTREAM_LOAD_SECS", 10),
        max_requests: env_or("CORESTREAM_LOAD_MAX_REQUESTS", 200_000),
    };
    let explicit = std::env::var("CORESTREAM_BACKEND")
        .ok()
        .filter(|v| !v.is_empty() && v != "auto")
        .map(|v| {
            v.parse::<Backend>()
                .unwrap_or_else(|e| panic!("CORESTREAM_BACKEND: {e}"))
        });
    let backend = embedder::backend_or_default(explicit);
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../models"));
    let minilm = dir
        .join(corestream_serve::model::source::LEGACY_ONNX)
        .exists();
    if !minilm {
        println!("models/ not fetched (scripts/fetch-models.sh): using the TextNet stand-in");
    }
    let setup = Setup {
        name: if minilm {
            "paraphrase-MiniLM-L3-v2"
        } else {
            "textnet"
        },
        kind: ModelKind::Embedding,
        backend: backend.describe(),
        load_model: Box::new(move || {
            if minilm {
                let (m, t) = corestream_serve::model::TextEmbedder::load_with_tokenizer(
                    &corestream_serve::model::ModelFiles::from_dir(dir).unwrap(),
                    backend,
                )
                .expect("MiniLM");
                (Model(Arc::new(m)), t)
            } else {
                let (m, t) = embedder::TextNet::load_with_tokenizer(backend).expect("TextNet");
                (Model(Arc::new(m)), t)
            }
        }),
        pool: CpuPool::all().expect("cpus"),
        streams: match env_or("CORESTREAM_LOAD_STREAMS", 0) {
            0 => Streams::Auto,
            n => Streams::Count(n as usize),
        },
    };
    let parts = std::env::var("CORESTREAM_SERVE_PARTS")
        .unwrap_or_else(|_| "throughput,mixed,rerank,models".into());
    runtime.block_on(async {
        if parts.contains("throughput") {
            throughput::throughput(&setup, load).await;
        }
        if parts.contains("mixed") {
            mixed::mixed(&setup, load).await;
        }
        if parts.contains("models") {
            models::two_models(&setup, load).await;
        }
        if parts.contains("rerank") {
            if minilm {
                rerank::rerank(&setup, dir, load).await;
            } else {
                println!("## reranking: needs models/ (scripts/fetch-models.sh); skipped");
            }
        }
    });
}
