//! The embedding service (`corestream-serve`) end to end over HTTP on 127.0.0.1, on both of
//! its servers: one test binary, so that every helper of `support.rs` is used.
//!
//! - `axum_server.rs` and `actix_server.rs`: the same scenarios on each server (concurrent
//!   requests equal to unbatched results, base64, limits and validation,
//!   `/info`, `/openapi.json`, health, metrics, spans, the official `openai` Python client),
//!   on the bundled TextNet and on MiniLM-L3 when `models/` is fetched, each on tract and ONNX
//!   Runtime;
//! - `validation.rs` (from `scenarios.rs`): limits, validation and error shapes of the
//!   embedding routes;
//! - `access.rs` (run by both server files): `--api-key`, 415 for bodies not declared JSON,
//!   429 with `Retry-After` on a full queue and past `--max-concurrent-requests`;
//! - `tokens.rs` (run by both server files): `POST /tokenize` and `POST /decode`;
//! - `prompts.rs` (run by both server files): prompts before the inputs, by name or default;
//! - `scores.rs` (run by both server files): `/rerank`, `/v1/rerank` and `/predict` on a
//!   cross-encoder and a classifier made by `corestream-testkit` from MiniLM, against scores computed by
//!   hand;
//! - `models.rs` (run by both server files): several models in one service, reached by the
//!   `model` field, the path `/models/{name}/...` or the route;
//! - `faults/`: misbehaving clients and faulty models, each scenario alone in the process;
//! - `accounting.rs`: request counters and the rate-limited cancellation log;
//! - `lifecycle.rs`: a loader that fails or panics leaves the service failed;
//! - `stuck.rs`: a model call that does not return (504 after --request-timeout, liveness 503
//!   after --stuck-after), serve loops that ended, the body budget;
//! - `tokenizer.rs`: long texts tokenised in pieces give the ids of whole tokenisation;
//! - `quantized.rs`: the accuracy gate of quantized ONNX files (all-MiniLM-L6-v2's int8 files
//!   pass with their measured cosines, a broken one is refused with its numbers), the file the
//!   CPU chooses, rerankers and classifiers compared by rank and label;
//! - `tune.rs`: `--streams tune`'s sweep below the command (the profile served, the report,
//!   the same vectors, no metrics of its own, a model failing on its probes).
//!
//! The `corestream serve` command as a process (a Hugging Face model directory, SIGTERM under
//! load) is tested by the command's crate, `cli/tests/serve.rs` and `serve_sigterm.rs`.

#[macro_use]
mod support;

mod access;
mod accounting;
mod actix_server;
mod axum_server;
mod faults;
mod lifecycle;
mod models;
mod prompts;
mod quantized;
mod scenarios;
mod scores;
mod stuck;
mod tokenizer;
mod tokens;
mod tune;
mod validation;
