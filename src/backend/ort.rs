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
//! 3. [`FETCHED_LIBRARY`]: `target/onnxruntime/libonnxruntime.so` in this crate's folder,
//!    where `scripts/fetch-onnxruntime.sh` puts the library of the pinned PyPI wheel.
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
//! - a stream of **one CPU** runs a session with one intra-op thread: ONNX Runtime then starts
//!   no thread and computes on the (pinned) stream thread. All one-CPU streams, and calls
//!   made outside any stream, share **one** such session, run concurrently (ONNX Runtime's
//!   `Run` is thread-safe for the CPU execution provider), so the weights are in memory once;
//! - a stream of **k > 1 CPUs** gets its own session with k intra-op threads (inter-op 1,
//!   sequential execution): the stream thread, pinned to the stream's first CPU from its
//!   first request on, plus k - 1 ONNX Runtime workers, worker `t` pinned to the stream's CPU `t`
//!   through `session.intra_op_thread_affinities`. These sessions share one copy of the
//!   weights: the first one optimises the graph once (saved to a temporary folder, removed with
//!   the model), loads its initialisers into values the model owns, and every such session is
//!   made from the optimised graph with optimisation off and those values supplied
//!   (`AddInitializer`, which ONNX Runtime uses in place). Measured on ResNet-18 (47 MB of
//!   weights): a second two-CPU stream adds ~5 MB of RSS with sharing, ~50 MB without
//!   ([`OrtModelBuilder::share_weights`], [`OrtModel::weight_sharing`]). Per-stream sessions
//!   live as long as the model.
//!
//! No ONNX Runtime thread pool spans more than one stream's CPUs.
//!
//! # Data
//!
//! Inputs are passed to ONNX Runtime without a copy when they are in standard (C) layout
//! (batch splits along axis 0 are); other layouts are copied once. Outputs are copied once
//! out of ONNX Runtime's buffers into the returned [`Tensor`]s.

use std::collections::HashMap;
use std::ffi::{c_char, CStr, CString};
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::ptr::{self, NonNull};
use std::sync::{Arc, Mutex, OnceLock};

use ::ort::environment::Environment;
use ::ort::session::builder::{GraphOptimizationLevel, PrepackedWeights, SessionBuilder};
use ::ort::session::Session;
use ::ort::value::{DynValue, DynValueRef, TensorElementType, TensorRef, ValueType};
use ::ort::AsPointer;
use ndarray::IxDyn;

use super::spec::check_inputs;
use super::tensor::{Element, ElementType, Tensor};
use super::InputSpec;
use crate::context::current_stream;
use crate::error::{BoxError, Error, Result};
use crate::module::Module;
use crate::stream::panic_message;

pub use ::ort;

/// Where `scripts/fetch-onnxruntime.sh` puts the library: the last place looked at.
pub const FETCHED_LIBRARY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/target/onnxruntime/libonnxruntime.so"
);

/// The oldest ONNX Runtime accepted: `1.{MIN_MINOR_VERSION}` (the C API level `ort` uses).
pub const MIN_MINOR_VERSION: u32 = ::ort::MINOR_VERSION;

/// The ONNX Runtime library this process loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Library {
    path: PathBuf,
    version: String,
}

impl Library {
    /// The file loaded (symbolic links resolved).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// ONNX Runtime's version string, e.g. `1.32.0`.
    pub fn version(&self) -> &str {
        &self.version
    }
}

struct Runtime {
    library: Library,
    /// Kept alive for the process: sessions are created in it.
    env: Environment,
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();
static RUNTIME_INIT: Mutex<()> = Mutex::new(());

fn fetch_hint() -> String {
    format!(
        "run scripts/fetch-onnxruntime.sh in the corestream repository (it puts ONNX Runtime {}+ at {FETCHED_LIBRARY}), or set ORT_DYLIB_PATH to a libonnxruntime.so",
        format_args!("1.{MIN_MINOR_VERSION}")
    )
}

/// The places looked at, in order, for `explicit` (see the [module docs](self)).
pub fn library_candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(path) = explicit {
        return vec![path.to_path_buf()];
    }
    let mut out = Vec::new();
    if let Some(env) = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        out.push(PathBuf::from(env));
    }
    out.push(PathBuf::from(FETCHED_LIBRARY));
    out
}

/// The process's `ort` environment, once a library is loaded: to create your own `ort`
/// sessions beside corestream's (`ort::session::Session::builder(env)`).
pub fn environment() -> Option<&'static Environment> {
    RUNTIME.get().map(|r| &r.env)
}

/// The library loaded in this process, if any.
pub fn loaded_library() -> Option<&'static Library> {
    RUNTIME.get().map(|r| &r.library)
}

