//! ONNX models on tract (feature `tract`).
//!
//! [`OnnxModel`] is a [`Module`] with `Input = Vec<Tensor>` and `Output = Vec<Tensor>` (the
//! backend-neutral [`Tensor`], the same as [`ort`](super)'s, so switching backends changes the
//! constructor line only): one
//! optimised plan in an `Arc`, run concurrently by every stream (weights are never copied per
//! stream). Inside a stream with k > 1 CPUs the model's matrix kernels run on that stream's
//! pinned intra-op rayon pool (tract's multithread executor, scoped to the calling thread);
//! elsewhere, and in one-CPU streams, they run single-threaded. Small batches get plans
//! specialised to their concrete size (see [`OnnxModelBuilder::specialize_up_to`]).
//!
//! ```
//! use corestream::backend::tract::OnnxModel;
//! use corestream::backend::Tensor;
//! use corestream::{CpuPool, MultiStreamModule};
//!
//! let path = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/models/examplenet1.onnx");
//! let model = OnnxModel::load(path)?;
//! assert_eq!(model.input_names(), ["x"]);
//! let msm = MultiStreamModule::builder(model).pool(CpuPool::all()?).build()?;
//! let x = Tensor::zeros::<f32>(&[8, 64, 3, 3]);
//! let y = msm.forward_sync(vec![x])?;
//! assert_eq!(y[0].shape(), [8, 512]);
//! # Ok::<(), corestream::Error>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tract_linalg::multithread::{multithread_tract_scope, Executor};
use tract_onnx::prelude::*;

use super::spec::check_inputs;
use super::{ElementType, InputSpec, Tensor};
use crate::batch::{Batch, Hint};
use crate::error::{BoxError, Error, Result};
use crate::module::Module;
use crate::stream::panic_message;

pub use tract_onnx;

type Plan = Arc<TypedRunnableModel>;

/// Batch sizes up to this get a specialised plan by default (see
/// [`OnnxModelBuilder::specialize_up_to`]).
pub const DEFAULT_SPECIALIZE_UP_TO: usize = 8;

/// Most specialised plans one model keeps (each holds its own packed weights).
const MAX_SPECIALIZED: usize = 16;

/// An ONNX model compiled by tract, shared by every stream that runs it.
pub struct OnnxModel {
    label: String,
    inputs: Vec<InputSpec>,
    outputs: Vec<String>,
    symbolic: Plan,
    /// The batch axis' symbol: axis 0 of the first input when symbolic, else the model's only
    /// symbol.
    batch_symbol: Option<Symbol>,
    /// Its name, as [`InputSpec::symbols`] write it.
    batch_name: Option<String>,
    /// The decluttered model, kept to build batch-specialised plans.
    specializable: Option<TypedModel>,
    specialize_up_to: usize,
    optimize: bool,
    /// Batch size -> its specialised plan; `None` while one caller compiles it (the others
    /// run the symbolic plan meanwhile) or after its compilation failed.
    specialized: RwLock<HashMap<usize, Option<Plan>>>,
    /// Most rows one plan run takes; larger batches run as several chunks.
    max_rows_per_run: Option<usize>,
    /// The batch symbol's axis in every input and every output, when each has exactly one.
    batch_axes: Option<BatchAxes>,
}

/// Where the batch axis is in each input and each output.
#[derive(Debug, Clone)]
struct BatchAxes {
    inputs: Vec<usize>,
    outputs: Vec<usize>,
}

// ===== impl OnnxModel =====

impl fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnnxModel")
            .field("model", &self.label)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .field("specialize_up_to", &self.specialize_up_to)
            .field("max_rows_per_run", &self.max_rows_per_run)
            .finish_non_exhaustive()
    }
}

impl OnnxModel {
    /// Loads and optimises an ONNX file with the shapes it declares (its batch axis stays
    /// symbolic).
    ///
    /// # Errors
    ///
    /// [`Error::ModelLoad`] for a missing, unreadable or corrupt file, or a model tract cannot
    /// compile.
    pub fn load(path: impl AsRef<Path>) -> Result<OnnxModel> {
        OnnxModel::builder(path).build()
    }

