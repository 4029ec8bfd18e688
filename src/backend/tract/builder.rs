//! [`OnnxModelBuilder`]: where the model comes from (a file or bytes), its input shapes,
//! optimisation and plan specialisation, checked; `build` loads, types and compiles it.

use std::collections::HashMap;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use tract_onnx::prelude::*;

use super::convert::datum_type;
use super::graph::{
    batch_axes, batch_symbol, compile_plan, input_specs, input_symbols, parse_shape,
};
use super::{BatchAxes, OnnxModel, Plan, DEFAULT_SPECIALIZE_UP_TO};
use crate::backend::{ElementType, InputSpec};
use crate::error::{Error, Result};
use crate::stream::panic_message;

/// Where a builder reads its model from.
#[derive(Clone)]
pub(super) enum Source {
    /// An ONNX file.
    Path(PathBuf),
    /// An ONNX protobuf in memory (shared with the model's NUMA copies, which read it again).
    Bytes(Arc<[u8]>),
}

/// Configures an [`OnnxModel`]; see [`OnnxModel::builder`].
#[derive(Clone)]
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
    pub(super) fn new(source: Source) -> OnnxModelBuilder {
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
            recipe: self.clone(),
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
            Source::Bytes(b) => tract_onnx::onnx().model_for_read(&mut &b[..]),
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
