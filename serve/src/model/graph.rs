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
