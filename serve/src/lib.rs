//! corestream's embedding service: a model on pinned CPU streams behind a token-budget
//! `Batcher`, speaking OpenAI's `POST /v1/embeddings` and text-embeddings-inference's
//! `POST /embed`, `POST /tokenize`, `POST /decode` and `GET /info`, documented at
//! `GET /openapi.json` (with the loaded model's limits), with `GET /health`
//! (`/health/ready`, `/health/live`) and Prometheus `GET /metrics`. The `corestream serve`
//! command is [`run`] with its [`Args`].
//!
//! Layers, each using only those above it:
//!
//! | layer | what |
//! |---|---|
//! | [`model`] | model files (a Hugging Face directory or ONNX + tokenizer), graph inputs, tokenizer, pooling, embedders |
//! | [`service`] | shared state, loading behind streams and a `Batcher`, the request path and its [`service::Failure`]s, health, accounting, telemetry |
//! | [`http`] | wire format, routes and statuses, OpenAPI, the axum server and the actix-web server (feature `actix`) |
//! | [`run`] | the process: flags, logs, listener, background load, drain on SIGTERM |
//!
//! Serving a model from Rust, as the command does:
//!
//! ```no_run
//! use clap::Parser;
//!
//! #[derive(Parser)]
//! struct Command {
//!     #[command(flatten)]
//!     serve: corestream_serve::Args,
//! }
//!
//! fn main() -> Result<(), corestream_serve::Error> {
//!     // e.g. `--model models/all-MiniLM-L6-v2 --bind 0.0.0.0:8080 --streams 4`
//!     corestream_serve::run(Command::parse().serve)
//! }
//! ```
//!
//! Or a service on a model built in code, on a listener of one's own (what the tests do):
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use corestream::backend::Backend;
//! use corestream_serve::model::TextNet;
//! use corestream_serve::service::{serve_model, telemetry, BatchOptions, Service};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let metrics = telemetry::renderer(telemetry::install_prometheus()?);
//! let (model, tokenizer) = TextNet::load_with_tokenizer(Backend::Tract)?;
//! let options = BatchOptions {
//!     pool: corestream::CpuPool::all()?,
//!     streams: corestream::Streams::Auto,
//!     max_batch: 16,
//!     max_batch_tokens: None,
//!     max_wait: Duration::ZERO,
//!     queue: 256,
//!     max_client_batch: 32,
//!     auto_truncate: false,
//!     count_only: false,
//!     width: corestream::Width::adaptive(8),
//!     tune: None,
//! };
//! let loaded = serve_model(model, tokenizer, "textnet", "tract".into(), &options)?;
//! let service = Arc::new(Service::ready(loaded, metrics));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let router = corestream_serve::http::axum::router(service);
//! corestream_serve::http::axum::serve(listener, router, Duration::from_secs(10), std::future::pending()).await;
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs, missing_debug_implementations)]

mod args;
mod error;
pub mod http;
pub mod model;
mod run;
pub mod service;

pub use args::{
    Args, ModelCpus, ModelSpec, Server, StreamsChoice, WidthMode, DEFAULT_TUNE_SECONDS,
    DEFAULT_WIDE_MAX_ROWS, TUNE_SECONDS_RANGE,
};
pub use error::Error;
pub use run::{drain_on_signal, run};
