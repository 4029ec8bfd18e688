//! Values that can only be replicated: numbers, strings, `()`.

use super::*;

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
pub(super) fn scalar_hint(hint: &Hint, ty: &str) -> Result<Option<usize>> {
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
