//! Running a session from several threads at once, and tensors in and out of ONNX Runtime
//! (see the [module docs](super)).

use std::ffi::c_char;
use std::ptr::{self, NonNull};

use ::ort::session::Session;
use ::ort::value::{DynValue, DynValueRef, TensorElementType, TensorRef, ValueType};
use ::ort::AsPointer;
use ndarray::IxDyn;

use crate::backend::tensor::{Element, ElementType, Tensor};
use crate::context::StreamInfo;

pub(super) fn element_type(ty: TensorElementType) -> Option<ElementType> {
    Some(match ty {
        TensorElementType::Float32 => ElementType::F32,
        TensorElementType::Float64 => ElementType::F64,
        TensorElementType::Int64 => ElementType::I64,
        TensorElementType::Int32 => ElementType::I32,
        TensorElementType::Uint8 => ElementType::U8,
        TensorElementType::Bool => ElementType::Bool,
        _ => return None,
    })
}

/// A session that several threads may run at once.
#[derive(Debug)]
pub(super) struct RunSession {
    pub(super) session: Session,
}

impl RunSession {
    /// Runs the session from `&self` through ONNX Runtime's C API (`ort`'s safe `run` takes
    /// `&mut self`). `names` and `values` pair up; `outputs` are the names to compute.
    pub(super) fn run(
        &self,
        names: &[*const c_char],
        values: &[DynValueRef<'_>],
        outputs: &[*const c_char],
    ) -> Result<Vec<DynValue>, String> {
        let value_ptrs: Vec<*const ::ort::sys::OrtValue> = values.iter().map(|v| v.ptr()).collect();
        assert_eq!(names.len(), value_ptrs.len(), "one name per input value");
        let mut out: Vec<*mut ::ort::sys::OrtValue> = vec![ptr::null_mut(); outputs.len()];
        // SAFETY: the session pointer is valid while `self.session` lives; ONNX Runtime's
        // `Run` may be called concurrently on one session (its documented thread-safety for the
        // CPU execution provider, the only one these sessions use; each call gets its own
        // execution frame; `Session` itself is Send + Sync). Name arrays point to
        // NUL-terminated strings the caller keeps alive; `value_ptrs` to live `OrtValue`s whose
        // data the `DynValueRef`s borrow; `out` has one null slot per output name, which `Run`
        // fills with values we then own. No run options (null is allowed).
        let status = unsafe {
            (::ort::api().Run)(
                self.session.ptr().cast_mut(),
                ptr::null(),
                names.as_ptr(),
                value_ptrs.as_ptr(),
                value_ptrs.len(),
                outputs.as_ptr(),
                outputs.len(),
                out.as_mut_ptr(),
            )
        };
        // SAFETY: `status` was just returned by an ONNX Runtime API; this takes ownership of
        // it (and releases it).
        unsafe { ::ort::Error::result_from_status(status) }.map_err(|e| e.to_string())?;
        out.into_iter()
            .map(|p| {
                let p = NonNull::new(p).ok_or("ONNX Runtime returned a null output")?;
                // SAFETY: `p` is an output value `Run` allocated with the session's (CPU)
                // allocator, now owned by the returned `DynValue`, which releases it on drop.
                Ok(unsafe { DynValue::from_ptr(p, Some(self.session.allocator())) })
            })
            .collect()
    }
}

/// Makes the calling stream thread ONNX Runtime's intra-op thread 0 on the stream's first
/// CPU, once per thread and stream: the stream thread is pinned to all of its stream's CPUs when it
/// starts, and here narrows to `cpus[0]` for good, as worker `t` has `cpus[t]` (left on all of
/// them, it shares a CPU with a worker whenever the scheduler puts it there). Pinning once
/// instead of around every run saves two `sched_setaffinity` calls per request (on the 2-vCPU
/// VM: ExampleNet1 at B=16, 1 stream x 2 CPUs, from 0.68x to 0.92x of Python onnxruntime's
/// one 2-thread session). Best effort: a refused mask leaves the thread where it was.
pub(super) fn pin_as_thread_zero(stream: &StreamInfo) {
    thread_local! {
        /// The stream this thread was last pinned for (`u64::MAX`: none yet).
        static DONE: std::cell::Cell<u64> = const { std::cell::Cell::new(u64::MAX) };
    }
    if DONE.get() != stream.id() {
        DONE.set(stream.id());
        let cpus = stream.pool().cpus();
        // Only the stream thread itself (on all the stream's CPUs), not an intra-op worker
        // that calls a model from inside a rayon task (already on its own CPU), nor a thread
        // running a batcher's wide batch (the batcher pins it to the first CPU for the call).
        if crate::affinity::current_cpus().is_ok_and(|mask| mask.len() == cpus.len()) {
            let _ = crate::affinity::set_current_cpus(&cpus[..1]);
        }
    }
}

/// A standard-layout (C-contiguous) tensor: itself when it is one (no copy), else a copy.
pub(super) fn standard_layout(t: Tensor) -> Tensor {
    fn fix<T: Element>(a: ndarray::ArcArray<T, IxDyn>) -> Tensor {
        if a.is_standard_layout() {
            T::into_tensor(a)
        } else {
            T::into_tensor(a.as_standard_layout().into_owned().into_shared())
        }
    }
    match t {
        Tensor::F32(a) => fix(a),
        Tensor::F64(a) => fix(a),
        Tensor::I64(a) => fix(a),
        Tensor::I32(a) => fix(a),
        Tensor::U8(a) => fix(a),
        Tensor::Bool(a) => fix(a),
    }
}

/// An ONNX Runtime value borrowing a standard-layout tensor's data.
pub(super) fn tensor_ref(t: &Tensor) -> Result<DynValueRef<'_>, String> {
    fn r<T: ::ort::value::PrimitiveTensorElementType + Element>(
        a: &ndarray::ArcArray<T, IxDyn>,
    ) -> Result<DynValueRef<'_>, String> {
        TensorRef::from_array_view(a.view())
            .map(TensorRef::into_dyn)
            .map_err(|e| e.to_string())
    }
    match t {
        Tensor::F32(a) => r(a),
        Tensor::F64(a) => r(a),
        Tensor::I64(a) => r(a),
        Tensor::I32(a) => r(a),
        Tensor::U8(a) => r(a),
        Tensor::Bool(a) => r(a),
    }
}

/// Copies an output value into a [`Tensor`].
pub(super) fn to_tensor(v: &DynValue) -> Result<Tensor, String> {
    fn copy<T: ::ort::value::PrimitiveTensorElementType + Element>(
        v: &DynValue,
    ) -> Result<Tensor, String> {
        let view = v.try_extract_array::<T>().map_err(|e| e.to_string())?;
        Ok(T::into_tensor(view.to_owned().into_shared()))
    }
    match v.dtype() {
        ValueType::Tensor { ty, .. } => match element_type(*ty) {
            Some(ElementType::F32) => copy::<f32>(v),
            Some(ElementType::F64) => copy::<f64>(v),
            Some(ElementType::I64) => copy::<i64>(v),
            Some(ElementType::I32) => copy::<i32>(v),
            Some(ElementType::U8) => copy::<u8>(v),
            Some(ElementType::Bool) => copy::<bool>(v),
            _ => Err(format!("element type {ty:?} has no corestream Tensor type")),
        },
        other => Err(format!("a {other} is not a tensor")),
    }
}
