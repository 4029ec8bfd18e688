//! Small cross-encoder and classifier models for the scoring routes' tests, made from the
//! fetched MiniLM-L3 (no package registry has such an ONNX file): the embedding graph with a
//! scoring head on its `[CLS]` token vector, `logits = hidden[:, 0, :] . W + b + n1 . T` (random
//! `W`, `b`, `T`, fixed seed), where `n1` counts the tokens of type 1 (the fetched MiniLM takes
//! no `token_type_ids`; the head does, so the tests see the second segment's extent), in a
//! Hugging Face directory whose `config.json` says
//! `BertForSequenceClassification` with its labels. [`Head::reference`] computes the same
//! scores by hand from the unmodified MiniLM, to check the service against.

use std::io;
use std::path::Path;

use corestream::backend::{Backend, Tensor};
use corestream::Module;
use prost::Message;
use tract_onnx::pb::{
    tensor_proto::DataType, tensor_shape_proto::dimension::Value as Dim, type_proto,
    AttributeProto, ModelProto, NodeProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};

/// A scoring head of `labels` outputs on MiniLM's 384-wide `[CLS]` vector.
pub struct Head {
    /// Row-major (384, labels).
    pub w: Vec<f32>,
    /// (labels).
    pub b: Vec<f32>,
    /// (labels): added once per token of type 1.
    pub t: Vec<f32>,
    /// How many scores.
    pub labels: usize,
}

const HIDDEN: usize = 384;

/// The fetched MiniLM's ONNX file, in `models/`.
const MINILM: &str = "paraphrase-MiniLM-L3-v2.onnx";

/// The classifier's labels, in output order.
pub const LABELS: [&str; 3] = ["negative", "neutral", "positive"];

/// A cross-encoder's `config.json`: one label.
pub fn reranker_config() -> serde_json::Value {
    serde_json::json!({"architectures": ["BertForSequenceClassification"], "id2label": {"0": "LABEL_0"}})
}

/// A classifier's `config.json` with [`LABELS`], multi-label (sigmoid per label) or not
/// (softmax).
pub fn classifier_config(multi_label: bool) -> serde_json::Value {
    let mut config = serde_json::json!({
        "architectures": ["BertForSequenceClassification"],
        "id2label": {"0": LABELS[0], "1": LABELS[1], "2": LABELS[2]},
    });
    if multi_label {
        config["problem_type"] = "multi_label_classification".into();
    }
    config
}

impl Head {
    /// Random weights from `seed` (xorshift), scaled so that scores spread over a few units.
    pub fn random(labels: usize, seed: u64) -> Head {
        let mut state = seed.max(1);
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        Head {
            w: (0..HIDDEN * labels).map(|_| next() * 0.5).collect(),
            b: (0..labels).map(|_| next()).collect(),
            t: (0..labels).map(|_| next() * 0.2).collect(),
            labels,
        }
    }

