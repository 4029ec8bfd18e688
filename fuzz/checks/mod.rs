//! The checks behind every fuzz target, shared by the cargo-fuzz targets (`fuzz/fuzz_targets/`)
//! and the corpus replay test (`tests/fuzz_corpus.rs`), so that a committed corpus entry is
//! replayed through exactly the code the fuzzer ran. Each `check` takes the raw fuzz bytes and
//! panics only when corestream broke a promise (a panic inside corestream, an untyped error, a
//! lost or changed value); a typed `corestream::Error` for bad input is a pass.
//!
//! `service_body.rs` (the embedding service's request bodies, examples/embed_server) is not a
//! module of this one: it needs the example's modules at the including crate's root and
//! features `tract`, `metrics` and `tracing`, so its fuzz target and `tests/fuzz_corpus.rs`
//! (under those features, with `tests/embed_service/modules.rs`) each declare it beside them.
#![allow(dead_code)]

pub mod batch;
pub mod bytes;
pub mod cpulist;
pub mod model;
pub mod topology;

/// The fuzz targets, as named under `fuzz/fuzz_targets/` and `fuzz/corpus/`.
pub const TARGETS: &[&str] = &[
    "cpulist",
    "topology",
    "batch",
    "model_tract",
    "model_ort",
    "service_body",
];
