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
use std::path::Path;
use std::sync::{Arc, RwLock};

use tract_linalg::multithread::{multithread_tract_scope, Executor};
use tract_onnx::prelude::*;

use super::spec::check_inputs;
use super::{InputSpec, Tensor};
use crate::batch::{Batch, Hint};
use crate::error::{BoxError, Result};
use crate::module::Module;

mod builder;
mod convert;
mod graph;

pub use builder::OnnxModelBuilder;
use builder::Source;
use convert::{from_tract, to_tract};
use graph::compile_plan;
pub use tract_onnx;

type Plan = Arc<TypedRunnableModel>;

/// Batch sizes up to this get a specialised plan by default (see
/// [`OnnxModelBuilder::specialize_up_to`]).
pub const DEFAULT_SPECIALIZE_UP_TO: usize = 8;

/// Most specialised plans one model keeps (each holds its own packed weights).
const MAX_SPECIALIZED: usize = 16;

/// An ONNX model compiled by tract, shared by every stream that runs it.
pub struct OnnxModel {
    /// How it was built: a NUMA copy is built again from it (see [`Module::replicate`]).
    recipe: OnnxModelBuilder,
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
    /// [`Error::ModelLoad`](crate::Error::ModelLoad) for a missing, unreadable or corrupt
    /// file, or a model tract cannot compile.
    pub fn load(path: impl AsRef<Path>) -> Result<OnnxModel> {
        OnnxModel::builder(path).build()
    }

    /// A builder to set input shapes and types, optimisation and specialisation.
    pub fn builder(path: impl AsRef<Path>) -> OnnxModelBuilder {
        OnnxModelBuilder::new(Source::Path(path.as_ref().to_path_buf()))
    }

    /// A builder for a model held in memory (e.g. `include_bytes!`).
    pub fn builder_from_bytes(bytes: impl Into<Vec<u8>>) -> OnnxModelBuilder {
        OnnxModelBuilder::new(Source::Bytes(bytes.into().into()))
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

    /// The same model loaded, typed and compiled again from its file (or bytes) with the same
    /// settings, on the calling thread: a NUMA node's copy with weights of its own (see
    /// [`numa`](crate::numa)).
    fn replicate(&self) -> Option<Result<OnnxModel, BoxError>> {
        Some(self.recipe.clone().build().map_err(BoxError::from))
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

#[cfg(test)]
mod fuzz_regressions {
    use super::*;
    use crate::error::Error;

    /// Found by fuzz target `model_tract` (fuzz/corpus/model_tract/crash-cdc3ee2b...): a
    /// mutated graph whose node reads a value no node produces made tract-onnx panic ("no
    /// entry found for key") out of `OnnxModel::build`; it is now `Error::ModelLoad`.
    #[test]
    fn a_panic_inside_tract_is_a_model_load_error() {
        let bytes = include_bytes!(
            "../../../fuzz/corpus/model_tract/crash-cdc3ee2bccadbdc92235e9c524852cfb9296da1c"
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