    /// A builder to set input shapes and types, optimisation and specialisation.
    pub fn builder(path: impl AsRef<Path>) -> OnnxModelBuilder {
        OnnxModelBuilder::new(Source::Path(path.as_ref().to_path_buf()))
    }

    /// A builder for a model held in memory (e.g. `include_bytes!`).
    pub fn builder_from_bytes(bytes: impl Into<Vec<u8>>) -> OnnxModelBuilder {
        OnnxModelBuilder::new(Source::Bytes(bytes.into()))
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

    /// The batch sizes that have a compiled specialised plan so far, ascending. The first
    /// caller of a batch size compiles its plan; callers of the same size meanwhile run the
    /// symbolic plan rather than wait or compile it again.
    pub fn specialized_batches(&self) -> Vec<usize> {
        let mut sizes: Vec<usize> = self
            .specialized
            .read()
            .map(|m| {
                m.iter()
                    .filter(|(_, plan)| plan.is_some())
                    .map(|(b, _)| *b)
                    .collect()
            })
            .unwrap_or_default();
        sizes.sort_unstable();
        sizes
    }

    /// Checks the inputs against the model and returns the batch symbol's value, if bound.
    fn check(&self, inputs: &[Tensor]) -> Result<Option<usize>> {
        let bound = check_inputs(&self.inputs, inputs)?;
        Ok(self
            .batch_name
            .as_deref()
            .and_then(|name| bound.get(name).copied()))
    }

    /// The plan for a batch size: a specialised one for small batches, else the symbolic one.
    fn plan_for(&self, batch: Option<usize>) -> Plan {
        let (Some(b), Some(model), Some(sym)) = (batch, &self.specializable, &self.batch_symbol)
        else {
            return Arc::clone(&self.symbolic);
        };
        let rows = match i64::try_from(b) {
            Ok(rows) if b > 0 && b <= self.specialize_up_to => rows,
            _ => return Arc::clone(&self.symbolic),
        };
        match self
            .specialized
            .read()
            .ok()
            .and_then(|m| m.get(&b).cloned())
        {
            Some(Some(plan)) => return plan,
            // Being compiled by another caller, or failed: never wait, never compile twice.
            Some(None) => return Arc::clone(&self.symbolic),
            None => {}
        }
        match self.specialized.write() {
            Ok(mut map) if map.len() < MAX_SPECIALIZED && !map.contains_key(&b) => {
                map.insert(b, None);
            }
            _ => return Arc::clone(&self.symbolic),
        }
        let values = HashMap::from([(sym.clone(), TDim::from(rows))]);
        let compiled = model
            .set_symbols(&values)
            .and_then(|fixed| compile_plan(fixed, self.optimize));
        // Specialisation is an optimisation only: on failure the symbolic plan runs.
        let plan = compiled.ok();
        if let (Some(plan), Ok(mut map)) = (&plan, self.specialized.write()) {
            map.insert(b, Some(Arc::clone(plan)));
        }
        plan.unwrap_or_else(|| Arc::clone(&self.symbolic))
    }
}

/// The executor for the calling thread: the current rayon pool when it has several threads
/// (a corestream stream's pinned intra-op pool), single-threaded otherwise.
fn executor() -> Executor {
    if rayon::current_thread_index().is_some() && rayon::current_num_threads() > 1 {
        Executor::RayonGlobal
    } else {
        Executor::SingleThread
    }
}

impl Module for OnnxModel {
    type Input = Vec<Tensor>;
    type Output = Vec<Tensor>;

    fn forward(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BoxError> {
        let batch = self.check(&inputs)?;
        match (batch, self.max_rows_per_run, &self.batch_axes) {
            (Some(rows), Some(max), Some(axes)) if rows > max => {
                Ok(self.run_chunked(inputs, rows, max, axes)?)
            }
            _ => Ok(self.run_plan(inputs, batch)?),
        }
    }
}

impl OnnxModel {
    /// One run of the plan for `batch` rows.
    fn run_plan(&self, inputs: Vec<Tensor>, batch: Option<usize>) -> Result<Vec<Tensor>> {
        let plan = self.plan_for(batch);
        let values: TVec<TValue> = inputs.into_iter().map(to_tract).collect();
        let outputs = multithread_tract_scope(executor(), || plan.run(values))?;
        outputs
            .into_iter()
            .zip(&self.outputs)
            .map(|(v, name)| from_tract(v.into_tensor(), name))
            .collect()
    }

