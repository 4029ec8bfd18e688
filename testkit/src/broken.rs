//! A deliberately broken int8 file for the accuracy gate's negative tests, made in Rust as
//! `scripts/quantize.sh --broken` makes it in Python: the dynamically quantized
//! all-MiniLM-L6-v2 (`onnx/model_qint8_avx512_vnni.onnx`) with one per-channel weight scale
//! multiplied by a factor, the scale of layer 0's attention output projection (the fourth
//! `MatMulInteger` with a constant weight, after the query, key and value projections). It
//! loads and runs like the good file; ×8 makes its embeddings' cosine with FP32's about 0.5.

use std::io;
use std::path::Path;

use prost::Message;
use tract_onnx::pb::{ModelProto, StringStringEntryProto};

/// Writes `out`: the quantized ONNX file `quantized` with the weight scale of its fourth
/// constant-weight `MatMulInteger` (layer 0's attention output projection in a BERT graph)
/// multiplied by `factor`. Returns the scale's initializer name (`val_105_scale` in the
/// fetched file).
pub fn scale_one_weight(quantized: &Path, out: &Path, factor: f32) -> io::Result<String> {
    let bytes = std::fs::read(quantized)?;
    let mut model = ModelProto::decode(bytes.as_slice()).map_err(io::Error::other)?;
    let graph = model
        .graph
        .as_mut()
        .ok_or_else(|| io::Error::other("the ONNX file has no graph"))?;
    let weight = graph
        .node
        .iter()
        .filter(|n| n.op_type == "MatMulInteger")
        .filter_map(|n| n.input.get(1))
        .filter(|b| graph.initializer.iter().any(|t| &t.name == *b))
        .nth(3)
        .cloned()
        .ok_or_else(|| io::Error::other("fewer than four MatMulInteger with a constant weight"))?;
    let scale = format!(
        "{}_scale",
        weight.strip_suffix("_quantized").unwrap_or(&weight)
    );
    let tensor = graph
        .initializer
        .iter_mut()
        .find(|t| t.name == scale)
        .ok_or_else(|| io::Error::other(format!("no initializer {scale}")))?;
    if !tensor.float_data.is_empty() {
        tensor.float_data.iter_mut().for_each(|x| *x *= factor);
    } else {
        let scaled: Vec<u8> = tensor
            .raw_data
            .chunks_exact(4)
            .flat_map(|b| (f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * factor).to_le_bytes())
            .collect();
        tensor.raw_data = scaled;
    }
    model.metadata_props.push(StringStringEntryProto {
        key: "corestream.broken".to_owned(),
        value: format!("{scale} x{factor} (corestream-testkit, for the accuracy gate's tests)"),
    });
    std::fs::write(out, model.encode_to_vec())?;
    Ok(scale)
}