/// Loads ONNX Runtime for this process (once) from the first usable candidate, and returns
/// it; later calls return the loaded library. Models call this when built; call it yourself
/// to find out whether the `ort` backend can run (e.g. to choose a default backend).
///
/// ```no_run
/// match corestream::backend::ort::load_library(None) {
///     Ok(lib) => println!("ONNX Runtime {} at {}", lib.version(), lib.path().display()),
///     Err(e) => eprintln!("{e}"),
/// }
/// ```
///
/// # Errors
///
/// [`Error::OrtLibrary`] when no candidate is usable, or when `explicit` names another file
/// than the one already loaded.
pub fn load_library(explicit: Option<&Path>) -> Result<&'static Library> {
    let _init = RUNTIME_INIT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(rt) = RUNTIME.get() {
        if let Some(path) = explicit {
            let same = std::fs::canonicalize(path).is_ok_and(|p| p == rt.library.path);
            if !same {
                return Err(Error::OrtLibrary {
                    tried: vec![(
                        path.to_path_buf(),
                        format!(
                            "ONNX Runtime {} is already loaded in this process from {}, and a process loads one library",
                            rt.library.version,
                            rt.library.path.display()
                        ),
                    )],
                    hint: "name the same library on every builder, or none".into(),
                });
            }
        }
        return Ok(&rt.library);
    }
    let mut tried = Vec::new();
    for candidate in library_candidates(explicit) {
        match probe_library(&candidate).and_then(start_runtime) {
            Ok(rt) => {
                let rt = RUNTIME.get_or_init(|| rt);
                return Ok(&rt.library);
            }
            Err(why) => tried.push((candidate, why)),
        }
    }
    Err(Error::OrtLibrary {
        tried,
        hint: fetch_hint(),
    })
}

/// Checks that `path` is an ONNX Runtime library `ort` can use, without `ort`: opens it,
/// resolves `OrtGetApiBase`, reads the version and asks for the C API level.
fn probe_library(path: &Path) -> Result<Library, String> {
    let canonical = std::fs::canonicalize(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        _ => e.to_string(),
    })?;
    if !canonical.is_file() {
        return Err("not a file".into());
    }
    // SAFETY: opening a shared library runs its initialisers; a file that is not an ONNX
    // Runtime library is rejected below before any of its functions is called, and the
    // dynamic loader itself rejects files that are not shared objects (text files etc.).
    let lib = unsafe { libloading::Library::new(&canonical) }
        .map_err(|e| format!("not a loadable shared library: {e}"))?;
    // Never unloaded: `ort` opens the same file next (the loader counts references), and ONNX
    // Runtime does not support being unloaded. A rejected library stays mapped, unused.
    let lib: &'static libloading::Library = Box::leak(Box::new(lib));
    type GetApiBase = unsafe extern "system" fn() -> *const ::ort::sys::OrtApiBase;
    // SAFETY: the symbol's type is the one ONNX Runtime's C API declares:
    // `const OrtApiBase* OrtGetApiBase(void)`.
    let get = unsafe { lib.get::<GetApiBase>(b"OrtGetApiBase\0") }
        .map_err(|_| "does not export OrtGetApiBase: not an ONNX Runtime library".to_owned())?;
    // SAFETY: `OrtGetApiBase` takes no argument and returns a pointer to a static struct.
    let base = unsafe { get() };
    if base.is_null() {
        return Err("OrtGetApiBase returned null".into());
    }
    // SAFETY: `base` is non-null and points to ONNX Runtime's static `OrtApiBase`, whose
    // `GetVersionString` returns a static NUL-terminated string.
    let version = unsafe { CStr::from_ptr(((*base).GetVersionString)()) }
        .to_string_lossy()
        .into_owned();
    let minor = version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(0);
    if !version.starts_with("1.") || minor < MIN_MINOR_VERSION {
        return Err(format!(
            "ONNX Runtime {version} is too old: corestream needs 1.{MIN_MINOR_VERSION} or newer"
        ));
    }
    // SAFETY: as above; `GetApi` returns null for an API level the library does not have.
    let api = unsafe { ((*base).GetApi)(::ort::sys::ORT_API_VERSION) };
    if api.is_null() {
        return Err(format!(
            "ONNX Runtime {version} does not provide C API level {}",
            ::ort::sys::ORT_API_VERSION
        ));
    }
    Ok(Library {
        path: canonical,
        version,
    })
}

/// Hands a checked library to `ort` and creates the process's environment.
fn start_runtime(library: Library) -> Result<Runtime, String> {
    let path = library.path.clone();
    let start = move || -> Result<Environment, String> {
        ::ort::init_from(&path)
            .map_err(|e| e.to_string())?
            .with_name("corestream")
            .with_telemetry(false)
            .build()
            .map_err(|e| e.to_string())
    };
    match panic::catch_unwind(start) {
        Ok(Ok(env)) => Ok(Runtime { library, env }),
        Ok(Err(e)) => Err(format!("ONNX Runtime failed to start: {e}")),
        Err(p) => Err(format!(
            "ONNX Runtime failed to start: {}",
            panic_message(p.as_ref())
        )),
    }
}

/// How much ONNX Runtime rewrites the graph when a session is created (its
/// `GraphOptimizationLevel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Optimization {
    /// No rewrite.
    Disable,
    /// Constant folding, redundant node elimination.
    Basic,
    /// Basic, plus fusions.
    Extended,
    /// Extended, plus layout changes (NCHWc convolutions).
    Layout,
    /// Everything (ONNX Runtime's default and corestream's).
    #[default]
    All,
}

