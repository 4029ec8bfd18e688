//! Fuzz target `model_ort`: see `fuzz/checks/model.rs` for what it checks. Needs ONNX
//! Runtime (`bash scripts/fetch-onnxruntime.sh`): without it every input fails loudly.
#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    assert!(
        checks::model::check_ort(data),
        "ONNX Runtime is not available: run bash scripts/fetch-onnxruntime.sh"
    );
});
