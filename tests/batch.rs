//! Batch and Hint: split-then-concat identity and the remainder rule (proptest), plus the exact
//! values of the anchor's checklist and the error paths.

use std::collections::{BTreeMap, HashMap};

use corestream::batch::split_sizes;
use corestream::ndarray::{ArcArray, ArrayD, Axis, IxDyn};
use corestream::{module_fn, Batch, CpuPool, Error, Hint, MultiStreamModule, Streams};
use proptest::prelude::*;

fn arange(shape: &[usize]) -> ArrayD<i32> {
    let n: usize = shape.iter().product();
    ArrayD::from_shape_vec(IxDyn(shape), (0..n as i32).collect()).unwrap()
}

#[test]
fn anchor_checklist_split_sizes() {
    assert_eq!(split_sizes(4, 3), [2, 1, 1]);
    assert_eq!(split_sizes(2, 3), [1, 1]);
    assert_eq!(split_sizes(3, 3), [1, 1, 1]);
    assert_eq!(split_sizes(7, 3), [3, 2, 2]);
    assert_eq!(split_sizes(10, 4), [3, 3, 2, 2]);
    assert!(split_sizes(0, 3).is_empty());
}

/// Shape (rank 1 to 4, dims 1 to 5), a split dim within the rank, and a stream count.
fn shape_dim_streams() -> impl Strategy<Value = (Vec<usize>, usize, usize)> {
    prop::collection::vec(1usize..6, 1..5).prop_flat_map(|shape| {
        let rank = shape.len();
        (Just(shape), 0..rank, 1usize..9)
    })
}

proptest! {
    #[test]
    fn split_sizes_follow_the_remainder_rule(total in 0usize..200, parts in 1usize..32) {
        let sizes = split_sizes(total, parts);
        prop_assert_eq!(sizes.len(), total.min(parts));
        prop_assert_eq!(sizes.iter().sum::<usize>(), total);
        if !sizes.is_empty() {
            let used = sizes.len();
            for (i, &s) in sizes.iter().enumerate() {
                prop_assert_eq!(s, total / used + usize::from(i < total % used));
            }
        }
    }

    #[test]
    fn array_split_then_concat_is_identity((shape, dim, streams) in shape_dim_streams()) {
        let x = arange(&shape);
        let hint = Hint::Dim(dim);
        let b = x.batch_size(&hint).unwrap().unwrap();
        prop_assert_eq!(b, shape[dim]);
        let sizes = split_sizes(b, streams);
        let parts = x.clone().split(&hint, &sizes).unwrap();
        let got: Vec<usize> = parts.iter().map(|p| p.len_of(Axis(dim))).collect();
        prop_assert_eq!(&got, &sizes);
        prop_assert_eq!(ArrayD::concat(parts, &hint).unwrap(), x);
    }

    #[test]
    fn arc_array_split_shares_the_buffer((shape, dim, streams) in shape_dim_streams()) {
        let x: ArcArray<i32, IxDyn> = arange(&shape).into_shared();
        let hint = Hint::Dim(dim);
        let sizes = split_sizes(shape[dim], streams);
        let parts = x.clone().split(&hint, &sizes).unwrap();
        let start = x.as_ptr() as usize;
        let end = start + x.len() * std::mem::size_of::<i32>();
        for p in &parts {
            let ptr = p.as_ptr() as usize;
            prop_assert!(ptr >= start && ptr < end, "part copied");
        }
        prop_assert_eq!(ArcArray::concat(parts, &hint).unwrap(), x);
    }

    #[test]
    fn structures_split_then_concat_is_identity(
        b in 1usize..12, streams in 1usize..6, w in 1usize..4, flag: bool
    ) {
        type V = (ArrayD<i32>, Vec<ArrayD<i32>>, Option<ArrayD<i32>>, BTreeMap<String, ArrayD<i32>>, bool);
        let value: V = (
            arange(&[b, w]),
            vec![arange(&[w, b]), arange(&[b])],
            Some(arange(&[b, 2])),
            BTreeMap::from([("k".to_string(), arange(&[b, w, 2]))]),
            flag,
        );
        let hint = Hint::Tuple(vec![
            Hint::Dim(0),
            Hint::Tuple(vec![Hint::Dim(1), Hint::Dim(0)]),
            Hint::Dim(0),
            Hint::Map(BTreeMap::from([("k".to_string(), Hint::Dim(0))])),
            Hint::Replicate,
        ]);
        prop_assert_eq!(value.batch_size(&hint).unwrap(), Some(b));
        let sizes = split_sizes(b, streams);
        let parts = value.clone().split(&hint, &sizes).unwrap();
        prop_assert_eq!(parts.len(), sizes.len());
        for (part, &rows) in parts.iter().zip(&sizes) {
            prop_assert_eq!(part.0.nrows_dyn(), rows);
            prop_assert_eq!(part.4, flag);
        }
        prop_assert_eq!(V::concat(parts, &hint).unwrap(), value);
    }

    #[test]
    fn rowwise_model_multi_stream_equals_direct(b in 1usize..40, w in 1usize..8, seed in 0i32..1000) {
        let pool = CpuPool::all().unwrap();
        let model = |x: ArrayD<i32>| -> Result<ArrayD<i32>, corestream::BoxError> {
            let sums = x.sum_axis(Axis(1)).insert_axis(Axis(1));
            Ok(&x * 3 + &sums)
        };
        let x = arange(&[b, w]) + seed;
        let expected = model(x.clone()).unwrap();
        for n in 1..=pool.len() {
            let msm = MultiStreamModule::builder(module_fn(model))
                .pool(pool.clone())
                .num_streams(Streams::Count(n))
                .build()
                .unwrap();
            prop_assert_eq!(msm.forward_sync(x.clone()).unwrap(), expected.clone());
        }
    }
}