impl From<Optimization> for GraphOptimizationLevel {
    fn from(o: Optimization) -> Self {
        match o {
            Optimization::Disable => GraphOptimizationLevel::Disable,
            Optimization::Basic => GraphOptimizationLevel::Level1,
            Optimization::Extended => GraphOptimizationLevel::Level2,
            Optimization::Layout => GraphOptimizationLevel::Level3,
            Optimization::All => GraphOptimizationLevel::All,
        }
    }
}

fn element_type(ty: TensorElementType) -> Option<ElementType> {
    Some(match ty {
        TensorElementType::Float32 => ElementType::F32,
        TensorElementType::Float64 => ElementType::F64,
        TensorElementType::Int64 => ElementType::I64,
        TensorElementType::Int32 => ElementType::I32,
        TensorElementType::Uint8 => ElementType::U8,
        TensorElementType::Bool => ElementType::Bool,
        _ => return None,
    })
}

fn spec_of(name: &str, dtype: &ValueType) -> InputSpec {
    match dtype {
        ValueType::Tensor {
            ty,
            shape,
            dimension_symbols,
        } => {
            let element_type = element_type(*ty);
            InputSpec {
                name: name.to_owned(),
                element_type,
                type_name: element_type.map_or_else(|| format!("{ty:?}"), |t| t.to_string()),
                shape: shape.iter().map(|&d| usize::try_from(d).ok()).collect(),
                symbols: (0..shape.len())
                    .map(|i| dimension_symbols.get(i).cloned().unwrap_or_default())
                    .collect(),
            }
        }
        other => InputSpec {
            name: name.to_owned(),
            element_type: None,
            type_name: other.to_string(),
            shape: Vec::new(),
            symbols: Vec::new(),
        },
    }
}

#[derive(Clone)]
enum Source {
    Path(PathBuf),
    Bytes(Arc<[u8]>),
}

impl Source {
    fn label(&self) -> String {
        match self {
            Source::Path(p) => p.display().to_string(),
            Source::Bytes(b) => format!("<{} bytes>", b.len()),
        }
    }
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// Builds an [`OrtModel`]: library, spinning, graph optimisation.
///
/// ```no_run
/// use corestream::backend::ort::{OrtModel, Optimization};
///
/// let model = OrtModel::builder("models/resnet18.onnx")
///     .library("/opt/onnxruntime/lib/libonnxruntime.so")
///     .spin(false)
///     .optimization(Optimization::All)
///     .build()?;
/// # Ok::<(), corestream::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct OrtModelBuilder {
    source: Source,
    library: Option<PathBuf>,
    spin: bool,
    optimization: Optimization,
    share_prepacked: bool,
    share_weights: bool,
}

/// Whether ONNX Runtime's intra-op workers spin by default (see [`OrtModelBuilder::spin`]):
/// ONNX Runtime's own default. Measured on a noisy 2-CPU VM (ResNet-18, one stream of two
/// CPUs, images/s, best of interleaved runs): B=1 spin on 36-43 vs off 37-44, B=16 on 39-49
/// vs off 38-48, i.e. no difference above the noise; re-measure with `tests/ort_perf.rs`.
pub const DEFAULT_SPIN: bool = true;

impl OrtModelBuilder {
    fn new(source: Source) -> OrtModelBuilder {
        OrtModelBuilder {
            source,
            library: None,
            spin: DEFAULT_SPIN,
            optimization: Optimization::default(),
            share_prepacked: true,
            share_weights: true,
        }
    }

    /// Loads ONNX Runtime from this file, and only from it (see the [module docs](self)).
    pub fn library(mut self, path: impl AsRef<Path>) -> Self {
        self.library = Some(path.as_ref().to_path_buf());
        self
    }

    /// Whether ONNX Runtime's intra-op workers of a multi-CPU stream spin while they wait for
    /// work (`session.intra_op.allow_spinning`; default [`DEFAULT_SPIN`]). One-CPU streams
    /// have no worker, so this does not affect them.
    pub fn spin(mut self, spin: bool) -> Self {
        self.spin = spin;
        self
    }

    /// The graph optimisation level (default [`Optimization::All`]).
    pub fn optimization(mut self, level: Optimization) -> Self {
        self.optimization = level;
        self
    }

    /// Whether the model's sessions share one prepacked-weights container (default true): the
    /// kernels' pre-packed weights are then in memory once for all per-stream sessions.
    pub fn share_prepacked_weights(mut self, share: bool) -> Self {
        self.share_prepacked = share;
        self
    }

    /// Whether the sessions of multi-CPU streams share one copy of the weights (default true;
    /// see the [module docs](self)). When the model cannot be prepared for sharing (e.g. an
    /// initialiser type other than f32, f64, i64, i32, i8, u8, bool), each such session holds
    /// its own copy; [`OrtModel::weight_sharing`] says which happened.
    pub fn share_weights(mut self, share: bool) -> Self {
        self.share_weights = share;
        self
    }

