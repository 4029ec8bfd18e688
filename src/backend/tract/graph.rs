//! What the loader reads from a typed graph: the batch symbol of the inputs and the axis each
//! input and output carries it on, the input specs, shapes given as text, and compiling a plan.

use tract_onnx::prelude::*;

use super::convert::element_type;
use super::{BatchAxes, Plan};
use crate::backend::InputSpec;

/// A runnable plan of `model`, optimised first when `optimize` is set.
pub(super) fn compile_plan(model: TypedModel, optimize: bool) -> TractResult<Plan> {
    if optimize {
        model.into_optimized()?.into_runnable()
    } else {
        model.into_runnable()
    }
}

/// The batch axis' symbol: axis 0 of the first input when symbolic, else the model's only
/// symbol (`None` with no symbol or several). `inputs` holds each input's axis symbols.
pub(super) fn batch_symbol(inputs: &[Vec<Option<Symbol>>]) -> Option<Symbol> {
    let mut symbols: Vec<Symbol> = inputs.iter().flatten().flatten().cloned().collect();
    symbols.sort();
    symbols.dedup();
    inputs
        .first()
        .and_then(|axes| axes.first().cloned().flatten())
        .or_else(|| match symbols.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        })
}

pub(super) fn parse_shape(
    text: &str,
    scope: &SymbolScope,
) -> std::result::Result<Vec<TDim>, String> {
    let parts: Vec<&str> = text
        .split([',', 'x'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if parts.is_empty() {
        return Err(format!("cannot parse shape {text:?}: no axes"));
    }
    parts
        .iter()
        .map(|p| match p.parse::<i64>() {
            Ok(n) if n >= 0 => Ok(TDim::from(n)),
            // Checked, not cast: `usize::MAX as i64` is -1, a negative axis tract asserts on.
            _ if p.chars().all(|c| c.is_ascii_digit()) => Err(format!(
                "cannot parse shape {text:?}: axis {p} is too large (at most {})",
                i64::MAX
            )),
            _ if p.chars().all(|c| c.is_ascii_alphabetic() || c == '_') => {
                Ok(TDim::Sym(scope.sym(p)))
            }
            _ => Err(format!(
                "cannot parse shape {text:?}: axis {p:?} is neither a number nor a name"
            )),
        })
        .collect()
}

/// The axis that is exactly `sym` in every input and every output, or `None` when some input
/// or output has no such axis or several.
pub(super) fn batch_axes(model: &TypedModel, sym: &Symbol) -> TractResult<Option<BatchAxes>> {
    let axis_of = |outlets: &[OutletId]| -> TractResult<Option<Vec<usize>>> {
        let mut axes = Vec::with_capacity(outlets.len());
        for o in outlets {
            let fact = model.outlet_fact(*o)?;
            let hits: Vec<usize> = fact
                .shape
                .iter()
                .enumerate()
                .filter(|(_, d)| **d == TDim::Sym(sym.clone()))
                .map(|(i, _)| i)
                .collect();
            match hits.as_slice() {
                [axis] => axes.push(*axis),
                _ => return Ok(None),
            }
        }
        Ok(Some(axes))
    };
    Ok(
        match (
            axis_of(model.input_outlets()?)?,
            axis_of(model.output_outlets()?)?,
        ) {
            (Some(inputs), Some(outputs)) => Some(BatchAxes { inputs, outputs }),
            _ => None,
        },
    )
}

/// Each input's axes: the symbol of each symbolic axis, `None` for the others.
pub(super) fn input_symbols(model: &TypedModel) -> TractResult<Vec<Vec<Option<Symbol>>>> {
    model
        .input_outlets()?
        .iter()
        .map(|o| {
            let fact = model.outlet_fact(*o)?;
            Ok(fact
                .shape
                .iter()
                .map(|d| match d {
                    TDim::Sym(sym) => Some(sym.clone()),
                    _ => None,
                })
                .collect())
        })
        .collect()
}

/// Each input of the typed model: name, element type, and per axis its size or symbol.
pub(super) fn input_specs(model: &TypedModel) -> TractResult<Vec<InputSpec>> {
    model
        .input_outlets()?
        .iter()
        .zip(input_symbols(model)?)
        .map(|(o, symbols)| {
            let fact = model.outlet_fact(*o)?;
            let element_type = element_type(fact.datum_type);
            Ok(InputSpec {
                name: model.node(o.node).name.clone(),
                element_type,
                type_name: element_type.map_or_else(
                    || format!("{:?}", fact.datum_type).to_lowercase(),
                    |t| t.to_string(),
                ),
                shape: fact
                    .shape
                    .iter()
                    .map(|d| d.as_i64().and_then(|n| usize::try_from(n).ok()))
                    .collect(),
                symbols: symbols
                    .iter()
                    .map(|s| s.as_ref().map_or_else(String::new, Symbol::to_string))
                    .collect(),
            })
        })
        .collect()
}
