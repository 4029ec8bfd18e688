//! What the FLOP counter knows of a tensor ([`Known`]: its shape, and the values of a small
//! integer tensor) and of a node ([`Node`]: its attributes and what is known of its inputs),
//! and the shape arithmetic the op rules ([`infer`](super::infer::infer())) and the
//! multiply-add counts share: axes, numpy broadcasting, MatMul, convolution and pooling
//! windows, einsum terms.

use corestream::backend::tract::tract_onnx::pb::{AttributeProto, NodeProto, TensorProto};

/// The largest integer tensor whose values are kept.
pub const MAX_DATA: usize = 4096;

/// What is known of one tensor: its shape, and its values when it is a small integer tensor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Known {
    /// `None`: unknown.
    pub shape: Option<Vec<usize>>,
    /// Row-major values, for small integer (and boolean) tensors.
    pub data: Option<Vec<i64>>,
}

impl Known {
    /// A tensor of this shape, values unknown.
    pub fn shaped(shape: Vec<usize>) -> Known {
        Known {
            shape: Some(shape),
            data: None,
        }
    }

    /// A tensor of this shape with these values (kept when small).
    pub fn with_data(shape: Vec<usize>, data: Vec<i64>) -> Known {
        let data = (data.len() <= MAX_DATA).then_some(data);
        Known {
            shape: Some(shape),
            data,
        }
    }

    /// A constant tensor: its dims, and its values when it is a small integer tensor.
    pub fn from_tensor(t: &TensorProto) -> Known {
        let shape: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
        let n: usize = shape.iter().product();
        let raw = |width: usize| -> Option<Vec<i64>> {
            (t.raw_data.len() == n * width).then(|| {
                t.raw_data
                    .chunks_exact(width)
                    .map(|c| match width {
                        8 => i64::from_le_bytes(c.try_into().unwrap_or_default()),
                        4 => i64::from(i32::from_le_bytes(c.try_into().unwrap_or_default())),
                        _ => i64::from(c[0]),
                    })
                    .collect()
            })
        };
        // TensorProto.DataType: 7 int64, 6 int32, 9 bool (2 uint8, 3 int8 are raw bytes too).
        let data = match (t.data_type, t.raw_data.is_empty()) {
            _ if n > MAX_DATA => None,
            (7, true) => Some(t.int64_data.clone()),
            (6 | 9, true) => Some(t.int32_data.iter().map(|&v| i64::from(v)).collect()),
            (7, false) => raw(8),
            (6, false) => raw(4),
            (9, false) => raw(1),
            _ => None,
        };
        Known {
            data: data.filter(|d| d.len() == n),
            shape: Some(shape),
        }
    }
}

/// A node and what is known of its inputs (`None`: an absent optional input).
pub struct Node<'a> {
    pub proto: &'a NodeProto,
    pub inputs: Vec<Option<&'a Known>>,
}

impl Node<'_> {
    /// Input `i`'s shape, if present and known.
    pub fn shape(&self, i: usize) -> Option<&[usize]> {
        self.inputs.get(i).copied().flatten()?.shape.as_deref()
    }

    /// Input `i`'s values, if present and known.
    pub fn data(&self, i: usize) -> Option<&[i64]> {
        self.inputs.get(i).copied().flatten()?.data.as_deref()
    }

    /// Whether input `i` is given (known or not).
    pub fn present(&self, i: usize) -> bool {
        matches!(self.inputs.get(i), Some(Some(_)))
    }

    /// An attribute.
    pub fn attr(&self, name: &str) -> Option<&AttributeProto> {
        self.proto.attribute.iter().find(|a| a.name == name)
    }

    /// An integer attribute.
    pub fn int(&self, name: &str) -> Option<i64> {
        self.attr(name).map(|a| a.i)
    }

    /// An integer-list attribute.
    pub fn ints(&self, name: &str) -> Option<&[i64]> {
        self.attr(name).map(|a| a.ints.as_slice())
    }

    /// A string attribute.
    pub fn string(&self, name: &str) -> Option<&str> {
        self.attr(name).and_then(|a| std::str::from_utf8(&a.s).ok())
    }

    /// Integers given as an attribute (older opsets) or as input `i` (newer ones).
    pub fn ints_or_input(&self, name: &str, i: usize) -> Option<Vec<i64>> {
        self.ints(name)
            .map(<[i64]>::to_vec)
            .or_else(|| self.data(i).map(<[i64]>::to_vec))
    }
}

/// `axis` (negative: from the end) as an index into `rank` axes.
pub fn axis(axis: i64, rank: usize) -> Option<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    (0..rank as i64).contains(&a).then_some(a as usize)
}

