//! [`InputSpec`]: what one model input accepts, and the one input check every backend runs, so
//! that a wrong count, shape or element type is the same typed error whichever backend runs the
//! model.

use std::collections::HashMap;
use std::fmt;

use super::tensor::Tensor;
use crate::element::ElementType;
use crate::error::{Error, Result};

/// One input (or output) of a model: name, element type and shape with symbolic axes.
///
/// Displays as the input errors write it: `N,64,3,3 f32` (`N` a symbolic axis, `?` an axis
/// without a name).
///
/// ```
/// use corestream::backend::{ElementType, InputSpec};
///
/// let spec = InputSpec::new("x", ElementType::F32, &[None, Some(64)], &["N", ""]);
/// assert_eq!(spec.to_string(), "N,64 f32");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    /// The ONNX name.
    pub name: String,
    /// The element type; `None` for a type the backend-neutral [`Tensor`] does not hold (named
    /// in [`type_name`](InputSpec::type_name)).
    pub element_type: Option<ElementType>,
    /// The element type's name (`f32`, or the backend's own name for a type without an
    /// [`ElementType`]).
    pub type_name: String,
    /// Each axis: `Some(n)` fixed, `None` symbolic or dynamic.
    pub shape: Vec<Option<usize>>,
    /// Each axis' symbol (e.g. `N`, `batch_size`), empty when it has none.
    pub symbols: Vec<String>,
}

impl InputSpec {
    /// A spec of a supported element type. `symbols` names the axes (`""` for none); missing
    /// entries are treated as unnamed.
    pub fn new(
        name: &str,
        element_type: ElementType,
        shape: &[Option<usize>],
        symbols: &[&str],
    ) -> InputSpec {
        InputSpec {
            name: name.to_owned(),
            element_type: Some(element_type),
            type_name: element_type.to_string(),
            shape: shape.to_vec(),
            symbols: (0..shape.len())
                .map(|i| symbols.get(i).map_or_else(String::new, |s| (*s).to_owned()))
                .collect(),
        }
    }

    /// The axis index named `symbol`, if any.
    pub fn axis_of(&self, symbol: &str) -> Option<usize> {
        self.symbols.iter().position(|s| s == symbol)
    }
}

impl fmt::Display for InputSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> = self
            .shape
            .iter()
            .zip(&self.symbols)
            .map(|(d, s)| match d {
                Some(n) => n.to_string(),
                None if !s.is_empty() => s.clone(),
                None => "?".into(),
            })
            .collect();
        write!(f, "{} {}", dims.join(","), self.type_name)
    }
}

/// Checks `inputs` against `specs` (count, element type, rank, fixed axes, and that each
/// symbol has one value across all inputs) and returns each symbol's value.
///
/// # Errors
///
/// [`Error::InputCount`] for a wrong number of inputs, [`Error::InvalidInput`] naming the
/// input, the expected shape and type, and what was given.
#[cfg_attr(not(any(feature = "ort", feature = "tract")), allow(dead_code))]
pub(crate) fn check_inputs<'s>(
    specs: &'s [InputSpec],
    inputs: &[Tensor],
) -> Result<HashMap<&'s str, usize>> {
    if inputs.len() != specs.len() {
        return Err(Error::InputCount {
            expected: specs.len(),
            found: inputs.len(),
            names: specs
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let mut bound: HashMap<&str, (usize, &str)> = HashMap::new();
    for (spec, t) in specs.iter().zip(inputs) {
        let mismatch = || Error::InvalidInput {
            input: spec.name.clone(),
            expected: spec.to_string(),
            found: t.describe(),
        };
        if spec.element_type != Some(t.element_type()) || spec.shape.len() != t.ndim() {
            return Err(mismatch());
        }
        for ((dim, sym), &n) in spec.shape.iter().zip(&spec.symbols).zip(t.shape()) {
            match dim {
                Some(fixed) if *fixed != n => return Err(mismatch()),
                None if !sym.is_empty() => match bound.get(sym.as_str()) {
                    Some(&(m, other)) if m != n => {
                        return Err(Error::InvalidInput {
                            input: spec.name.clone(),
                            expected: format!("{sym}={m} as in input {other:?} ({spec})"),
                            found: t.describe(),
                        })
                    }
                    _ => {
                        bound.insert(sym, (n, &spec.name));
                    }
                },
                _ => {}
            }
        }
    }
    Ok(bound.into_iter().map(|(s, (n, _))| (s, n)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs() -> Vec<InputSpec> {
        vec![
            InputSpec::new("ids", ElementType::I64, &[None, None], &["N", "S"]),
            InputSpec::new("mask", ElementType::I64, &[None, None], &["N", "S"]),
        ]
    }

    #[test]
    fn binds_symbols_across_inputs() {
        let x = Tensor::zeros::<i64>(&[3, 7]);
        let specs = specs();
        let bound = check_inputs(&specs, &[x.clone(), x]).unwrap();
        assert_eq!(bound["N"], 3);
        assert_eq!(bound["S"], 7);
    }

    #[test]
    fn errors_name_the_input_and_what_it_takes() {
        let specs = specs();
        let e = check_inputs(&specs, &[Tensor::zeros::<i64>(&[3, 7])]).unwrap_err();
        assert_eq!(e.to_string(), "the model takes 2 inputs (ids, mask), got 1");
        let e = check_inputs(
            &specs,
            &[Tensor::zeros::<i64>(&[3, 7]), Tensor::zeros::<f32>(&[3, 7])],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "input \"mask\": expected N,S i64, got 3,7 f32"
        );
        let e = check_inputs(
            &specs,
            &[Tensor::zeros::<i64>(&[3, 7]), Tensor::zeros::<i64>(&[3, 8])],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "input \"mask\": expected S=7 as in input \"ids\" (N,S i64), got 3,8 i64"
        );
    }
}