    /// Loads the library (if this is the process's first model), creates the model's first
    /// session and reads its inputs and outputs.
    ///
    /// # Errors
    ///
    /// [`Error::OrtLibrary`] when no usable ONNX Runtime is found; [`Error::ModelLoad`] for a
    /// missing, unreadable or corrupt model, or one ONNX Runtime cannot run.
    pub fn build(self) -> Result<OrtModel> {
        let library = load_library(self.library.as_deref())?;
        let prepacked = self.share_prepacked.then(PrepackedWeights::new);
        let settings = Settings {
            source: self.source,
            spin: self.spin,
            optimization: self.optimization,
            prepacked,
            share_weights: self.share_weights,
            shared_weights: OnceLock::new(),
            sharing_failed: Mutex::new(None),
        };
        let session = settings.session(&[])?;
        let load_error = |message: String| Error::ModelLoad {
            model: settings.source.label(),
            message,
        };
        let inputs: Vec<InputSpec> = session
            .session
            .inputs()
            .iter()
            .map(|o| spec_of(o.name(), o.dtype()))
            .collect();
        let outputs: Vec<String> = session
            .session
            .outputs()
            .iter()
            .map(|o| o.name().to_owned())
            .collect();
        let cstrings = |names: Vec<&str>| {
            names
                .into_iter()
                .map(|n| CString::new(n).map_err(|e| load_error(format!("name {n:?}: {e}"))))
                .collect::<Result<Vec<_>>>()
        };
        let input_cnames = cstrings(inputs.iter().map(|i| i.name.as_str()).collect())?;
        let output_cnames = cstrings(outputs.iter().map(String::as_str).collect())?;
        Ok(OrtModel {
            library,
            settings,
            inputs,
            outputs,
            input_cnames,
            output_cnames,
            first: Mutex::new(Some(session)),
            shared: OnceLock::new(),
            streams: Mutex::new(HashMap::new()),
        })
    }
}

/// What every session of a model is made from.
#[derive(Debug)]
struct Settings {
    source: Source,
    spin: bool,
    optimization: Optimization,
    prepacked: Option<PrepackedWeights>,
    share_weights: bool,
    /// Prepared by the first multi-CPU stream session (when `share_weights`); an `Err` says
    /// why the model's per-stream sessions hold their own weights.
    shared_weights: OnceLock<Result<SharedWeights, String>>,
    /// Why a session could not be made from the shared weights (it then got its own).
    sharing_failed: Mutex<Option<String>>,
}

/// The weights of multi-CPU streams' sessions, in memory once: the model's graph optimised
/// once (at the model's level, every initialiser saved outside the graph) and its initialisers
/// as ONNX Runtime values owned here. Each session is made from the optimised graph with
/// optimisation off and every initialiser supplied (`AddInitializer`: ONNX Runtime computes
/// with the supplied memory, it does not copy it).
struct SharedWeights {
    /// The optimised graph; its initialisers point into `weights.bin` beside it, a sparse file
    /// of the right size holding no data (ONNX Runtime checks that it exists, and reads none
    /// of it since every initialiser is supplied).
    graph: PathBuf,
    initializers: Vec<(String, Arc<DynValue>)>,
    bytes: usize,
    /// Holds the folder of `graph` for the model's life (removed on drop).
    _dir: tempfile::TempDir,
}

impl fmt::Debug for SharedWeights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedWeights")
            .field("initializers", &self.initializers.len())
            .field("bytes", &self.bytes)
            .finish()
    }
}

/// An ONNX Runtime value of ONNX type `data_type` from little-endian bytes.
fn initializer_value(data_type: i32, dims: &[i64], bytes: &[u8]) -> Result<DynValue, String> {
    fn make<T, const N: usize>(
        dims: &[i64],
        bytes: &[u8],
        conv: impl Fn([u8; N]) -> T,
    ) -> Result<DynValue, String>
    where
        T: ::ort::value::PrimitiveTensorElementType + Clone + fmt::Debug + 'static,
    {
        let n: i64 = dims.iter().product();
        if bytes.len() != usize::try_from(n).unwrap_or(usize::MAX).saturating_mul(N) {
            return Err(format!(
                "{} bytes for dims {dims:?} of {N}-byte elements",
                bytes.len()
            ));
        }
        let data: Vec<T> = bytes
            .chunks_exact(N)
            .map(|c| conv(c.try_into().unwrap_or([0; N])))
            .collect();
        ::ort::value::Tensor::from_array((dims.to_vec(), data))
            .map(|t| t.into_dyn())
            .map_err(|e| e.to_string())
    }
    match data_type {
        1 => make(dims, bytes, f32::from_le_bytes),
        2 => make(dims, bytes, u8::from_le_bytes),
        3 => make(dims, bytes, i8::from_le_bytes),
        6 => make(dims, bytes, i32::from_le_bytes),
        7 => make(dims, bytes, i64::from_le_bytes),
        9 => make(dims, bytes, |[b]: [u8; 1]| b != 0),
        11 => make(dims, bytes, f64::from_le_bytes),
        t => Err(format!(
            "initialiser element type {t} is not supported for sharing"
        )),
    }
}

