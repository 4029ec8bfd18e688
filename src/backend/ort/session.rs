//! Building sessions: settings, per-stream thread affinities, and the weights that
//! the streams' sessions share (see the [module docs](super)).

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use ::ort::session::builder::{GraphOptimizationLevel, PrepackedWeights, SessionBuilder};
use ::ort::session::Session;
use ::ort::value::DynValue;

use super::library::RUNTIME;
use super::run::RunSession;
use crate::error::{Error, Result};
use crate::stream::panic_message;

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

#[derive(Clone)]
pub(super) enum Source {
    Path(PathBuf),
    Bytes(Arc<[u8]>),
}

impl Source {
    pub(super) fn label(&self) -> String {
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

/// What every session of a model is made from.
#[derive(Debug)]
pub(super) struct Settings {
    pub(super) source: Source,
    pub(super) spin: bool,
    pub(super) optimization: Optimization,
    pub(super) prepacked: Option<PrepackedWeights>,
    pub(super) share_weights: bool,
    /// Prepared by the first stream's session (when `share_weights`); an `Err` says why the
    /// model's per-stream sessions hold their own weights.
    pub(super) shared_weights: OnceLock<Result<SharedWeights, String>>,
    /// Why a session could not be made from the shared weights (it then got its own).
    pub(super) sharing_failed: Mutex<Option<String>>,
}

/// The weights of the streams' sessions, in memory once: the model's graph optimised
/// once (at the model's level, every initialiser saved outside the graph) and its initialisers
/// as ONNX Runtime values owned here. Each session is made from the optimised graph with
/// optimisation off and every initialiser supplied (`AddInitializer`: ONNX Runtime computes
/// with the supplied memory, it does not copy it).
pub(super) struct SharedWeights {
    /// The optimised graph; its initialisers point into `weights.bin` beside it, a sparse file
    /// of the right size holding no data (ONNX Runtime checks that it exists, and reads none
    /// of it since every initialiser is supplied).
    graph: PathBuf,
    initializers: Vec<(String, Arc<DynValue>)>,
    pub(super) bytes: usize,
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

/// The number of elements of a tensor of ONNX `dims`: `None` for a negative axis or a count a
/// `usize` cannot hold (checked: the graph's dims are read from a file).
fn element_count(dims: &[i64]) -> Option<usize> {
    let dims = dims
        .iter()
        .map(|&d| usize::try_from(d).ok())
        .collect::<Option<Vec<usize>>>()?;
    if dims.contains(&0) {
        return Some(0);
    }
    dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
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
        let expected = element_count(dims)
            .and_then(|n| n.checked_mul(N))
            .ok_or_else(|| {
                format!("dims {dims:?} have a negative axis or more bytes than a usize counts")
            })?;
        if bytes.len() != expected {
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
    /// worker pinned to each of `cpus[1..]`. With `stop_spinning` (a batcher's wide stream,
    /// whose CPUs the narrow streams use next) the workers stop spinning when a run ends.
    pub(super) fn session(&self, cpus: &[usize], stop_spinning: bool) -> Result<RunSession> {
        let shared = if !cpus.is_empty() && self.share_weights {
            self.shared_weights
                .get_or_init(|| self.prepare_shared_weights())
                .as_ref()
                .ok()
        } else {
            None
        };
        match shared {
            Some(w) => self
                .session_with(cpus, stop_spinning, Some(w))
                .or_else(|e| {
                    if let Ok(mut failed) = self.sharing_failed.lock() {
                        failed.get_or_insert_with(|| e.to_string());
                    }
                    self.session_with(cpus, stop_spinning, None)
                }),
            None => self.session_with(cpus, stop_spinning, None),
        }
    }

    /// Prepares the weights the streams' sessions share now, on this thread (when sharing is
    /// on): a NUMA copy of the model places them on its node (see [`OrtModel::replicate`]).
    ///
    /// [`OrtModel::replicate`]: crate::Module::replicate
    pub(super) fn share_now(&self) {
        if self.share_weights {
            self.shared_weights
                .get_or_init(|| self.prepare_shared_weights());
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
        for init in crate::backend::onnx_proto::initializers(&graph)? {
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
            total = usize::saturating_add(total, bytes.len());
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
    fn session_with(
        &self,
        cpus: &[usize],
        stop_spinning: bool,
        shared: Option<&SharedWeights>,
    ) -> Result<RunSession> {
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
                if stop_spinning {
                    b = b
                        .with_config_entry("session.force_spinning_stop", "1")
                        .map_err(e)?;
                }
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
pub(super) fn release_free_memory() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_counts_are_checked() {
        assert_eq!(element_count(&[]), Some(1));
        assert_eq!(element_count(&[2, 3, 4]), Some(24));
        assert_eq!(element_count(&[3, 0, i64::MAX]), Some(0));
        assert_eq!(element_count(&[-1]), None);
        assert_eq!(element_count(&[-1, -2]), None);
        assert_eq!(element_count(&[i64::MAX, i64::MAX]), None);
        assert_eq!(element_count(&[1 << 32, 1 << 32]), None);
    }

    /// Hostile dims in the optimised graph are an error that turns weight sharing off, not an
    /// overflow panic (`dims.iter().product()`) or negative dims whose product looks right.
    #[test]
    fn initializers_with_hostile_dims_are_errors() {
        for (dims, bytes) in [
            (vec![i64::MAX, 2], 8),
            (vec![i64::MAX, i64::MAX, 2], 8),
            (vec![-1, -2], 8),
            (vec![-2], 8),
            (vec![i64::MAX], 4),
        ] {
            let err = initializer_value(1, &dims, &vec![0u8; bytes]).unwrap_err();
            assert!(
                err.contains("negative axis or more bytes"),
                "{dims:?}: {err}"
            );
        }
        let err = initializer_value(1, &[2, 3], &[0u8; 20]).unwrap_err();
        assert_eq!(err, "20 bytes for dims [2, 3] of 4-byte elements");
    }
}
