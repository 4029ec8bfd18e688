//! [`Tensor`]: the backend-neutral, dynamically typed tensor that every backend accepts and
//! returns.
//!
//! A `Tensor` is one of a few element types, each held as an `ndarray`
//! [`ArcArray<T, IxDyn>`](ndarray::ArcArray): cloning and splitting it along the batch axis
//! share the buffer (no copy); concatenating copies once.

use std::fmt;

use ndarray::{ArcArray, Array, ArrayD, ArrayViewD, Dimension, IxDyn};

use crate::batch::{Batch, Hint};
pub use crate::element::ElementType;
use crate::error::{Error, Result};

/// A backend-neutral tensor of one of the [`ElementType`]s, shared and zero-copy where it can
/// be (an [`ArcArray`] inside).
///
/// Build one with `From` (from an owned `Array` or an `ArcArray` of any dimension, or a shared
/// `ArcArray<T, IxDyn>`), read it with [`view`](Tensor::view), take it apart with
/// [`into_array`](Tensor::into_array). It implements [`Batch`]: split along any axis without
/// copying, concatenated along any axis (parts must share the element type).
///
/// ```
/// use corestream::backend::{ElementType, Tensor};
/// use corestream::ndarray::{array, ArrayD};
/// use corestream::{Batch, Hint};
///
/// let x = Tensor::from(array![[1.0f32, 2.0], [3.0, 4.0], [5.0, 6.0]]);
/// assert_eq!(x.shape(), [3, 2]);
/// assert_eq!(x.element_type(), ElementType::F32);
/// assert_eq!(x.view::<f32>()?[[2, 1]], 6.0);
/// assert!(x.view::<i64>().is_err()); // typed: Error::ElementType
///
/// let parts = x.clone().split(&Hint::Dim(0), &[2, 1])?;
/// assert_eq!(parts[1].shape(), [1, 2]);
/// assert_eq!(Tensor::concat(parts, &Hint::Dim(0))?, x);
/// let back: ArrayD<f32> = x.to_owned_array()?;
/// # let _ = back;
/// # Ok::<(), corestream::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Tensor {
    /// `f32` elements.
    F32(ArcArray<f32, IxDyn>),
    /// `f64` elements.
    F64(ArcArray<f64, IxDyn>),
    /// `i64` elements.
    I64(ArcArray<i64, IxDyn>),
    /// `i32` elements.
    I32(ArcArray<i32, IxDyn>),
    /// `u8` elements.
    U8(ArcArray<u8, IxDyn>),
    /// `bool` elements.
    Bool(ArcArray<bool, IxDyn>),
}

mod sealed {
    pub trait Sealed {}
}

/// A Rust element type a [`Tensor`] can hold: `f32`, `f64`, `i64`, `i32`, `u8`, `bool`.
/// Sealed: implemented by corestream only.
pub trait Element: sealed::Sealed + Clone + Send + Sync + fmt::Debug + 'static {
    /// The matching [`ElementType`].
    const TYPE: ElementType;

    /// Wraps an array as a tensor of this type.
    fn into_tensor(array: ArcArray<Self, IxDyn>) -> Tensor;

    /// The array, when the tensor holds this type.
    fn as_array(tensor: &Tensor) -> Option<&ArcArray<Self, IxDyn>>;

    /// The array, when the tensor holds this type; else the tensor back.
    fn from_tensor(tensor: Tensor) -> Result<ArcArray<Self, IxDyn>, Tensor>;
}

macro_rules! element {
    ($($t:ty => $variant:ident),* $(,)?) => {$(
        impl sealed::Sealed for $t {}

        impl Element for $t {
            const TYPE: ElementType = ElementType::$variant;

            fn into_tensor(array: ArcArray<Self, IxDyn>) -> Tensor {
                Tensor::$variant(array)
            }

            fn as_array(tensor: &Tensor) -> Option<&ArcArray<Self, IxDyn>> {
                match tensor {
                    Tensor::$variant(a) => Some(a),
                    _ => None,
                }
            }

            fn from_tensor(tensor: Tensor) -> Result<ArcArray<Self, IxDyn>, Tensor> {
                match tensor {
                    Tensor::$variant(a) => Ok(a),
                    other => Err(other),
                }
            }
        }
    )*};
}

