//! The model a command runs ([`ModelSource`]: a file or the bundled ExampleNet1, its `--input`
//! shapes, the backend options), the one place that builds it on either backend
//! ([`ModelSource::load`]), its ONNX graph for the FLOP count ([`ModelSource::graph`]), and the
//! deterministic inputs a trial feeds it ([`make_inputs`]).

use std::path::PathBuf;
use std::sync::Arc;

use corestream::backend::ort::OrtModel;
use corestream::backend::tract::{OnnxModel, OnnxModelBuilder};
use corestream::backend::{Backend, ElementType, InputSpec, Tensor};
use corestream::bundled::EXAMPLENET1;
use corestream::Module;
use corestream_serve::model::quantized::{self, CpuFeatures, QuantizedMode};
use corestream_serve::model::source;

use crate::args::{InputShape, RunArgs};
use crate::flops::OnnxGraph;
use crate::Fail;

/// A model on either backend: both take and return `Vec<Tensor>`.
pub type SharedModel = Arc<dyn Module<Input = Vec<Tensor>, Output = Vec<Tensor>>>;

/// A built model and what its inputs take.
pub struct Loaded {
    pub model: SharedModel,
    pub inputs: Vec<InputSpec>,
}

/// The model a command runs: a file (or the bundled ExampleNet1), its `--input` shapes and
/// the backend options.
#[derive(Debug, Clone)]
pub struct ModelSource {
    /// `None`: the bundled ExampleNet1.
    path: Option<PathBuf>,
    pub inputs: Vec<InputShape>,
    /// `--ort-spin`; `None`: the backend's default.
    pub ort_spin: Option<bool>,
}

impl ModelSource {
    pub fn new(path: Option<PathBuf>, run: &RunArgs) -> ModelSource {
        ModelSource {
            path,
            inputs: run.inputs.clone(),
            ort_spin: run.ort_spin,
        }
    }

    /// For a model directory, the source of the ONNX file `corestream serve` would serve on
    /// `backend` (the quantized file the CPU suits on ONNX Runtime, else the FP32 one) and the
    /// reason; a file (or the bundled model) is kept as is.
    pub fn resolve(self, backend: Backend) -> Result<(ModelSource, Option<String>), Fail> {
        let Some(dir) = self.path.as_deref().filter(|p| p.is_dir()) else {
            return Ok((self, None));
        };
        let fp32 = source::fp32_file(dir).ok_or_else(|| {
            Fail(format!(
                "{}: a model directory needs onnx/model.onnx or model.onnx (it has: {})",
                dir.display(),
                source::onnx_files(dir).join(", ")
            ))
        })?;
        let choice = quantized::choose(
            &source::onnx_files(dir),
            &fp32,
            &CpuFeatures::detect(),
            QuantizedMode::Auto,
            backend,
        );
        let path = Some(dir.join(&choice.file));
        Ok((ModelSource { path, ..self }, Some(choice.reason)))
    }

    /// The model's name in reports and in the builder code `tune` prints.
    pub fn label(&self) -> String {
        self.path
            .as_deref()
            .map_or("bundled ExampleNet1".into(), |p| p.display().to_string())
    }

    /// The model's ONNX graph, for its FLOP count.
    pub fn graph(&self) -> Result<OnnxGraph, String> {
        match &self.path {
            Some(p) => OnnxGraph::read(p),
            None => OnnxGraph::from_bytes(EXAMPLENET1),
        }
    }

    fn tract_builder(&self) -> OnnxModelBuilder {
        match &self.path {
            Some(p) => OnnxModel::builder(p),
            None => OnnxModel::builder_from_bytes(EXAMPLENET1),
        }
    }

    fn ort_model(&self) -> Result<OrtModel, Fail> {
        let mut builder = match &self.path {
            Some(p) => OrtModel::builder(p),
            None => OrtModel::builder_from_bytes(EXAMPLENET1),
        };
        if let Some(spin) = self.ort_spin {
            builder = builder.spin(spin);
        }
        Ok(builder.build()?)
    }

