//! The FLOP counts against hand counts: ExampleNet1, ResNet-18 (its layout built here, and
//! the fetched file), MiniLM-L3's three BERT layers, and small graphs for convolution
//! options, shape chains, what cannot be counted, fused attention, einsum and Gemm.

use super::*;
use tract_onnx::pb::{AttributeProto, TensorProto};

/// A model of `models/` (fetched by scripts/fetch-models.sh, git-ignored), or `None` with
/// a notice. CI fetches MiniLM (`ci_fetches`): its absence there fails.
fn fetched(name: &str, ci_fetches: bool) -> Option<OnnxGraph> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models")
        .join(name);
    if path.exists() {
        return Some(OnnxGraph::read(&path).unwrap());
    }
    assert!(
        !ci_fetches || std::env::var_os("CI").is_none(),
        "CI must fetch {name} (scripts/fetch-models.sh)"
    );
    eprintln!("models/{name} not fetched: skipped (bash scripts/fetch-models.sh)");
    None
}

fn inputs(list: &[(&str, &[usize])]) -> Vec<(String, Vec<usize>)> {
    list.iter()
        .map(|(n, s)| (n.to_string(), s.to_vec()))
        .collect()
}

#[test]
fn examplenet1_is_one_strided_conv() {
    // assets/models/examplenet1.onnx: x (N, 64, 3, 3) -> Conv W (128, 64, 3, 3), stride 2,
    // pads 1 -> (N, 128, 2, 2) -> Flatten. Per item: 128 x 2 x 2 outputs, each 64 x 3 x 3
    // multiply-adds = 294 912 MACs = 589 824 FLOPs.
    let hand = 2 * 128 * 2 * 2 * 64 * 3 * 3;
    let g = OnnxGraph::from_bytes(corestream::bundled::EXAMPLENET1).unwrap();
    for b in [1, 16] {
        let c = g.count(&inputs(&[("x", &[b, 64, 3, 3])]));
        assert_eq!((c.flops, c.counted), (hand * b as u64, 1), "{c:?}");
        assert!(c.uncounted.is_empty() && c.stuck.is_empty(), "{c:?}");
    }
}

/// ResNet-18's graph for 224 x 224 images as torchvision lays it out: conv1 7x7 stride 2
/// pads 3, maxpool 3x3 stride 2 pads 1, 4 stages of 2 basic blocks (two 3x3 convs, the
/// first of stages 2-4 with stride 2 and a 1x1 stride-2 downsample), global average pool,
/// fc 512 -> 1000.
fn resnet18_layout() -> OnnxGraph {
    let (mut nodes, mut weights) = (Vec::new(), Vec::new());
    let mut conv = |x: &str, out: &str, (m, c, k, stride): (i64, i64, i64, i64)| {
        let w = format!("{out}.w");
        weights.push(weight(&w, &[m, c, k, k]));
        let attrs = vec![ints("strides", &[stride; 2]), ints("pads", &[k / 2; 4])];
        node("Conv", &[x, &w], &[out], attrs)
    };
    nodes.push(conv("input", "conv1", (64, 3, 7, 2)));
    let pool = vec![
        ints("kernel_shape", &[3, 3]),
        ints("strides", &[2, 2]),
        ints("pads", &[1; 4]),
    ];
    nodes.push(node("MaxPool", &["conv1"], &["pool"], pool));
    let (mut x, mut ch) = ("pool".to_string(), 64);
    for (stage, c) in [64, 128, 256, 512].into_iter().enumerate() {
        for block in 0..2 {
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            let name = format!("s{stage}b{block}");
            let (a, b, d) = (format!("{name}a"), format!("{name}b"), format!("{name}d"));
            nodes.push(conv(&x, &a, (c, ch, 3, stride)));
            nodes.push(conv(&a, &b, (c, c, 3, 1)));
            let shortcut = if stride == 2 {
                nodes.push(conv(&x, &d, (c, ch, 1, 2)));
                d
            } else {
                x.clone()
            };
            nodes.push(node("Add", &[&b, &shortcut], &[&name], vec![]));
            (x, ch) = (name, c);
        }
    }
    nodes.push(node("GlobalAveragePool", &[&x], &["gap"], vec![]));
    nodes.push(node("Flatten", &["gap"], &["flat"], vec![]));
    nodes.push(node(
        "Gemm",
        &["flat", "fc"],
        &["logits"],
        vec![int("transB", 1)],
    ));
    weights.push(weight("fc", &[1000, 512]));
    graph(nodes, weights)
}

