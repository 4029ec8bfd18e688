//! Fuzz target `service_body`: see `fuzz/checks/service_body.rs` for what it checks.
#![no_main]

// The embedding service's framework-neutral modules (examples/embed_server) at the crate root,
// as the checks expect them: the list the tests use.
include!("../../tests/embed_service/modules.rs");

// Not part of checks/mod.rs (the other targets lack the modules above).
#[path = "../checks/service_body.rs"]
mod service_body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| service_body::check(data));