trait Rows {
    fn nrows_dyn(&self) -> usize;
}

impl Rows for ArrayD<i32> {
    fn nrows_dyn(&self) -> usize {
        self.len_of(Axis(0))
    }
}

#[test]
fn leaf_hint_applies_to_every_element() {
    let value = (arange(&[4, 2]), vec![arange(&[4]), arange(&[4, 1])]);
    assert_eq!(value.batch_size(&Hint::Dim(0)).unwrap(), Some(4));
    let parts = value.clone().split(&Hint::Dim(0), &[3, 1]).unwrap();
    assert_eq!(
        parts[1].1[1],
        arange(&[4, 1])
            .slice_axis(Axis(0), (3..4).into())
            .to_owned()
    );
    assert_eq!(
        <(ArrayD<i32>, Vec<ArrayD<i32>>)>::concat(parts, &Hint::Dim(0)).unwrap(),
        value
    );
}

#[test]
fn error_paths() {
    // Mismatched batch sizes between leaves.
    let v = (arange(&[3, 2]), arange(&[4, 2]));
    assert!(matches!(
        v.batch_size(&Hint::Dim(0)),
        Err(Error::BatchMismatch {
            first: 3,
            second: 4
        })
    ));
    // A dim beyond the rank.
    assert!(matches!(
        arange(&[3]).batch_size(&Hint::Dim(1)),
        Err(Error::DimOutOfRange { dim: 1, rank: 1 })
    ));
    // Sizes that do not add up.
    assert!(matches!(
        arange(&[3]).split(&Hint::Dim(0), &[1, 1]),
        Err(Error::BatchMismatch { .. })
    ));
    // A Tuple hint of the wrong length, a Map hint for a tuple, a Tuple hint for an array.
    assert!(matches!(
        v.batch_size(&Hint::Tuple(vec![Hint::Dim(0)])),
        Err(Error::HintMismatch(_))
    ));
    assert!(matches!(
        v.batch_size(&Hint::Map(BTreeMap::new())),
        Err(Error::HintMismatch(_))
    ));
    assert!(matches!(
        arange(&[2]).batch_size(&Hint::Tuple(vec![])),
        Err(Error::HintMismatch(_))
    ));
    // A scalar cannot be split.
    assert!(matches!(
        true.batch_size(&Hint::Dim(0)),
        Err(Error::HintMismatch(_))
    ));
    // A Map hint naming a key the value lacks, and a value key without a hint.
    let m = HashMap::from([("a".to_string(), arange(&[2]))]);
    let hint_b = Hint::Map(BTreeMap::from([("b".to_string(), Hint::Dim(0))]));
    assert!(matches!(m.batch_size(&hint_b), Err(Error::HintMismatch(_))));
    // Concat of incompatible shapes and of Option parts that disagree.
    assert!(matches!(
        ArrayD::concat(vec![arange(&[1, 2]), arange(&[1, 3])], &Hint::Dim(0)),
        Err(Error::Concat(_))
    ));
    assert!(matches!(
        Option::concat(vec![Some(arange(&[1])), None], &Hint::Dim(0)),
        Err(Error::Concat(_))
    ));
    assert!(matches!(
        ArrayD::<i32>::concat(vec![], &Hint::Dim(0)),
        Err(Error::Concat(_))
    ));
}

#[test]
fn replicated_output_takes_stream_zero() {
    let parts = vec![(arange(&[1]), 10u32), (arange(&[1]) + 1, 20u32)];
    let hint = Hint::Tuple(vec![Hint::Dim(0), Hint::Replicate]);
    let (rows, first) = <(ArrayD<i32>, u32)>::concat(parts, &hint).unwrap();
    assert_eq!(first, 10);
    assert_eq!(rows.len(), 2);
}

/// Part sizes whose sum overflows never add up to a batch, even one of `usize::MAX` rows (a
/// `Rows` of a zero-sized type can be that long): the saturated sum equalled such a batch, so
/// `[usize::MAX, 1]` passed as a split of `usize::MAX` rows and the split then ran for ever
/// taking rows. Run on a thread with a deadline, so that the old behaviour fails, not hangs.
#[test]
#[allow(clippy::uninit_vec)] // about element types with bytes; `()` has none
fn part_sizes_that_overflow_never_match_a_batch() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut rows: Vec<()> = Vec::new();
        // SAFETY: a Vec of a zero-sized type has capacity usize::MAX and no bytes to
        // initialise; every `()` is valid.
        unsafe { rows.set_len(usize::MAX) };
        let rows = corestream::batch::Rows(rows);
        let _ = tx.send(rows.split(&Hint::Dim(0), &[usize::MAX, 1]).map(|p| p.len()));
    });
    let result = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("split answered within 10 s");
    assert!(
        matches!(result, Err(Error::BatchMismatch { .. })),
        "{result:?}"
    );
}
