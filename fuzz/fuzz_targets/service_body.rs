//! Fuzz target `service_body`: see `fuzz/checks/service_body.rs` for what it checks.
#![no_main]

// The embedding service's framework-neutral modules (examples/embed_server) at the crate root,
// as the checks expect them (all but telemetry.rs, whose exporter the checks do not install).
#[allow(dead_code)]
#[path = "../../examples/embed_server/api.rs"]
mod api;
#[allow(dead_code)]
#[path = "../../examples/embed_server/embedder.rs"]
mod embedder;
#[allow(dead_code)]
#[path = "../../examples/embed_server/handlers.rs"]
mod handlers;
#[allow(dead_code)]
#[path = "../../examples/embed_server/health.rs"]
mod health;
#[allow(dead_code)]
#[path = "../../examples/embed_server/openapi.rs"]
mod openapi;
#[allow(dead_code)]
#[path = "../../examples/embed_server/requests.rs"]
mod requests;
#[allow(dead_code)]
#[path = "../../examples/embed_server/service.rs"]
mod service;
#[allow(dead_code)]
#[path = "../../examples/embed_server/setup.rs"]
mod setup;
#[allow(dead_code)]
#[path = "../../examples/embed_server/tokenizer.rs"]
mod tokenizer;

// Not part of checks/mod.rs (the other targets lack the modules above).
#[path = "../checks/service_body.rs"]
mod service_body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| service_body::check(data));
