//! [`OrtModel`] and its builder: the model's inputs and outputs, and which session each
//! caller runs (see the [module docs](super)).

use std::collections::HashMap;
use std::ffi::{c_char, CString};
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use ::ort::session::builder::PrepackedWeights;
use ::ort::value::ValueType;

use super::library::{load_library, Library};
use super::run::{
    element_type, pin_as_thread_zero, standard_layout, tensor_ref, to_tensor, RunSession,
};
use super::session::{release_free_memory, Optimization, Settings, Source};
use crate::backend::spec::check_inputs;
use crate::backend::tensor::Tensor;
use crate::backend::InputSpec;
use crate::context::{current_stream, StreamInfo};
use crate::error::{BoxError, Error, Result};
use crate::module::Module;
use crate::stream::panic_message;

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

    /// Loads ONNX Runtime from this file, and only from it (see the [module docs](super)).
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

    /// Whether the streams' sessions share one copy of the weights (default true;
    /// see the [module docs](super)). When the model cannot be prepared for sharing (e.g. an
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
        let session = settings.session(&[], false)?;
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
            streams: Arc::default(),
        })
    }
}

/// An ONNX model on ONNX Runtime, shared by every stream that runs it (see the [module
/// docs](super) for how streams share the weights and where ONNX Runtime's threads run).
pub struct OrtModel {
    library: &'static Library,
    settings: Settings,
    inputs: Vec<InputSpec>,
    outputs: Vec<String>,
    input_cnames: Vec<CString>,
    output_cnames: Vec<CString>,
    /// The session `build` made: becomes `shared` on first one-thread use, or is dropped when
    /// a stream makes its own session first (so that a model run only by such
    /// streams holds no unused session).
    first: Mutex<Option<RunSession>>,
    /// One intra-op thread: calls made outside any stream.
    shared: OnceLock<RunSession>,
    /// Sessions of running streams, by stream id: each is removed when its stream stops (see
    /// [`OrtModel::stream_session`]).
    streams: Arc<StreamSessions>,
}

/// The sessions of streams, by stream id.
type StreamSessions = Mutex<HashMap<u64, Arc<RunSession>>>;

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

    /// The number of sessions the model holds: one one-thread session for calls made outside
    /// any stream (made by `build`, kept until a stream runs the model unless such a call
    /// came first), plus one per running stream that has run the model. A stream's session is released when
    /// the stream stops (its [`Task`](crate::Task) or
    /// [`MultiStreamModule`](crate::MultiStreamModule) is dropped), so streams that come and
    /// go over one model do not accumulate sessions.
    pub fn session_count(&self) -> usize {
        let first = self.first.lock().map_or(0, |f| usize::from(f.is_some()));
        let streams = self.streams.lock().map_or(0, |s| s.len());
        first + usize::from(self.shared.get().is_some()) + streams
    }

    /// How the streams' sessions hold the weights: `None` before the first such session (or
    /// with sharing off), `Some(Ok(bytes))` when they share `bytes` of
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

    /// The one-thread session of calls made outside any stream.
    fn shared_session(&self) -> Result<&RunSession> {
        if let Some(s) = self.shared.get() {
            return Ok(s);
        }
        let first = self.first.lock().ok().and_then(|mut f| f.take());
        let session = match first {
            Some(s) => s,
            None => self.settings.session(&[], false)?,
        };
        // A concurrent first call may have won: its session is kept, this one dropped.
        Ok(self.shared.get_or_init(|| session))
    }

    /// This stream's own session, created on its first call (on the stream thread, or on a
    /// caller running a part of the stream's work) and kept until the stream stops: an end
    /// hook on the stream ([`StreamInfo::on_end`]) removes it from the map, so the map holds
    /// the sessions of running streams only, however many streams the model has served.
    /// A call on a stream that has stopped already (e.g. from a task the model spawned) gets
    /// a session for that call only.
    fn stream_session(&self, stream: &StreamInfo) -> Result<Arc<RunSession>> {
        let id = stream.id();
        if let Some(s) = self.streams.lock().ok().and_then(|m| m.get(&id).cloned()) {
            return Ok(s);
        }
        let session = Arc::new(
            self.settings
                .session(stream.pool().cpus(), stream.is_wide())?,
        );
        // The build-time session is not needed by a model whose streams all own sessions; a
        // later one-thread caller creates the shared one again.
        if self.shared.get().is_none() {
            if let Ok(mut first) = self.first.lock() {
                if first.take().is_some() {
                    release_free_memory();
                }
            }
        }
        let Ok(mut map) = self.streams.lock() else {
            return Ok(session);
        };
        if let Some(existing) = map.get(&id) {
            // A concurrent first call of the same stream won: use its session.
            return Ok(Arc::clone(existing));
        }
        // Registered under the map's lock: the hook (which takes the lock) then runs after the
        // insert below, never before it. `on_end` runs hooks outside its own lock, so the two
        // locks are never taken in the other order.
        let weak = Arc::downgrade(&self.streams);
        let registered = stream.on_end(move || {
            let Some(streams) = weak.upgrade() else {
                return; // the model is gone, and its sessions with it
            };
            let removed = streams
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            if removed.is_some() {
                // The session (unless a call still holds it) and its threads go here.
                drop(removed);
                release_free_memory();
            }
        });
        if registered {
            map.insert(id, Arc::clone(&session));
        }
        Ok(session)
    }

    /// Another model from the same file and settings, with weights of its own, prepared on
    /// this thread (see [`Module::replicate`]).
    fn copy(&self) -> Result<OrtModel> {
        let settings = &self.settings;
        let model = OrtModelBuilder {
            source: settings.source.clone(),
            library: None, // the process's one library, loaded already
            spin: settings.spin,
            optimization: settings.optimization,
            share_prepacked: settings.prepacked.is_some(),
            share_weights: settings.share_weights,
        }
        .build()?;
        model.settings.share_now();
        Ok(model)
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

impl Module for OrtModel {
    type Input = Vec<Tensor>;
    type Output = Vec<Tensor>;

    /// Checks the inputs, then runs the model on the current stream's session (see the
    /// [module docs](super)).
    fn forward(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BoxError> {
        check_inputs(&self.inputs, &inputs)?;
        let stream = current_stream();
        let run = || match &stream {
            Some(s) => {
                let session = self.stream_session(s)?;
                pin_as_thread_zero(s);
                self.run_on(&session, inputs)
            }
            None => self.run_on(self.shared_session()?, inputs),
        };
        match panic::catch_unwind(AssertUnwindSafe(run)) {
            Ok(result) => Ok(result?),
            Err(p) => Err(Box::new(Error::Panicked(panic_message(p.as_ref())))),
        }
    }

    /// The same model loaded again from its file (or bytes) with the same settings, its
    /// shared weights prepared on the calling thread: a NUMA node's copy (see
    /// [`numa`](crate::numa)). Its streams' sessions and pre-packed weights are made on
    /// those streams, pinned to the node, as the original's are.
    fn replicate(&self) -> Option<Result<OrtModel, BoxError>> {
        Some(self.copy().map_err(BoxError::from))
    }
}