#[test]
fn resnet18_is_1_81_giga_multiply_adds_per_image() {
    // (out channels, out side, in channels, kernel) of each conv at 224 x 224; MACs =
    // out channels x side^2 x in channels x kernel^2.
    let mut convs = vec![(64, 112, 3, 7)]; // conv1, stride 2; then maxpool to 56
    convs.extend([(64, 56, 64, 3); 4]); // layer1: 2 blocks x 2 convs
    for (c, side) in [(128, 28), (256, 14), (512, 7)] {
        convs.push((c, side, c / 2, 3)); // first conv, stride 2
        convs.extend([(c, side, c, 3); 3]);
        convs.push((c, side, c / 2, 1)); // 1x1 downsample, stride 2
    }
    let conv_macs: u64 = convs
        .iter()
        .map(|&(m, s, c, k)| m * s * s * c * k * k)
        .sum();
    let fc_macs = 512 * 1000;
    // "1.8 GFLOPs" as the ResNet paper counts: multiply-adds; as FLOPs, 3.63 G.
    assert_eq!(conv_macs + fc_macs, 1_814_073_344);
    let hand = 2 * (conv_macs + fc_macs);
    let layout = resnet18_layout();
    let graphs = std::iter::once(layout).chain(fetched("resnet18.onnx", false));
    for g in graphs {
        let c = g.count(&inputs(&[("input", &[1, 3, 224, 224])]));
        assert_eq!((c.flops, c.counted), (hand, 21), "{c:?}");
        assert_eq!(c.by_op["Gemm"], 2 * fc_macs);
        let c16 = g.count(&inputs(&[("input", &[16, 3, 224, 224])]));
        assert_eq!(c16.flops, 16 * hand);
    }
}

#[test]
fn minilm_l3_is_three_bert_layers() {
    // Per layer at sequence length L (hidden 384, 12 heads of 32, FFN 1536): Q, K, V and
    // output projections 4 x L x 384 x 384, FFN 2 x L x 384 x 1536, and attention's
    // Q K^T and softmax(.) V 2 x 12 x L x L x 32 multiply-adds; x 2 FLOPs, x 3 layers.
    // The sequence length reaches the attention MatMuls through Shape -> Gather -> Concat
    // -> Reshape chains.
    let layer = |l: u64| 4 * l * 384 * 384 + 2 * l * 384 * 1536 + 2 * 12 * l * l * 32;
    let Some(g) = fetched("paraphrase-MiniLM-L3-v2.onnx", true) else {
        return;
    };
    for (b, l) in [(1, 128), (2, 37), (16, 8)] {
        let shape: &[usize] = &[b, l];
        let c = g.count(&inputs(&[("input_ids", shape), ("attention_mask", shape)]));
        let hand = b as u64 * 3 * 2 * layer(l as u64);
        assert_eq!((c.flops, c.counted), (hand, 24), "b {b} l {l}: {c:?}");
        assert!(c.uncounted.is_empty(), "{c:?}");
    }
    // Without its inputs' shapes nothing can be counted, and the report says so.
    let c = g.count(&[]);
    assert_eq!((c.flops, c.counted, c.uncounted.len()), (0, 0, 24));
    assert!(
        c.summary(1).contains("24 compute nodes NOT counted"),
        "{}",
        c.summary(1)
    );
}

fn attr(name: &str, f: impl FnOnce(&mut AttributeProto)) -> AttributeProto {
    let mut a = AttributeProto {
        name: name.into(),
        ..Default::default()
    };
    f(&mut a);
    a
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    attr(name, |a| a.ints = v.to_vec())
}

fn int(name: &str, v: i64) -> AttributeProto {
    attr(name, |a| a.i = v)
}

fn node(op: &str, ins: &[&str], outs: &[&str], attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: outs[0].into(),
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: outs.iter().map(|s| s.to_string()).collect(),
        attribute,
        ..Default::default()
    }
}

fn weight(name: &str, dims: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: 1,
        ..Default::default()
    }
}

fn int64s(name: &str, v: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: vec![v.len() as i64],
        data_type: 7,
        int64_data: v.to_vec(),
        ..Default::default()
    }
}

fn graph(node: Vec<NodeProto>, initializer: Vec<TensorProto>) -> OnnxGraph {
    OnnxGraph {
        graph: GraphProto {
            node,
            initializer,
            ..Default::default()
        },
    }
}

#[test]
fn convolutions_with_groups_strides_pads_dilations_and_auto_pad() {
    let g = graph(
        vec![
            // Depthwise 3x3, stride 2, pads 1: (1, 32, 56, 56) -> (1, 32, 28, 28).
            node(
                "Conv",
                &["x", "dw"],
                &["a"],
                vec![
                    int("group", 32),
                    ints("strides", &[2, 2]),
                    ints("pads", &[1, 1, 1, 1]),
                ],
            ),
            // Dilation 2 with pads 2 keeps 28 x 28; 2 groups of 16 -> 64 channels.
            node(
                "Conv",
                &["a", "gw"],
                &["b"],
                vec![
                    int("group", 2),
                    ints("dilations", &[2, 2]),
                    ints("pads", &[2, 2, 2, 2]),
                ],
            ),
            // SAME_UPPER, stride 3: ceil(28 / 3) = 10.
            node(
                "Conv",
                &["b", "pw"],
                &["c"],
                vec![
                    attr("auto_pad", |a| a.s = b"SAME_UPPER".to_vec()),
                    ints("strides", &[3, 3]),
                ],
            ),
            // ConvTranspose stride 2, kernel 2: 10 -> 20; each input element meets 8 x 2 x 2.
            node(
                "ConvTranspose",
                &["c", "tw"],
                &["d"],
                vec![ints("strides", &[2, 2])],
            ),
            node(
                "MaxPool",
                &["d"],
                &["e"],
                vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
            ),
            node("Flatten", &["e"], &["f"], vec![]),
            node("Gemm", &["f", "fc"], &["y"], vec![int("transB", 1)]),
        ],
        vec![
            weight("dw", &[32, 1, 3, 3]),
            weight("gw", &[64, 16, 3, 3]),
            weight("pw", &[16, 64, 1, 1]),
            weight("tw", &[16, 8, 2, 2]),
            weight("fc", &[10, 800]),
        ],
    );
    let c = g.count(&inputs(&[("x", &[1, 32, 56, 56])]));
    let macs = 32 * 28 * 28 * 9
        + 64 * 28 * 28 * 16 * 9
        + 16 * 10 * 10 * 64
        + 16 * 10 * 10 * 8 * 4
        + 800 * 10;
    assert_eq!((c.flops, c.counted), (2 * macs, 5), "{c:?}");
}

