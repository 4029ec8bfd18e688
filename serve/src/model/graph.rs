//! What the service reads from an ONNX file's graph without building the model: the names of
//! its inputs (which of `input_ids`, `attention_mask`, `token_type_ids` to feed), its outputs'
//! shapes (a classifier's `(batch, labels)`) and its initialisers (the position-embedding
//! table, for the longest input).

use std::path::Path;

use tract_onnx::pb::GraphProto;
use tract_onnx::prelude::Framework;

/// The graph of the ONNX file `path`.
pub fn read(path: &Path) -> Result<GraphProto, String> {
    let proto = tract_onnx::onnx()
        .proto_model_for_path(path)
        .map_err(|e| format!("cannot read the ONNX file: {e}"))?;
    proto
        .graph
        .ok_or_else(|| "the ONNX file has no graph".to_owned())
}

/// The names of the graph's inputs, in order, without the initialisers some exporters also
/// list as inputs.
pub fn input_names(graph: &GraphProto) -> Vec<String> {
    graph
        .input
        .iter()
        .map(|i| i.name.clone())
        .filter(|name| !graph.initializer.iter().any(|t| &t.name == name))
        .collect()
}

/// The graph's outputs with their shapes: each dimension's size, `None` when symbolic (the
/// batch, the sequence) or not given.
pub fn output_shapes(graph: &GraphProto) -> Vec<(String, Vec<Option<usize>>)> {
    use tract_onnx::pb::tensor_shape_proto::dimension::Value;
    use tract_onnx::pb::type_proto::Value as Type;
    graph
        .output
        .iter()
        .map(|o| {
            let dims = o
                .r#type
                .as_ref()
                .and_then(|t| match &t.value {
                    Some(Type::TensorType(tensor)) => tensor.shape.as_ref(),
                    _ => None,
                })
                .map(|shape| {
                    shape
                        .dim
                        .iter()
                        .map(|d| match d.value {
                            Some(Value::DimValue(v)) => usize::try_from(v).ok(),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            (o.name.clone(), dims)
        })
        .collect()
}

/// Outputs as `name (a, b, ?)`, for error messages.
pub fn describe(outputs: &[(String, Vec<Option<usize>>)]) -> String {
    outputs
        .iter()
        .map(|(name, dims)| {
            let dims: Vec<String> = dims
                .iter()
                .map(|d| d.map_or_else(|| "?".to_owned(), |d| d.to_string()))
                .collect();
            format!("{name} ({})", dims.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Operators that compute in integers (int8 compute), as ONNX Runtime's quantizers write them.
pub const INTEGER_OPS: [&str; 11] = [
    "MatMulInteger",
    "ConvInteger",
    "DynamicQuantizeLinear",
    "QLinearMatMul",
    "QLinearConv",
    "QGemm",
    "QAttention",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
    "MatMulNBits",
    "QuantizeLinear",
];

/// How a graph is quantized ([`Quantization::of`]): its integer operators and its 8-bit (and
/// 4-bit) initialisers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quantization {
    /// Each integer operator of [`INTEGER_OPS`] the graph has, with its count, most first.
    pub integer_ops: Vec<(String, usize)>,
    /// `DequantizeLinear` nodes (integer weights made float in the graph).
    pub dequantize: usize,
    /// Initialisers of type int8 (or int4).
    pub signed: usize,
    /// Initialisers of type uint8 (or uint4).
    pub unsigned: usize,
}

impl Quantization {
    /// How `graph` is quantized; `None` when it has no integer operator and no 8-bit or 4-bit
    /// initialiser (an FP32 or FP16 model).
    pub fn of(graph: &GraphProto) -> Option<Quantization> {
        use tract_onnx::pb::tensor_proto::DataType;
        let mut q = Quantization::default();
        for tensor in &graph.initializer {
            match DataType::try_from(tensor.data_type) {
                Ok(DataType::Int8 | DataType::Int4) => q.signed += 1,
                Ok(DataType::Uint8 | DataType::Uint4) => q.unsigned += 1,
                _ => {}
            }
        }
        for node in &graph.node {
            if node.op_type == "DequantizeLinear" {
                q.dequantize += 1;
            } else if INTEGER_OPS.contains(&node.op_type.as_str()) {
                match q.integer_ops.iter_mut().find(|(op, _)| *op == node.op_type) {
                    Some((_, n)) => *n += 1,
                    None => q.integer_ops.push((node.op_type.clone(), 1)),
                }
            }
        }
        q.integer_ops
            .sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        (q != Quantization::default()).then_some(q)
    }

    /// Whether it computes in integers (rather than storing integer weights made float in the
    /// graph, which computes in FP32).
    pub fn integer_compute(&self) -> bool {
        !self.integer_ops.is_empty()
    }
}

/// `int8 compute (48 MatMulInteger, 48 DynamicQuantizeLinear), 36 s8 + 3 u8 tensors`, or
/// `int8 storage, FP32 compute (38 s8 tensors)`.
impl std::fmt::Display for Quantization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.integer_compute() {
            let ops: Vec<String> = self
                .integer_ops
                .iter()
                .map(|(op, n)| format!("{n} {op}"))
                .collect();
            write!(f, "int8 compute ({})", ops.join(", "))?;
        } else {
            f.write_str("int8 storage, FP32 compute")?;
        }
        let tensors = match (self.signed, self.unsigned) {
            (0, 0) => return Ok(()),
            (s, 0) => format!("{s} s8"),
            (0, u) => format!("{u} u8"),
            (s, u) => format!("{s} s8 + {u} u8"),
        };
        if self.integer_compute() {
            write!(f, ", {tensors} tensors")
        } else {
            write!(f, " ({tensors} tensors)")
        }
    }
}