impl Settings {
    /// A session with `cpus.len().max(1)` intra-op threads: the caller plus one ONNX Runtime
    /// worker pinned to each of `cpus[1..]`.
    fn session(&self, cpus: &[usize]) -> Result<RunSession> {
        let shared = if cpus.len() > 1 && self.share_weights {
            self.shared_weights
                .get_or_init(|| self.prepare_shared_weights())
                .as_ref()
                .ok()
        } else {
            None
        };
        match shared {
            Some(w) => self.session_with(cpus, Some(w)).or_else(|e| {
                if let Ok(mut failed) = self.sharing_failed.lock() {
                    failed.get_or_insert_with(|| e.to_string());
                }
                self.session_with(cpus, None)
            }),
            None => self.session_with(cpus, None),
        }
    }

    /// Optimises the graph once and loads its initialisers (see [`SharedWeights`]).
    fn prepare_shared_weights(&self) -> Result<SharedWeights, String> {
        let rt = RUNTIME.get().ok_or("ONNX Runtime is not loaded")?;
        // A fresh folder only this user can enter (mode 0700), under a random name that must
        // not exist yet: another local user can neither pre-create it nor plant files or
        // symbolic links in it for ONNX Runtime or the sparse rewrite below to follow.
        let mut builder = tempfile::Builder::new();
        builder.prefix("corestream-ort-");
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700));
        let dir = builder
            .tempdir()
            .map_err(|e| format!("cannot create a private temporary folder: {e}"))?;
        let graph_path = dir.path().join("model.onnx");
        let make = || -> Result<(), String> {
            let e = |e: ::ort::Error<SessionBuilder>| e.to_string();
            let mut b = Session::builder(&rt.env)
                .map_err(|e| e.to_string())?
                .with_optimization_level(self.optimization.into())
                .map_err(e)?
                .with_intra_threads(1)
                .map_err(e)?
                .with_optimized_model_path(&graph_path)
                .map_err(e)?
                .with_config_entry(
                    "session.optimized_model_external_initializers_file_name",
                    "weights.bin",
                )
                .map_err(e)?
                // Small initialisers (shapes, axes: read by shape inference when a session
                // loads the graph) stay inline in the graph; the rest are shared.
                .with_config_entry(
                    "session.optimized_model_external_initializers_min_size_in_bytes",
                    "1024",
                )
                .map_err(e)?;
            match &self.source {
                Source::Path(p) => b.commit_from_file(p),
                Source::Bytes(bytes) => b.commit_from_memory(bytes),
            }
            .map(drop)
            .map_err(|e| e.to_string())
        };
        panic::catch_unwind(AssertUnwindSafe(make)).map_err(|p| panic_message(p.as_ref()))??;
        let graph = std::fs::read(&graph_path).map_err(|e| e.to_string())?;
        let weights_path = dir.path().join("weights.bin");
        let weights = std::fs::read(&weights_path).unwrap_or_default();
        let mut initializers = Vec::new();
        let mut total = 0;
        for init in super::onnx_proto::initializers(&graph)? {
            let bytes: &[u8] = match &init.external {
                Some((location, offset, length)) if location == "weights.bin" => {
                    let end = match length {
                        None => Some(weights.len()),
                        Some(l) => offset.checked_add(*l),
                    };
                    end.and_then(|end| weights.get(*offset..end))
                        .ok_or_else(|| format!("initialiser {:?} is out of range", init.name))?
                }
                Some((location, ..)) => {
                    return Err(format!("initialiser {:?} is in {location}", init.name))
                }
                // Small: stays in the graph, each session has its own copy.
                None => continue,
            };
            total += bytes.len();
            let value = initializer_value(init.data_type, &init.dims, bytes)
                .map_err(|e| format!("initialiser {:?}: {e}", init.name))?;
            initializers.push((init.name, Arc::new(value)));
        }
        // The data now lives in `initializers`: the file keeps its size but no data (sparse).
        let sparse = std::fs::File::create(&weights_path)
            .and_then(|f| f.set_len(weights.len() as u64))
            .map_err(|e| e.to_string());
        drop(weights);
        drop(graph);
        release_free_memory();
        sparse?;
        Ok(SharedWeights {
            graph: graph_path,
            initializers,
            bytes: total,
            _dir: dir,
        })
    }

    /// A session (see [`session`](Settings::session)), from `shared` weights when given.
    fn session_with(&self, cpus: &[usize], shared: Option<&SharedWeights>) -> Result<RunSession> {
        let threads = cpus.len().max(1);
        let load_error = |message: String| Error::ModelLoad {
            model: self.source.label(),
            message,
        };
        let Some(rt) = RUNTIME.get() else {
            return Err(load_error("ONNX Runtime is not loaded".into()));
        };
        let make = || -> Result<Session, String> {
            let e = |e: ::ort::Error<SessionBuilder>| e.to_string();
            let level = match shared {
                Some(_) => Optimization::Disable,
                None => self.optimization,
            };
            let mut b = Session::builder(&rt.env)
                .map_err(|e| e.to_string())?
                .with_optimization_level(level.into())
                .map_err(e)?
                .with_intra_threads(threads)
                .map_err(e)?
                .with_inter_threads(1)
                .map_err(e)?
                .with_parallel_execution(false)
                .map_err(e)?;
            if threads > 1 {
                b = b
                    .with_intra_op_spinning(self.spin)
                    .map_err(e)?
                    .with_config_entry("session.intra_op_thread_affinities", affinities(cpus))
                    .map_err(e)?;
            }
            if let Some(p) = &self.prepacked {
                b = b.with_prepacked_weights(p).map_err(e)?;
            }
            if let Some(w) = shared {
                for (name, value) in &w.initializers {
                    b = b.with_initializer(name, Arc::clone(value)).map_err(e)?;
                }
                return b.commit_from_file(&w.graph).map_err(|e| e.to_string());
            }
            match &self.source {
                Source::Path(p) => b.commit_from_file(p),
                Source::Bytes(bytes) => b.commit_from_memory(bytes),
            }
            .map_err(|e| e.to_string())
        };
        match panic::catch_unwind(AssertUnwindSafe(make)) {
            Ok(Ok(session)) => {
                release_free_memory();
                Ok(RunSession { session })
            }
            Ok(Err(message)) => Err(load_error(message)),
            Err(p) => Err(load_error(format!(
                "ONNX Runtime panicked: {}",
                panic_message(p.as_ref())
            ))),
        }
    }
}

