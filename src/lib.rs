//! Throughput-mode CPU inference for Rust: one copy of a model, many pinned streams, results as
//! futures.
//!
//! Inference on CPUs is fastest in *throughput mode*: instead of one copy of a model using every
//! core (and synchronising them at every layer), the cores are cut into **streams**, each a
//! small group of cores with its own thread, all sharing one copy of the weights. A batch is
//! split across the streams and the results are concatenated. This is what Intel's PyTorch
//! extension calls its CPU runtime extension (`CPUPool`, `MultiStreamModule`, `Task`, `pin`)
//! and OpenVINO calls CPU streams; corestream brings it to Rust, natively async.
//!
//! Throughout these docs, **IPEX** means Intel Extension for PyTorch's CPU runtime extension
//! (`intel_extension_for_pytorch.cpu.runtime`), whose semantics corestream follows except where
//! a doc says otherwise.
//!
//! # Quick start
//!
//! ```
//! use corestream::ndarray::{Array, Array2};
//! use corestream::{module_fn, CpuPool, MultiStreamModule, Streams};
//!
//! # fn main() -> corestream::Result<()> {
//! // A model: anything implementing `Module`; here a closure.
//! let model = module_fn(|x: Array2<f32>| Ok(x.mapv(f32::tanh)));
//!
//! // One stream per physical core of NUMA node 0, all sharing the model.
//! let msm = MultiStreamModule::builder(model)
//!     .pool(CpuPool::from_node(0)?)
//!     .num_streams(Streams::Auto)
//!     .build()?;
//!
//! let x = Array::from_shape_fn((16, 8), |(i, j)| (i + j) as f32 / 10.0);
//! let y = msm.forward_sync(x.clone())?;        // or `msm.forward(x).await?` in async code
//! assert_eq!(y, x.mapv(f32::tanh));
//! # Ok(())
//! # }
//! ```
//!
//! # The pieces
//!
//! Layers from the bottom up; each module imports only from the layers below it.
//!
//! | layer | items |
//! |---|---|
//! | platform | [`affinity`] (thread-mask system calls), [`cpulist`] (the kernel's CPU list syntax), [`topology`] ([`Topology`], [`LogicalCpu`]), [`omp`] (OpenMP runtimes through libloading) |
//! | placement | [`CpuPool`], [`pin()`], [`PinGuard`], [`batch::split_sizes`], [`numa`] (one copy of the weights per NUMA node: [`numa::ReplicaPlan`], [`numa::on_node`], [`numa::page_nodes`]) |
//! | execution | [`Task`], [`TaskBuilder`], [`TaskFuture`], [`StreamStats`], [`DEFAULT_SPIN`], [`current_stream`], [`StreamInfo`] |
//! | model | [`Module`], [`module_fn`], [`FnModule`], [`Infer`], [`Hint`], [`Batch`] ([`batch`]), [`MultiStreamModule`], [`MultiStreamModuleBuilder`], [`Streams`], [`ForwardFuture`], [`PartsFuture`] |
//! | service | [`Batcher`], [`BatcherBuilder`], [`BatcherStats`], [`BatcherHealth`], [`LATENCY_BUCKETS`], `BatcherService` (feature `tower`; spans with feature `tracing`, metrics with feature `metrics`) |
//! | backends | [`backend`]: [`backend::Tensor`], [`backend::ElementType`], [`backend::InputSpec`], `backend::ort` (feature `ort`), `backend::tract` (feature `tract`) |
//! | errors | [`Error`], [`Result`], [`BoxError`] |
//! | measuring | [`Cotenant`]: a controlled busy neighbour on chosen CPUs; [`bundled`]: the small ONNX model the docs, `corestream bench` and the service's stand-in run |
//!
//! Every stream is one OS thread named `corestream-s{i}`, pinned to its cores for its whole
//! life, fed by a channel and answering through a oneshot. A stream with k > 1 cores runs its
//! jobs inside its own rayon pool of k threads pinned one per core, so rayon-parallel kernels
//! in a model use exactly the stream's cores. Errors are one enum, [`Error`]; a panicking model
//! fails its own request only.
#![warn(missing_docs, missing_debug_implementations)]
#![warn(clippy::undocumented_unsafe_blocks)]

// Platform: error and cpu lists, then the system calls and what the OS reports.
pub mod affinity;
pub mod bundled;
pub mod cpulist;
mod element;
mod error;
pub mod numa;
pub mod omp;
pub mod quota;
pub mod topology;
// Placement.
mod hint;
mod pool;
// Execution.
mod context;
mod future;
mod idle;
mod stream;
mod sync;
mod task;
// Model and service.
pub mod batch;
mod batcher;
mod cotenant;
mod module;
mod multi_stream;
// Backends.
pub mod backend;

pub use batch::{Batch, Hint};
#[cfg(feature = "tower")]
pub use batcher::BatcherService;
pub use batcher::{
    Batcher, BatcherBuilder, BatcherHealth, BatcherProblem, BatcherStats, Width, LATENCY_BUCKETS,
};
pub use context::{current_stream, StreamInfo};
pub use cotenant::Cotenant;
pub use error::{BoxError, Error, Result};
pub use future::TaskFuture;
pub use idle::DEFAULT_SPIN;
pub use module::{module_fn, FnModule, Infer, Module};
pub use multi_stream::{
    ForwardFuture, MultiStreamModule, MultiStreamModuleBuilder, PartsFuture, Streams,
};
pub use pool::{pin, CpuPool, PinGuard};
pub use stream::StreamStats;
pub use task::{Task, TaskBuilder};
pub use topology::{LogicalCpu, Topology};

pub use ndarray;
