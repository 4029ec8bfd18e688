//! Model backends: real inference engines wrapped as [`Module`](crate::Module)s.
//!
//! - [`tract`] (feature `tract`): ONNX models on [tract](https://github.com/sonos/tract), with
//!   per-stream intra-op threads and batch-size-specialised plans.

#[cfg(feature = "tract")]
pub mod tract;