element!(f32 => F32, f64 => F64, i64 => I64, i32 => I32, u8 => U8, bool => Bool);

/// Runs `$body` with `$a` bound to the array inside `$t`, whatever its element type.
macro_rules! with_array {
    ($t:expr, $a:ident => $body:expr) => {
        match $t {
            Tensor::F32($a) => $body,
            Tensor::F64($a) => $body,
            Tensor::I64($a) => $body,
            Tensor::I32($a) => $body,
            Tensor::U8($a) => $body,
            Tensor::Bool($a) => $body,
        }
    };
}

impl<T: Element, D: Dimension> From<Array<T, D>> for Tensor {
    /// Takes the array's buffer (no copy).
    fn from(array: Array<T, D>) -> Tensor {
        T::into_tensor(array.into_dyn().into_shared())
    }
}

impl<T: Element, D: Dimension> From<ArcArray<T, D>> for Tensor {
    /// Shares the array's buffer (no copy).
    fn from(array: ArcArray<T, D>) -> Tensor {
        T::into_tensor(array.into_dyn())
    }
}

impl Tensor {
    /// A tensor of `shape` filled with `T::default()` (zeros, `false`).
    ///
    /// ```
    /// let x = corestream::backend::Tensor::zeros::<f32>(&[8, 64, 3, 3]);
    /// assert_eq!(x.len(), 8 * 64 * 9);
    /// ```
    ///
    /// # Panics
    ///
    /// When the shape has more elements than an `isize` counts (as `ndarray` does), or the
    /// allocation fails. For a shape from outside the program, use
    /// [`from_shape_vec`](Tensor::from_shape_vec), which checks it.
    pub fn zeros<T: Element + Default>(shape: &[usize]) -> Tensor {
        Tensor::from(ArrayD::<T>::default(IxDyn(shape)))
    }

    /// A tensor of `shape` over `data` in row-major order (the vector becomes the buffer, no
    /// copy).
    ///
    /// ```
    /// use corestream::backend::Tensor;
    /// let ids = Tensor::from_shape_vec(&[2, 3], vec![1i64, 2, 3, 4, 5, 6])?;
    /// assert_eq!(ids.describe(), "2,3 i64");
    /// assert!(Tensor::from_shape_vec(&[2, 3], vec![1i64]).is_err());
    /// # Ok::<(), corestream::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::TensorShape`] when `data` does not have the product of `shape` elements.
    pub fn from_shape_vec<T: Element>(shape: &[usize], data: Vec<T>) -> Result<Tensor> {
        let len = data.len();
        ArrayD::from_shape_vec(IxDyn(shape), data)
            .map(Tensor::from)
            .map_err(|_| Error::TensorShape {
                shape: shape.to_vec(),
                len,
            })
    }

    /// The element type.
    pub fn element_type(&self) -> ElementType {
        match self {
            Tensor::F32(_) => ElementType::F32,
            Tensor::F64(_) => ElementType::F64,
            Tensor::I64(_) => ElementType::I64,
            Tensor::I32(_) => ElementType::I32,
            Tensor::U8(_) => ElementType::U8,
            Tensor::Bool(_) => ElementType::Bool,
        }
    }

    /// The shape (one length per axis).
    pub fn shape(&self) -> &[usize] {
        with_array!(self, a => a.shape())
    }

    /// The number of axes.
    pub fn ndim(&self) -> usize {
        self.shape().len()
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        with_array!(self, a => a.len())
    }

