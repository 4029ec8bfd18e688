//! [`ElementType`]: the element types of the backend-neutral tensor (plain data, so that
//! [`Error`](crate::Error) can name them without depending on the backends).

use std::fmt;

/// The element type of a [`Tensor`](crate::backend::Tensor). Displays as `f32`, `f64`, `i64`, `i32`, `u8`, `bool`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ElementType {
    /// 32-bit float.
    F32,
    /// 64-bit float.
    F64,
    /// 64-bit signed integer (token ids, in most NLP models).
    I64,
    /// 32-bit signed integer.
    I32,
    /// 8-bit unsigned integer (images, quantised data).
    U8,
    /// Boolean.
    Bool,
}

impl ElementType {
    /// The type's name as displayed: `"f32"`, `"i64"`, ...
    pub fn name(self) -> &'static str {
        match self {
            ElementType::F32 => "f32",
            ElementType::F64 => "f64",
            ElementType::I64 => "i64",
            ElementType::I32 => "i32",
            ElementType::U8 => "u8",
            ElementType::Bool => "bool",
        }
    }

    /// Bytes per element.
    ///
    /// ```
    /// assert_eq!(corestream::backend::ElementType::I64.size(), 8);
    /// ```
    pub fn size(self) -> usize {
        match self {
            ElementType::F32 | ElementType::I32 => 4,
            ElementType::F64 | ElementType::I64 => 8,
            ElementType::U8 | ElementType::Bool => 1,
        }
    }
}

impl fmt::Display for ElementType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