/// Gives the heap's free pages back to the kernel: creating a session parses the model and
/// frees large temporary buffers, which glibc's per-thread arenas otherwise keep resident.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only releases free heap memory; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `session.intra_op_thread_affinities` for intra-op workers 1.. on `cpus[1..]`: one entry per
/// worker, separated by `;`. ONNX Runtime numbers logical processors from 1 (CPU `c` is
/// `c + 1`); `tests/ort.rs` checks the workers' masks.
fn affinities(cpus: &[usize]) -> String {
    cpus.iter()
        .skip(1)
        .map(|c| (c + 1).to_string())
        .collect::<Vec<_>>()
        .join(";")
}

/// A session that several threads may run at once.
#[derive(Debug)]
struct RunSession {
    session: Session,
}

impl RunSession {
    /// Runs the session from `&self` through ONNX Runtime's C API (`ort`'s safe `run` takes
    /// `&mut self`). `names` and `values` pair up; `outputs` are the names to compute.
    fn run(
        &self,
        names: &[*const c_char],
        values: &[DynValueRef<'_>],
        outputs: &[*const c_char],
    ) -> Result<Vec<DynValue>, String> {
        let value_ptrs: Vec<*const ::ort::sys::OrtValue> = values.iter().map(|v| v.ptr()).collect();
        assert_eq!(names.len(), value_ptrs.len(), "one name per input value");
        let mut out: Vec<*mut ::ort::sys::OrtValue> = vec![ptr::null_mut(); outputs.len()];
        // SAFETY: the session pointer is valid while `self.session` lives; ONNX Runtime's
        // `Run` may be called concurrently on one session (its documented thread-safety for the
        // CPU execution provider, the only one these sessions use; each call gets its own
        // execution frame; `Session` itself is Send + Sync). Name arrays point to
        // NUL-terminated strings the caller keeps alive; `value_ptrs` to live `OrtValue`s whose
        // data the `DynValueRef`s borrow; `out` has one null slot per output name, which `Run`
        // fills with values we then own. No run options (null is allowed).
        let status = unsafe {
            (::ort::api().Run)(
                self.session.ptr().cast_mut(),
                ptr::null(),
                names.as_ptr(),
                value_ptrs.as_ptr(),
                value_ptrs.len(),
                outputs.as_ptr(),
                outputs.len(),
                out.as_mut_ptr(),
            )
        };
        // SAFETY: `status` was just returned by an ONNX Runtime API; this takes ownership of
        // it (and releases it).
        unsafe { ::ort::Error::result_from_status(status) }.map_err(|e| e.to_string())?;
        out.into_iter()
            .map(|p| {
                let p = NonNull::new(p).ok_or("ONNX Runtime returned a null output")?;
                // SAFETY: `p` is an output value `Run` allocated with the session's (CPU)
                // allocator, now owned by the returned `DynValue`, which releases it on drop.
                Ok(unsafe { DynValue::from_ptr(p, Some(self.session.allocator())) })
            })
            .collect()
    }
}

/// An ONNX model on ONNX Runtime, shared by every stream that runs it (see the [module
/// docs](self) for how streams share the weights and where ONNX Runtime's threads run).
pub struct OrtModel {
    library: &'static Library,
    settings: Settings,
    inputs: Vec<InputSpec>,
    outputs: Vec<String>,
    input_cnames: Vec<CString>,
    output_cnames: Vec<CString>,
    /// The session `build` made: becomes `shared` on first one-thread use, or is dropped when
    /// a multi-CPU stream makes its own session first (so that a model run only by such
    /// streams holds no unused session).
    first: Mutex<Option<RunSession>>,
    /// One intra-op thread: plain calls and every one-CPU stream.
    shared: OnceLock<RunSession>,
    /// Sessions of streams with several CPUs, by stream id.
    streams: Mutex<HashMap<u64, Arc<RunSession>>>,
}

impl fmt::Debug for OrtModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrtModel")
            .field("model", &self.settings.source)
            .field("library", &self.library)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .field("spin", &self.settings.spin)
            .field("optimization", &self.settings.optimization)
            .finish_non_exhaustive()
    }
}

