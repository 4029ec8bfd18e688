//! The backend-neutral tensor: conversions, typed access, split/concat round trips.

use corestream::backend::{ElementType, Tensor};
use corestream::ndarray::{array, Array, ArrayD, IxDyn};
use corestream::{Batch, Error, Hint};

fn f32_tensor(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from(Array::from_shape_vec(IxDyn(shape), (0..n).map(|i| i as f32).collect()).unwrap())
}

#[test]
fn every_element_type_converts_and_reports_itself() {
    let cases = [
        (Tensor::from(array![1.0f32]), ElementType::F32, "f32"),
        (Tensor::from(array![1.0f64]), ElementType::F64, "f64"),
        (Tensor::from(array![1i64]), ElementType::I64, "i64"),
        (Tensor::from(array![1i32]), ElementType::I32, "i32"),
        (Tensor::from(array![1u8]), ElementType::U8, "u8"),
        (Tensor::from(array![true]), ElementType::Bool, "bool"),
    ];
    for (t, ty, name) in cases {
        assert_eq!(t.element_type(), ty);
        assert_eq!(ty.to_string(), name);
        assert_eq!(t.shape(), [1]);
        assert_eq!(t.len(), 1);
    }
}

#[test]
fn wrong_type_is_a_typed_error() {
    let t = Tensor::from(array![[1i64, 2], [3, 4]]);
    let err = t.view::<f32>().unwrap_err();
    assert!(
        matches!(
            err,
            Error::ElementType {
                expected: ElementType::F32,
                found: ElementType::I64
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "the tensor holds i64 elements, not f32");
    assert!(matches!(
        t.clone().into_array::<u8>(),
        Err(Error::ElementType { .. })
    ));
    assert!(t.to_owned_array::<bool>().is_err());
    let back: ArrayD<i64> = t.to_owned_array().unwrap();
    assert_eq!(back, array![[1i64, 2], [3, 4]].into_dyn());
}

#[test]
fn split_shares_and_concat_restores_along_every_axis() {
    let x = f32_tensor(&[5, 3, 4]);
    for dim in 0..3 {
        let n = x.shape()[dim];
        let sizes = corestream::batch::split_sizes(n, 2);
        assert_eq!(x.batch_size(&Hint::Dim(dim)).unwrap(), Some(n));
        let parts = x.clone().split(&Hint::Dim(dim), &sizes).unwrap();
        assert_eq!(parts.len(), 2);
        // Zero-copy: the first part starts at the buffer's start.
        assert_eq!(
            parts[0].view::<f32>().unwrap().as_ptr(),
            x.view::<f32>().unwrap().as_ptr()
        );
        assert_eq!(parts[0].shape()[dim], sizes[0]);
        assert_eq!(Tensor::concat(parts, &Hint::Dim(dim)).unwrap(), x);
    }
}

#[test]
fn vec_of_tensors_of_mixed_types_round_trips() {
    let ids = Tensor::from(Array::from_shape_fn((4, 6), |(i, j)| (i * 10 + j) as i64));
    let mask = Tensor::from(Array::from_shape_fn((4, 6), |(i, j)| j <= i));
    let x = vec![ids, mask, f32_tensor(&[4, 2])];
    let parts = x.clone().split(&Hint::Dim(0), &[2, 1, 1]).unwrap();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[2][0].shape(), [1, 6]);
    assert_eq!(parts[2][1].element_type(), ElementType::Bool);
    assert_eq!(Vec::<Tensor>::concat(parts, &Hint::Dim(0)).unwrap(), x);
}

#[test]
fn replicate_and_errors() {
    let x = f32_tensor(&[2, 2]);
    let parts = x.clone().split(&Hint::Replicate, &[1, 1, 1]).unwrap();
    assert!(parts.iter().all(|p| *p == x));
    assert_eq!(Tensor::concat(parts, &Hint::Replicate).unwrap(), x);
    assert!(matches!(
        x.batch_size(&Hint::Dim(2)),
        Err(Error::DimOutOfRange { dim: 2, rank: 2 })
    ));
    assert!(matches!(
        x.clone().split(&Hint::Dim(0), &[1, 2]),
        Err(Error::BatchMismatch { .. })
    ));
    let mixed = vec![f32_tensor(&[1, 2]), Tensor::from(array![[1i64, 2]])];
    let err = Tensor::concat(mixed, &Hint::Dim(0)).unwrap_err();
    assert!(matches!(err, Error::Concat(_)), "{err:?}");
    assert!(err.to_string().contains("f32 and i64"), "{err}");
    assert!(matches!(
        Tensor::concat(vec![], &Hint::Dim(0)),
        Err(Error::Concat(_))
    ));
    let shapes = vec![f32_tensor(&[1, 2]), f32_tensor(&[1, 3])];
    assert!(matches!(
        Tensor::concat(shapes, &Hint::Dim(0)),
        Err(Error::Concat(_))
    ));
}

#[test]
fn zeros_and_non_standard_layout_views() {
    let z = Tensor::zeros::<bool>(&[2, 3]);
    assert_eq!(
        z.to_owned_array::<bool>().unwrap(),
        ArrayD::from_elem(IxDyn(&[2, 3]), false)
    );
    // A transposed array stays transposed (no copy on conversion).
    let t = Tensor::from(array![[1.0f64, 2.0], [3.0, 4.0]].reversed_axes());
    assert_eq!(t.view::<f64>().unwrap()[[0, 1]], 3.0);
}

/// A shape whose element count overflows a usize is a typed error, and so is its message: the
/// error's text multiplied the dims unchecked ("attempt to multiply with overflow" in debug
/// builds, a wrapped count in release builds).
#[test]
fn shapes_whose_size_overflows_are_typed_errors() {
    for shape in [
        vec![usize::MAX, 2],
        vec![1 << 32, 1 << 32],
        vec![2, 3, usize::MAX / 4],
    ] {
        let err = Tensor::from_shape_vec(&shape, vec![0f32; 6]).unwrap_err();
        assert!(
            matches!(&err, Error::TensorShape { shape: s, len: 6 } if *s == shape),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("more than"), "{msg}");
        assert!(msg.contains(&format!("{shape:?}")), "{msg}");
    }
    // A count that fits is still written out.
    let err = Tensor::from_shape_vec(&[2, 3], vec![0u8; 5]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "a tensor of shape [2, 3] needs 6 elements, got 5"
    );
}
