//! Fuzz target `model_ort`: see `fuzz/checks/src/model.rs` for what it checks. Needs ONNX
//! Runtime (`bash scripts/fetch-onnxruntime.sh`): without it every input fails loudly.
#![no_main]

use corestream_fuzz_checks as checks;

libfuzzer_sys::fuzz_target!(
    // As in model_tract: the default panic hook, so that a panic the loader catches is not an
    // abort; one that escapes still is.
    init: {
        let _ = std::panic::take_hook();
    },
    |data: &[u8]| {
        assert!(
            checks::model::check_ort(data),
            "ONNX Runtime is not available: run bash scripts/fetch-onnxruntime.sh"
        );
    }
);