    /// Runs `rows` rows as `ceil(rows / max)` chunks of near-equal size, one after the other,
    /// and concatenates each output along its batch axis (with `Batch for Tensor`).
    fn run_chunked(
        &self,
        inputs: Vec<Tensor>,
        rows: usize,
        max: usize,
        axes: &BatchAxes,
    ) -> Result<Vec<Tensor>> {
        let sizes = crate::batch::split_sizes(rows, rows.div_ceil(max));
        let mut parts = inputs
            .into_iter()
            .zip(&axes.inputs)
            .map(|(t, &axis)| Ok(t.split(&Hint::Dim(axis), &sizes)?.into_iter()))
            .collect::<Result<Vec<_>>>()?;
        let mut per_output: Vec<Vec<Tensor>> =
            vec![Vec::with_capacity(sizes.len()); axes.outputs.len()];
        for &n in &sizes {
            let chunk = parts
                .iter_mut()
                .map(|p| p.next().expect("split returns one part per size"))
                .collect();
            for (all, out) in per_output.iter_mut().zip(self.run_plan(chunk, Some(n))?) {
                all.push(out);
            }
        }
        per_output
            .into_iter()
            .zip(&axes.outputs)
            .map(|(outs, &axis)| Tensor::concat(outs, &Hint::Dim(axis)))
            .collect()
    }
}

/// Where a builder reads its model from.
enum Source {
    /// An ONNX file.
    Path(PathBuf),
    /// An ONNX protobuf in memory.
    Bytes(Vec<u8>),
}

/// Configures an [`OnnxModel`]; see [`OnnxModel::builder`].
#[must_use = "a builder does nothing until .build() is called"]
pub struct OnnxModelBuilder {
    source: Source,
    inputs: Vec<(usize, ElementType, String)>,
    optimize: bool,
    specialize_up_to: usize,
    max_rows_per_run: Option<usize>,
}

// ===== impl Source =====

impl Source {
    /// The model's name in messages: the path, or `<bytes>`.
    fn label(&self) -> String {
        match self {
            Source::Path(p) => p.display().to_string(),
            Source::Bytes(_) => "<bytes>".to_owned(),
        }
    }
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Path(p) => f.debug_tuple("Path").field(p).finish(),
            Source::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
        }
    }
}

// ===== impl OnnxModelBuilder =====

impl fmt::Debug for OnnxModelBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnnxModelBuilder")
            .field("inputs", &self.inputs)
            .field("optimize", &self.optimize)
            .field("specialize_up_to", &self.specialize_up_to)
            .field("max_rows_per_run", &self.max_rows_per_run)
            .finish_non_exhaustive()
    }
}

impl OnnxModelBuilder {
    fn new(source: Source) -> OnnxModelBuilder {
        OnnxModelBuilder {
            source,
            inputs: Vec::new(),
            optimize: true,
            specialize_up_to: DEFAULT_SPECIALIZE_UP_TO,
            max_rows_per_run: None,
        }
    }

    /// Sets input `index`'s element type and shape, overriding what the file declares. The
    /// shape is a list of axes separated by `,` or `x`: numbers are fixed, a name (e.g. `N`) is
    /// symbolic and takes any size at run time: `"N,3,224,224"`, `"Nx128"`.
    ///
    /// ```
    /// use corestream::backend::tract::OnnxModel;
    /// use corestream::backend::ElementType;
    /// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/models/examplenet1.onnx");
    /// let model = OnnxModel::builder(path).input(0, ElementType::F32, "B,64,3,3").build()?;
    /// assert_eq!(model.inputs()[0].to_string(), "B,64,3,3 f32");
    /// # Ok::<(), corestream::Error>(())
    /// ```
    pub fn input(mut self, index: usize, element_type: ElementType, shape: &str) -> Self {
        self.inputs.push((index, element_type, shape.to_owned()));
        self
    }

    /// Whether to run tract's optimiser (default: true). Unoptimised plans are slower but
    /// compile faster.
    pub fn optimize(mut self, enabled: bool) -> Self {
        self.optimize = enabled;
        self
    }

