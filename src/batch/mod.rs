//! How values are cut into per-stream parts and put back together: the [`Batch`] trait and its
//! implementations, under a [`Hint`].
//!
//! - this file: the trait, `Hint`'s checks, and the helpers every implementation shares;
//! - array.rs: ndarray's `Array` and `ArcArray` (split and concat along an axis);
//! - scalar.rs: values that can only be replicated (numbers, strings, `()`);
//! - containers.rs: tuples, `Vec`, `Option`, `BTreeMap` / `HashMap` by key;
//! - rows.rs: [`Rows`], a list whose elements are the batch's rows.

use crate::error::{Error, Result};

mod array;
mod containers;
mod rows;
mod scalar;

pub use crate::hint::Hint;
pub use crate::pool::split_sizes;
pub use rows::Rows;

impl Hint {
    /// The hint for position `i` of a structure with `len` positions.
    ///
    /// # Errors
    ///
    /// [`Error::HintMismatch`] for a `Tuple` of another length or a `Map`.
    pub fn position(&self, i: usize, len: usize) -> Result<&Hint> {
        match self {
            Hint::Dim(_) | Hint::Replicate => Ok(self),
            Hint::Tuple(hints) if hints.len() == len => Ok(&hints[i]),
            Hint::Tuple(hints) => Err(Error::HintMismatch(format!(
                "a Tuple hint of {} entries for a value with {len} positions; give exactly {len}",
                hints.len()
            ))),
            Hint::Map(_) => Err(Error::HintMismatch(format!(
                "a Map hint for a value with {len} positions; use Tuple or a leaf hint"
            ))),
        }
    }

    /// The hint for key `key` of a map.
    ///
    /// # Errors
    ///
    /// [`Error::HintMismatch`] when a `Map` hint lacks the key, or for a `Tuple`.
    pub fn key(&self, key: &str) -> Result<&Hint> {
        match self {
            Hint::Dim(_) | Hint::Replicate => Ok(self),
            Hint::Map(hints) => hints.get(key).ok_or_else(|| {
                Error::HintMismatch(format!(
                    "the Map hint has no entry for key {key:?}; hinted keys: {:?}",
                    hints.keys().collect::<Vec<_>>()
                ))
            }),
            Hint::Tuple(_) => Err(Error::HintMismatch(format!(
                "a Tuple hint for a map (key {key:?}); use Map or a leaf hint"
            ))),
        }
    }

    fn leaf_only(&self, what: &str) -> Result<()> {
        match self {
            Hint::Dim(_) | Hint::Replicate => Ok(()),
            other => Err(Error::HintMismatch(format!(
                "{what} takes a leaf hint (Dim or Replicate), got {other:?}"
            ))),
        }
    }
}

/// A value that can be measured, split into per-stream parts and concatenated back under a
/// [`Hint`].
///
/// Implemented for ndarray's `Array` and `ArcArray` of any dimension (`ArcArray` splits without
/// copying), tuples of 1 to 8 elements, `Vec`, `Option`, string-keyed `BTreeMap`/`HashMap`, and
/// plain scalars (`bool`, numbers, `String`: `Replicate` only).
///
/// ```
/// use corestream::ndarray::{array, Array2};
/// use corestream::{Batch, Hint};
///
/// let x: Array2<f32> = array![[1., 2.], [3., 4.], [5., 6.]];
/// assert_eq!(x.batch_size(&Hint::Dim(0))?, Some(3));
/// let parts = x.clone().split(&Hint::Dim(0), &[2, 1])?;
/// assert_eq!(parts[1], array![[5., 6.]]);
/// assert_eq!(Array2::concat(parts, &Hint::Dim(0))?, x);
/// # Ok::<(), corestream::Error>(())
/// ```
pub trait Batch: Sized + Send + 'static {
    /// The batch size under `hint`: `Some(rows)` when some leaf is split, `None` when every leaf
    /// is replicated.
    ///
    /// # Errors
    ///
    /// [`Error::BatchMismatch`] when split leaves disagree, [`Error::DimOutOfRange`] for a dim
    /// beyond a leaf's rank, [`Error::HintMismatch`] when the hint does not fit the structure.
    fn batch_size(&self, hint: &Hint) -> Result<Option<usize>>;

    /// Cuts the value into `sizes.len()` parts with `sizes[i]` rows each; replicated leaves
    /// are cloned into every part.
    ///
    /// # Errors
    ///
    /// As [`batch_size`](Batch::batch_size); [`Error::BatchMismatch`] when the sizes do not add
    /// up to the batch.
    fn split(self, hint: &Hint, sizes: &[usize]) -> Result<Vec<Self>>;

    /// Joins parts in order; replicated leaves keep the first part's value.
    ///
    /// # Errors
    ///
    /// [`Error::Concat`] when parts do not fit together (shapes, lengths, keys),
    /// [`Error::DimOutOfRange`] and [`Error::HintMismatch`] as above.
    fn concat(parts: Vec<Self>, hint: &Hint) -> Result<Self>;
}

/// Merges two leaves' batch sizes.
pub(super) fn merge(a: Option<usize>, b: Option<usize>) -> Result<Option<usize>> {
    match (a, b) {
        (Some(x), Some(y)) if x != y => Err(Error::BatchMismatch {
            first: x,
            second: y,
        }),
        (Some(x), _) | (None, Some(x)) => Ok(Some(x)),
        (None, None) => Ok(None),
    }
}

