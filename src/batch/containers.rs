//! Tuples, `Vec`, `Option` and maps as batches: each element split and joined by its hint.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;

use super::*;
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
pub(super) fn transpose<T>(rows: Vec<Vec<T>>, k: usize) -> Vec<Vec<T>> {
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
pub(super) fn check_map_keys(hint: &Hint, mut has: impl FnMut(&str) -> bool) -> Result<()> {
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
