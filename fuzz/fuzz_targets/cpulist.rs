//! Fuzz target `cpulist`: see `fuzz/checks/cpulist.rs` for what it checks.
#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::cpulist::check(data));
