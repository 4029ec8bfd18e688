//! Conversions between the backend-neutral [`Tensor`] and tract's tensors, and tract's errors
//! as corestream's.

use tract_onnx::prelude::*;

use crate::backend::{ElementType, Tensor};
use crate::error::{Error, Result};

// ===== conversions between backend::Tensor and tract =====

/// The [`ElementType`] of a tract datum type, if the neutral tensor holds it.
pub(super) fn element_type(dt: DatumType) -> Option<ElementType> {
    Some(match dt {
        DatumType::F32 => ElementType::F32,
        DatumType::F64 => ElementType::F64,
        DatumType::I64 => ElementType::I64,
        DatumType::I32 => ElementType::I32,
        DatumType::U8 => ElementType::U8,
        DatumType::Bool => ElementType::Bool,
        _ => return None,
    })
}

/// tract's datum type for an [`ElementType`].
pub(super) fn datum_type(t: ElementType) -> DatumType {
    match t {
        ElementType::F32 => DatumType::F32,
        ElementType::F64 => DatumType::F64,
        ElementType::I64 => DatumType::I64,
        ElementType::I32 => DatumType::I32,
        ElementType::U8 => DatumType::U8,
        ElementType::Bool => DatumType::Bool,
    }
}

/// A tract value holding the tensor's data: the buffer itself when the tensor holds the only
/// handle to it, a copy when the buffer is shared (e.g. a part of a split batch).
pub(super) fn to_tract(t: Tensor) -> TValue {
    let tensor: tract_onnx::prelude::Tensor = match t {
        Tensor::F32(a) => a.into_owned().into(),
        Tensor::F64(a) => a.into_owned().into(),
        Tensor::I64(a) => a.into_owned().into(),
        Tensor::I32(a) => a.into_owned().into(),
        Tensor::U8(a) => a.into_owned().into(),
        Tensor::Bool(a) => a.into_owned().into(),
    };
    TValue::from(tensor)
}

/// The neutral tensor of a tract output (its buffer, not a copy).
pub(super) fn from_tract(t: tract_onnx::prelude::Tensor, output: &str) -> Result<Tensor> {
    let dt = t.datum_type();
    let converted = match element_type(dt) {
        Some(ElementType::F32) => t.into_plain_array::<f32>().map(Tensor::from),
        Some(ElementType::F64) => t.into_plain_array::<f64>().map(Tensor::from),
        Some(ElementType::I64) => t.into_plain_array::<i64>().map(Tensor::from),
        Some(ElementType::I32) => t.into_plain_array::<i32>().map(Tensor::from),
        Some(ElementType::U8) => t.into_plain_array::<u8>().map(Tensor::from),
        Some(ElementType::Bool) => t.into_plain_array::<bool>().map(Tensor::from),
        None => {
            let message = format!(
                "output {output:?} has element type {dt:?}, which backend::Tensor does not hold"
            );
            return Err(Error::Module(message.into()));
        }
    };
    converted.map_err(Error::from)
}

// ===== impl From<TractError> for Error =====

impl From<TractError> for Error {
    fn from(e: TractError) -> Error {
        Error::Module(format!("{e:#}").into())
    }
}
