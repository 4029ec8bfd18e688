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
//! | layer | items |
//! |---|---|
//! | placement | [`Topology`], [`CpuPool`], [`pin`], [`PinGuard`], [`affinity`] |
//! | execution | [`Task`], [`TaskFuture`], [`StreamStats`] |
//! | model | [`Module`], [`module_fn`], [`Infer`], [`Batch`], [`Hint`], [`MultiStreamModule`] |
//!
//! Every stream is one OS thread named `corestream-s{i}`, pinned to its cores for its whole
//! life, fed by a channel and answering through a oneshot. A stream with k > 1 cores runs its
//! jobs inside its own rayon pool of k threads pinned one per core, so rayon-parallel kernels
//! in a model use exactly the stream's cores. Errors are one enum, [`Error`]; a panicking model
//! fails its own request only.
#![warn(missing_docs)]

pub mod affinity;
pub mod backend;
pub mod batch;
mod batcher;
mod cpulist;
mod error;
mod future;
mod module;
mod multi_stream;
pub mod omp;
mod pool;
mod stream;
mod task;
pub mod topology;

pub use affinity::{pin, PinGuard};
pub use batch::{Batch, Hint};
pub use batcher::{Batcher, BatcherBuilder, BatcherStats, LATENCY_BUCKETS};
pub use error::{BoxError, Error, Result};
pub use future::TaskFuture;
pub use module::{module_fn, FnModule, Infer, Module};
pub use multi_stream::{
    ForwardFuture, MultiStreamModule, MultiStreamModuleBuilder, PartsFuture, Streams,
};
pub use pool::CpuPool;
pub use stream::StreamStats;
pub use task::{Task, TaskBuilder};
pub use topology::{LogicalCpu, Topology};

pub use ndarray;
