//! Targets `model_tract` and `model_ort`: loading a model from arbitrary bytes on each backend.
//!
//! Checks: no panic escapes the loader, and a file that does not load is `Error::ModelLoad`
//! (a panic inside the backend included: the loaders catch it). ONNX Runtime is native code;
//! the fuzzer can only report its crashes, not turn them into errors.

#[cfg(feature = "ort")]
use corestream::backend::ort::OrtModel;
#[cfg(feature = "tract")]
use corestream::backend::tract::OnnxModel;
use corestream::Error;

/// Inputs over this size are skipped: libFuzzer's default `-max_len` for these targets is
/// 64 KiB and the corpus stays small; a multi-megabyte model tests nothing more of the loader.
pub const MAX_LEN: usize = 1 << 20;

/// Loads `data` on tract.
#[cfg(feature = "tract")]
pub fn check_tract(data: &[u8]) {
    if data.len() > MAX_LEN {
        return;
    }
    let loaded = OnnxModel::builder_from_bytes(data).build();
    if let Err(e) = loaded {
        expect_model_load(e);
    }
}

/// Loads `data` on ONNX Runtime. Returns `false` (checks nothing) when the library is not
/// available (see `scripts/fetch-onnxruntime.sh`).
#[cfg(feature = "ort")]
pub fn check_ort(data: &[u8]) -> bool {
    if corestream::backend::ort::load_library(None).is_err() {
        return false;
    }
    if data.len() <= MAX_LEN {
        if let Err(e) = OrtModel::builder_from_bytes(data).build() {
            expect_model_load(e);
        }
    }
    true
}

fn expect_model_load(e: Error) {
    match e {
        Error::ModelLoad { .. } => {}
        other => panic!("model load gave {other:?}, expected Error::ModelLoad"),
    }
}
