//! ONNX Runtime through the [`ort`] crate (feature `ort`), its library loaded at run
//! time.
//!
//! [`OrtModel`] is a [`Module`] with `Input = Vec<Tensor>` and `Output = Vec<Tensor>` (the
//! backend-neutral [`Tensor`]), so it runs unchanged under [`Task`](crate::Task),
//! [`MultiStreamModule`](crate::MultiStreamModule) and [`Batcher`](crate::Batcher).
//!
//! ```no_run
//! use corestream::backend::{ort::OrtModel, Tensor};
//! use corestream::{CpuPool, MultiStreamModule};
//!
//! let path = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/models/examplenet1.onnx");
//! let model = OrtModel::load(path)?; // Error::OrtLibrary if no library is found
//! assert_eq!(model.input_names(), ["x"]);
//! let msm = MultiStreamModule::builder(model).pool(CpuPool::all()?).build()?;
//! let y = msm.forward_sync(vec![Tensor::zeros::<f32>(&[8, 64, 3, 3])])?;
//! assert_eq!(y[0].shape(), [8, 512]);
//! # Ok::<(), corestream::Error>(())
//! ```
//!
//! # The library
//!
//! No binary is downloaded at build time (`ort`'s `load-dynamic`). The first model built
//! loads `libonnxruntime.so` (ONNX Runtime 1.31 or newer) for the whole process, looking, in
//! order, at:
//!
//! 1. the path given to [`OrtModelBuilder::library`] (only that one, when given);
//! 2. the environment variable `ORT_DYLIB_PATH`;
//! 3. [`FETCHED_LIBRARY`] (`target/onnxruntime/libonnxruntime.so`, where
//!    `scripts/fetch-onnxruntime.sh` puts the library of the pinned PyPI wheel) in the nearest
//!    folder above the running executable that has it ([`fetched_library_near`]): a program
//!    or test cargo built in a corestream checkout finds the checkout's library;
//! 4. [`FETCHED_LIBRARY`] in the current folder (for a build whose `CARGO_TARGET_DIR` lies
//!    outside the checkout, run from the checkout). A program that may be started from a
//!    folder others can write to should name its library, or set `ORT_DYLIB_PATH`.
//!
//! These are found at run time ([`library_candidates`] lists them): no path of the machine
//! that built corestream is compiled in.
//!
//! Each candidate is checked before `ort` sees it (opened, `OrtGetApiBase` resolved, version
//! read, C API level requested); a missing, unloadable (e.g. not a shared library) or too old
//! library is [`Error::OrtLibrary`], naming every place tried and why, returned at once.
//! A process uses one library: a later builder naming another file gets the same error.
//!
//! # Threads
//!
//! ONNX Runtime's CPU kernels run on threads it owns, so each stream runs the model with its
//! own run state, set up on the stream thread by its first request (see
//! [`current_stream`]):
//!
//! - every stream gets its **own session**, with as many intra-op threads as it has CPUs
//!   (inter-op 1, sequential execution). A stream of one CPU: ONNX Runtime then starts no
//!   thread and computes on the (pinned) stream thread. A stream of k > 1 CPUs: the stream
//!   thread, pinned to the stream's first CPU from its first request on, plus k - 1 ONNX
//!   Runtime workers, worker `t` pinned to the stream's CPU `t` through
//!   `session.intra_op_thread_affinities`. Sessions of their own keep concurrent streams from
//!   contending inside one session (its arena, its allocator), which is what many one-CPU
//!   streams sharing one session did on a 16-core machine;
//! - these sessions share **one copy of the weights**: the first one optimises the graph once
//!   (saved to a temporary folder, removed with the model), loads its initialisers into values
//!   the model owns, and every stream's session is made from the optimised graph with
//!   optimisation off and those values supplied (`AddInitializer`, which ONNX Runtime uses in
//!   place), and with one prepacked-weights container. What each stream adds is its session:
//!   graph, kernels and its own arena. Measured on ResNet-18 (47 MB of weights, RSS, 2-vCPU
//!   VM, `tests/ort_perf.rs`): a second two-CPU stream adds ~5 MB with sharing, ~50 MB
//!   without ([`OrtModelBuilder::share_weights`], [`OrtModel::weight_sharing`]); a second
//!   one-CPU stream adds ~7 MB (it added ~4 MB when one-CPU streams shared one session);
//! - calls made outside any stream run on one more session of one thread.
//!
//! A stream's session lives as long as the stream: it is released (its threads with it) when
//! the stream stops, i.e. when its [`Task`](crate::Task) or
//! [`MultiStreamModule`](crate::MultiStreamModule) is dropped, so a model serving streams that
//! come and go holds the sessions of the running ones only ([`OrtModel::session_count`]). A
//! [`Batcher`](crate::Batcher)'s wide stream ([`Width`](crate::Width)) is a stream of all its
//! module's CPUs: one more session, released with the batcher.
//!
//! No ONNX Runtime thread pool spans more than one stream's CPUs.
//!
//! # Data
//!
//! Inputs are passed to ONNX Runtime without a copy when they are in standard (C) layout
//! (batch splits along axis 0 are); other layouts are copied once. Outputs are copied once
//! out of ONNX Runtime's buffers into the returned [`Tensor`]s.
//!
//! # Layout of this module
//!
//! One concept per file: `library` (finding, checking and loading the library), `session`
//! (building sessions, shared weights), `run` (running a session, tensors in and out) and
//! `model` ([`OrtModel`], its builder and its per-stream sessions).
//!
//! [`Module`]: crate::Module
//! [`Tensor`]: crate::backend::Tensor
//! [`Error::OrtLibrary`]: crate::Error::OrtLibrary
//! [`current_stream`]: crate::current_stream

mod library;
mod model;
mod run;
mod session;

pub use library::{
    environment, fetched_library_near, library_candidates, load_library, loaded_library, Library,
    FETCHED_LIBRARY, MIN_MINOR_VERSION,
};
pub use model::{OrtModel, OrtModelBuilder, DEFAULT_SPIN};
pub use session::Optimization;

pub use ::ort;
