//! Test models for `corestream-serve`'s scoring routes (`/rerank`, `/v1/rerank`, `/predict`),
//! made from the fetched MiniLM-L3 (`scripts/fetch-models.sh`): see [`heads`]. Used by the
//! service's and the command's tests, and by `scripts/schemathesis.sh` through the
//! `corestream-heads` binary. And a deliberately broken int8 file for the accuracy gate's
//! tests: see [`broken`].

pub mod broken;
pub mod heads;

pub use heads::{Head, Reference};