    /// The index of the model input `shape` names.
    fn input_index(specs: &[InputSpec], shape: &InputShape) -> Result<usize, Fail> {
        specs
            .iter()
            .position(|s| s.name == shape.name)
            .ok_or_else(|| {
                Fail(format!(
                    "--input {:?}: the model has no input {:?}; its inputs: {}",
                    shape.spec,
                    shape.name,
                    specs
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }

    /// Builds the model on `backend` with the `--input` shapes applied (tract: also running at
    /// most `rows_per_run` rows at a time). The one function that builds models.
    pub fn load(&self, backend: Backend, rows_per_run: Option<usize>) -> Result<Loaded, Fail> {
        // The same message whichever backend would have read the file.
        if let Some(path) = self.path.as_deref().filter(|p| !p.exists()) {
            return Err(Fail(format!(
                "cannot load model {}: no such file",
                path.display()
            )));
        }
        match backend {
            Backend::Tract => self.load_tract(rows_per_run),
            Backend::Ort => {
                if rows_per_run.is_some() {
                    return Err(Fail(
                        "--max-rows-per-run is a tract option; ONNX Runtime runs whole parts"
                            .into(),
                    ));
                }
                let model = self.ort_model()?;
                let inputs = model.inputs().to_vec();
                // ONNX Runtime keeps the declared shapes: --input only shapes the data, so
                // it must name an input and match its rank.
                for shape in &self.inputs {
                    let spec = &inputs[Self::input_index(&inputs, shape)?];
                    if spec.shape.len() != shape.row_axes.len() + 1 {
                        return Err(Fail(format!(
                            "--input {:?}: the model's input {:?} has {} axes ({spec})",
                            shape.spec,
                            shape.name,
                            spec.shape.len()
                        )));
                    }
                }
                Ok(Loaded {
                    model: Arc::new(model),
                    inputs,
                })
            }
        }
    }

    fn load_tract(&self, rows_per_run: Option<usize>) -> Result<Loaded, Fail> {
        // The model as declared, to find the inputs by name and keep their element types.
        let plain = self.tract_builder().build()?;
        let mut builder = self.tract_builder();
        for shape in &self.inputs {
            let index = Self::input_index(plain.inputs(), shape)?;
            let spec = &plain.inputs()[index];
            let element_type = spec.element_type.ok_or_else(|| {
                Fail(format!(
                    "--input {:?}: input {:?} has element type {}, which corestream tensors do not hold",
                    shape.spec, shape.name, spec.type_name
                ))
            })?;
            builder = builder.input(index, element_type, &shape.symbolic());
        }
        if let Some(rows) = rows_per_run {
            builder = builder.max_rows_per_run(rows);
        }
        let model = builder.build()?;
        Ok(Loaded {
            inputs: model.inputs().to_vec(),
            model: Arc::new(model),
        })
    }
}

/// Deterministic values for `n` elements of type `T`.
fn pattern<T>(n: usize, fixed: Option<usize>, f: impl Fn(usize) -> T) -> Vec<T> {
    (0..n)
        .map(|i| f(fixed.unwrap_or((i * 7919) % 1000)))
        .collect()
}

/// The input shapes for a batch of `b` rows, in the model's input order: an input named by
/// `--input` gets that shape with `b` rows; any other gets its declared shape with its one
/// symbolic axis set to `b`.
pub fn input_shapes(
    specs: &[InputSpec],
    shapes: &[InputShape],
    b: usize,
) -> Result<Vec<Vec<usize>>, Fail> {
    specs
        .iter()
        .map(|spec| match shapes.iter().find(|s| s.name == spec.name) {
            Some(given) => Ok(std::iter::once(b).chain(given.row_axes.iter().copied()).collect()),
            None => {
                if spec.shape.iter().filter(|d| d.is_none()).count() > 1 {
                    return Err(Fail(format!(
                        "input {:?} ({spec}) has symbolic axes besides the batch; give its shape with --input {}=1x...",
                        spec.name, spec.name
                    )));
                }
                Ok(spec.shape.iter().map(|d| d.unwrap_or(b)).collect())
            }
        })
        .collect()
}

/// What a transformer's conventional integer inputs must hold whatever the pattern: segment
/// ids 0 (a BERT's `token_type_ids` index a table of 2 rows; ONNX Runtime refuses others) and
/// a mask of ones (every token attended, as a real request of that length).
fn fixed_value(name: &str) -> Option<usize> {
    match name {
        "token_type_ids" => Some(0),
        "attention_mask" => Some(1),
        _ => None,
    }
}

/// Deterministic inputs for a batch of `b` rows, shaped by [`input_shapes`]: a fixed pattern
/// of values below 1000 (in range for a text model's vocabulary), except the inputs
/// [`fixed_value`] names.
pub fn make_inputs(
    specs: &[InputSpec],
    shapes: &[InputShape],
    b: usize,
) -> Result<Vec<Tensor>, Fail> {
    specs
        .iter()
        .zip(input_shapes(specs, shapes, b)?)
        .map(|(spec, shape)| {
            let n: usize = shape.iter().product();
            let fixed = fixed_value(&spec.name);
            // A fixed value is the value itself; the pattern's floats are thousandths.
            let scale: f32 = if fixed.is_some() { 1.0 } else { 1000.0 };
            let t = match spec.element_type {
                Some(ElementType::F32) => Tensor::from_shape_vec(&shape, pattern(n, fixed, |v| v as f32 / scale)),
                Some(ElementType::F64) => Tensor::from_shape_vec(&shape, pattern(n, fixed, |v| v as f64 / f64::from(scale))),
                Some(ElementType::I64) => Tensor::from_shape_vec(&shape, pattern(n, fixed, |v| v as i64)),
                Some(ElementType::I32) => Tensor::from_shape_vec(&shape, pattern(n, fixed, |v| v as i32)),
                Some(ElementType::U8) => Tensor::from_shape_vec(&shape, pattern(n, fixed, |v| (v % 256) as u8)),
                Some(ElementType::Bool) => Tensor::from_shape_vec(&shape, pattern(n, fixed, |v| if fixed.is_some() { v != 0 } else { v % 2 == 0 })),
                _ => return Err(Fail(format!(
                    "input {:?}: element type {} is not supported by bench (f32, f64, i64, i32, u8, bool)",
                    spec.name, spec.type_name
                ))),
            };
            Ok(t?)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transformer_s_segment_ids_are_zero_and_its_mask_ones() {
        let spec = |name: &str, t| InputSpec::new(name, t, &[None, Some(4)], &["batch", ""]);
        let specs = [
            spec("input_ids", ElementType::I64),
            spec("attention_mask", ElementType::I64),
            spec("token_type_ids", ElementType::I64),
            spec("attention_mask", ElementType::F32),
        ];
        let inputs = make_inputs(&specs, &[], 3).unwrap();
        let ids = inputs[0].view::<i64>().unwrap();
        assert!(ids.iter().all(|&v| (0..1000).contains(&v)));
        assert!(ids.iter().any(|&v| v > 1), "a varied pattern");
        assert!(inputs[1].view::<i64>().unwrap().iter().all(|&v| v == 1));
        assert!(inputs[2].view::<i64>().unwrap().iter().all(|&v| v == 0));
        assert!(inputs[3].view::<f32>().unwrap().iter().all(|&v| v == 1.0));
        assert_eq!(inputs[2].shape(), [3, 4]);
    }
}
