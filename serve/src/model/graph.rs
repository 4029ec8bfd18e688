//! What the service reads from an ONNX file's graph without building the model: the names of
//! its inputs (which of `input_ids`, `attention_mask`, `token_type_ids` to feed) and its
//! initialisers (the position-embedding table, for the longest input).

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
