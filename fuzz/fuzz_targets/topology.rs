//! Fuzz target `topology`: see `fuzz/checks/src/topology.rs` for what it checks.
#![no_main]

use corestream_fuzz_checks as checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::topology::check(data));
