//! The HTTP layer: the wire format ([`api`]), the framework-neutral routes ([`handlers`]: raw
//! body in, [`Reply`] out, statuses decided here), the OpenAPI document ([`openapi`]), and the
//! two servers over the same routes: [`axum`] (the default) and [`actix`] (feature `actix`),
//! each a thin adapter that only moves bytes.

#[cfg(feature = "actix")]
pub mod actix;
pub mod api;
pub mod axum;
pub mod bounded;
pub mod handlers;
pub mod openapi;

pub use handlers::{
    handle, handle_model_path, status, BodyError, BodySize, Method, Reply, RequestHead, Route,
    BODY_LIMIT, MODEL_PREFIX,
};
