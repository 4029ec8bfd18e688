//! The [`Module`] trait (a model), [`module_fn`], and the object-safe [`Infer`] trait.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::error::{BoxError, Result};

/// A model: a function from an input to an output that may run on many threads at once.
///
/// `forward` takes `&self`, so one model (its weights) is shared by every stream; corestream
/// never copies it, except once per NUMA node when the model offers a copy (see
/// [`replicate`](Module::replicate)). Share one model explicitly between several tasks or
/// modules with an `Arc<M>`, which is a `Module` too (and never copied: an `Arc` says "this
/// one").
///
/// ```
/// use corestream::{BoxError, Module};
///
/// struct Scale(f32);
///
/// impl Module for Scale {
///     type Input = Vec<f32>;
///     type Output = Vec<f32>;
///     fn forward(&self, x: Vec<f32>) -> Result<Vec<f32>, BoxError> {
///         Ok(x.into_iter().map(|v| v * self.0).collect())
///     }
/// }
///
/// assert_eq!(Scale(2.0).forward(vec![1.0, 2.0])?, vec![2.0, 4.0]);
/// # Ok::<(), BoxError>(())
/// ```
pub trait Module: Send + Sync + 'static {
    /// What one call consumes.
    type Input: Send + 'static;
    /// What one call produces.
    type Output: Send + 'static;

    /// Runs the model. Errors reach the caller as [`Error::Module`](crate::Error::Module);
    /// panics as [`Error::Panicked`](crate::Error::Panicked), and the stream keeps serving.
    ///
    /// # Errors
    ///
    /// Whatever the model reports.
    fn forward(&self, input: Self::Input) -> Result<Self::Output, BoxError>;

    /// A copy of the model with its own weights, for the streams of one NUMA node (see
    /// [`numa`](crate::numa)); `None` (the default) when the model has none to offer, and the
    /// streams of every node then share this one.
    ///
    /// A [`MultiStreamModule`](crate::MultiStreamModule) whose streams span nodes calls it once
    /// per node after the first, when it is built, on a thread pinned to that node's stream
    /// CPUs whose memory policy prefers the node: allocate and write the copy's weights in
    /// this call (not lazily, and not shared with `self`), and they land in that node's memory.
    /// The backends' models ([`OrtModel`](crate::backend::ort::OrtModel),
    /// [`OnnxModel`](crate::backend::tract::OnnxModel)) load themselves again from their file.
    ///
    /// ```
    /// use corestream::{BoxError, Module};
    ///
    /// struct Linear { weights: Vec<f32> }
    ///
    /// impl Module for Linear {
    ///     type Input = Vec<f32>;
    ///     type Output = f32;
    ///     fn forward(&self, x: Vec<f32>) -> Result<f32, BoxError> {
    ///         Ok(x.iter().zip(&self.weights).map(|(a, b)| a * b).sum())
    ///     }
    ///     fn replicate(&self) -> Option<Result<Linear, BoxError>> {
    ///         Some(Ok(Linear { weights: self.weights.clone() })) // fresh pages, written here
    ///     }
    /// }
    /// # let m = Linear { weights: vec![2.0; 3] };
    /// # assert_eq!(m.replicate().unwrap()?.forward(vec![1.0; 3])?, 6.0);
    /// # Ok::<(), BoxError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Whatever the copy reports; the module's `build` then fails with
    /// [`Error::Replicate`](crate::Error::Replicate).
    fn replicate(&self) -> Option<Result<Self, BoxError>>
    where
        Self: Sized,
    {
        None
    }
}

impl<M: Module + ?Sized> Module for Arc<M> {
    type Input = M::Input;
    type Output = M::Output;

    fn forward(&self, input: Self::Input) -> Result<Self::Output, BoxError> {
        (**self).forward(input)
    }
}

/// A [`Module`] made from a closure; see [`module_fn`].
pub struct FnModule<F, I, O> {
    f: F,
    _types: PhantomData<fn(I) -> O>,
}

impl<F, I, O> fmt::Debug for FnModule<F, I, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnModule").finish_non_exhaustive()
    }
}

/// Turns a closure into a [`Module`].
///
/// ```
/// use corestream::ndarray::{array, ArrayD};
///
/// let double = corestream::module_fn(|x: ArrayD<f32>| Ok(x * 2.0));
/// # use corestream::Module;
/// let y = double.forward(array![1.0f32, 2.0].into_dyn())?;
/// assert_eq!(y, array![2.0f32, 4.0].into_dyn());
/// # Ok::<(), corestream::BoxError>(())
/// ```
pub fn module_fn<I, O, F>(f: F) -> FnModule<F, I, O>
where
    F: Fn(I) -> Result<O, BoxError> + Send + Sync + 'static,
    I: Send + 'static,
    O: Send + 'static,
{
    FnModule {
        f,
        _types: PhantomData,
    }
}

impl<F, I, O> Module for FnModule<F, I, O>
where
    F: Fn(I) -> Result<O, BoxError> + Send + Sync + 'static,
    I: Send + 'static,
    O: Send + 'static,
{
    type Input = I;
    type Output = O;

    fn forward(&self, input: I) -> Result<O, BoxError> {
        (self.f)(input)
    }
}

/// Asynchronous inference behind a trait object: `Arc<dyn Infer<I, O>>` lets a service hold a
/// [`Task`](crate::Task), a [`MultiStreamModule`](crate::MultiStreamModule) or a batcher
/// without naming which.
///
/// ```
/// use std::sync::Arc;
/// use corestream::{module_fn, CpuPool, Infer, Task};
///
/// # futures::executor::block_on(async {
/// let task = Task::new(module_fn(|x: u32| Ok(x + 1)), CpuPool::all()?)?;
/// let service: Arc<dyn Infer<u32, u32>> = Arc::new(task);
/// assert_eq!(service.infer(41).await?, 42);
/// # Ok::<(), corestream::Error>(())
/// # })?;
/// # Ok::<(), corestream::Error>(())
/// ```
#[async_trait::async_trait]
pub trait Infer<I, O>: Send + Sync {
    /// Runs one request.
    ///
    /// # Errors
    ///
    /// The implementation's errors: model errors and panics, shutdown, bad input, overload.
    async fn infer(&self, input: I) -> Result<O>;
}
