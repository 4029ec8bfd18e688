//! How values are cut into per-stream parts and put back together: the [`Batch`] trait and its
//! implementations, under a [`Hint`].

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;

use ndarray::{ArcArray, Array, ArrayBase, ArrayView, Axis, Data, RemoveAxis, Slice};

use crate::error::{Error, Result};
pub use crate::hint::Hint;
pub use crate::pool::split_sizes;

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
fn merge(a: Option<usize>, b: Option<usize>) -> Result<Option<usize>> {
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
fn replicate<T: Clone>(value: T, n: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(n);
    if n > 0 {
        out.extend(std::iter::repeat_n(&value, n - 1).cloned());
        out.push(value);
    }
    out
}

/// Concatenating no parts is an error for every value: there is nothing to rebuild the value
/// from (an empty `Vec`, `None` or empty `Rows` would be a made-up result).
fn no_parts() -> Error {
    Error::Concat("no parts to concatenate".into())
}

fn first_part<T>(parts: Vec<T>) -> Result<T> {
    parts.into_iter().next().ok_or_else(no_parts)
}

fn check_parts<T>(parts: &[T], sizes: &[usize], what: &str) -> Result<()> {
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

fn check_dim(dim: usize, rank: usize) -> Result<()> {
    if dim < rank {
        Ok(())
    } else {
        Err(Error::DimOutOfRange { dim, rank })
    }
}

fn check_total(rows: usize, sizes: &[usize]) -> Result<()> {
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
fn ranges(sizes: &[usize]) -> impl Iterator<Item = (usize, usize)> + '_ {
    sizes.iter().scan(0, |start, &n| {
        let range = (*start, *start + n);
        *start += n;
        Some(range)
    })
}

fn array_batch_size(shape: &[usize], hint: &Hint) -> Result<Option<usize>> {
    hint.leaf_only("an array")?;
    match *hint {
        Hint::Dim(d) => {
            check_dim(d, shape.len())?;
            Ok(Some(shape[d]))
        }
        _ => Ok(None),
    }
}

fn concat_views<A: Clone, D: RemoveAxis>(
    views: &[ArrayView<'_, A, D>],
    dim: usize,
) -> Result<Array<A, D>> {
    check_dim(dim, views.first().map_or(0, |v| v.ndim()))?;
    ndarray::concatenate(Axis(dim), views).map_err(|e| {
        let shapes: Vec<_> = views.iter().map(|v| v.shape().to_vec()).collect();
        Error::Concat(format!("arrays of shapes {shapes:?} along dim {dim}: {e}"))
    })
}

/// Checks an array's leaf hint against its shape and the part sizes: `Some(axis)` to split,
/// `None` to replicate.
fn array_split_axis(hint: &Hint, shape: &[usize], sizes: &[usize]) -> Result<Option<usize>> {
    hint.leaf_only("an array")?;
    let Hint::Dim(d) = *hint else {
        return Ok(None);
    };
    check_dim(d, shape.len())?;
    check_total(shape[d], sizes)?;
    Ok(Some(d))
}

/// Joins array parts along the hint's axis (`Replicate`: the first part); `own` turns the
/// freshly concatenated array into the parts' storage type.
fn concat_arrays<A, S, D>(
    parts: Vec<ArrayBase<S, D>>,
    hint: &Hint,
    own: impl FnOnce(Array<A, D>) -> ArrayBase<S, D>,
) -> Result<ArrayBase<S, D>>
where
    A: Clone,
    S: Data<Elem = A>,
    D: RemoveAxis,
{
    hint.leaf_only("an array")?;
    match *hint {
        Hint::Dim(d) if parts.len() > 1 => {
            let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
            Ok(own(concat_views(&views, d)?))
        }
        Hint::Dim(d) => {
            let part = first_part(parts)?;
            check_dim(d, part.ndim())?;
            Ok(part)
        }
        _ => first_part(parts),
    }
}

impl<A, D> Batch for Array<A, D>
where
    A: Clone + Send + Sync + 'static,
    D: RemoveAxis + Send + 'static,
{
    fn batch_size(&self, hint: &Hint) -> Result<Option<usize>> {
        array_batch_size(self.shape(), hint)
    }

    fn split(self, hint: &Hint, sizes: &[usize]) -> Result<Vec<Self>> {
        match array_split_axis(hint, self.shape(), sizes)? {
            None => Ok(replicate(self, sizes.len())),
            Some(_) if sizes.len() == 1 => Ok(vec![self]),
            Some(d) => Ok(ranges(sizes)
                .map(|(a, b)| self.slice_axis(Axis(d), Slice::from(a..b)).to_owned())
                .collect()),
        }
    }

    fn concat(parts: Vec<Self>, hint: &Hint) -> Result<Self> {
        concat_arrays(parts, hint, |a| a)
    }
}

impl<A, D> Batch for ArcArray<A, D>
where
    A: Clone + Send + Sync + 'static,
    D: RemoveAxis + Send + Sync + 'static,
{
    fn batch_size(&self, hint: &Hint) -> Result<Option<usize>> {
        array_batch_size(self.shape(), hint)
    }

    /// Splits without copying: every part shares the buffer and narrows its view.
    fn split(self, hint: &Hint, sizes: &[usize]) -> Result<Vec<Self>> {
        match array_split_axis(hint, self.shape(), sizes)? {
            None => Ok(replicate(self, sizes.len())),
            Some(d) => Ok(ranges(sizes)
                .map(|(a, b)| {
                    let mut part = self.clone();
                    part.slice_axis_inplace(Axis(d), Slice::from(a..b));
                    part
                })
                .collect()),
        }
    }

    fn concat(parts: Vec<Self>, hint: &Hint) -> Result<Self> {
        concat_arrays(parts, hint, Array::into_shared)
    }
}

macro_rules! replicate_only {
    ($($t:ty),* $(,)?) => {$(
        impl Batch for $t {
            fn batch_size(&self, hint: &Hint) -> Result<Option<usize>> {
                scalar_hint(hint, stringify!($t))
            }

            fn split(self, hint: &Hint, sizes: &[usize]) -> Result<Vec<Self>> {
                scalar_hint(hint, stringify!($t))?;
                Ok(replicate(self, sizes.len()))
            }

            fn concat(parts: Vec<Self>, hint: &Hint) -> Result<Self> {
                scalar_hint(hint, stringify!($t))?;
                first_part(parts)
            }
        }
    )*};
}

/// Scalars have no batch: only `Replicate` fits them.
fn scalar_hint(hint: &Hint, ty: &str) -> Result<Option<usize>> {
    match hint {
        Hint::Replicate => Ok(None),
        other => Err(Error::HintMismatch(format!(
            "a {ty} has no batch to split under {other:?}; use Hint::Replicate"
        ))),
    }
}

replicate_only!(
    (),
    bool,
    char,
    u8,
    u16,
    u32,
    u64,
    usize,
    i8,
    i16,
    i32,
    i64,
    isize,
    f32,
    f64,
    String
);

macro_rules! tuple_batch {
    ($len:expr; $($t:ident $i:tt),+) => {
        impl<$($t: Batch),+> Batch for ($($t,)+) {
            fn batch_size(&self, hint: &Hint) -> Result<Option<usize>> {
                let mut size = None;
                $( size = merge(size, self.$i.batch_size(hint.position($i, $len)?)?)?; )+
                Ok(size)
            }

            fn split(self, hint: &Hint, sizes: &[usize]) -> Result<Vec<Self>> {
                let split = ($({
                    let parts = self.$i.split(hint.position($i, $len)?, sizes)?;
                    check_parts(&parts, sizes, "a tuple field")?;
                    parts.into_iter()
                },)+);
                #[allow(non_snake_case)]
                let ($(mut $t,)+) = split;
                // Every iterator holds exactly `sizes.len()` parts (checked above).
                Ok((0..sizes.len())
                    .filter_map(|_| Some(($($t.next()?,)+)))
                    .collect())
            }

            fn concat(parts: Vec<Self>, hint: &Hint) -> Result<Self> {
                #[allow(non_snake_case)]
                let ($(mut $t,)+) = ($({ let _ = $i; Vec::<$t>::with_capacity(parts.len()) },)+);
                for part in parts {
                    $( $t.push(part.$i); )+
                }
                Ok(($($t::concat($t, hint.position($i, $len)?)?,)+))
            }
        }
    };
}

tuple_batch!(1; T0 0);
tuple_batch!(2; T0 0, T1 1);
tuple_batch!(3; T0 0, T1 1, T2 2);
tuple_batch!(4; T0 0, T1 1, T2 2, T3 3);
tuple_batch!(5; T0 0, T1 1, T2 2, T3 3, T4 4);
tuple_batch!(6; T0 0, T1 1, T2 2, T3 3, T4 4, T5 5);
tuple_batch!(7; T0 0, T1 1, T2 2, T3 3, T4 4, T5 5, T6 6);
tuple_batch!(8; T0 0, T1 1, T2 2, T3 3, T4 4, T5 5, T6 6, T7 7);

/// Turns `n` rows of `k` parts into `k` rows of `n` items.
fn transpose<T>(rows: Vec<Vec<T>>, k: usize) -> Vec<Vec<T>> {
    let mut cols: Vec<Vec<T>> = (0..k).map(|_| Vec::with_capacity(rows.len())).collect();
    for row in rows {
        for (col, item) in cols.iter_mut().zip(row) {
            col.push(item);
        }
    }
    cols
}

/// A `Vec` is a structure, not a batch: each element is split under its hint (a leaf hint for
/// all, or a `Tuple` with one hint per position), like IPEX's lists of tensors.
impl<T: Batch> Batch for Vec<T> {
    fn batch_size(&self, hint: &Hint) -> Result<Option<usize>> {
        let mut size = None;
        for (i, item) in self.iter().enumerate() {
            size = merge(size, item.batch_size(hint.position(i, self.len())?)?)?;
        }
        Ok(size)
    }

    fn split(self, hint: &Hint, sizes: &[usize]) -> Result<Vec<Self>> {
        let len = self.len();
        let mut rows = Vec::with_capacity(len);
        for (i, item) in self.into_iter().enumerate() {
            let parts = item.split(hint.position(i, len)?, sizes)?;
            check_parts(&parts, sizes, "a Vec element")?;
            rows.push(parts);
        }
        Ok(transpose(rows, sizes.len()))
    }

    fn concat(parts: Vec<Self>, hint: &Hint) -> Result<Self> {
        let Some(first) = parts.first() else {
            return Err(no_parts());
        };
        let len = first.len();
        if let Some(bad) = parts.iter().find(|p| p.len() != len) {
            return Err(Error::Concat(format!(
                "Vec parts of different lengths ({len} and {})",
                bad.len()
            )));
        }
        transpose(parts, len)
            .into_iter()
            .enumerate()
            .map(|(i, column)| T::concat(column, hint.position(i, len)?))
            .collect()
    }
}

/// `None` is replicated as `None`; `Some` is split under the same hint.
impl<T: Batch> Batch for Option<T> {
    fn batch_size(&self, hint: &Hint) -> Result<Option<usize>> {
        match self {
            Some(v) => v.batch_size(hint),
            None => Ok(None),
        }
    }

    fn split(self, hint: &Hint, sizes: &[usize]) -> Result<Vec<Self>> {
        match self {
            Some(v) => Ok(v.split(hint, sizes)?.into_iter().map(Some).collect()),
            None => Ok((0..sizes.len()).map(|_| None).collect()),
        }
    }

    fn concat(parts: Vec<Self>, hint: &Hint) -> Result<Self> {
        if parts.is_empty() {
            return Err(no_parts());
        }
        let somes = parts.iter().filter(|p| p.is_some()).count();
        if somes == 0 {
            return Ok(None);
        }
        if somes != parts.len() {
            return Err(Error::Concat(format!(
                "{somes} of {} Option parts are Some; all or none must be",
                parts.len()
            )));
        }
        Ok(Some(T::concat(
            parts.into_iter().flatten().collect(),
            hint,
        )?))
    }
}

/// Checks that a `Map` hint names no key the value lacks.
fn check_map_keys(hint: &Hint, mut has: impl FnMut(&str) -> bool) -> Result<()> {
    if let Hint::Map(hints) = hint {
        if let Some(extra) = hints.keys().find(|k| !has(k)) {
            return Err(Error::HintMismatch(format!(
                "the Map hint names key {extra:?}, which the value does not have"
            )));
        }
    }
    Ok(())
}

macro_rules! map_batch {
    ($map:ident $(, $s:ident: $bound:path)?) => {
        impl<T: Batch $(, $s: $bound + Default + Clone + Send + 'static)?> Batch
            for $map<String, T $(, $s)?>
        {
            fn batch_size(&self, hint: &Hint) -> Result<Option<usize>> {
                check_map_keys(hint, |k| self.contains_key(k))?;
                let mut size = None;
                for (key, value) in self {
                    size = merge(size, value.batch_size(hint.key(key)?)?)?;
                }
                Ok(size)
            }

            fn split(self, hint: &Hint, sizes: &[usize]) -> Result<Vec<Self>> {
                check_map_keys(hint, |k| self.contains_key(k))?;
                let mut out: Vec<Self> = (0..sizes.len()).map(|_| Self::default()).collect();
                for (key, value) in self {
                    let parts = value.split(hint.key(&key)?, sizes)?;
                    check_parts(&parts, sizes, "a map value")?;
                    for (map, part) in out.iter_mut().zip(parts) {
                        map.insert(key.clone(), part);
                    }
                }
                Ok(out)
            }

            fn concat(parts: Vec<Self>, hint: &Hint) -> Result<Self> {
                let Some(first) = parts.first() else {
                    return Err(no_parts());
                };
                let mut keys: Vec<String> = first.keys().cloned().collect();
                keys.sort();
                if let Some(bad) = parts.iter().find(|p| {
                    p.len() != keys.len() || !keys.iter().all(|k| p.contains_key(k))
                }) {
                    let mut other: Vec<&String> = bad.keys().collect();
                    other.sort();
                    return Err(Error::Concat(format!(
                        "map parts with different keys ({keys:?} and {other:?})"
                    )));
                }
                check_map_keys(hint, |k| first.contains_key(k))?;
                let mut columns: BTreeMap<String, Vec<T>> =
                    keys.iter().map(|k| (k.clone(), Vec::new())).collect();
                for part in parts {
                    for (key, value) in part {
                        if let Some(column) = columns.get_mut(&key) {
                            column.push(value);
                        }
                    }
                }
                let mut out = Self::default();
                for (key, column) in columns {
                    let value = T::concat(column, hint.key(&key)?)?;
                    out.insert(key, value);
                }
                Ok(out)
            }
        }
    };
}

map_batch!(BTreeMap);
map_batch!(HashMap, S: BuildHasher);

/// A list whose elements are the rows of a batch: `Hint::Dim(0)` splits the list itself
/// (unlike `Vec<T>`, which is a structure whose every element is split). Use it for ragged
/// items that a model batches itself, such as token sequences of different lengths.
///
/// ```
/// use corestream::batch::Rows;
/// use corestream::{Batch, Hint};
///
/// let sentences = Rows(vec!["a".to_string(), "bb".into(), "ccc".into()]);
/// assert_eq!(sentences.batch_size(&Hint::Dim(0))?, Some(3));
/// let parts = sentences.clone().split(&Hint::Dim(0), &[2, 1])?;
/// assert_eq!(parts[1], Rows(vec!["ccc".to_string()]));
/// assert_eq!(Rows::concat(parts, &Hint::Dim(0))?, sentences);
/// # Ok::<(), corestream::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Rows<T>(pub Vec<T>);

impl<T: Clone + Send + 'static> Batch for Rows<T> {
    fn batch_size(&self, hint: &Hint) -> Result<Option<usize>> {
        match hint {
            Hint::Dim(0) => Ok(Some(self.0.len())),
            Hint::Dim(d) => Err(Error::DimOutOfRange { dim: *d, rank: 1 }),
            Hint::Replicate => Ok(None),
            other => Err(Error::HintMismatch(format!(
                "Rows take Hint::Dim(0) or Hint::Replicate, got {other:?}"
            ))),
        }
    }

    fn split(self, hint: &Hint, sizes: &[usize]) -> Result<Vec<Self>> {
        if self.batch_size(hint)?.is_none() {
            return Ok(replicate(self, sizes.len()));
        }
        check_total(self.0.len(), sizes)?;
        let mut rest = self.0.into_iter();
        Ok(sizes
            .iter()
            .map(|&n| Rows(rest.by_ref().take(n).collect()))
            .collect())
    }

    fn concat(parts: Vec<Self>, hint: &Hint) -> Result<Self> {
        match hint {
            Hint::Dim(0) if parts.is_empty() => Err(no_parts()),
            Hint::Dim(0) => Ok(Rows(parts.into_iter().flat_map(|p| p.0).collect())),
            _ => {
                let first = first_part(parts)?;
                first.batch_size(hint)?;
                Ok(first)
            }
        }
    }
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