    /// Batch sizes up to `max` get a plan specialised to their concrete size, built on first
    /// use and cached (default [`DEFAULT_SPECIALIZE_UP_TO`]; 0 turns it off). On a 2-CPU
    /// machine a specialised ExampleNet1 plan runs a 1-row batch about 2x faster than the
    /// symbolic plan, and no faster from 8 rows on, while each plan holds its own packed weights.
    /// Only the batch axis is specialised (axis 0 of the first input, or the model's only
    /// symbolic axis); other symbolic axes, such as a sequence length, stay symbolic.
    pub fn specialize_up_to(mut self, max: usize) -> Self {
        self.specialize_up_to = max;
        self
    }

    /// Runs at most `max` rows through the plan at a time (default: the whole batch): a larger
    /// batch is cut along its batch axis into `ceil(rows / max)` chunks of near-equal size, run
    /// one after the other on the calling stream, and the outputs are concatenated. Results are
    /// the same; only speed and peak memory change. tract gets slower per row as a run grows
    /// on ExampleNet1, ResNet-18 and MiniLM at 128 tokens, so they run faster in runs of 1-2
    /// rows at large batches (README, performance tables), while short rows such as MiniLM at
    /// ~14 tokens gain from whole batches. `corestream tune` measures it for a model.
    ///
    /// ```
    /// use corestream::backend::{tract::OnnxModel, Tensor};
    /// use corestream::Module;
    /// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/models/examplenet1.onnx");
    /// let model = OnnxModel::builder(path).max_rows_per_run(4).build()?;
    /// let x = Tensor::zeros::<f32>(&[10, 64, 3, 3]);
    /// let y = model.forward(vec![x])?; // three runs: 4, 3 and 3 rows
    /// assert_eq!(y[0].shape(), [10, 512]);
    /// # Ok::<(), corestream::BoxError>(())
    /// ```
    pub fn max_rows_per_run(mut self, max: usize) -> Self {
        self.max_rows_per_run = Some(max);
        self
    }

    /// Loads, types and optimises the model.
    ///
    /// # Errors
    ///
    /// [`Error::ModelLoad`] naming the file and what failed: missing file, corrupt protobuf,
    /// unsupported operator, an unparsable shape, an input index the model does not have, or
    /// a panic inside tract while it reads, types or optimises the model (caught here: a
    /// malformed file must not take the caller down).
    /// [`Error::InvalidConfig`] for `max_rows_per_run(0)`, or `max_rows_per_run` on a model
    /// without one symbolic batch axis in every input and output.
    pub fn build(self) -> Result<OnnxModel> {
        if self.max_rows_per_run == Some(0) {
            return Err(Error::InvalidConfig(
                "max_rows_per_run must be at least 1".into(),
            ));
        }
        let label = self.source.label();
        // tract indexes the file's tables without checking them in places (fuzz target
        // `model_tract`: a node input naming no value panicked in tract-onnx's parse_graph).
        match panic::catch_unwind(AssertUnwindSafe(|| self.load())) {
            Ok(result) => result,
            Err(payload) => Err(Error::ModelLoad {
                model: label,
                message: format!("tract panicked: {}", panic_message(payload.as_ref())),
            }),
        }
    }

    /// The steps of [`build`](Self::build) after the settings check.
    fn load(self) -> Result<OnnxModel> {
        let mut model = self.read()?;
        self.apply_input_shapes(&mut model)?;
        let typed = self.type_and_declutter(model)?;
        let (inputs, outputs) = self.signature(&typed)?;
        let (batch_symbol, batch_axes) = self.find_batch_axes(&typed)?;
        let (symbolic, specializable) = self.compile(typed, batch_symbol.is_some())?;
        Ok(OnnxModel {
            label: self.source.label(),
            inputs,
            outputs,
            symbolic,
            batch_name: batch_symbol.as_ref().map(Symbol::to_string),
            batch_symbol,
            specializable,
            specialize_up_to: self.specialize_up_to,
            optimize: self.optimize,
            specialized: RwLock::new(HashMap::new()),
            max_rows_per_run: self.max_rows_per_run,
            batch_axes,
        })
    }
}