impl OrtModel {
    /// Loads an ONNX file with default settings.
    ///
    /// # Errors
    ///
    /// As [`OrtModelBuilder::build`].
    pub fn load(path: impl AsRef<Path>) -> Result<OrtModel> {
        OrtModel::builder(path).build()
    }

    /// A builder for an ONNX file (external data files are found next to it).
    pub fn builder(path: impl AsRef<Path>) -> OrtModelBuilder {
        OrtModelBuilder::new(Source::Path(path.as_ref().to_path_buf()))
    }

    /// A builder for a model held in memory (kept by the model, to create per-stream
    /// sessions).
    pub fn builder_from_bytes(bytes: impl Into<Vec<u8>>) -> OrtModelBuilder {
        OrtModelBuilder::new(Source::Bytes(bytes.into().into()))
    }

    /// The ONNX Runtime library in use.
    pub fn library(&self) -> &Library {
        self.library
    }

    /// The inputs, in order.
    pub fn inputs(&self) -> &[InputSpec] {
        &self.inputs
    }

    /// The input names, in order.
    pub fn input_names(&self) -> Vec<&str> {
        self.inputs.iter().map(|i| i.name.as_str()).collect()
    }

    /// The output names, in order.
    pub fn output_names(&self) -> Vec<&str> {
        self.outputs.iter().map(String::as_str).collect()
    }

    /// The number of sessions created so far (one shared one-thread session, plus one per
    /// multi-CPU stream that has run the model).
    pub fn session_count(&self) -> usize {
        let first = self.first.lock().map_or(0, |f| usize::from(f.is_some()));
        let streams = self.streams.lock().map_or(0, |s| s.len());
        first + usize::from(self.shared.get().is_some()) + streams
    }

    /// How the sessions of multi-CPU streams hold the weights: `None` before the first such
    /// session (or with sharing off), `Some(Ok(bytes))` when they share `bytes` of
    /// initialisers, `Some(Err(why))` when each holds its own copy.
    pub fn weight_sharing(&self) -> Option<Result<usize, String>> {
        let failed = self
            .settings
            .sharing_failed
            .lock()
            .ok()
            .and_then(|f| f.clone());
        self.settings
            .shared_weights
            .get()
            .map(|r| match (r, failed) {
                (Ok(_), Some(why)) => Err(why),
                (Ok(w), None) => Ok(w.bytes),
                (Err(why), _) => Err(why.clone()),
            })
    }

    /// The one-thread session shared by plain calls and one-CPU streams.
    fn shared_session(&self) -> Result<&RunSession> {
        if let Some(s) = self.shared.get() {
            return Ok(s);
        }
        let first = self.first.lock().ok().and_then(|mut f| f.take());
        let session = match first {
            Some(s) => s,
            None => self.settings.session(&[])?,
        };
        // A concurrent first call may have won: its session is kept, this one dropped.
        Ok(self.shared.get_or_init(|| session))
    }

    /// This stream's own session (created on the stream thread on its first call).
    fn stream_session(&self, id: u64, cpus: &[usize]) -> Result<Arc<RunSession>> {
        if let Some(s) = self.streams.lock().ok().and_then(|m| m.get(&id).cloned()) {
            return Ok(s);
        }
        let session = Arc::new(self.settings.session(cpus)?);
        // The build-time session is not needed by a model whose streams all own sessions; a
        // later one-thread caller creates the shared one again.
        if self.shared.get().is_none() {
            if let Ok(mut first) = self.first.lock() {
                if first.take().is_some() {
                    release_free_memory();
                }
            }
        }
        if let Ok(mut map) = self.streams.lock() {
            map.insert(id, Arc::clone(&session));
        }
        Ok(session)
    }

    /// Runs the model on `session`.
    fn run_on(&self, session: &RunSession, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        let inputs: Vec<Tensor> = inputs.into_iter().map(standard_layout).collect();
        let values = inputs
            .iter()
            .map(tensor_ref)
            .collect::<Result<Vec<_>, String>>()
            .map_err(|e| Error::Module(e.into()))?;
        let names: Vec<*const c_char> = self.input_cnames.iter().map(|c| c.as_ptr()).collect();
        let outs: Vec<*const c_char> = self.output_cnames.iter().map(|c| c.as_ptr()).collect();
        let outputs = session
            .run(&names, &values, &outs)
            .map_err(|e| Error::Module(format!("ONNX Runtime: {e}").into()))?;
        outputs
            .iter()
            .zip(&self.outputs)
            .map(|(v, name)| {
                to_tensor(v).map_err(|e| Error::Module(format!("output {name:?}: {e}").into()))
            })
            .collect()
    }
}

