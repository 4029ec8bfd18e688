//! Fuzz target `service_body`: see `fuzz/checks/src/service_body.rs` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| corestream_fuzz_checks::service_body::check(data));
