// The embedding service's framework-neutral modules (examples/embed_server), for the files
// that test or measure it: `include!("embed_service/modules.rs")` from tests/, or
// `include!("../tests/embed_service/modules.rs")` from benches/. Paths are relative to this
// file. Each file adds its framework's adapter (`app`) itself.
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
#[path = "../../examples/embed_server/telemetry.rs"]
mod telemetry;
#[allow(dead_code)]
#[path = "../../examples/embed_server/tokenizer.rs"]
mod tokenizer;
