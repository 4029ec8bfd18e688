//! The FLOPs of one run of an ONNX model for given input shapes: 2 x the multiply-adds of its
//! MatMul, Gemm, Conv, ConvTranspose, Einsum and fused attention nodes, with the shapes found
//! by walking the graph ([`infer`](infer::infer)). Elementwise ops, normalisations, softmax
//! and pooling are not counted (they are a few percent of these models' arithmetic and bound
//! by memory, not by FMA units). A compute node whose input shapes cannot be inferred is not
//! counted either, and [`FlopCount`] says which.
//!
//! The graph is read with the protobuf types of tract-onnx, which the library already builds
//! for its tract backend (`corestream::backend::tract::tract_onnx`): no other ONNX parser.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use corestream::backend::tract::tract_onnx;
use tract_onnx::pb::{GraphProto, NodeProto};
use tract_onnx::prelude::Framework;

mod infer;
mod shapes;

use infer::infer;
use shapes::{einsum_sizes, einsum_terms, Known, Node};

/// The ops whose multiply-adds are counted.
pub const COMPUTE_OPS: &[&str] = &[
    "MatMul",
    "FusedMatMul",
    "MatMulInteger",
    "Gemm",
    "Conv",
    "ConvInteger",
    "ConvTranspose",
    "Einsum",
    "Attention",
    "MultiHeadAttention",
];

/// What is known of a tensor nothing is known of.
static UNKNOWN: Known = Known {
    shape: None,
    data: None,
};

/// The FLOPs of one run, and what could not be counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlopCount {
    /// 2 x the multiply-adds of the counted nodes.
    pub flops: u64,
    /// FLOPs per op type.
    pub by_op: BTreeMap<String, u64>,
    /// How many compute nodes were counted.
    pub counted: usize,
    /// The compute nodes not counted (`op name`): their input shapes were not inferred.
    pub uncounted: Vec<String>,
    /// The op types whose outputs could not be inferred from known inputs (no rule here, or
    /// a value-dependent shape): what the uncounted nodes may depend on.
    pub stuck: BTreeSet<String>,
}

impl FlopCount {
    /// One line: the count and, when some nodes were not counted, how many and why.
    pub fn summary(&self, items: usize) -> String {
        let per_item = self.flops as f64 / items.max(1) as f64;
        let amount = if per_item >= 1e8 {
            format!("{:.3} GFLOP", per_item / 1e9)
        } else {
            format!("{:.3} MFLOP", per_item / 1e6)
        };
        let mut s = format!(
            "{amount} per item ({} MatMul/Gemm/Conv/attention nodes, 2 FLOPs per multiply-add)",
            self.counted
        );
        if !self.uncounted.is_empty() {
            s += &format!(
                "; {} compute nodes NOT counted (shapes unknown{}): GFLOP/s below is a lower bound",
                self.uncounted.len(),
                if self.stuck.is_empty() {
                    String::new()
                } else {
                    format!(
                        " after {}",
                        self.stuck.iter().cloned().collect::<Vec<_>>().join(", ")
                    )
                }
            );
        }
        s
    }
}

/// An ONNX model's top graph.
pub struct OnnxGraph {
    graph: GraphProto,
}

