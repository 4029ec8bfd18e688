//! Shape inference through an ONNX graph's common ops, as far as the FLOP counter needs it:
//! each tensor's shape, and the values of small integer tensors (the `Shape -> Gather ->
//! Concat -> Reshape` chains exporters write). [`infer`] gives a node's outputs from its
//! inputs, or `None` when it has no rule for the op or lacks an input it needs: the counter
//! then reports what it could not count rather than guess.

use super::shapes::{
    axis, broadcast, einsum_sizes, einsum_terms, matmul_shape, window_out, Known, Node, MAX_DATA,
};

/// The values of a broadcast elementwise op on known inputs (`None` where `f` has none).
fn broadcast_values(
    shape: &[usize],
    ins: &[(&[usize], &[i64])],
    f: impl Fn(&[i64]) -> Option<i64>,
) -> Option<Vec<i64>> {
    let n: usize = shape.iter().product();
    let mut args = vec![0; ins.len()];
    (0..n)
        .map(|flat| {
            for (arg, (s, d)) in args.iter_mut().zip(ins) {
                let (mut rest, mut index, mut stride) = (flat, 0, 1);
                for (k, &dim) in shape.iter().enumerate().rev() {
                    let coord = rest % dim;
                    rest /= dim;
                    if let Some(j) = (k + s.len()).checked_sub(shape.len()) {
                        index += if s[j] == 1 { 0 } else { coord * stride };
                        stride *= s[j];
                    }
                }
                *arg = d[index];
            }
            f(&args)
        })
        .collect()
}

/// The ops whose outputs have their first input's shape.
const SAME_SHAPE: &[&str] = &[
    "Relu",
    "LeakyRelu",
    "PRelu",
    "Elu",
    "Selu",
    "Gelu",
    "FastGelu",
    "BiasGelu",
    "QuickGelu",
    "Erf",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Softplus",
    "Softsign",
    "Mish",
    "Sqrt",
    "Exp",
    "Log",
    "Abs",
    "Reciprocal",
    "Clip",
    "Round",
    "Sin",
    "Cos",
    "Softmax",
    "LogSoftmax",
    "Hardmax",
    "LayerNormalization",
    "SimplifiedLayerNormalization",
    "SkipLayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "BatchNormalization",
    "InstanceNormalization",
    "GroupNormalization",
    "LpNormalization",
    "Dropout",
    "Trilu",
    "IsNaN",
    "IsInf",
    "Sign",
    "CumSum",
    "RMSNormalization",
];

/// The ops whose outputs keep their first input's values too (`Cast` only to integers).
const SAME_VALUES: &[&str] = &["Identity", "Cast", "Floor", "Ceil", "Neg", "Not"];

/// The integer and boolean `TensorProto.DataType`s (a `Cast` to one of them keeps the values).
const INTEGER_TYPES: &[i64] = &[2, 3, 4, 5, 6, 7, 9, 12, 13];

/// The elementwise ops with numpy broadcasting, and their values on integers where cheap.
fn elementwise(op: &str, a: &[i64]) -> Option<i64> {
    Some(match (op, a) {
        ("Add" | "Sum", [x, y]) => x.wrapping_add(*y),
        ("Sub", [x, y]) => x.wrapping_sub(*y),
        ("Mul", [x, y]) => x.wrapping_mul(*y),
        ("Div", [x, y]) => x.checked_div(*y)?,
        ("Mod", [x, y]) => x.checked_rem(*y)?,
        ("Max", [x, y]) => *x.max(y),
        ("Min", [x, y]) => *x.min(y),
        ("Equal", [x, y]) => i64::from(x == y),
        ("Less", [x, y]) => i64::from(x < y),
        ("Greater", [x, y]) => i64::from(x > y),
        ("And", [x, y]) => i64::from(*x != 0 && *y != 0),
        ("Or", [x, y]) => i64::from(*x != 0 || *y != 0),
        ("Where", [c, x, y]) => {
            if *c != 0 {
                *x
            } else {
                *y
            }
        }
        _ => return None,
    })
}

const BROADCAST: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Mod",
    "Max",
    "Min",
    "Sum",
    "Mean",
    "Equal",
    "Less",
    "LessOrEqual",
    "Greater",
    "GreaterOrEqual",
    "And",
    "Or",
    "Xor",
    "Where",
    "BitShift",
];

