//! Fuzz target `batch`: see `fuzz/checks/src/batch.rs` for what it checks.
#![no_main]

use corestream_fuzz_checks as checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::batch::check(data));