/// `n` copies of `value` (the last one moved, not cloned).
pub(super) fn replicate<T: Clone>(value: T, n: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(n);
    if n > 0 {
        out.extend(std::iter::repeat_n(&value, n - 1).cloned());
        out.push(value);
    }
    out
}

/// Concatenating no parts is an error for every value: there is nothing to rebuild the value
/// from (an empty `Vec`, `None` or empty `Rows` would be a made-up result).
pub(super) fn no_parts() -> Error {
    Error::Concat("no parts to concatenate".into())
}

pub(super) fn first_part<T>(parts: Vec<T>) -> Result<T> {
    parts.into_iter().next().ok_or_else(no_parts)
}

pub(super) fn check_parts<T>(parts: &[T], sizes: &[usize], what: &str) -> Result<()> {
    if parts.len() == sizes.len() {
        Ok(())
    } else {
        Err(Error::Concat(format!(
            "{what} split into {} parts, {} expected",
            parts.len(),
            sizes.len()
        )))
    }
}

pub(super) fn check_dim(dim: usize, rank: usize) -> Result<()> {
    if dim < rank {
        Ok(())
    } else {
        Err(Error::DimOutOfRange { dim, rank })
    }
}

pub(super) fn check_total(rows: usize, sizes: &[usize]) -> Result<()> {
    // Checked: sizes that overflow a usize add up to no batch, not even one of usize::MAX rows
    // (a plain sum panicked on them, found by fuzz target `batch`; a saturated one equalled
    // such a batch). The error then reports usize::MAX.
    match sizes.iter().try_fold(0usize, |sum, &n| sum.checked_add(n)) {
        Some(total) if total == rows => Ok(()),
        total => Err(Error::BatchMismatch {
            first: total.unwrap_or(usize::MAX),
            second: rows,
        }),
    }
}

/// Row ranges `[start, end)` for consecutive sizes: only after [`check_total`], whose checked
/// sum bounds every `start + n` here.
pub(super) fn ranges(sizes: &[usize]) -> impl Iterator<Item = (usize, usize)> + '_ {
    sizes.iter().scan(0, |start, &n| {
        let range = (*start, *start + n);
        *start += n;
        Some(range)
    })
}

#[cfg(test)]
mod fuzz_regressions {
    use super::*;
    use ndarray::{array, ArrayD};

    /// Found by fuzz target `batch` (fuzz/corpus/batch/seed_5_0): a `Vec` split into no parts
    /// concatenated to `Ok(vec![])`, a value made up from nothing; `Option` (`Ok(None)`) and
    /// `Rows` (`Ok(Rows([]))`) did the same. No parts is now an error for every value, as it
    /// was for arrays, maps and tensors.
    #[test]
    fn concatenating_no_parts_is_an_error_for_every_value() {
        let v = vec![array![1, 2].into_dyn(), array![3, 4].into_dyn()];
        assert!(v.split(&Hint::Replicate, &[]).unwrap().is_empty());
        for hint in [Hint::Dim(0), Hint::Replicate] {
            assert!(matches!(
                Vec::<ArrayD<i32>>::concat(vec![], &hint),
                Err(Error::Concat(_))
            ));
            assert!(matches!(
                Option::<ArrayD<i32>>::concat(vec![], &hint),
                Err(Error::Concat(_))
            ));
            assert!(matches!(
                Rows::<u8>::concat(vec![], &hint),
                Err(Error::Concat(_))
            ));
        }
        // One part or more still concatenates as before.
        let parts = vec![vec![array![1].into_dyn()], vec![array![2].into_dyn()]];
        assert_eq!(
            Vec::concat(parts, &Hint::Dim(0)).unwrap(),
            vec![array![1, 2].into_dyn()]
        );
        assert_eq!(
            Option::<ArrayD<i32>>::concat(vec![None, None], &Hint::Dim(0)).unwrap(),
            None
        );
    }

    /// Found by fuzz target `batch` (fuzz/corpus/batch/crash-0c613bc5...): part sizes whose
    /// sum overflows a usize panicked ("attempt to add with overflow") in debug builds and
    /// wrapped around in release builds, where `[usize::MAX, 2]` passed the check for a batch
    /// of 1 and the reversed row range then panicked in ndarray.
    #[test]
    fn part_sizes_that_overflow_are_a_batch_mismatch() {
        let x = array![[1.0f32], [2.0]].into_dyn();
        for sizes in [
            &[usize::MAX, 3][..],
            &[usize::MAX, usize::MAX, 4],
            &[1, usize::MAX],
        ] {
            assert!(matches!(
                x.clone().split(&Hint::Dim(0), sizes),
                Err(Error::BatchMismatch { .. })
            ));
            assert!(matches!(
                x.clone().into_shared().split(&Hint::Dim(0), sizes),
                Err(Error::BatchMismatch { .. })
            ));
            assert!(matches!(
                Rows(vec![1u8, 2]).split(&Hint::Dim(0), sizes),
                Err(Error::BatchMismatch { .. })
            ));
        }
    }
}