#[test]
fn shape_chains_and_what_cannot_be_counted() {
    // x (B, S, 64) -> Reshape to (B, S, 4, 16) from its own Shape, Transpose to heads,
    // a heads x heads MatMul; then a NonZero (value-dependent shape) feeds a MatMul.
    let g = graph(
        vec![
            node("Shape", &["x"], &["shape"], vec![]),
            node(
                "Gather",
                &["shape", "zero"],
                &["batch"],
                vec![int("axis", 0)],
            ),
            node("Gather", &["shape", "one"], &["seq"], vec![int("axis", 0)]),
            node("Unsqueeze", &["batch", "axes0"], &["b1"], vec![]),
            node("Unsqueeze", &["seq"], &["s1"], vec![ints("axes", &[0])]),
            node(
                "Concat",
                &["b1", "s1", "heads"],
                &["target"],
                vec![int("axis", 0)],
            ),
            node("Reshape", &["x", "target"], &["r"], vec![]),
            node(
                "Transpose",
                &["r"],
                &["q"],
                vec![ints("perm", &[0, 2, 1, 3])],
            ),
            node(
                "Transpose",
                &["r"],
                &["kt"],
                vec![ints("perm", &[0, 2, 3, 1])],
            ),
            node("MatMul", &["q", "kt"], &["scores"], vec![]),
            node("Softmax", &["scores"], &["p"], vec![int("axis", -1)]),
            node("MatMul", &["p", "q"], &["ctx"], vec![]),
            node("NonZero", &["x"], &["nz"], vec![]),
            node("MatMul", &["nz", "w"], &["lost"], vec![]),
        ],
        vec![
            TensorProto {
                dims: vec![],
                ..int64s("zero", &[0])
            },
            TensorProto {
                dims: vec![],
                ..int64s("one", &[1])
            },
            int64s("axes0", &[0]),
            int64s("heads", &[4, 16]),
            weight("w", &[7, 8]),
        ],
    );
    let (b, s) = (3u64, 10u64);
    let c = g.count(&inputs(&[("x", &[3, 10, 64])]));
    assert_eq!(c.flops, 2 * 2 * (b * 4 * s * s * 16), "{c:?}");
    assert_eq!(c.counted, 2);
    assert_eq!(c.uncounted, vec!["MatMul lost".to_string()]);
    assert_eq!(c.stuck.iter().collect::<Vec<_>>(), ["NonZero"]);
    let summary = c.summary(3);
    assert!(
        summary.contains("1 compute nodes NOT counted (shapes unknown after NonZero)"),
        "{summary}"
    );
}

#[test]
fn fused_attention_einsum_and_transposed_gemm() {
    let mut ms = node(
        "Attention",
        &["x", "qkv", "bias"],
        &["att"],
        vec![int("num_heads", 12)],
    );
    ms.domain = "com.microsoft".into();
    let g = graph(
        vec![
            ms,
            node(
                "Einsum",
                &["att", "proj"],
                &["e"],
                vec![attr("equation", |a| a.s = b"bsh,hk->bsk".to_vec())],
            ),
            node("Reshape", &["e", "flat"], &["m"], vec![]),
            node("Gemm", &["m", "g"], &["y"], vec![int("transA", 1)]),
        ],
        vec![
            weight("qkv", &[384, 3 * 384]),
            weight("bias", &[3 * 384]),
            weight("proj", &[384, 64]),
            int64s("flat", &[-1, 64]),
            weight("g", &[2 * 16, 5]),
        ],
    );
    let c = g.count(&inputs(&[("x", &[2, 16, 384])]));
    let attention = 2 * 16 * 384 * 3 * 384 + 2 * 16 * 16 * (384 + 384);
    let einsum = 2 * 16 * 384 * 64;
    // Gemm with transA: A is (K, M) = (32, 64) -> M 64, N 5, K 32.
    let gemm = 64 * 5 * 32;
    assert_eq!(c.by_op["Attention"], 2 * attention);
    assert_eq!(c.by_op["Einsum"], 2 * einsum);
    assert_eq!(c.by_op["Gemm"], 2 * gemm, "{c:?}");
    assert_eq!(c.counted, 3);
}
