//! corestream
#![warn(missing_docs)]

pub mod affinity;
pub mod batch;
mod cpulist;
mod error;
mod future;
mod module;
mod multi_stream;
mod pool;
mod stream;
mod task;
pub mod topology;

pub use affinity::{pin, PinGuard};
pub use batch::{Batch, Hint};
pub use error::{BoxError, Error, Result};
pub use future::TaskFuture;
pub use module::{module_fn, FnModule, Infer, Module};
pub use multi_stream::{ForwardFuture, MultiStreamModule, MultiStreamModuleBuilder, PartsFuture, Streams};
pub use pool::CpuPool;
pub use stream::StreamStats;
pub use task::{Task, TaskBuilder};
pub use topology::{LogicalCpu, Topology};

pub use ndarray;
