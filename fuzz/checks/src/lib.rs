//! The checks behind every fuzz target, shared by the cargo-fuzz targets (`fuzz/fuzz_targets/`)
//! and the corpus replay test (`tests/corpus.rs`), so that a committed corpus entry is
//! replayed through exactly the code the fuzzer ran. Each `check` takes the raw fuzz bytes and
//! panics only when corestream broke a promise (a panic inside corestream, an untyped error, a
//! lost or changed value); a typed `corestream::Error` for bad input is a pass.
//!
//! Target `service_body` (feature `service`) checks the embedding service, `corestream-serve`.
#![warn(missing_docs)]

pub mod batch;
pub mod bytes;
pub mod cpulist;
pub mod model;
#[cfg(feature = "service")]
pub mod service_body;
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
