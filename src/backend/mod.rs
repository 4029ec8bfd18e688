//! Model backends: real inference engines wrapped as [`Module`](crate::Module)s, and the one
//! tensor type they share.
//!
//! - [`Tensor`] (always available): the backend-neutral, dynamically typed tensor that
//!   backends accept and return; it implements [`Batch`](crate::Batch).
//! - [`InputSpec`]: what each model input takes; both backends check inputs against it the
//!   same way, so a wrong count, shape or element type is the same typed error on either.
//! - `ort` (feature `ort`): ONNX Runtime through the `ort` crate, its library loaded at run
//!   time; each stream runs the model on its own CPUs with ORT's threads pinned there.
//! - `tract` (feature `tract`): ONNX models on [tract](https://github.com/sonos/tract), with
//!   per-stream intra-op threads and batch-size-specialised plans.

mod choice;
mod spec;
mod tensor;

pub use choice::{Backend, OnnxModule, ORT_MISSING_NOTE};
pub use spec::InputSpec;
pub use tensor::{Element, ElementType, Tensor};

#[cfg(feature = "ort")]
mod onnx_proto;
#[cfg(feature = "ort")]
pub mod ort;
#[cfg(feature = "tract")]
pub mod tract;