/// The steps of [`OnnxModelBuilder::build`], in the order it runs them. Every failure is an
/// [`Error::ModelLoad`] naming the model, except the `max_rows_per_run` check.
impl OnnxModelBuilder {
    /// An [`Error::ModelLoad`] for this builder's model.
    fn fail(&self, message: impl Into<String>) -> Error {
        Error::ModelLoad {
            model: self.source.label(),
            message: message.into(),
        }
    }

    /// Reads the ONNX protobuf from the file or the bytes.
    fn read(&self) -> Result<InferenceModel> {
        let read = match &self.source {
            Source::Path(p) if !p.is_file() => return Err(self.fail("no such file")),
            Source::Path(p) => tract_onnx::onnx().model_for_path(p),
            Source::Bytes(b) => tract_onnx::onnx().model_for_read(&mut b.as_slice()),
        };
        read.map_err(|e| self.fail(format!("{e:#}")))
    }

    /// Replaces the declared type and shape of every input given with
    /// [`input`](Self::input).
    fn apply_input_shapes(&self, model: &mut InferenceModel) -> Result<()> {
        let n_inputs = model
            .input_outlets()
            .map_err(|e| self.fail(e.to_string()))?
            .len();
        for (index, dt, shape) in &self.inputs {
            if *index >= n_inputs {
                return Err(self.fail(format!(
                    "input {index} does not exist; the model has {n_inputs} inputs (0 to {})",
                    n_inputs.saturating_sub(1)
                )));
            }
            let dims = parse_shape(shape, &model.symbols).map_err(|m| self.fail(m))?;
            let fact = InferenceFact::dt_shape(datum_type(*dt), dims);
            model
                .set_input_fact(*index, fact)
                .map_err(|e| self.fail(format!("input {index}: {e:#}")))?;
        }
        Ok(())
    }

    /// Infers every type and shape, then simplifies the graph (tract's declutter pass).
    fn type_and_declutter(&self, model: InferenceModel) -> Result<TypedModel> {
        model
            .into_typed()
            .and_then(|m| m.into_decluttered())
            .map_err(|e| self.fail(format!("{e:#}")))
    }

    /// The inputs (name, type, shape) and the output names of the typed model.
    fn signature(&self, typed: &TypedModel) -> Result<(Vec<InputSpec>, Vec<String>)> {
        let inputs = input_specs(typed).map_err(|e| self.fail(format!("{e:#}")))?;
        let outputs = typed
            .output_outlets()
            .map_err(|e| self.fail(e.to_string()))?
            .iter()
            .map(|o| {
                typed
                    .outlet_label(*o)
                    .map_or_else(|| typed.node(o.node).name.clone(), str::to_owned)
            })
            .collect();
        Ok((inputs, outputs))
    }

