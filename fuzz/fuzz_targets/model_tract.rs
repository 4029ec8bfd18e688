//! Fuzz target `model_tract`: see `fuzz/checks/src/model.rs` for what it checks.
#![no_main]

use corestream_fuzz_checks as checks;

libfuzzer_sys::fuzz_target!(
    // libfuzzer-sys's panic hook aborts on every panic, even one the loader catches and turns
    // into Error::ModelLoad (what is under test); the default hook only prints. A panic that
    // escapes the loader still aborts (libfuzzer-sys catches it and aborts).
    init: {
        let _ = std::panic::take_hook();
    },
    |data: &[u8]| checks::model::check_tract(data)
);