impl OnnxGraph {
    /// Reads the ONNX file `path`.
    pub fn read(path: &Path) -> Result<OnnxGraph, String> {
        let proto = tract_onnx::onnx()
            .proto_model_for_path(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        OnnxGraph::from_model(proto.graph)
    }

    /// Reads an ONNX model from its bytes.
    pub fn from_bytes(mut bytes: &[u8]) -> Result<OnnxGraph, String> {
        let proto = tract_onnx::onnx()
            .proto_model_for_read(&mut bytes)
            .map_err(|e| format!("cannot read the ONNX model: {e}"))?;
        OnnxGraph::from_model(proto.graph)
    }

    fn from_model(graph: Option<GraphProto>) -> Result<OnnxGraph, String> {
        let graph = graph.ok_or("the ONNX model has no graph")?;
        Ok(OnnxGraph { graph })
    }

    /// The FLOPs of one run with these input shapes (by input name; an input not given is
    /// unknown, and so is what depends on it).
    pub fn count(&self, inputs: &[(String, Vec<usize>)]) -> FlopCount {
        let mut env: HashMap<String, Known> = HashMap::new();
        for t in &self.graph.initializer {
            env.insert(t.name.clone(), Known::from_tensor(t));
        }
        for (name, shape) in inputs {
            env.insert(name.clone(), Known::shaped(shape.clone()));
        }
        let mut count = FlopCount::default();
        for proto in &self.graph.node {
            let node = Node {
                proto,
                inputs: proto
                    .input
                    .iter()
                    .map(|name| (!name.is_empty()).then(|| env.get(name).unwrap_or(&UNKNOWN)))
                    .collect(),
            };
            if COMPUTE_OPS.contains(&proto.op_type.as_str()) {
                match macs(&node) {
                    Some(m) => {
                        count.counted += 1;
                        count.flops += 2 * m;
                        *count.by_op.entry(proto.op_type.clone()).or_default() += 2 * m;
                    }
                    None => count.uncounted.push(describe(proto)),
                }
            }
            let inputs_known = node.inputs.iter().flatten().all(|k| k.shape.is_some());
            let outputs = infer(&node);
            if outputs.is_none() && inputs_known {
                count.stuck.insert(proto.op_type.clone());
            }
            let outputs = outputs.unwrap_or_default();
            for (i, name) in proto.output.iter().enumerate() {
                env.insert(name.clone(), outputs.get(i).cloned().unwrap_or_default());
            }
            // Compute nodes inside If/Loop/Scan bodies are not counted: say so.
            for g in proto
                .attribute
                .iter()
                .flat_map(|a| a.g.iter().chain(&a.graphs))
            {
                subgraph_compute(g, &mut count.uncounted);
            }
        }
        count
    }
}

/// `op name` of a node, for reports.
fn describe(node: &NodeProto) -> String {
    format!("{} {}", node.op_type, node.name)
}

/// Lists the compute nodes of a subgraph (and its subgraphs) as not counted.
fn subgraph_compute(graph: &GraphProto, out: &mut Vec<String>) {
    for node in &graph.node {
        if COMPUTE_OPS.contains(&node.op_type.as_str()) {
            out.push(format!("{} (in a subgraph)", describe(node)));
        }
        for g in node
            .attribute
            .iter()
            .flat_map(|a| a.g.iter().chain(&a.graphs))
        {
            subgraph_compute(g, out);
        }
    }
}

fn product(dims: &[usize]) -> u64 {
    dims.iter().map(|&d| d as u64).product()
}

/// The multiply-adds of a compute node, when its input shapes are known.
pub fn macs(n: &Node) -> Option<u64> {
    let op = n.proto.op_type.as_str();
    match op {
        "MatMul" | "FusedMatMul" | "MatMulInteger" | "Gemm" => {
            let out = infer(n)?.into_iter().next()?.shape?;
            let a = n.shape(0)?;
            let trans_a = n.int("transA") == Some(1) && a.len() >= 2;
            let k = if trans_a { a[a.len() - 2] } else { *a.last()? };
            Some(product(&out) * k as u64)
        }
        // Each output element: (C / group) x kernel multiply-adds, W being (M, C/group, k...).
        "Conv" | "ConvInteger" => {
            let out = infer(n)?.into_iter().next()?.shape?;
            Some(product(&out) * product(n.shape(1)?.get(1..)?))
        }
        // Each input element meets (M / group) x kernel weights, W being (C, M/group, k...).
        "ConvTranspose" => Some(product(n.shape(0)?) * product(n.shape(1)?.get(1..)?)),
        // A two-operand einsum: one multiply-add per point of its index space. One operand
        // (a transpose, a sum) multiplies nothing; three or more: not counted.
        "Einsum" => {
            let (ins, _) = einsum_terms(n.string("equation")?)?;
            match ins.len() {
                1 => Some(0),
                2 => {
                    let sizes = einsum_sizes(n, &ins)?;
                    Some(sizes.iter().map(|&(_, d)| d as u64).product())
                }
                _ => None,
            }
        }
        "Attention" | "MultiHeadAttention" => Some(attention(n)?.0),
        _ => None,
    }
}

/// A fused attention node's multiply-adds and output shape: `Q K^T` and `softmax(.) V` (and,
/// for com.microsoft `Attention`, its Q/K/V projection).
///
/// - com.microsoft `Attention`: input (B, S, H), weights (H, Dq + Dk + Dv) [`qkv_hidden_sizes`,
///   else thirds]: B S H (Dq+Dk+Dv) + B S S (Dq + Dv); output (B, S, Dv).
/// - com.microsoft `MultiHeadAttention`: query (B, S, D), key (B, L, D), value (B, L, Dv):
///   B S L (D + Dv); output (B, S, Dv).
/// - ONNX `Attention` (opset 23): Q (B, Hq, S, E), K (B, Hkv, L, E), V (B, Hkv, L, Ev):
///   B Hq S L (E + Ev), output (B, Hq, S, Ev); or 3-D (B, S, Hq E) with `q_num_heads` and
///   `kv_num_heads`: output (B, S, Hq Ev).
pub fn attention(n: &Node) -> Option<(u64, Vec<usize>)> {
    let q = n.shape(0)?;
    let ms = n.proto.domain == "com.microsoft";
    let mac = |dims: &[usize]| product(dims);
    match (n.proto.op_type.as_str(), ms, q.len()) {
        ("Attention", true, 3) => {
            let w = n.shape(1)?;
            let total = *w.get(1)?;
            let (dq, dv) = match n.ints("qkv_hidden_sizes") {
                Some([dq, _, dv]) => (*dq as usize, *dv as usize),
                _ => (total / 3, total / 3),
            };
            let (b, s, h) = (q[0], q[1], q[2]);
            let m = mac(&[b, s, h, total]) + mac(&[b, s, s, dq + dv]);
            Some((m, vec![b, s, dv]))
        }
        ("MultiHeadAttention", true, 3) => {
            let (k, v) = (n.shape(1)?, n.shape(2)?);
            if k.len() != 3 || v.len() != 3 {
                return None;
            }
            let (b, s, d, l, dv) = (q[0], q[1], q[2], k[1], v[2]);
            Some((mac(&[b, s, l, d + dv]), vec![b, s, dv]))
        }
        ("Attention", false, 4) => {
            let (k, v) = (n.shape(1)?, n.shape(2)?);
            let (b, hq, s, e, l, ev) = (q[0], q[1], q[2], q[3], *k.get(2)?, *v.get(3)?);
            Some((mac(&[b, hq, s, l, e + ev]), vec![b, hq, s, ev]))
        }
        ("Attention", false, 3) => {
            let (k, v) = (n.shape(1)?, n.shape(2)?);
            let hq = n.int("q_num_heads")? as usize;
            let hkv = n.int("kv_num_heads")? as usize;
            let (b, s, l) = (q[0], q[1], *k.get(1)?);
            let (e, ev) = (q[2] / hq.max(1), *v.get(2)? / hkv.max(1));
            Some((mac(&[b, hq, s, l, e + ev]), vec![b, s, hq * ev]))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