/// Makes the calling stream thread ONNX Runtime's intra-op thread 0 on the stream's first
/// CPU, once per thread: the stream thread is pinned to all of its stream's CPUs when it
/// starts, and here narrows to `cpus[0]` for good, as worker `t` has `cpus[t]` (left on all of
/// them, it shares a CPU with a worker whenever the scheduler puts it there). Pinning once
/// instead of around every run saves two `sched_setaffinity` calls per request (on the 2-vCPU
/// VM: ExampleNet1 at B=16, 1 stream x 2 CPUs, from 0.68x to 0.92x of Python onnxruntime's
/// one 2-thread session). Best effort: a refused mask leaves the thread where it was.
fn pin_as_thread_zero(cpus: &[usize]) {
    thread_local! {
        static DONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if !DONE.get() {
        DONE.set(true);
        // Only the stream thread itself (on all the stream's CPUs), not an intra-op worker
        // that calls a model from inside a rayon task (already on its own CPU).
        if crate::affinity::current_cpus().is_ok_and(|mask| mask.len() == cpus.len()) {
            let _ = crate::affinity::set_current_cpus(&cpus[..1]);
        }
    }
}

/// A standard-layout (C-contiguous) tensor: itself when it is one (no copy), else a copy.
fn standard_layout(t: Tensor) -> Tensor {
    fn fix<T: Element>(a: ndarray::ArcArray<T, IxDyn>) -> Tensor {
        if a.is_standard_layout() {
            T::into_tensor(a)
        } else {
            T::into_tensor(a.as_standard_layout().into_owned().into_shared())
        }
    }
    match t {
        Tensor::F32(a) => fix(a),
        Tensor::F64(a) => fix(a),
        Tensor::I64(a) => fix(a),
        Tensor::I32(a) => fix(a),
        Tensor::U8(a) => fix(a),
        Tensor::Bool(a) => fix(a),
    }
}

/// An ONNX Runtime value borrowing a standard-layout tensor's data.
fn tensor_ref(t: &Tensor) -> Result<DynValueRef<'_>, String> {
    fn r<T: ::ort::value::PrimitiveTensorElementType + Element>(
        a: &ndarray::ArcArray<T, IxDyn>,
    ) -> Result<DynValueRef<'_>, String> {
        TensorRef::from_array_view(a.view())
            .map(TensorRef::into_dyn)
            .map_err(|e| e.to_string())
    }
    match t {
        Tensor::F32(a) => r(a),
        Tensor::F64(a) => r(a),
        Tensor::I64(a) => r(a),
        Tensor::I32(a) => r(a),
        Tensor::U8(a) => r(a),
        Tensor::Bool(a) => r(a),
    }
}

/// Copies an output value into a [`Tensor`].
fn to_tensor(v: &DynValue) -> Result<Tensor, String> {
    fn copy<T: ::ort::value::PrimitiveTensorElementType + Element>(
        v: &DynValue,
    ) -> Result<Tensor, String> {
        let view = v.try_extract_array::<T>().map_err(|e| e.to_string())?;
        Ok(T::into_tensor(view.to_owned().into_shared()))
    }
    match v.dtype() {
        ValueType::Tensor { ty, .. } => match element_type(*ty) {
            Some(ElementType::F32) => copy::<f32>(v),
            Some(ElementType::F64) => copy::<f64>(v),
            Some(ElementType::I64) => copy::<i64>(v),
            Some(ElementType::I32) => copy::<i32>(v),
            Some(ElementType::U8) => copy::<u8>(v),
            Some(ElementType::Bool) => copy::<bool>(v),
            _ => Err(format!("element type {ty:?} has no corestream Tensor type")),
        },
        other => Err(format!("a {other} is not a tensor")),
    }
}

impl Module for OrtModel {
    type Input = Vec<Tensor>;
    type Output = Vec<Tensor>;

    /// Checks the inputs, then runs the model on the current stream's session (see the
    /// [module docs](self)).
    fn forward(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BoxError> {
        check_inputs(&self.inputs, &inputs)?;
        let stream = current_stream().filter(|s| s.pool().len() > 1);
        let run = || match &stream {
            Some(s) => {
                let cpus = s.pool().cpus();
                let session = self.stream_session(s.id(), cpus)?;
                pin_as_thread_zero(cpus);
                self.run_on(&session, inputs)
            }
            None => self.run_on(self.shared_session()?, inputs),
        };
        match panic::catch_unwind(AssertUnwindSafe(run)) {
            Ok(result) => Ok(result?),
            Err(p) => Err(Box::new(Error::Panicked(panic_message(p.as_ref())))),
        }
    }
}