    /// The batch symbol (see [`batch_symbol`]) and, when every input and output has exactly
    /// one axis that is that symbol, those axes.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when [`max_rows_per_run`](Self::max_rows_per_run) is set but
    /// there are no such axes to cut batches along.
    fn find_batch_axes(&self, typed: &TypedModel) -> Result<(Option<Symbol>, Option<BatchAxes>)> {
        let symbols = input_symbols(typed).map_err(|e| self.fail(format!("{e:#}")))?;
        let batch_symbol = batch_symbol(&symbols);
        let batch_axes = match &batch_symbol {
            Some(sym) => batch_axes(typed, sym).map_err(|e| self.fail(format!("{e:#}")))?,
            None => None,
        };
        if let (Some(max), None) = (self.max_rows_per_run, &batch_axes) {
            return Err(Error::InvalidConfig(format!(
                "max_rows_per_run({max}) needs one symbolic batch axis in every input and \
                 output of {}; inputs: {}",
                self.source.label(),
                input_specs(typed)
                    .unwrap_or_default()
                    .iter()
                    .map(|i| format!("{} [{i}]", i.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok((batch_symbol, batch_axes))
    }

    /// The symbolic plan, and the decluttered model kept to specialise plans from when there
    /// is a batch symbol and specialisation is on.
    fn compile(
        &self,
        typed: TypedModel,
        has_batch_symbol: bool,
    ) -> Result<(Plan, Option<TypedModel>)> {
        let specializable = (has_batch_symbol && self.specialize_up_to > 0).then(|| typed.clone());
        let plan = compile_plan(typed, self.optimize).map_err(|e| self.fail(format!("{e:#}")))?;
        Ok((plan, specializable))
    }
}

/// A runnable plan of `model`, optimised first when `optimize` is set.
fn compile_plan(model: TypedModel, optimize: bool) -> TractResult<Plan> {
    if optimize {
        model.into_optimized()?.into_runnable()
    } else {
        model.into_runnable()
    }
}

/// The batch axis' symbol: axis 0 of the first input when symbolic, else the model's only
/// symbol (`None` with no symbol or several). `inputs` holds each input's axis symbols.
fn batch_symbol(inputs: &[Vec<Option<Symbol>>]) -> Option<Symbol> {
    let mut symbols: Vec<Symbol> = inputs.iter().flatten().flatten().cloned().collect();
    symbols.sort();
    symbols.dedup();
    inputs
        .first()
        .and_then(|axes| axes.first().cloned().flatten())
        .or_else(|| match symbols.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        })
}

fn parse_shape(text: &str, scope: &SymbolScope) -> std::result::Result<Vec<TDim>, String> {
    let parts: Vec<&str> = text
        .split([',', 'x'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if parts.is_empty() {
        return Err(format!("cannot parse shape {text:?}: no axes"));
    }
    parts
        .iter()
        .map(|p| match p.parse::<i64>() {
            Ok(n) if n >= 0 => Ok(TDim::from(n)),
            // Checked, not cast: `usize::MAX as i64` is -1, a negative axis tract asserts on.
            _ if p.chars().all(|c| c.is_ascii_digit()) => Err(format!(
                "cannot parse shape {text:?}: axis {p} is too large (at most {})",
                i64::MAX
            )),
            _ if p.chars().all(|c| c.is_ascii_alphabetic() || c == '_') => {
                Ok(TDim::Sym(scope.sym(p)))
            }
            _ => Err(format!(
                "cannot parse shape {text:?}: axis {p:?} is neither a number nor a name"
            )),
        })
        .collect()
}

/// The axis that is exactly `sym` in every input and every output, or `None` when some input
/// or output has no such axis or several.
fn batch_axes(model: &TypedModel, sym: &Symbol) -> TractResult<Option<BatchAxes>> {
    let axis_of = |outlets: &[OutletId]| -> TractResult<Option<Vec<usize>>> {
        let mut axes = Vec::with_capacity(outlets.len());
        for o in outlets {
            let fact = model.outlet_fact(*o)?;
            let hits: Vec<usize> = fact
                .shape
                .iter()
                .enumerate()
                .filter(|(_, d)| **d == TDim::Sym(sym.clone()))
                .map(|(i, _)| i)
                .collect();
            match hits.as_slice() {
                [axis] => axes.push(*axis),
                _ => return Ok(None),
            }
        }
        Ok(Some(axes))
    };
    Ok(
        match (
            axis_of(model.input_outlets()?)?,
            axis_of(model.output_outlets()?)?,
        ) {
            (Some(inputs), Some(outputs)) => Some(BatchAxes { inputs, outputs }),
            _ => None,
        },
    )
}

/// Each input's axes: the symbol of each symbolic axis, `None` for the others.
fn input_symbols(model: &TypedModel) -> TractResult<Vec<Vec<Option<Symbol>>>> {
    model
        .input_outlets()?
        .iter()
        .map(|o| {
            let fact = model.outlet_fact(*o)?;
            Ok(fact
                .shape
                .iter()
                .map(|d| match d {
                    TDim::Sym(sym) => Some(sym.clone()),
                    _ => None,
                })
                .collect())
        })
        .collect()
}

/// Each input of the typed model: name, element type, and per axis its size or symbol.
fn input_specs(model: &TypedModel) -> TractResult<Vec<InputSpec>> {
    model
        .input_outlets()?
        .iter()
        .zip(input_symbols(model)?)
        .map(|(o, symbols)| {
            let fact = model.outlet_fact(*o)?;
            let element_type = element_type(fact.datum_type);
            Ok(InputSpec {
                name: model.node(o.node).name.clone(),
                element_type,
                type_name: element_type.map_or_else(
                    || format!("{:?}", fact.datum_type).to_lowercase(),
                    |t| t.to_string(),
                ),
                shape: fact
                    .shape
                    .iter()
                    .map(|d| d.as_i64().and_then(|n| usize::try_from(n).ok()))
                    .collect(),
                symbols: symbols
                    .iter()
                    .map(|s| s.as_ref().map_or_else(String::new, Symbol::to_string))
                    .collect(),
            })
        })
        .collect()
}

// ===== conversions between backend::Tensor and tract =====

/// The [`ElementType`] of a tract datum type, if the neutral tensor holds it.
fn element_type(dt: DatumType) -> Option<ElementType> {
    Some(match dt {
        DatumType::F32 => ElementType::F32,
        DatumType::F64 => ElementType::F64,
        DatumType::I64 => ElementType::I64,
        DatumType::I32 => ElementType::I32,
        DatumType::U8 => ElementType::U8,
        DatumType::Bool => ElementType::Bool,
        _ => return None,
    })
}

/// tract's datum type for an [`ElementType`].
fn datum_type(t: ElementType) -> DatumType {
    match t {
        ElementType::F32 => DatumType::F32,
        ElementType::F64 => DatumType::F64,
        ElementType::I64 => DatumType::I64,
        ElementType::I32 => DatumType::I32,
        ElementType::U8 => DatumType::U8,
        ElementType::Bool => DatumType::Bool,
    }
}

/// A tract value holding the tensor's data: the buffer itself when the tensor holds the only
/// handle to it, a copy when the buffer is shared (e.g. a part of a split batch).
fn to_tract(t: Tensor) -> TValue {
    let tensor: tract_onnx::prelude::Tensor = match t {
        Tensor::F32(a) => a.into_owned().into(),
        Tensor::F64(a) => a.into_owned().into(),
        Tensor::I64(a) => a.into_owned().into(),
        Tensor::I32(a) => a.into_owned().into(),
        Tensor::U8(a) => a.into_owned().into(),
        Tensor::Bool(a) => a.into_owned().into(),
    };
    TValue::from(tensor)
}

/// The neutral tensor of a tract output (its buffer, not a copy).
fn from_tract(t: tract_onnx::prelude::Tensor, output: &str) -> Result<Tensor> {
    let dt = t.datum_type();
    let converted = match element_type(dt) {
        Some(ElementType::F32) => t.into_plain_array::<f32>().map(Tensor::from),
        Some(ElementType::F64) => t.into_plain_array::<f64>().map(Tensor::from),
        Some(ElementType::I64) => t.into_plain_array::<i64>().map(Tensor::from),
        Some(ElementType::I32) => t.into_plain_array::<i32>().map(Tensor::from),
        Some(ElementType::U8) => t.into_plain_array::<u8>().map(Tensor::from),
        Some(ElementType::Bool) => t.into_plain_array::<bool>().map(Tensor::from),
        None => {
            let message = format!(
                "output {output:?} has element type {dt:?}, which backend::Tensor does not hold"
            );
            return Err(Error::Module(message.into()));
        }
    };
    converted.map_err(Error::from)
}

// ===== impl From<TractError> for Error =====

impl From<TractError> for Error {
    fn from(e: TractError) -> Error {
        Error::Module(format!("{e:#}").into())
    }
}

#[cfg(test)]
mod fuzz_regressions {
    use super::*;

    /// Found by fuzz target `model_tract` (fuzz/corpus/model_tract/crash-cdc3ee2b...): a
    /// mutated graph whose node reads a value no node produces made tract-onnx panic ("no
    /// entry found for key") out of `OnnxModel::build`; it is now `Error::ModelLoad`.
    #[test]
    fn a_panic_inside_tract_is_a_model_load_error() {
        let bytes = include_bytes!(
            "../../fuzz/corpus/model_tract/crash-cdc3ee2bccadbdc92235e9c524852cfb9296da1c"
        );
        match OnnxModel::builder_from_bytes(bytes.as_slice()).build() {
            Err(Error::ModelLoad { model, message }) => {
                assert_eq!(model, "<bytes>");
                assert!(message.contains("tract panicked"), "{message}");
            }
            other => panic!("expected Error::ModelLoad, got {other:?}"),
        }
    }
}