    /// Writes the model directory `out` (`onnx/model.onnx`, `tokenizer.json`, `config.json`)
    /// from MiniLM in `minilm` (the fetched `models/` folder); `config` is the `config.json`
    /// (see [`reranker_config`], [`classifier_config`]).
    pub fn write(&self, minilm: &Path, out: &Path, config: &serde_json::Value) -> io::Result<()> {
        let bytes = std::fs::read(minilm.join(MINILM))?;
        let mut model = ModelProto::decode(bytes.as_slice()).map_err(io::Error::other)?;
        let graph = model
            .graph
            .as_mut()
            .ok_or_else(|| io::Error::other("MiniLM's ONNX file has no graph"))?;
        // The (batch, tokens, hidden) output.
        let rank = |o: &ValueInfoProto| match o.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(type_proto::Value::TensorType(t)) => t.shape.as_ref().map_or(0, |s| s.dim.len()),
            _ => 0,
        };
        let hidden = graph
            .output
            .iter()
            .find(|o| rank(o) == 3)
            .map(|o| o.name.clone())
            .ok_or_else(|| io::Error::other("MiniLM has no (batch, tokens, hidden) output"))?;
        let tensor = |name: &str, dims: Vec<i64>, data_type: DataType| TensorProto {
            name: name.to_owned(),
            dims,
            data_type: data_type as i32,
            ..Default::default()
        };
        graph.initializer.push(TensorProto {
            int64_data: vec![0],
            ..tensor("head_cls_index", vec![], DataType::Int64)
        });
        graph.initializer.push(TensorProto {
            float_data: self.w.clone(),
            ..tensor(
                "head_w",
                vec![HIDDEN as i64, self.labels as i64],
                DataType::Float,
            )
        });
        graph.initializer.push(TensorProto {
            float_data: self.b.clone(),
            ..tensor("head_b", vec![self.labels as i64], DataType::Float)
        });
        let node =
            |op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>| NodeProto {
                op_type: op.to_owned(),
                name: format!("head_{output}"),
                input: inputs.iter().map(|s| (*s).to_owned()).collect(),
                output: vec![output.to_owned()],
                attribute,
                ..Default::default()
            };
        let axis = AttributeProto {
            name: "axis".to_owned(),
            i: 1,
            r#type: tract_onnx::pb::attribute_proto::AttributeType::Int as i32,
            ..Default::default()
        };
        graph.node.push(node(
            "Gather",
            &[&hidden, "head_cls_index"],
            "head_cls",
            vec![axis],
        ));
        graph
            .node
            .push(node("MatMul", &["head_cls", "head_w"], "head_mm", vec![]));
        graph.node.push(node(
            "Add",
            &["head_mm", "head_b"],
            "head_cls_logits",
            vec![],
        ));
        // The token types: a graph input, cast, summed over the tokens, times T.
        let int = |name: &str, i: i64| AttributeProto {
            name: name.to_owned(),
            i,
            r#type: tract_onnx::pb::attribute_proto::AttributeType::Int as i32,
            ..Default::default()
        };
        let ints = |name: &str, ints: Vec<i64>| AttributeProto {
            name: name.to_owned(),
            ints,
            r#type: tract_onnx::pb::attribute_proto::AttributeType::Ints as i32,
            ..Default::default()
        };
        let opset = model
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty())
            .map_or(13, |o| o.version);
        let graph = model.graph.as_mut().expect("checked above");
        let mut types = graph.input[0].clone();
        types.name = "token_type_ids".to_owned();
        graph.input.push(types);
        graph.node.push(node(
            "Cast",
            &["token_type_ids"],
            "head_types",
            vec![int("to", DataType::Float as i64)],
        ));
        if opset >= 13 {
            graph.initializer.push(TensorProto {
                int64_data: vec![1],
                ..tensor("head_axes", vec![1], DataType::Int64)
            });
            graph.node.push(node(
                "ReduceSum",
                &["head_types", "head_axes"],
                "head_n1",
                vec![int("keepdims", 1)],
            ));
        } else {
            graph.node.push(node(
                "ReduceSum",
                &["head_types"],
                "head_n1",
                vec![int("keepdims", 1), ints("axes", vec![1])],
            ));
        }
        graph.initializer.push(TensorProto {
            float_data: self.t.clone(),
            ..tensor("head_t", vec![1, self.labels as i64], DataType::Float)
        });
        graph.node.push(node(
            "MatMul",
            &["head_n1", "head_t"],
            "head_types_logits",
            vec![],
        ));
        graph.node.push(node(
            "Add",
            &["head_cls_logits", "head_types_logits"],
            "logits",
            vec![],
        ));
        let dim = |value: Dim| tract_onnx::pb::tensor_shape_proto::Dimension {
            value: Some(value),
            ..Default::default()
        };
        graph.output = vec![ValueInfoProto {
            name: "logits".to_owned(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: DataType::Float as i32,
                    shape: Some(TensorShapeProto {
                        dim: vec![
                            dim(Dim::DimParam("batch".to_owned())),
                            dim(Dim::DimValue(self.labels as i64)),
                        ],
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }];
        std::fs::create_dir_all(out.join("onnx"))?;
        std::fs::write(out.join("onnx/model.onnx"), model.encode_to_vec())?;
        std::fs::copy(minilm.join("tokenizer.json"), out.join("tokenizer.json"))?;
        std::fs::write(out.join("config.json"), config.to_string())
    }

    /// Computes this head's scores by hand from MiniLM in `minilm` on `backend` (see
    /// [`Reference::scores`]).
    pub fn reference(&self, minilm: &Path, backend: Backend) -> Reference<'_> {
        Reference {
            head: self,
            tokenizer: tokenizers::Tokenizer::from_file(minilm.join("tokenizer.json")).unwrap(),
            model: backend.load(&minilm.join(MINILM)).unwrap(),
        }
    }
}

/// A head's scores computed by hand.
pub struct Reference<'a> {
    head: &'a Head,
    tokenizer: tokenizers::Tokenizer,
    model: corestream::backend::OnnxModule,
}

impl Reference<'_> {
    /// The raw scores of `first` (paired with `second`, when given): the tokenizer's own
    /// (pair) encoding through the unmodified MiniLM, its `[CLS]` vector times `W` plus `b`,
    /// plus `T` per token of type 1.
    pub fn scores(&self, first: &str, second: Option<&str>) -> Vec<f32> {
        let encoding = match second {
            Some(second) => self.tokenizer.encode((first, second), true),
            None => self.tokenizer.encode(first, true),
        }
        .unwrap();
        let n = encoding.len();
        let feed = |v: &[u32]| {
            Tensor::from_shape_vec(&[1, n], v.iter().map(|&x| i64::from(x)).collect()).unwrap()
        };
        let outputs = self
            .model
            .forward(vec![
                feed(encoding.get_ids()),
                feed(encoding.get_attention_mask()),
            ])
            .unwrap();
        let n1 = encoding.get_type_ids().iter().filter(|&&t| t == 1).count() as f32;
        let hidden = outputs.iter().find(|t| t.ndim() == 3).unwrap();
        let hidden = hidden.view::<f32>().unwrap();
        let h = self.head;
        (0..h.labels)
            .map(|l| {
                h.b[l]
                    + n1 * h.t[l]
                    + (0..HIDDEN)
                        .map(|d| hidden[[0, 0, d]] * h.w[d * h.labels + l])
                        .sum::<f32>()
            })
            .collect()
    }
}
