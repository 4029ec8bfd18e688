//! Fuzz target `model_tract`: see `fuzz/checks/model.rs` for what it checks.
#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::model::check_tract(data));
