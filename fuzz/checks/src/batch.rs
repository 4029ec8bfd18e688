//! Target `batch`: `Batch::split` and `Batch::concat` under arbitrary hints, shapes and part
//! sizes, over every kind of value corestream can batch: ndarray `Array` and `ArcArray` of
//! fixed and dynamic rank, tuples (with replicated scalars), `Vec`, `Option`, `BTreeMap`,
//! `HashMap`, `Rows` and `backend::Tensor` of every element type.
//!
//! Checks: no panic; a split either fails with a typed error or gives exactly `sizes.len()`
//! parts of the requested sizes (each a copy of the value when nothing is split), and
//! concatenating those parts gives back exactly the value (with no parts, an error: there is
//! nothing to join).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;

use corestream::backend::Tensor;
use corestream::batch::{split_sizes, Rows};
use corestream::ndarray::{ArcArray, Array, Array2, ArrayD, Ix2, IxDyn};
use corestream::{Batch, Hint};

use super::bytes::Bytes;

/// Decodes a value, a hint and part sizes from `data`, and checks the round trip.
pub fn check(data: &[u8]) {
    let mut u = Bytes::new(data);
    let kind = u.below(13);
    let hint = hint(&mut u, 3);
    match kind {
        0 => run(array::<i32>(&mut u), hint, &mut u),
        1 => {
            let a: Array2<f32> = array::<f32>(&mut u)
                .into_dimensionality::<Ix2>()
                .unwrap_or_else(|_| Array2::zeros((u.below(4), u.below(4))));
            run(a, hint, &mut u)
        }
        2 => run(array::<u8>(&mut u).into_shared(), hint, &mut u),
        3 => {
            let b = array::<f32>(&mut u).into_shared();
            let b: ArcArray<f32, Ix2> = b.into_dimensionality().unwrap_or_else(|_| {
                ArcArray::from_shape_fn((u.below(4), 2), |(i, j)| (i * 2 + j) as f32)
            });
            run((array::<i32>(&mut u), b), hint, &mut u)
        }
        4 => {
            let scalar = f32::from(u.byte());
            run(
                (array::<i32>(&mut u), scalar, String::from("s")),
                hint,
                &mut u,
            )
        }
        5 => {
            let v: Vec<ArrayD<i64>> = (0..u.below(4)).map(|_| array::<i64>(&mut u)).collect();
            run(v, hint, &mut u)
        }
        6 => {
            let mut m = BTreeMap::new();
            for _ in 0..u.below(4) {
                m.insert(key(&mut u), array::<i32>(&mut u));
            }
            run(m, hint, &mut u)
        }
        7 => {
            let mut m = HashMap::new();
            for _ in 0..u.below(4) {
                m.insert(key(&mut u), tensor(&mut u));
            }
            run(m, hint, &mut u)
        }
        8 => {
            let o = u.flag().then(|| array::<u8>(&mut u));
            run(o, hint, &mut u)
        }
        9 => run(tensor(&mut u), hint, &mut u),
        10 => {
            let v: Vec<Tensor> = (0..u.below(4)).map(|_| tensor(&mut u)).collect();
            run(v, hint, &mut u)
        }
        11 => run(
            Rows((0..u.below(9)).map(|_| u.byte()).collect()),
            hint,
            &mut u,
        ),
        _ => {
            let rows = Rows((0..u.below(9)).map(|_| u.byte()).collect());
            let t = u.flag().then(|| tensor(&mut u));
            let v: Vec<ArrayD<i32>> = (0..u.below(3)).map(|_| array::<i32>(&mut u)).collect();
            run((rows, t, v), hint, &mut u)
        }
    }
}

/// A hint tree of at most `depth` levels.
fn hint(u: &mut Bytes<'_>, depth: usize) -> Hint {
    match u.below(if depth == 0 { 2 } else { 4 }) {
        0 => Hint::Dim(u.below(4)),
        1 => Hint::Replicate,
        2 => Hint::Tuple((0..u.below(4)).map(|_| hint(u, depth - 1)).collect()),
        _ => Hint::Map(
            (0..u.below(4))
                .map(|_| (key(u), hint(u, depth - 1)))
                .collect(),
        ),
    }
}

fn key(u: &mut Bytes<'_>) -> String {
    ["a", "b", "c", "d"][u.below(4)].to_string()
}

/// An array of rank 0 to 3, each axis 0 to 4 long, holding distinct small numbers (no NaN:
/// the round trip is checked with `==`).
fn array<T: From<u8>>(u: &mut Bytes<'_>) -> ArrayD<T> {
    let shape: Vec<usize> = (0..u.below(4)).map(|_| u.below(5)).collect();
    let mut next = u.byte();
    Array::from_shape_fn(IxDyn(&shape), |_| {
        next = next.wrapping_add(1);
        T::from(next)
    })
}

/// A tensor of any element type.
fn tensor(u: &mut Bytes<'_>) -> Tensor {
    match u.below(6) {
        0 => Tensor::from(array::<f32>(u)),
        1 => Tensor::from(array::<f64>(u)),
        2 => Tensor::from(array::<i64>(u)),
        3 => Tensor::from(array::<i32>(u)),
        4 => Tensor::from(array::<u8>(u)),
        _ => Tensor::from(array::<u8>(u).mapv(|x| x % 2 == 1)),
    }
}

/// Part sizes: an even split of the value's batch over 1 to 8 streams (what
/// `MultiStreamModule` asks for), or any list of up to 8 sizes, `usize::MAX` included.
fn sizes(u: &mut Bytes<'_>, batch: Option<usize>) -> Vec<usize> {
    if u.flag() {
        let streams = 1 + u.below(8);
        split_sizes(batch.unwrap_or(streams), streams)
    } else {
        (0..u.below(9))
            .map(|_| match u.byte() {
                255 => usize::MAX,
                b => usize::from(b % 9),
            })
            .collect()
    }
}

/// Splits `value` under `hint` into sizes read from `u`, and checks the parts and their
/// concatenation.
fn run<T: Batch + Clone + PartialEq + Debug>(value: T, hint: Hint, u: &mut Bytes<'_>) {
    let batch = value.batch_size(&hint);
    let sizes = sizes(u, batch.as_ref().ok().copied().flatten());
    let Ok(parts) = value.clone().split(&hint, &sizes) else {
        // A typed error (the type system guarantees it is a corestream::Error).
        return;
    };
    let batch = match batch {
        Ok(b) => b,
        Err(e) => panic!("split succeeded but batch_size failed: {e}; {value:?} under {hint:?}"),
    };
    assert_eq!(
        parts.len(),
        sizes.len(),
        "{value:?} under {hint:?} into {sizes:?}"
    );
    match batch {
        Some(rows) => {
            let total = sizes.iter().try_fold(0usize, |a, &b| a.checked_add(b));
            assert_eq!(total, Some(rows), "sizes {sizes:?} for a batch of {rows}");
            for (part, &n) in parts.iter().zip(&sizes) {
                assert_eq!(part.batch_size(&hint).ok(), Some(Some(n)), "part {part:?}");
            }
        }
        None => {
            for part in &parts {
                assert_eq!(part, &value, "a replicated part differs");
            }
        }
    }
    let joined = T::concat(parts, &hint);
    if sizes.is_empty() {
        assert!(joined.is_err(), "no parts concatenated to {joined:?}");
    } else {
        match joined {
            Ok(joined) => assert_eq!(joined, value, "round trip under {hint:?} into {sizes:?}"),
            Err(e) => panic!("parts of {value:?} under {hint:?} into {sizes:?} do not concat: {e}"),
        }
    }
}
