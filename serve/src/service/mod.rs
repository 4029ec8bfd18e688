//! The service layer, independent of the HTTP framework: the state every handler shares
//! ([`Service`]: health, request accounting, the loaded model), loading a model behind its
//! pinned streams and `Batcher` ([`load`]; the streams counted, or tuned on the model first:
//! [`tune`]), the request path (validation, tokenisation with the
//! length policy, the batcher call, normalisation; a reranker's and classifier's scores) with its [`Failure`]s, and telemetry (logs,
//! spans, Prometheus metrics). HTTP statuses are the HTTP layer's business
//! ([`crate::http`]); a failure here has a [`FailureKind`].

pub mod access;
pub mod admission;
pub mod budget;
mod embedding;
pub mod failure;
pub mod health;
pub mod info;
pub mod load;
pub mod models;
mod parts;
pub mod requests;
pub mod scores;
pub mod state;
pub mod telemetry;
mod tokens;
pub mod tune;

pub use access::ApiKey;
pub use admission::Admission;
pub use budget::BodyBudget;
pub use failure::{Failure, FailureKind};
pub use health::{Health, State};
pub use info::Info;
pub use load::{serve_files, serve_model, BatchOptions};
pub use models::Models;
pub use requests::Requests;
pub use scores::Sequence;
pub use state::{Embedder, Loaded, Monitor, Service};
pub use tune::{Candidate, Profile, Tuning};
