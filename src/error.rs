//! The crate's single error type, [`Error`], with its variants grouped by subsystem.

use std::path::PathBuf;

use crate::cpulist::CpuList;
use crate::element::ElementType;
use crate::hint::Hint;

/// A boxed error from model code: what [`Module::forward`](crate::Module::forward) returns.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`Error`] as the error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in corestream.
///
/// Every message says what was wrong and, where there is a rule, what is allowed, e.g.
/// `cpu 7 is not available to this process; allowed cpus: 0-3`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ===== placement: pools, topology, affinity =====
    /// A CPU pool was built from an empty list.
    #[error("a cpu pool needs at least one cpu; allowed cpus: {}", CpuList(.allowed))]
    EmptyPool {
        /// The CPUs this process may run on.
        allowed: Vec<usize>,
    },

    /// A CPU id appears twice in a pool's list.
    #[error("cpu {cpu} is listed twice; a pool names each cpu once")]
    DuplicateCpu {
        /// The repeated id.
        cpu: usize,
    },

    /// A CPU id is offline, does not exist, or is outside the process's affinity mask
    /// (`taskset`, cgroup cpusets).
    #[error("cpu {cpu} is not available to this process; allowed cpus: {}", CpuList(.allowed))]
    CpuNotAllowed {
        /// The rejected id.
        cpu: usize,
        /// The CPUs this process may run on.
        allowed: Vec<usize>,
    },

    /// A NUMA node that the machine does not have.
    #[error("numa node {node} does not exist; nodes: {}", CpuList(.nodes))]
    UnknownNode {
        /// The requested node.
        node: usize,
        /// The machine's nodes.
        nodes: Vec<usize>,
    },

    /// A NUMA memory query or policy the kernel refused (see [`numa`](crate::numa)).
    #[error("numa {op}: {source}")]
    Numa {
        /// What was asked.
        op: &'static str,
        /// The system's answer.
        #[source]
        source: std::io::Error,
    },

    /// A model's copy of its weights for a NUMA node failed (see
    /// [`Module::replicate`](crate::Module::replicate)).
    #[error("copying the model for numa node {node}: {source}")]
    Replicate {
        /// The node the copy was for.
        node: usize,
        /// The model's error.
        #[source]
        source: BoxError,
    },

    /// A NUMA node none of whose CPUs this process may use.
    #[error(
        "numa node {node} has no cpu available to this process (node cpus: {}; allowed cpus: {})",
        CpuList(.node_cpus), CpuList(.allowed)
    )]
    EmptyNode {
        /// The requested node.
        node: usize,
        /// The node's online logical CPUs.
        node_cpus: Vec<usize>,
        /// The CPUs this process may run on.
        allowed: Vec<usize>,
    },

    /// A pool cannot be cut into the requested number of parts.
    #[error("cannot split a pool of {cpus} cpus into {parts} parts; allowed: 1 to {cpus}")]
    InvalidSplit {
        /// The requested number of parts.
        parts: usize,
        /// The pool's size.
        cpus: usize,
    },

    /// The CPU topology could not be read.
    #[error("cannot read the cpu topology at {}: {message}", .path.display())]
    Topology {
        /// The file or directory that could not be read or parsed.
        path: PathBuf,
        /// What was wrong with it.
        message: String,
    },

    /// An affinity system call failed.
    #[error("cannot {op} the thread's cpu affinity: {source}")]
    Affinity {
        /// `set` or `get`.
        op: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    // ===== placement: OpenMP runtimes (`omp`) =====
    /// An OpenMP runtime library could not be opened (see [`omp::load`](crate::omp::load)).
    #[error(
        "cannot load the OpenMP runtime {}: {message}; expected a shared library of libiomp5, libgomp or libomp",
        .path.display()
    )]
    OmpLoad {
        /// The path (or name) that was given.
        path: PathBuf,
        /// The dynamic loader's explanation.
        message: String,
    },

    /// A library was opened but is not an OpenMP runtime: a required symbol is missing.
    #[error(
        "{} is not an OpenMP runtime: it does not export {symbol}; expected libiomp5, libgomp or libomp, which export omp_set_num_threads, omp_get_max_threads and omp_get_thread_num",
        .path.display()
    )]
    OmpSymbols {
        /// The library.
        path: PathBuf,
        /// The first required symbol that was not found.
        symbol: String,
    },

    /// A different OpenMP runtime was requested after one was put in use.
    #[error(
        "the OpenMP runtime {active} is already in use; cannot switch to {}: a process uses one runtime (load it before any stream starts, or set CORESTREAM_OMP_LIB)",
        .requested.display()
    )]
    OmpConflict {
        /// The runtime in use (its path, or its name when the path is unknown).
        active: String,
        /// The library that was refused.
        requested: PathBuf,
    },

    /// An OpenMP team thread could not be bound to its CPUs.
    #[error(
        "cannot bind OpenMP team thread {thread} to cpus {}: {message}; allowed: cpus available to this process",
        CpuList(.cpus)
    )]
    OmpBind {
        /// The team thread (`omp_get_thread_num`).
        thread: usize,
        /// The CPUs it was to be bound to.
        cpus: Vec<usize>,
        /// What the runtime and the kernel answered.
        message: String,
    },

    // ===== execution: streams, tasks and their requests =====
    /// A multi-stream module was asked for an impossible stream count.
    #[error("cannot run {streams} streams on a pool of {cpus} cpus; allowed: 1 to {cpus} streams")]
    InvalidStreams {
        /// The requested number of streams.
        streams: usize,
        /// The pool's size.
        cpus: usize,
    },

    /// A stream (or batcher) thread, or a stream's intra-op pool, could not be started.
    #[error("cannot start stream thread {name:?}: {source}")]
    Spawn {
        /// The thread's name.
        name: String,
        /// The operating system's error (or what else failed, as an `io::Error`).
        #[source]
        source: std::io::Error,
    },

    /// The model returned an error for this request.
    #[error("model error: {0}")]
    Module(#[source] BoxError),

    /// The model panicked while serving this request. The stream keeps serving.
    #[error("model panicked: {0}")]
    Panicked(String),

    /// The stream shut down before it could answer.
    #[error("the stream shut down before answering this request")]
    Shutdown,

    /// Every serve loop of the batcher has ended on a panic outside any model call (see
    /// [`BatcherHealth`](crate::BatcherHealth)): nothing is left to answer.
    #[error(
        "no serve loop is left: all {streams} ended on a panic outside any model call; \
         the batcher must be rebuilt (a liveness probe on Batcher::health restarts the process)"
    )]
    NotServing {
        /// The batcher's streams.
        streams: usize,
    },

    /// A bounded queue is full; try again later.
    #[error("overloaded: the queue is full ({capacity} requests waiting); retry later")]
    Overloaded {
        /// The queue's capacity.
        capacity: usize,
    },

    // ===== batches: split and concatenate under a `Hint` =====
    /// A value has no batch to split: its input hint has no `Hint::Dim` leaf.
    #[error("the input hint {hint:?} splits nothing: at least one leaf must be Hint::Dim(d)")]
    NoSplitDim {
        /// The offending hint.
        hint: Hint,
    },

    /// The batch to split has zero rows.
    #[error("the batch is empty (0 rows along the split dimension); at least 1 row is needed")]
    EmptyBatch,

    /// Two split leaves disagree on the batch size.
    #[error("batch sizes disagree: {first} rows in one split input, {second} in another; every split leaf must have the same batch size")]
    BatchMismatch {
        /// The batch size seen first.
        first: usize,
        /// The differing batch size.
        second: usize,
    },

    /// A split dimension beyond a value's rank.
    #[error("cannot split along dim {dim}: the value has {rank} dimensions (allowed: 0 to {})", .rank.saturating_sub(1))]
    DimOutOfRange {
        /// The requested dimension.
        dim: usize,
        /// The value's number of dimensions.
        rank: usize,
    },

    /// A hint does not fit the value's structure.
    #[error("hint does not fit the value: {0}")]
    HintMismatch(String),

    /// Parts to concatenate do not fit together.
    #[error("cannot concatenate the stream outputs: {0}")]
    Concat(String),

    // ===== backends: model files and their inputs =====
    /// A model file could not be read or compiled.
    #[error("cannot load model {model}: {message}")]
    ModelLoad {
        /// The file (or `<bytes>`).
        model: String,
        /// What went wrong, including the backend's explanation.
        message: String,
    },

    /// A request does not have the model's number of inputs.
    #[error("the model takes {expected} inputs ({names}), got {found}")]
    InputCount {
        /// The model's number of inputs.
        expected: usize,
        /// The number given.
        found: usize,
        /// The model's input names, comma-separated.
        names: String,
    },

    /// An input's shape or element type does not match the model.
    #[error("input {input:?}: expected {expected}, got {found}")]
    InvalidInput {
        /// The input's name.
        input: String,
        /// What the model accepts, e.g. `N,64,3,3 f32` (N: any batch size).
        expected: String,
        /// What was given.
        found: String,
    },

    /// A [`Tensor`](crate::backend::Tensor) was read as another element type than it holds.
    #[error("the tensor holds {found} elements, not {expected}")]
    ElementType {
        /// The element type asked for.
        expected: ElementType,
        /// The element type the tensor holds.
        found: ElementType,
    },

    /// The ONNX Runtime library could not be loaded (feature `ort`): every place tried, and
    /// why each failed.
    #[error(
        "cannot load the ONNX Runtime library; tried: {}; {hint}",
        .tried.iter().map(|(p, why)| format!("{} ({why})", p.display())).collect::<Vec<_>>().join(", ")
    )]
    OrtLibrary {
        /// Each path tried, in order, with the reason it was not used.
        tried: Vec<(PathBuf, String)>,
        /// How to get a usable library.
        hint: String,
    },

    /// A tensor's data does not fill its shape (or the shape has more elements than a `usize`
    /// counts).
    #[error("a tensor of shape {shape:?} needs {} elements, got {len}", ElementCount(.shape))]
    TensorShape {
        /// The requested shape.
        shape: Vec<usize>,
        /// The number of elements given.
        len: usize,
    },

    // ===== configuration =====
    /// A builder setting is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
}

