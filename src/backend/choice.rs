//! [`Backend`]: which engine runs an ONNX model, chosen by name (`ort`, `tract`) or by what this
//! process can load. The CLI, the embedding service and the serve bench choose through it.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
#[cfg(any(feature = "ort", feature = "tract"))]
use std::sync::Arc;

use super::Tensor;
use crate::error::{BoxError, Error, Result};
use crate::module::Module;

/// An ONNX model on either backend, as [`Backend::load`] gives it: both take and return
/// `Vec<Tensor>`. Cheap to clone (the model is shared); a [`Module`] that copies itself per
/// NUMA node as its backend's model does ([`Module::replicate`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum OnnxModule {
    /// On ONNX Runtime.
    #[cfg(feature = "ort")]
    Ort(Arc<super::ort::OrtModel>),
    /// On tract.
    #[cfg(feature = "tract")]
    Tract(Arc<super::tract::OnnxModel>),
}

impl Module for OnnxModule {
    type Input = Vec<Tensor>;
    type Output = Vec<Tensor>;

    fn forward(&self, inputs: Vec<Tensor>) -> std::result::Result<Vec<Tensor>, BoxError> {
        #[cfg(not(any(feature = "ort", feature = "tract")))]
        let _ = inputs;
        match *self {
            #[cfg(feature = "ort")]
            OnnxModule::Ort(ref m) => m.forward(inputs),
            #[cfg(feature = "tract")]
            OnnxModule::Tract(ref m) => m.forward(inputs),
        }
    }

    fn replicate(&self) -> Option<std::result::Result<OnnxModule, BoxError>> {
        match *self {
            #[cfg(feature = "ort")]
            OnnxModule::Ort(ref m) => {
                Some(super::ort::OrtModel::replicate(m)?.map(|c| OnnxModule::Ort(Arc::new(c))))
            }
            #[cfg(feature = "tract")]
            OnnxModule::Tract(ref m) => {
                Some(super::tract::OnnxModel::replicate(m)?.map(|c| OnnxModule::Tract(Arc::new(c))))
            }
        }
    }
}

/// The one line to print when [`Backend::detect`] falls back to tract.
pub const ORT_MISSING_NOTE: &str = "note: ONNX Runtime library not found, using backend tract (to use ONNX Runtime: bash scripts/fetch-onnxruntime.sh, or set ORT_DYLIB_PATH to a libonnxruntime.so)";

/// The engine that runs an ONNX model. Parses from and displays as `ort` or `tract`.
///
/// ```
/// use corestream::backend::Backend;
///
/// let backend: Backend = "tract".parse()?;
/// assert_eq!(backend.to_string(), "tract");
/// assert!("onnx".parse::<Backend>().is_err());
/// // ONNX Runtime when its library is found, else tract:
/// let default = Backend::detect();
/// # let _ = default;
/// # Ok::<(), corestream::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// ONNX Runtime ([`backend::ort`](crate::backend), feature `ort`).
    Ort,
    /// tract ([`backend::tract`](crate::backend), feature `tract`).
    Tract,
}

impl Backend {
    /// Whether this build has feature `ort` and ONNX Runtime's library loads (see
    /// `backend::ort::load_library`).
    pub fn ort_available() -> bool {
        #[cfg(feature = "ort")]
        {
            super::ort::load_library(None).is_ok()
        }
        #[cfg(not(feature = "ort"))]
        {
            false
        }
    }

    /// The default backend: ONNX Runtime when [available](Self::ort_available), else tract
    /// (callers print [`ORT_MISSING_NOTE`] then).
    pub fn detect() -> Backend {
        if Backend::ort_available() {
            Backend::Ort
        } else {
            Backend::Tract
        }
    }

    /// The backend as reports name it: `tract`, or `ort (ONNX Runtime 1.32.0)` once the library
    /// is loaded.
    pub fn describe(self) -> String {
        #[cfg(feature = "ort")]
        if let (Backend::Ort, Some(lib)) = (self, super::ort::loaded_library()) {
            return format!("ort (ONNX Runtime {})", lib.version());
        }
        self.to_string()
    }

    /// Loads the ONNX file at `path` on this backend with its default settings.
    ///
    /// # Errors
    ///
    /// The backend's load errors ([`Error::ModelLoad`], [`Error::OrtLibrary`]), or
    /// [`Error::InvalidConfig`] for a backend this build does not have.
    pub fn load(self, path: &Path) -> Result<OnnxModule> {
        #[cfg(not(all(feature = "ort", feature = "tract")))]
        let _ = path;
        match self {
            #[cfg(feature = "ort")]
            Backend::Ort => Ok(OnnxModule::Ort(Arc::new(super::ort::OrtModel::load(path)?))),
            #[cfg(feature = "tract")]
            Backend::Tract => Ok(OnnxModule::Tract(Arc::new(super::tract::OnnxModel::load(
                path,
            )?))),
            #[allow(unreachable_patterns)]
            other => Err(Error::InvalidConfig(format!(
                "backend {other}: corestream was built without feature `{other}`"
            ))),
        }
    }

    /// Loads an ONNX model from its bytes (e.g. [`crate::bundled::EXAMPLENET1`]) on this
    /// backend with its default settings.
    ///
    /// ```
    /// # #[cfg(feature = "tract")] {
    /// use corestream::backend::Backend;
    ///
    /// let model = Backend::Tract.load_bytes(corestream::bundled::EXAMPLENET1)?;
    /// # let _ = model;
    /// # }
    /// # Ok::<(), corestream::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`load`](Self::load).
    pub fn load_bytes(self, bytes: &[u8]) -> Result<OnnxModule> {
        #[cfg(not(all(feature = "ort", feature = "tract")))]
        let _ = bytes;
        match self {
            #[cfg(feature = "ort")]
            Backend::Ort => Ok(OnnxModule::Ort(Arc::new(
                super::ort::OrtModel::builder_from_bytes(bytes).build()?,
            ))),
            #[cfg(feature = "tract")]
            Backend::Tract => Ok(OnnxModule::Tract(Arc::new(
                super::tract::OnnxModel::builder_from_bytes(bytes).build()?,
            ))),
            #[allow(unreachable_patterns)]
            other => Err(Error::InvalidConfig(format!(
                "backend {other}: corestream was built without feature `{other}`"
            ))),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Ort => "ort",
            Backend::Tract => "tract",
        })
    }
}

impl FromStr for Backend {
    type Err = Error;

    /// `ort` or `tract`; anything else is [`Error::InvalidConfig`] saying what is allowed.
    fn from_str(text: &str) -> Result<Backend> {
        match text {
            "ort" => Ok(Backend::Ort),
            "tract" => Ok(Backend::Tract),
            _ => Err(Error::InvalidConfig(format!(
                "backend {text:?}: expected ort (ONNX Runtime) or tract"
            ))),
        }
    }
}
