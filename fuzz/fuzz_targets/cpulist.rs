//! Fuzz target `cpulist`: see `fuzz/checks/src/cpulist.rs` for what it checks.
#![no_main]

use corestream_fuzz_checks as checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::cpulist::check(data));