/// Numpy broadcasting of several shapes.
pub fn broadcast(shapes: &[&[usize]]) -> Option<Vec<usize>> {
    let rank = shapes.iter().map(|s| s.len()).max()?;
    (0..rank)
        .map(|i| {
            let dims = shapes
                .iter()
                .filter_map(|s| (i + s.len()).checked_sub(rank).map(|j| s[j]));
            dims.into_iter().try_fold(1, |acc, d| match (acc, d) {
                (a, 1) => Some(a),
                (1, d) => Some(d),
                (a, d) if a == d => Some(a),
                _ => None,
            })
        })
        .collect()
}

/// `C = A @ B`'s shape under numpy's rules (1-D operands gain and lose an axis).
pub fn matmul_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let (a2, b2) = (
        if a.len() == 1 {
            vec![1, a[0]]
        } else {
            a.to_vec()
        },
        if b.len() == 1 {
            vec![b[0], 1]
        } else {
            b.to_vec()
        },
    );
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (k2, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != k2 {
        return None;
    }
    let mut out = broadcast(&[&a2[..a2.len() - 2], &b2[..b2.len() - 2]])?;
    if a.len() > 1 {
        out.push(m);
    }
    if b.len() > 1 {
        out.push(n);
    }
    Some(out)
}

/// The output spatial sizes of a convolution or pooling window over `input` (spatial axes):
/// `kernel`, `strides`, `pads` (begins then ends), `dilations`, `auto_pad`, `ceil_mode`.
pub fn window_out(n: &Node, input: &[usize], kernel: &[usize]) -> Option<Vec<usize>> {
    let r = input.len();
    if kernel.len() != r {
        return None;
    }
    let get = |name: &str, default: i64, len: usize| -> Option<Vec<i64>> {
        let v = n
            .ints(name)
            .map_or_else(|| vec![default; len], <[i64]>::to_vec);
        (v.len() == len).then_some(v)
    };
    let (strides, dilations) = (get("strides", 1, r)?, get("dilations", 1, r)?);
    let pads = get("pads", 0, 2 * r)?;
    let auto_pad = n.string("auto_pad").unwrap_or("NOTSET");
    let ceil = n.int("ceil_mode") == Some(1);
    (0..r)
        .map(|i| {
            let (size, s) = (input[i] as i64, strides[i].max(1));
            let span = dilations[i] * (kernel[i] as i64 - 1) + 1;
            let out = match auto_pad {
                "SAME_UPPER" | "SAME_LOWER" => (size + s - 1) / s,
                "VALID" => (size - span) / s + 1,
                _ => {
                    let room = size + pads[i] + pads[i + r] - span;
                    if ceil {
                        (room + s - 1) / s + 1
                    } else {
                        room / s + 1
                    }
                }
            };
            usize::try_from(out).ok()
        })
        .collect()
}

/// Einsum's terms: the inputs' subscripts and the output's (implicit output: the subscripts
/// seen once, sorted). `None` for ellipses.
pub fn einsum_terms(equation: &str) -> Option<(Vec<Vec<char>>, Vec<char>)> {
    let eq: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
    if eq.contains('.') {
        return None;
    }
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l, Some(r)),
        None => (eq.as_str(), None),
    };
    let ins: Vec<Vec<char>> = lhs.split(',').map(|t| t.chars().collect()).collect();
    let out = match rhs {
        Some(r) => r.chars().collect(),
        None => {
            let all: Vec<char> = ins.concat();
            let mut once: Vec<char> = all
                .iter()
                .copied()
                .filter(|c| all.iter().filter(|d| *d == c).count() == 1)
                .collect();
            once.sort_unstable();
            once
        }
    };
    Some((ins, out))
}

/// The size of every einsum subscript, from the inputs' shapes.
pub fn einsum_sizes(n: &Node, ins: &[Vec<char>]) -> Option<Vec<(char, usize)>> {
    let mut sizes: Vec<(char, usize)> = Vec::new();
    for (i, term) in ins.iter().enumerate() {
        let shape = n.shape(i)?;
        if shape.len() != term.len() {
            return None;
        }
        for (&c, &d) in term.iter().zip(shape) {
            match sizes.iter_mut().find(|(k, _)| *k == c) {
                Some((_, size)) if *size == 1 => *size = d,
                Some((_, size)) if d != 1 && *size != d => return None,
                Some(_) => {}
                None => sizes.push((c, d)),
            }
        }
    }
    Some(sizes)
}
