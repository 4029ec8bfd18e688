//! Fuzz target `batch`: see `fuzz/checks/batch.rs` for what it checks.
#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::batch::check(data));
