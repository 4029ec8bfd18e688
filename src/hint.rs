//! [`Hint`]: where the batch is in a value (plain data; the splitting itself is
//! [`Batch`](crate::Batch)'s).

use std::collections::BTreeMap;

/// Where the batch is in a value (IPEX's `MultiStreamModuleHint`).
///
/// A leaf hint (`Dim` or `Replicate`) given for a structure applies to every element, so the
/// default `Dim(0)` splits every array of a tuple along its first axis.
///
/// ```
/// use std::collections::BTreeMap;
/// use corestream::Hint;
///
/// // ExampleNet2's inputs: two arrays, both batched along dim 0.
/// let two_inputs = Hint::Tuple(vec![Hint::Dim(0), Hint::Dim(0)]);
/// // A mask shared by every stream, and a batch along dim 1.
/// let mixed = Hint::Tuple(vec![Hint::Replicate, Hint::Dim(1)]);
/// // Named inputs.
/// let named = Hint::Map(BTreeMap::from([("ids".to_string(), Hint::Dim(0))]));
/// assert_eq!(Hint::default(), Hint::Dim(0));
/// # let _ = (two_inputs, mixed, named);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Hint {
    /// Split (inputs) or concatenate (outputs) along this axis.
    Dim(usize),
    /// Give every stream the whole value (inputs); keep stream 0's value (outputs).
    /// IPEX's `None`.
    Replicate,
    /// One hint per tuple field or `Vec` position.
    Tuple(Vec<Hint>),
    /// One hint per key of a string-keyed map.
    Map(BTreeMap<String, Hint>),
}

impl Default for Hint {
    fn default() -> Self {
        Hint::Dim(0)
    }
}

impl Hint {
    /// Whether any leaf of this hint is a `Dim` (an input hint without one splits nothing).
    pub fn has_dim(&self) -> bool {
        match self {
            Hint::Dim(_) => true,
            Hint::Replicate => false,
            Hint::Tuple(hints) => hints.iter().any(Hint::has_dim),
            Hint::Map(hints) => hints.values().any(Hint::has_dim),
        }
    }
}
