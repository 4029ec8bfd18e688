//! [`Rows`]: a list whose elements are the batch's rows (ragged items such as texts).

use super::*;

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