/// The node's outputs (as many as it names), or `None` when the op has no rule here or an
/// input it needs is unknown.
pub fn infer(n: &Node) -> Option<Vec<Known>> {
    let op = n.proto.op_type.as_str();
    let outs = n.proto.output.len().max(1);
    let first = |k: Known| {
        let mut v = vec![Known::default(); outs];
        v[0] = k;
        Some(v)
    };
    if SAME_SHAPE.contains(&op) {
        return first(Known::shaped(n.shape(0)?.to_vec()));
    }
    if SAME_VALUES.contains(&op) {
        let to_float = op == "Cast" && !INTEGER_TYPES.contains(&n.int("to").unwrap_or(0));
        let data = n.data(0).filter(|_| !to_float).map(|d| match op {
            "Neg" => d.iter().map(|v| -v).collect(),
            "Not" => d.iter().map(|v| i64::from(*v == 0)).collect(),
            _ => d.to_vec(),
        });
        return first(Known {
            shape: Some(n.shape(0)?.to_vec()),
            data,
        });
    }
    if BROADCAST.contains(&op) {
        let shapes: Option<Vec<&[usize]>> = (0..n.inputs.len()).map(|i| n.shape(i)).collect();
        let shapes = shapes?;
        let shape = broadcast(&shapes)?;
        let datas: Option<Vec<&[i64]>> = (0..n.inputs.len()).map(|i| n.data(i)).collect();
        let small = shape.iter().product::<usize>() <= MAX_DATA;
        let data = datas.filter(|_| small).and_then(|d| {
            let ins: Vec<(&[usize], &[i64])> = shapes.iter().copied().zip(d).collect();
            broadcast_values(&shape, &ins, |a| elementwise(op, a))
        });
        return first(Known {
            shape: Some(shape),
            data,
        });
    }
    let shape = |i| n.shape(i).map(<[usize]>::to_vec);
    match op {
        "Constant" => {
            let a = n.proto.attribute.first()?;
            first(match a.name.as_str() {
                "value" => Known::from_tensor(a.t.as_ref()?),
                "value_int" => Known::with_data(vec![], vec![a.i]),
                "value_ints" => Known::with_data(vec![a.ints.len()], a.ints.clone()),
                "value_float" => Known::shaped(vec![]),
                "value_floats" => Known::shaped(vec![a.floats.len()]),
                _ => return None,
            })
        }
        "Shape" => {
            let s = n.shape(0)?;
            let r = s.len() as i64;
            let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let (a, b) = (
                clamp(n.int("start").unwrap_or(0)),
                clamp(n.int("end").unwrap_or(r)),
            );
            let d: Vec<i64> = s[a..b.max(a)].iter().map(|&v| v as i64).collect();
            first(Known::with_data(vec![d.len()], d))
        }
        "CastLike" => first(Known::shaped(n.shape(0)?.to_vec())),
        "Size" => first(Known::with_data(
            vec![],
            vec![n.shape(0)?.iter().product::<usize>() as i64],
        )),
        "MatMul" | "MatMulInteger" | "FusedMatMul" => {
            let (mut a, mut b) = (shape(0)?, shape(1)?);
            let r = |s: &mut Vec<usize>| {
                let l = s.len();
                if l >= 2 {
                    s.swap(l - 1, l - 2)
                }
            };
            if n.int("transA") == Some(1) {
                r(&mut a);
            }
            if n.int("transB") == Some(1) {
                r(&mut b);
            }
            first(Known::shaped(matmul_shape(&a, &b)?))
        }
        "Gemm" => {
            let (a, b) = (n.shape(0)?, n.shape(1)?);
            let m = if n.int("transA") == Some(1) {
                a.get(1)?
            } else {
                a.first()?
            };
            let c = if n.int("transB") == Some(1) {
                b.first()?
            } else {
                b.get(1)?
            };
            first(Known::shaped(vec![*m, *c]))
        }
        "Conv" | "ConvInteger" => {
            let (x, w) = (n.shape(0)?, n.shape(1)?);
            let spatial = window_out(n, x.get(2..)?, w.get(2..)?)?;
            first(Known::shaped(
                [x[0], w[0]].into_iter().chain(spatial).collect(),
            ))
        }
        "ConvTranspose" => {
            let (x, w) = (n.shape(0)?, n.shape(1)?);
            let r = x.len().checked_sub(2)?;
            if w.len() != x.len() {
                return None;
            }
            let group = n.int("group").unwrap_or(1).max(1) as usize;
            let spatial: Vec<usize> = match n.ints("output_shape") {
                Some(s) if s.len() == r => s.iter().map(|&v| v as usize).collect(),
                _ => {
                    let at = |name: &str, i: usize, d: i64| {
                        n.ints(name).and_then(|v| v.get(i).copied()).unwrap_or(d)
                    };
                    (0..r)
                        .map(|i| {
                            let k = at("dilations", i, 1) * (w[2 + i] as i64 - 1) + 1;
                            let v = at("strides", i, 1) * (x[2 + i] as i64 - 1)
                                + at("output_padding", i, 0)
                                + k
                                - at("pads", i, 0)
                                - at("pads", i + r, 0);
                            v.max(0) as usize
                        })
                        .collect()
                }
            };
            first(Known::shaped(
                [x[0], w.get(1)? * group]
                    .into_iter()
                    .chain(spatial)
                    .collect(),
            ))
        }
        "MaxPool" | "AveragePool" | "LpPool" => {
            let x = n.shape(0)?;
            let k: Vec<usize> = n
                .ints("kernel_shape")?
                .iter()
                .map(|&v| v as usize)
                .collect();
            let spatial = window_out(n, x.get(2..)?, &k)?;
            let out: Vec<usize> = x[..2].iter().copied().chain(spatial).collect();
            let mut v = vec![Known::shaped(out); outs];
            v.truncate(outs);
            Some(v)
        }
        "GlobalAveragePool" | "GlobalMaxPool" | "GlobalLpPool" => {
            let x = n.shape(0)?;
            first(Known::shaped(
                x.iter()
                    .enumerate()
                    .map(|(i, &d)| if i < 2 { d } else { 1 })
                    .collect(),
            ))
        }
        "Reshape" => {
            let (x, target) = (n.shape(0)?, n.data(1)?);
            let allowzero = n.int("allowzero") == Some(1);
            let mut out: Vec<i64> = target
                .iter()
                .enumerate()
                .map(|(i, &d)| {
                    if d == 0 && !allowzero {
                        x.get(i).map_or(-2, |&v| v as i64)
                    } else {
                        d
                    }
                })
                .collect();
            let total: usize = x.iter().product();
            let known: i64 = out.iter().filter(|&&d| d >= 0).product();
            if let Some(free) = out.iter_mut().find(|d| **d == -1) {
                *free = if known == 0 { 0 } else { total as i64 / known };
            }
            let out: Option<Vec<usize>> = out.iter().map(|&d| usize::try_from(d).ok()).collect();
            let out = out.filter(|o| o.iter().product::<usize>() == total)?;
            first(Known {
                data: n.data(0).map(<[i64]>::to_vec),
                shape: Some(out),
            })
        }
        "Flatten" => {
            let x = n.shape(0)?;
            let a = axis(n.int("axis").unwrap_or(1), x.len() + 1)?;
            first(Known::shaped(vec![
                x[..a].iter().product(),
                x[a..].iter().product(),
            ]))
        }
        "Transpose" => {
            let x = n.shape(0)?;
            let perm: Vec<usize> = match n.ints("perm") {
                Some(p) => p.iter().map(|&a| axis(a, x.len())).collect::<Option<_>>()?,
                None => (0..x.len()).rev().collect(),
            };
            first(Known::shaped(
                perm.iter()
                    .map(|&a| x.get(a).copied())
                    .collect::<Option<_>>()?,
            ))
        }
        "Squeeze" | "Unsqueeze" => {
            let x = n.shape(0)?;
            let axes = n.ints_or_input("axes", 1);
            if axes.is_none() && n.present(1) {
                return None;
            }
            let out = if op == "Squeeze" {
                let axes: Vec<usize> = match axes {
                    Some(a) => a.iter().map(|&v| axis(v, x.len())).collect::<Option<_>>()?,
                    None => (0..x.len()).filter(|&i| x[i] == 1).collect(),
                };
                x.iter()
                    .enumerate()
                    .filter(|(i, _)| !axes.contains(i))
                    .map(|(_, &d)| d)
                    .collect()
            } else {
                let rank = x.len() + axes.as_ref()?.len();
                let axes: Vec<usize> = axes?
                    .iter()
                    .map(|&v| axis(v, rank))
                    .collect::<Option<_>>()?;
                let mut rest = x.iter();
                (0..rank)
                    .map(|i| {
                        if axes.contains(&i) {
                            Some(1)
                        } else {
                            rest.next().copied()
                        }
                    })
                    .collect::<Option<_>>()?
            };
            first(Known {
                shape: Some(out),
                data: n.data(0).map(<[i64]>::to_vec),
            })
        }
        "Concat" => {
            let shapes: Vec<&[usize]> = (0..n.inputs.len())
                .map(|i| n.shape(i))
                .collect::<Option<_>>()?;
            let a = axis(n.int("axis")?, shapes.first()?.len())?;
            let mut out = shapes[0].to_vec();
            out[a] = shapes.iter().map(|s| s.get(a).copied().unwrap_or(0)).sum();
            let data = (out.len() == 1)
                .then(|| {
                    (0..n.inputs.len())
                        .map(|i| n.data(i))
                        .collect::<Option<Vec<_>>>()
                })
                .flatten()
                .map(|d| d.concat());
            first(Known {
                shape: Some(out),
                data,
            })
        }
        "Gather" => {
            let (x, idx) = (n.shape(0)?, n.shape(1)?);
            let a = axis(n.int("axis").unwrap_or(0), x.len())?;
            let out: Vec<usize> = x[..a]
                .iter()
                .chain(idx)
                .chain(&x[a + 1..])
                .copied()
                .collect();
            let data = match (n.data(0), n.data(1)) {
                (Some(d), Some(i)) if x.len() == 1 => i
                    .iter()
                    .map(|&i| {
                        d.get(if i < 0 {
                            (i + d.len() as i64) as usize
                        } else {
                            i as usize
                        })
                        .copied()
                    })
                    .collect(),
                _ => None,
            };
            first(Known {
                shape: Some(out),
                data,
            })
        }
        "GatherElements" => first(Known::shaped(shape(1)?)),
        "Slice" => {
            let x = n.shape(0)?;
            let (starts, ends) = (n.ints_or_input("starts", 1)?, n.ints_or_input("ends", 2)?);
            let axes = match n.ints_or_input("axes", 3) {
                Some(a) => a,
                None if n.present(3) => return None,
                None => (0..starts.len() as i64).collect(),
            };
            let steps = match n.data(4) {
                Some(s) => s.to_vec(),
                None if n.present(4) => return None,
                None => vec![1; starts.len()],
            };
            let mut out = x.to_vec();
            let mut range = (0, x.first().copied().unwrap_or(0) as i64, 1);
            for (i, &ax) in axes.iter().enumerate() {
                let a = axis(ax, x.len())?;
                let (dim, step) = (x[a] as i64, *steps.get(i)?);
                let (start, end) = (*starts.get(i)?, *ends.get(i)?);
                if step == 0 {
                    return None;
                }
                let fix =
                    |v: i64, lo: i64, hi: i64| (if v < 0 { v + dim } else { v }).clamp(lo, hi);
                let (b, e) = if step > 0 {
                    (fix(start, 0, dim), fix(end, 0, dim))
                } else {
                    (fix(start, -1, dim - 1), fix(end, -1, dim - 1))
                };
                out[a] = if step > 0 {
                    ((e - b).max(0) + step - 1) / step
                } else {
                    ((b - e).max(0) - step - 1) / -step
                } as usize;
                if a == 0 {
                    range = (b, e, step);
                }
            }
            let data = n.data(0).filter(|_| x.len() == 1).and_then(|d| {
                let (b, _, s) = range;
                (0..out[0] as i64)
                    .map(|k| {
                        usize::try_from(b + k * s)
                            .ok()
                            .and_then(|i| d.get(i).copied())
                    })
                    .collect()
            });
            first(Known {
                shape: Some(out),
                data,
            })
        }
        "ConstantOfShape" => {
            let dims: Vec<usize> = n.data(0)?.iter().map(|&d| d.max(0) as usize).collect();
            let fill = n
                .attr("value")
                .and_then(|a| a.t.as_ref())
                .map(Known::from_tensor)
                .and_then(|k| k.data)
                .and_then(|d| d.first().copied());
            let len: usize = dims.iter().product();
            first(match fill {
                Some(v) if len <= MAX_DATA => Known::with_data(dims, vec![v; len]),
                _ => Known::shaped(dims),
            })
        }
        "Expand" => {
            let target: Vec<usize> = n.data(1)?.iter().map(|&d| d.max(0) as usize).collect();
            first(Known::shaped(broadcast(&[n.shape(0)?, &target])?))
        }
        "Range" => {
            let (s, l, d) = (
                *n.data(0)?.first()?,
                *n.data(1)?.first()?,
                *n.data(2)?.first()?,
            );
            if d == 0 {
                return None;
            }
            let len = ((l - s) as f64 / d as f64).ceil().max(0.0) as usize;
            first(match len <= MAX_DATA {
                true => Known::with_data(vec![len], (0..len as i64).map(|k| s + k * d).collect()),
                false => Known::shaped(vec![len]),
            })
        }
        "Tile" => {
            let (x, reps) = (n.shape(0)?, n.data(1)?);
            if reps.len() != x.len() {
                return None;
            }
            first(Known::shaped(
                x.iter()
                    .zip(reps)
                    .map(|(&d, &r)| d * r.max(0) as usize)
                    .collect(),
            ))
        }
        "Pad" => {
            let x = n.shape(0)?;
            let pads = n.ints_or_input("pads", 1)?;
            if pads.len() != 2 * x.len() {
                return None;
            }
            first(Known::shaped(
                x.iter()
                    .enumerate()
                    .map(|(i, &d)| (d as i64 + pads[i] + pads[i + x.len()]).max(0) as usize)
                    .collect(),
            ))
        }
        "Split" => {
            let x = n.shape(0)?;
            let a = axis(n.int("axis").unwrap_or(0), x.len())?;
            let parts = match n.ints_or_input("split", 1) {
                Some(s) => s.iter().map(|&v| v as usize).collect(),
                None if n.present(1) => return None,
                None => {
                    let k = n.int("num_outputs").map_or(outs, |v| v as usize).max(1);
                    let each = x[a].div_ceil(k);
                    (0..k)
                        .map(|i| each.min(x[a].saturating_sub(i * each)))
                        .collect::<Vec<_>>()
                }
            };
            Some(
                parts
                    .iter()
                    .map(|&p| {
                        let mut s = x.to_vec();
                        s[a] = p;
                        Known::shaped(s)
                    })
                    .collect(),
            )
        }
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL1"
        | "ReduceL2" | "ReduceSumSquare" | "ReduceLogSumExp" | "ArgMax" | "ArgMin" => {
            let x = n.shape(0)?;
            let axes = match op {
                "ArgMax" | "ArgMin" => Some(vec![n.int("axis").unwrap_or(0)]),
                _ => n.ints_or_input("axes", 1),
            };
            if axes.is_none() && n.present(1) {
                return None;
            }
            let axes: Vec<usize> = match axes {
                Some(a) if !a.is_empty() => {
                    a.iter().map(|&v| axis(v, x.len())).collect::<Option<_>>()?
                }
                _ if n.int("noop_with_empty_axes") == Some(1) => vec![],
                _ => (0..x.len()).collect(),
            };
            let keep = n.int("keepdims").unwrap_or(1) == 1;
            let out = x
                .iter()
                .enumerate()
                .filter_map(|(i, &d)| match (axes.contains(&i), keep) {
                    (false, _) => Some(d),
                    (true, true) => Some(1),
                    (true, false) => None,
                });
            first(Known::shaped(out.collect()))
        }
        "Einsum" => {
            let (ins, out) = einsum_terms(n.string("equation")?)?;
            let sizes = einsum_sizes(n, &ins)?;
            let dims = out
                .iter()
                .map(|c| sizes.iter().find(|(k, _)| k == c).map(|(_, d)| *d));
            first(Known::shaped(dims.collect::<Option<_>>()?))
        }
        "Attention" | "MultiHeadAttention" => first(Known::shaped(super::attention(n)?.1)),
        _ => None,
    }
}