/// The number of elements of a shape, as [`Error::TensorShape`] writes it: the product, or
/// `more than usize::MAX` when it overflows (a hostile shape must not make the message panic).
struct ElementCount<'a>(&'a [usize]);

impl std::fmt::Display for ElementCount<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.contains(&0) {
            return f.write_str("0");
        }
        match self.0.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) {
            Some(n) => write!(f, "{n}"),
            None => write!(f, "more than {}", usize::MAX),
        }
    }
}

/// A model's error becomes [`Error::Module`] (or stays the corestream [`Error`] it already
/// was), so `?` works on [`Module::forward`](crate::Module::forward) results in code that returns
/// [`Result`].
impl From<BoxError> for Error {
    fn from(err: BoxError) -> Error {
        Error::from_module(err)
    }
}

impl Error {
    /// Wraps a model error. A model error that already is a corestream [`Error`] is kept as is
    /// (so that, e.g., a nested `Task` call inside a model keeps its variant).
    pub(crate) fn from_module(err: BoxError) -> Error {
        match err.downcast::<Error>() {
            Ok(e) => *e,
            Err(other) => Error::Module(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_what_is_allowed() {
        let e = Error::CpuNotAllowed {
            cpu: 7,
            allowed: vec![0, 1, 2, 3],
        };
        assert_eq!(
            e.to_string(),
            "cpu 7 is not available to this process; allowed cpus: 0-3"
        );
        let e = Error::InvalidSplit { parts: 5, cpus: 4 };
        assert!(e.to_string().contains("allowed: 1 to 4"));
    }

    #[test]
    fn module_errors_keep_nested_corestream_errors() {
        let nested: BoxError = Box::new(Error::Shutdown);
        assert!(matches!(Error::from_module(nested), Error::Shutdown));
        let other: BoxError = "boom".into();
        assert!(matches!(Error::from_module(other), Error::Module(_)));
    }
}