    /// Whether the tensor has no element (some axis has length 0).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A view of the elements as `T`.
    ///
    /// # Errors
    ///
    /// [`Error::ElementType`] when the tensor holds another element type.
    pub fn view<T: Element>(&self) -> Result<ArrayViewD<'_, T>> {
        T::as_array(self)
            .map(|a| a.view())
            .ok_or_else(|| self.type_error::<T>())
    }

    /// The shared array inside (no copy).
    ///
    /// # Errors
    ///
    /// [`Error::ElementType`] when the tensor holds another element type.
    pub fn into_array<T: Element>(self) -> Result<ArcArray<T, IxDyn>> {
        T::from_tensor(self).map_err(|t| t.type_error::<T>())
    }

    /// An owned copy of the elements (use [`into_array`](Tensor::into_array) to avoid the
    /// copy).
    ///
    /// # Errors
    ///
    /// [`Error::ElementType`] when the tensor holds another element type.
    pub fn to_owned_array<T: Element>(&self) -> Result<ArrayD<T>> {
        self.view::<T>().map(|v| v.to_owned())
    }

    fn type_error<T: Element>(&self) -> Error {
        Error::ElementType {
            expected: T::TYPE,
            found: self.element_type(),
        }
    }

    /// Shape and element type as input errors write them, e.g. `8,64,3,3 f32`.
    ///
    /// ```
    /// let x = corestream::backend::Tensor::zeros::<i64>(&[2, 7]);
    /// assert_eq!(x.describe(), "2,7 i64");
    /// ```
    pub fn describe(&self) -> String {
        let dims: Vec<String> = self.shape().iter().map(usize::to_string).collect();
        format!("{} {}", dims.join(","), self.element_type())
    }
}

/// Concatenates parts that all hold `T`.
fn concat_as<T: Element>(parts: Vec<Tensor>, hint: &Hint) -> Result<Tensor> {
    let arrays = parts
        .into_iter()
        .map(Tensor::into_array::<T>)
        .collect::<Result<Vec<_>>>()?;
    Ok(T::into_tensor(ArcArray::concat(arrays, hint)?))
}

/// Splits along any axis without copying (the parts share the buffer); `Replicate` clones the
/// handle. Concatenating parts of different element types is [`Error::Concat`].
impl Batch for Tensor {
    fn batch_size(&self, hint: &Hint) -> Result<Option<usize>> {
        with_array!(self, a => a.batch_size(hint))
    }

    fn split(self, hint: &Hint, sizes: &[usize]) -> Result<Vec<Self>> {
        with_array!(self, a => Ok(a.split(hint, sizes)?.into_iter().map(Tensor::from).collect()))
    }

    fn concat(parts: Vec<Self>, hint: &Hint) -> Result<Self> {
        let Some(first) = parts.first() else {
            return Err(Error::Concat("no parts to concatenate".into()));
        };
        let ty = first.element_type();
        if let Some(other) = parts.iter().find(|p| p.element_type() != ty) {
            return Err(Error::Concat(format!(
                "tensors of different element types ({ty} and {})",
                other.element_type()
            )));
        }
        match ty {
            ElementType::F32 => concat_as::<f32>(parts, hint),
            ElementType::F64 => concat_as::<f64>(parts, hint),
            ElementType::I64 => concat_as::<i64>(parts, hint),
            ElementType::I32 => concat_as::<i32>(parts, hint),
            ElementType::U8 => concat_as::<u8>(parts, hint),
            ElementType::Bool => concat_as::<bool>(parts, hint),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn display_and_describe() {
        assert_eq!(ElementType::Bool.to_string(), "bool");
        let t = Tensor::zeros::<i64>(&[2, 3]);
        assert_eq!(t.describe(), "2,3 i64");
    }

    #[test]
    fn from_any_dimension_shares() {
        let a = array![[1u8, 2], [3, 4]].into_shared();
        let t = Tensor::from(a.clone());
        assert_eq!(t.view::<u8>().unwrap().as_ptr(), a.as_ptr());
    }
}
