//! ndarray arrays as batches: split and concat along the hint's axis.

use ndarray::{ArcArray, Array, ArrayBase, ArrayView, Axis, Data, RemoveAxis, Slice};

use super::*;

pub(super) fn array_batch_size(shape: &[usize], hint: &Hint) -> Result<Option<usize>> {
    hint.leaf_only("an array")?;
    match *hint {
        Hint::Dim(d) => {
            check_dim(d, shape.len())?;
            Ok(Some(shape[d]))
        }
        _ => Ok(None),
    }
}

pub(super) fn concat_views<A: Clone, D: RemoveAxis>(
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
pub(super) fn array_split_axis(
    hint: &Hint,
    shape: &[usize],
    sizes: &[usize],
) -> Result<Option<usize>> {
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
pub(super) fn concat_arrays<A, S, D>(
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
